use super::*;
use crate::selection::Reason;
use crate::task::{TaskId, TaskInput, TaskType};
use crate::testing::{Behaviour, FakeModel};
use crate::{ErrorKind, Health};

fn task(task_type: &str) -> Task {
    Task {
        id: TaskId::new("t1").unwrap(),
        task_type: TaskType::new(task_type).unwrap(),
        input: TaskInput::Text("hello".to_owned()),
        parameters: serde_json::Map::new(),
    }
}

fn orchestrator(models: &[&FakeModel]) -> Orchestrator {
    let registry = Registry::new(models.iter().map(|m| m.described_entry())).unwrap();
    Orchestrator::new(
        Arc::new(registry),
        OrchestratorSettings {
            seed: Some(3),
            ..OrchestratorSettings::default()
        },
    )
}

fn unavailable() -> WorkerError {
    WorkerError {
        kind: WorkerErrorKind::Unavailable,
        code: "UNAVAILABLE",
        message: "connection refused".to_owned(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_runs_on_the_most_confident_model() {
    let low = FakeModel::serving("low", "text_generation", 0.5);
    let high = FakeModel::serving("high", "text_generation", 0.9);
    let result = orchestrator(&[&low, &high])
        .execute(task("text_generation"), None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert_eq!(result.model_id.unwrap().as_str(), "high");
    assert_eq!(
        result.output.unwrap().text.as_deref(),
        Some("text_generation")
    );
    assert_eq!(high.calls().len(), 1);
    assert!(low.calls().is_empty());
    assert_eq!(result.metrics.attempts.len(), 1);
    assert_eq!(result.routing.reason, Reason::HighestScore);
    assert_eq!(result.routing.candidates.len(), 2);
    assert!(result.routing.fallbacks_taken.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unserved_task_type_is_a_failed_precondition_naming_it() {
    let model = FakeModel::serving("gama", "audio_analysis", 0.9);
    let err = orchestrator(&[&model])
        .execute(task("transcription"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("`transcription`"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_retriable_failure_falls_back_to_the_next_model() {
    let first = FakeModel::serving("first", "transcription", 0.9);
    let second = FakeModel::serving("second", "transcription", 0.8);
    first.behave(Behaviour::Fail(unavailable()));
    let result = orchestrator(&[&first, &second])
        .execute(task("transcription"), None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert_eq!(result.model_id.unwrap().as_str(), "second");
    let outcomes: Vec<_> = result.metrics.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [AttemptOutcome::Failed, AttemptOutcome::Succeeded]
    );
    assert_eq!(result.routing.fallbacks_taken[0].as_str(), "second");
}

#[tokio::test(start_paused = true)]
async fn gama_failing_falls_back_to_wav2vec2() {
    let gama = FakeModel::serving("gama", "audio_analysis", 0.95);
    let features = FakeModel::serving("audio-features", "audio_analysis", 0.9);
    let wav2vec2 = FakeModel::serving("wav2vec2", "audio_analysis", 0.5);
    gama.behave(Behaviour::Fail(unavailable()));
    let orchestrator = orchestrator(&[&gama, &features, &wav2vec2]);
    for _ in 0..5 {
        let result = orchestrator
            .execute(task("audio_analysis"), None)
            .await
            .unwrap();
        assert_eq!(result.status, TaskStatus::Succeeded);
        assert_eq!(result.model_id.unwrap().as_str(), "wav2vec2");
        assert_eq!(result.metrics.attempts[0].model_id.as_str(), "gama");
        assert_eq!(result.routing.reason, Reason::Route);
    }
    assert!(features.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refused_input_is_final_and_says_nothing_of_the_model() {
    let first = FakeModel::serving("first", "transcription", 0.9);
    let second = FakeModel::serving("second", "transcription", 0.8);
    first.behave(Behaviour::Fail(WorkerError {
        kind: WorkerErrorKind::Rejected,
        code: "INVALID_ARGUMENT",
        message: "not a WAV file".to_owned(),
    }));
    let orchestrator = orchestrator(&[&first, &second]);
    let result = orchestrator
        .execute(task("transcription"), None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Failed);
    assert_eq!(result.error.unwrap().code, "INVALID_ARGUMENT");
    assert!(second.calls().is_empty());
    let entry = orchestrator.registry();
    let stats = entry.models().next().unwrap().stats(
        &TaskType::new("transcription").unwrap(),
        Instant::now(),
        orchestrator.stats_half_life(),
    );
    assert_eq!(stats.attempts, 0.0);
}

#[tokio::test(start_paused = true)]
async fn when_every_model_fails_the_result_says_so() {
    let first = FakeModel::serving("first", "transcription", 0.9);
    let second = FakeModel::serving("second", "transcription", 0.8);
    first.behave(Behaviour::Fail(unavailable()));
    second.behave(Behaviour::Fail(unavailable()));
    let result = orchestrator(&[&first, &second])
        .execute(task("transcription"), None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.code, "UNAVAILABLE");
    assert!(error.message.contains("all 2 models"), "{}", error.message);
    assert_eq!(result.model_id.unwrap().as_str(), "second");
}

#[tokio::test(start_paused = true)]
async fn the_callers_deadline_ends_a_slow_call_as_deadline_exceeded_without_fallback() {
    let slow = FakeModel::serving("slow", "transcription", 0.9);
    let other = FakeModel::serving("other", "transcription", 0.8);
    slow.behave(Behaviour::Answer(Duration::from_secs(10)));
    let deadline = Instant::now() + Duration::from_millis(200);
    let result = orchestrator(&[&slow, &other])
        .execute(task("transcription"), Some(deadline))
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::DeadlineExceeded);
    assert_eq!(result.metrics.attempts[0].outcome, AttemptOutcome::TimedOut);
    assert_eq!(slow.calls()[0].deadline, deadline);
    assert!(other.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_worker_giving_up_at_the_callers_deadline_is_deadline_exceeded() {
    let model = FakeModel::serving("slow", "audio_analysis", 0.9);
    model.behave(Behaviour::FailAfter(
        Duration::from_millis(200),
        WorkerError {
            kind: WorkerErrorKind::Unavailable,
            code: "CANCELLED",
            message: "Timeout expired".to_owned(),
        },
    ));
    let deadline = Instant::now() + Duration::from_millis(200);
    let result = orchestrator(&[&model])
        .execute(task("audio_analysis"), Some(deadline))
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::DeadlineExceeded);
}

#[tokio::test(start_paused = true)]
async fn a_worker_giving_up_at_the_worker_timeout_is_a_timeout_not_a_failure() {
    let stuck = FakeModel::serving("stuck", "transcription", 0.9);
    stuck.behave(Behaviour::FailAfter(
        Duration::from_secs(30),
        WorkerError {
            kind: WorkerErrorKind::Unavailable,
            code: "CANCELLED",
            message: "Timeout expired".to_owned(),
        },
    ));
    let result = orchestrator(&[&stuck])
        .execute(task("transcription"), None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Failed);
    assert_eq!(result.metrics.attempts[0].outcome, AttemptOutcome::TimedOut);
    assert_eq!(result.error.unwrap().code, "DEADLINE_EXCEEDED");
}

#[tokio::test(start_paused = true)]
async fn the_worker_timeout_moves_on_to_the_next_model() {
    let stuck = FakeModel::serving("stuck", "transcription", 0.9);
    let quick = FakeModel::serving("quick", "transcription", 0.8);
    stuck.behave(Behaviour::Answer(Duration::from_secs(3600)));
    let result = orchestrator(&[&stuck, &quick])
        .execute(task("transcription"), None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert_eq!(result.metrics.attempts[0].outcome, AttemptOutcome::TimedOut);
    assert_eq!(result.metrics.attempts[0].latency, Duration::from_secs(30));
    assert_eq!(result.model_id.unwrap().as_str(), "quick");
}

#[tokio::test(start_paused = true)]
async fn traffic_moves_to_the_healthy_model_within_a_hundred_tasks() {
    let flaky = FakeModel::serving("flaky", "transcription", 0.9);
    let steady = FakeModel::serving("steady", "transcription", 0.7);
    flaky.behave(Behaviour::FailEvery(2, unavailable()));
    let orchestrator = orchestrator(&[&flaky, &steady]);
    let mut first_choice = Vec::new();
    for _ in 0..100 {
        let result = orchestrator
            .execute(task("transcription"), None)
            .await
            .unwrap();
        assert_eq!(
            result.status,
            TaskStatus::Succeeded,
            "fallbacks cover every failure"
        );
        first_choice.push(result.metrics.attempts[0].model_id.to_string());
        tokio::time::advance(Duration::from_millis(20)).await;
    }
    let steady_share = first_choice[70..].iter().filter(|m| *m == "steady").count();
    assert!(
        steady_share >= 24,
        "steady chosen first {steady_share} of the last 30"
    );
}

#[tokio::test(start_paused = true)]
async fn a_saturated_model_sheds_share_to_an_idle_peer() {
    let busy = FakeModel::serving("busy", "transcription", 0.8);
    let idle = FakeModel::serving("idle", "transcription", 0.8);
    let orchestrator = orchestrator(&[&busy, &idle]);
    let registry = orchestrator.registry();
    let transcription = TaskType::new("transcription").unwrap();
    // Both have a history of answers in 20 ms; `busy` ranks first by id.
    for model in registry.models() {
        for _ in 0..100 {
            model.record(
                &transcription,
                Instant::now(),
                orchestrator.stats_half_life(),
                CallOutcome::Success,
                Duration::from_millis(20),
            );
        }
    }
    let plan = orchestrator.plan(task("transcription")).unwrap().1;
    assert_eq!(plan.candidates[0].model_id.as_str(), "busy");
    // Four calls in flight fill `busy`'s capacity (4 by default) ...
    let busy_entry = registry.get(&crate::ModelId::new("busy").unwrap()).unwrap();
    let guards: Vec<_> = (0..4)
        .map(|_| busy_entry.replicas()[0].start_call())
        .collect();
    // ... so the next task goes to `idle`.
    let plan = orchestrator.plan(task("transcription")).unwrap().1;
    assert_eq!(plan.candidates[0].model_id.as_str(), "idle");
    assert_eq!(plan.candidates[1].in_flight, 4);
    drop(guards);
    assert_eq!(busy_entry.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_model_that_is_down_is_skipped_until_it_recovers() {
    let down = FakeModel::serving("down", "transcription", 0.9);
    let up = FakeModel::serving("up", "transcription", 0.5);
    let orchestrator = orchestrator(&[&down, &up]);
    let registry = orchestrator.registry();
    let down_entry = registry.get(&crate::ModelId::new("down").unwrap()).unwrap();
    down_entry.replicas()[0].set_health(Health::NotServing);
    let result = orchestrator
        .execute(task("transcription"), None)
        .await
        .unwrap();
    assert_eq!(result.model_id.unwrap().as_str(), "up");
    assert_eq!(result.routing.candidates.len(), 1);

    down_entry.replicas()[0].set_health(Health::Serving);
    let result = orchestrator
        .execute(task("transcription"), None)
        .await
        .unwrap();
    assert_eq!(result.model_id.unwrap().as_str(), "down");
}

#[tokio::test(start_paused = true)]
async fn replacing_the_models_keeps_the_statistics_of_unchanged_ones() {
    let kept = FakeModel::serving("kept", "transcription", 0.9);
    let dropped = FakeModel::serving("dropped", "transcription", 0.5);
    let orchestrator = orchestrator(&[&kept, &dropped]);
    orchestrator
        .execute(task("transcription"), None)
        .await
        .unwrap();

    let added = FakeModel::serving("added", "transcription", 0.7);
    orchestrator
        .replace_models([kept.described_entry(), added.described_entry()])
        .unwrap();
    let registry = orchestrator.registry();
    let ids: Vec<&str> = registry.models().map(|m| m.id().as_str()).collect();
    assert_eq!(ids, ["added", "kept"]);
    let stats = registry
        .get(&crate::ModelId::new("kept").unwrap())
        .unwrap()
        .stats(
            &TaskType::new("transcription").unwrap(),
            Instant::now(),
            orchestrator.stats_half_life(),
        );
    assert_eq!(stats.attempts, 1.0, "the kept model's history carried over");
}
