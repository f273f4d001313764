mod resilience;

use super::*;
use crate::client::WorkerError;
use crate::error::{ErrorKind, FailureKind};
use crate::ids::{ModelId, Priority, TaskType};
use crate::model::Health;
use crate::registry::CallOutcome;
use crate::task::{AttemptOutcome, Reason, TaskInput, TaskStatus};
use crate::testing::{self, Behaviour, FakeModel};

fn task(task_type: &str) -> Task {
    Task::new(
        TaskId::generate(),
        TaskType::new(task_type).unwrap(),
        TaskInput::Text("hello".to_owned()),
    )
}

fn orchestrator(models: &[&FakeModel]) -> Arc<Orchestrator> {
    orchestrator_with(models, SchedulerSettings::default())
}

fn orchestrator_with(models: &[&FakeModel], scheduler: SchedulerSettings) -> Arc<Orchestrator> {
    testing::orchestrator(models, scheduler)
}

fn unavailable() -> WorkerError {
    WorkerError::new(FailureKind::Unavailable, "connection refused")
}

fn tenant(name: &str) -> Tenant {
    Tenant::new(name).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_task_runs_on_the_most_confident_model() {
    let low = FakeModel::serving("low", "text_generation", 0.5);
    let high = FakeModel::serving("high", "text_generation", 0.9);
    let result = orchestrator(&[&low, &high])
        .execute(task("text_generation"), Deadline::NONE, None)
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
        .execute(task("transcription"), Deadline::NONE, None)
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
        .execute(task("transcription"), Deadline::NONE, None)
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
            .execute(task("audio_analysis"), Deadline::NONE, None)
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
    first.behave(Behaviour::Fail(WorkerError::new(
        FailureKind::InvalidInput,
        "not a WAV file",
    )));
    let orchestrator = orchestrator(&[&first, &second]);
    let result = orchestrator
        .execute(task("transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Failed);
    assert_eq!(result.error.unwrap().kind, FailureKind::InvalidInput);
    assert!(second.calls().is_empty());
    let entry = orchestrator.registry();
    let stats = entry.models().next().unwrap().stats(
        &TaskType::new("transcription").unwrap(),
        Instant::now(),
        orchestrator.planner.selector.half_life(),
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
        .execute(task("transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, FailureKind::Unavailable);
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
        .execute(task("transcription"), Deadline::at(deadline), None)
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
        WorkerError::new(FailureKind::Cancelled, "Timeout expired"),
    ));
    let deadline = Instant::now() + Duration::from_millis(200);
    let result = orchestrator(&[&model])
        .execute(task("audio_analysis"), Deadline::at(deadline), None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::DeadlineExceeded);
}

#[tokio::test(start_paused = true)]
async fn a_worker_giving_up_at_the_worker_timeout_is_a_timeout_not_a_failure() {
    let stuck = FakeModel::serving("stuck", "transcription", 0.9);
    stuck.behave(Behaviour::FailAfter(
        Duration::from_secs(30),
        WorkerError::new(FailureKind::Cancelled, "Timeout expired"),
    ));
    let result = orchestrator(&[&stuck])
        .execute(task("transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Failed);
    assert_eq!(result.metrics.attempts[0].outcome, AttemptOutcome::TimedOut);
    assert_eq!(result.error.unwrap().kind, FailureKind::DeadlineExceeded);
}

#[tokio::test(start_paused = true)]
async fn the_worker_timeout_moves_on_to_the_next_model() {
    let stuck = FakeModel::serving("stuck", "transcription", 0.9);
    let quick = FakeModel::serving("quick", "transcription", 0.8);
    stuck.behave(Behaviour::Answer(Duration::from_secs(3600)));
    let result = orchestrator(&[&stuck, &quick])
        .execute(task("transcription"), Deadline::NONE, None)
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
            .execute(task("transcription"), Deadline::NONE, None)
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
    let busy = FakeModel::serving("busy", "transcription", 0.8).limit(4);
    let idle = FakeModel::serving("idle", "transcription", 0.8).limit(4);
    let orchestrator = orchestrator(&[&busy, &idle]);
    let registry = orchestrator.registry();
    let transcription = TaskType::new("transcription").unwrap();
    // Both have a history of answers in 20 ms; `busy` ranks first by id.
    for model in registry.models() {
        for _ in 0..100 {
            orchestrator.planner.selector.record(
                model,
                &transcription,
                Instant::now(),
                CallOutcome::Success,
                Duration::from_millis(20),
            );
        }
    }
    let plan = orchestrator.plan(task("transcription")).unwrap().1;
    assert_eq!(plan.candidates[0].model_id.as_str(), "busy");
    // Four calls in flight fill `busy`'s declared capacity of 4 ...
    let busy_entry = registry.get(&ModelId::new("busy").unwrap()).unwrap();
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
async fn a_failing_model_loses_first_place_at_one_task_a_second() {
    let flaky = FakeModel::serving("flaky", "transcription", 0.95);
    let steady = FakeModel::serving("steady", "transcription", 0.7);
    flaky.behave(Behaviour::Fail(unavailable()));
    let orchestrator = orchestrator(&[&flaky, &steady]);
    let mut first_choice = Vec::new();
    for _ in 0..60 {
        let result = orchestrator
            .execute(task("transcription"), Deadline::NONE, None)
            .await
            .unwrap();
        assert_eq!(result.status, TaskStatus::Succeeded);
        first_choice.push(result.metrics.attempts[0].model_id.to_string());
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let switched = first_choice.iter().position(|m| m == "steady").unwrap();
    assert!(switched <= 40, "steady first only from task {switched}");
    assert!(
        first_choice[switched..].iter().all(|m| m == "steady"),
        "{first_choice:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_task_frees_its_replica_and_its_slot() {
    let (model, orchestrator) = one_at_a_time(Duration::from_secs(60));
    submit(&orchestrator, "long").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let registry = orchestrator.registry();
    let entry = registry.models().next().unwrap();
    assert_eq!(entry.in_flight(), 1);
    orchestrator
        .cancel(&TaskId::new("long").unwrap(), &Tenant::anonymous())
        .await
        .unwrap();
    assert_eq!(entry.in_flight(), 0);
    // The slot is free: the next task runs at once.
    model.behave(Behaviour::Answer(Duration::ZERO));
    let next = orchestrator
        .execute(task("transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(next.status, TaskStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_model_that_is_down_is_skipped_until_it_recovers() {
    let down = FakeModel::serving("down", "transcription", 0.9);
    let up = FakeModel::serving("up", "transcription", 0.5);
    let orchestrator = orchestrator(&[&down, &up]);
    let registry = orchestrator.registry();
    let down_entry = registry.get(&ModelId::new("down").unwrap()).unwrap();
    down_entry.replicas()[0].set_health(Health::NotServing);
    let result = orchestrator
        .execute(task("transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.model_id.unwrap().as_str(), "up");
    assert_eq!(result.routing.candidates.len(), 1);

    down_entry.replicas()[0].set_health(Health::Serving);
    let result = orchestrator
        .execute(task("transcription"), Deadline::NONE, None)
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
        .execute(task("transcription"), Deadline::NONE, None)
        .await
        .unwrap();

    let added = FakeModel::serving("added", "transcription", 0.7);
    let next = orchestrator
        .registry()
        .succeed_with([kept.described_entry(), added.described_entry()])
        .unwrap();
    orchestrator.replace_registry(next);
    let registry = orchestrator.registry();
    let ids: Vec<&str> = registry.models().map(|m| m.id().as_str()).collect();
    assert_eq!(ids, ["added", "kept"]);
    let stats = registry.get(&ModelId::new("kept").unwrap()).unwrap().stats(
        &TaskType::new("transcription").unwrap(),
        Instant::now(),
        orchestrator.planner.selector.half_life(),
    );
    assert_eq!(stats.attempts, 1.0, "the kept model's history carried over");
}

// ---- scheduling ----

/// One model that takes one call at a time, answering after `answer`.
fn one_at_a_time(answer: Duration) -> (FakeModel, Arc<Orchestrator>) {
    let model = FakeModel::serving("only", "transcription", 0.9).limit(1);
    model.behave(Behaviour::Answer(answer));
    let orchestrator = orchestrator(&[&model]);
    (model, orchestrator)
}

/// Submits a transcription task with this id.
async fn submit(orchestrator: &Arc<Orchestrator>, id: &str) -> TaskHandle {
    orchestrator
        .submit(with_id("transcription", id), Deadline::NONE, None)
        .await
        .unwrap()
}

fn with_id(task_type: &str, id: &str) -> Task {
    Task {
        id: TaskId::new(id).unwrap(),
        ..task(task_type)
    }
}

fn prioritized(id: &str, priority: crate::Priority) -> Task {
    Task {
        priority,
        ..with_id("transcription", id)
    }
}

fn called_ids(model: &FakeModel) -> Vec<String> {
    model
        .calls()
        .iter()
        .map(|c| c.task_id.to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn high_priority_tasks_overtake_queued_low_ones() {
    let (model, orchestrator) = one_at_a_time(Duration::from_millis(100));
    let mut handles = Vec::new();
    for i in 0..10 {
        handles.push(
            orchestrator
                .submit(
                    prioritized(&format!("low-{i}"), Priority::Low),
                    Deadline::NONE,
                    None,
                )
                .await
                .unwrap(),
        );
    }
    for i in 0..3 {
        handles.push(
            orchestrator
                .submit(
                    prioritized(&format!("high-{i}"), Priority::High),
                    Deadline::NONE,
                    None,
                )
                .await
                .unwrap(),
        );
    }
    for handle in handles {
        assert_eq!(handle.result().await.status, TaskStatus::Succeeded);
    }
    let order = called_ids(&model);
    let last_high = order.iter().rposition(|id| id.starts_with("high")).unwrap();
    let lows_after = order[last_high..]
        .iter()
        .filter(|id| id.starts_with("low"))
        .count();
    assert!(lows_after >= 7, "order: {order:?}");
}

#[tokio::test(start_paused = true)]
async fn a_task_whose_deadline_passes_in_the_queue_never_reaches_the_model() {
    let (model, orchestrator) = one_at_a_time(Duration::from_millis(100));
    let mut blockers = Vec::new();
    for i in 0..3 {
        blockers.push(
            orchestrator
                .submit(
                    with_id("transcription", &format!("b{i}")),
                    Deadline::NONE,
                    None,
                )
                .await
                .unwrap(),
        );
    }
    let hurried = Task {
        timeout: Some(Duration::from_millis(50)),
        ..with_id("transcription", "hurried")
    };
    let submitted = Instant::now();
    let result = orchestrator
        .submit(hurried, Deadline::NONE, None)
        .await
        .unwrap()
        .result()
        .await;
    assert_eq!(result.status, TaskStatus::DeadlineExceeded);
    assert!(result.metrics.attempts.is_empty());
    // It ended at its deadline, not when its turn came (300 ms later).
    assert_eq!(submitted.elapsed(), Duration::from_millis(50));
    for blocker in blockers {
        blocker.result().await;
    }
    assert!(!called_ids(&model).contains(&"hurried".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once_and_every_admitted_task_finishes() {
    let model = FakeModel::serving("only", "transcription", 0.9).limit(1);
    model.behave(Behaviour::Answer(Duration::from_millis(10)));
    let orchestrator = orchestrator_with(
        &[&model],
        SchedulerSettings {
            max_queue: 5,
            ..SchedulerSettings::default()
        },
    );
    let mut admitted = Vec::new();
    let mut refused = 0;
    for i in 0..20 {
        match orchestrator
            .submit(
                with_id("transcription", &format!("t{i}")),
                Deadline::NONE,
                None,
            )
            .await
        {
            Ok(handle) => admitted.push(handle),
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::CapacityExhausted);
                refused += 1;
            }
        }
    }
    assert_eq!(admitted.len(), 5);
    assert_eq!(refused, 15);
    for handle in admitted {
        assert_eq!(handle.result().await.status, TaskStatus::Succeeded);
    }
    assert_eq!(orchestrator.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dependent_task_starts_after_its_dependency_ends() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    model.behave(Behaviour::Answer(Duration::from_millis(100)));
    let orchestrator = orchestrator(&[&model]);
    let a = submit(&orchestrator, "a").await;
    let b = Task {
        depends_on: vec![TaskId::new("a").unwrap()],
        ..with_id("transcription", "b")
    };
    let b = orchestrator.submit(b, Deadline::NONE, None).await.unwrap();
    let a = a.result().await;
    let b = b.result().await;
    assert_eq!(b.status, TaskStatus::Succeeded);
    assert!(b.started_at.unwrap() >= a.finished_at.unwrap());
    assert_eq!(called_ids(&model), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_dependency_ends_the_dependent_without_running_it() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    model.behave(Behaviour::Fail(WorkerError::new(
        FailureKind::InvalidInput,
        "bad",
    )));
    let orchestrator = orchestrator(&[&model]);
    submit(&orchestrator, "a").await;
    let b = Task {
        depends_on: vec![TaskId::new("a").unwrap()],
        ..with_id("transcription", "b")
    };
    let b = orchestrator
        .submit(b, Deadline::NONE, None)
        .await
        .unwrap()
        .result()
        .await;
    assert_eq!(b.status, TaskStatus::DependencyFailed);
    assert!(b.error.as_ref().unwrap().message.contains("`a`"));
    assert_eq!(called_ids(&model), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn unknown_dependencies_and_cycles_are_refused_at_submission() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let orchestrator = orchestrator(&[&model]);
    let unknown = Task {
        depends_on: vec![TaskId::new("ghost").unwrap()],
        ..with_id("transcription", "x")
    };
    let error = orchestrator
        .submit(unknown, Deadline::NONE, None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    assert!(error.to_string().contains("ghost") && error.to_string().contains("task.depends_on"));

    let itself = Task {
        depends_on: vec![TaskId::new("x").unwrap()],
        ..with_id("transcription", "x")
    };
    let error = orchestrator
        .submit(itself, Deadline::NONE, None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cycle"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn another_tenants_tasks_cannot_be_seen_cancelled_or_depended_on() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let orchestrator = orchestrator(&[&model]);
    let mine = Task {
        tenant: tenant("acme"),
        ..with_id("transcription", "secret")
    };
    orchestrator
        .execute(mine, Deadline::NONE, None)
        .await
        .unwrap();
    let id = TaskId::new("secret").unwrap();
    assert!(orchestrator.get(&id, &tenant("acme")).await.is_ok());
    assert_eq!(
        orchestrator
            .get(&id, &tenant("globex"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        orchestrator
            .cancel(&id, &tenant("globex"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let theirs = Task {
        tenant: tenant("globex"),
        depends_on: vec![id],
        ..task("transcription")
    };
    assert_eq!(
        orchestrator
            .submit(theirs, Deadline::NONE, None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidRequest
    );
}

#[tokio::test(start_paused = true)]
async fn a_finished_id_is_not_reused_so_it_closes_no_cycle() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let orchestrator = orchestrator(&[&model]);
    orchestrator
        .execute(with_id("transcription", "a"), Deadline::NONE, None)
        .await
        .unwrap();
    let x = Task {
        depends_on: vec![TaskId::new("a").unwrap()],
        ..with_id("transcription", "x")
    };
    orchestrator.submit(x, Deadline::NONE, None).await.unwrap();
    // `x` waits for the finished `a`; `a` cannot come again waiting for `x`.
    let again = Task {
        depends_on: vec![TaskId::new("x").unwrap()],
        ..with_id("transcription", "a")
    };
    let error = orchestrator
        .submit(again, Deadline::NONE, None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AlreadyExists);
}

#[tokio::test(start_paused = true)]
async fn an_id_names_one_task_while_it_runs_and_while_its_result_is_kept() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    model.behave(Behaviour::Answer(Duration::from_millis(100)));
    let orchestrator = orchestrator(&[&model]);
    let first = submit(&orchestrator, "same").await;
    let again = || orchestrator.submit(with_id("transcription", "same"), Deadline::NONE, None);
    assert_eq!(again().await.unwrap_err().kind(), ErrorKind::AlreadyExists);
    let ended = first.result().await;

    // A retry after the end runs nothing again: the first result stands.
    let error = again().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AlreadyExists);
    assert!(error.to_string().contains("GetTask"), "{error}");
    let kept = orchestrator
        .get(&TaskId::new("same").unwrap(), &Tenant::anonymous())
        .await
        .unwrap();
    assert_eq!(kept, *ended);
    assert_eq!(called_ids(&model), ["same"]);
    // Another tenant's id is its own.
    let other = Task {
        tenant: Tenant::new("other").unwrap(),
        ..with_id("transcription", "same")
    };
    assert!(
        orchestrator
            .submit(other, Deadline::NONE, None)
            .await
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn get_task_follows_a_task_from_queued_to_final() {
    let (_model, orchestrator) = one_at_a_time(Duration::from_millis(100));
    let running = submit(&orchestrator, "r").await;
    let waiting = submit(&orchestrator, "w").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let id = |s: &str| TaskId::new(s).unwrap();
    assert_eq!(
        orchestrator
            .get(&id("r"), &Tenant::anonymous())
            .await
            .unwrap()
            .status,
        TaskStatus::Running
    );
    assert_eq!(
        orchestrator
            .get(&id("w"), &Tenant::anonymous())
            .await
            .unwrap()
            .status,
        TaskStatus::Queued
    );
    running.result().await;
    let done = waiting.result().await;
    let kept = orchestrator
        .get(&id("w"), &Tenant::anonymous())
        .await
        .unwrap();
    assert_eq!(kept.status, TaskStatus::Succeeded);
    assert!(
        kept.metrics.queue_wait >= Duration::from_millis(90),
        "{:?}",
        kept.metrics.queue_wait
    );
    assert_eq!(kept, *done);
    assert_eq!(
        orchestrator
            .get(&id("nobody"), &Tenant::anonymous())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_ends_a_queued_task_unrun_and_aborts_a_running_one() {
    let (model, orchestrator) = one_at_a_time(Duration::from_secs(60));
    let _running = submit(&orchestrator, "r").await;
    let _queued = submit(&orchestrator, "q").await;
    tokio::time::sleep(Duration::from_millis(10)).await;

    let queued = orchestrator
        .cancel(&TaskId::new("q").unwrap(), &Tenant::anonymous())
        .await
        .unwrap();
    assert_eq!(queued.status, TaskStatus::Cancelled);
    let running = orchestrator
        .cancel(&TaskId::new("r").unwrap(), &Tenant::anonymous())
        .await
        .unwrap();
    assert_eq!(running.status, TaskStatus::Cancelled);
    assert_eq!(called_ids(&model), ["r"], "the queued task never ran");
    assert_eq!(orchestrator.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_an_execute_call_cancels_its_task() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    model.behave(Behaviour::Answer(Duration::from_secs(60)));
    let orchestrator = orchestrator(&[&model]);
    let call = orchestrator.execute(with_id("transcription", "dropped"), Deadline::NONE, None);
    let _ = tokio::time::timeout(Duration::from_millis(50), call).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let result = orchestrator
        .get(&TaskId::new("dropped").unwrap(), &Tenant::anonymous())
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_waiting_tasks_and_refuses_new_ones() {
    let (_model, orchestrator) = one_at_a_time(Duration::from_secs(3600));
    let running = submit(&orchestrator, "r").await;
    let waiting = submit(&orchestrator, "w").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    orchestrator.begin_shutdown();
    assert_eq!(running.result().await.status, TaskStatus::Cancelled);
    assert_eq!(waiting.result().await.status, TaskStatus::Cancelled);
    let refused = orchestrator
        .submit(task("transcription"), Deadline::NONE, None)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable);
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_timeout_too_large_to_represent_is_no_bound() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let orchestrator = orchestrator(&[&model]);
    let task = Task {
        timeout: Some(Duration::from_secs(u64::MAX / 2)),
        ..task("transcription")
    };
    let result = orchestrator
        .execute(task, Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn events_tell_the_way_of_a_task_in_order() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let orchestrator = orchestrator(&[&model]);
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let result = orchestrator
        .execute(task("transcription"), Deadline::NONE, Some(sender))
        .await
        .unwrap();
    let mut names = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        names.push(match event {
            TaskEvent::Queued => "queued",
            TaskEvent::ModelChosen(_) => "model chosen",
            TaskEvent::Started => "started",
            TaskEvent::AttemptFinished(_) => "attempt finished",
            TaskEvent::StepStarted { .. } | TaskEvent::StepFinished(_) => "step",
            TaskEvent::OutputChunk { .. } => "chunk",
            TaskEvent::Finished(finished) => {
                assert_eq!(*finished, result);
                "finished"
            }
        });
    }
    assert_eq!(
        names,
        [
            "queued",
            "model chosen",
            "started",
            "attempt finished",
            "finished"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_followed_task_hears_its_models_chunks_in_order_before_the_attempt_ends() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let chunk = |text: &str| crate::task::OutputChunk {
        text: Some(text.to_owned()),
        json: None,
    };
    model.stream(vec![chunk("one"), chunk("two")]);
    let orchestrator = orchestrator(&[&model]);
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let result = orchestrator
        .execute(task("transcription"), Deadline::NONE, Some(sender))
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded);
    let mut seen = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        match event {
            TaskEvent::OutputChunk { step, model, chunk } => {
                assert_eq!((step, model.as_str()), (None, "only"));
                seen.push(chunk.text.unwrap());
            }
            TaskEvent::AttemptFinished(_) => seen.push("attempt finished".to_owned()),
            TaskEvent::Finished(_) => seen.push("finished".to_owned()),
            _ => {}
        }
    }
    assert_eq!(seen, ["one", "two", "attempt finished", "finished"]);
    // Unfollowed, the same model is called without streaming.
    let quiet = orchestrator
        .execute(task("transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(quiet.status, TaskStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_busy_model_does_not_hold_up_tasks_for_another() {
    let busy = FakeModel::serving("busy", "transcription", 0.9).limit(1);
    let free = FakeModel::serving("free", "text_generation", 0.9).limit(1);
    busy.behave(Behaviour::Answer(Duration::from_secs(60)));
    let orchestrator = orchestrator(&[&busy, &free]);
    for i in 0..3 {
        orchestrator
            .submit(
                with_id("transcription", &format!("slow{i}")),
                Deadline::NONE,
                None,
            )
            .await
            .unwrap();
    }
    let started = Instant::now();
    let quick = orchestrator
        .execute(task("text_generation"), Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(quick.status, TaskStatus::Succeeded);
    assert!(started.elapsed() < Duration::from_secs(1));
    orchestrator.shutdown().await;
}
