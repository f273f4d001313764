use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::client::WorkerError;
use crate::deadline::Deadline;
use crate::error::{ErrorKind, FailureKind};
use crate::exec::Orchestrator;
use crate::ids::{ModelId, StepId, TaskId, TaskType};
use crate::model::Health;
use crate::schedule::SchedulerSettings;
use crate::task::{
    CompositeSpec, FailurePolicy, Reason, StepSpec, StepTask, Strategy, Task, TaskInput,
    TaskResult, TaskStatus,
};
use crate::testing::{self, Behaviour, FakeModel};

const MS: Duration = Duration::from_millis(1);

fn orchestrator(models: &[&FakeModel]) -> Arc<Orchestrator> {
    testing::orchestrator(models, SchedulerSettings::default())
}

fn step(id: &str, task_type: &str, after: &[&str], when: Option<&str>) -> StepSpec {
    StepSpec {
        id: StepId::new(id).unwrap(),
        task: StepTask::of(TaskType::new(task_type).unwrap()),
        after: after.iter().map(|a| StepId::new(*a).unwrap()).collect(),
        when: when.map(str::to_owned),
    }
}

fn composite(strategy: Strategy, policy: FailurePolicy, steps: Vec<StepSpec>) -> Task {
    let mut task = Task::new(
        TaskId::generate(),
        TaskType::new("pipeline").unwrap(),
        TaskInput::Text("clip".to_owned()),
    );
    task.composite = Some(Box::new(CompositeSpec {
        strategy,
        steps,
        failure_policy: policy,
        output_step: None,
    }));
    task
}

fn statuses(result: &TaskResult) -> Vec<(&str, TaskStatus)> {
    result
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.status))
        .collect()
}

fn unavailable() -> WorkerError {
    WorkerError::new(FailureKind::Unavailable, "down")
}

#[tokio::test(start_paused = true)]
async fn a_sequence_passes_each_output_on_as_reshaped_context_and_input_if_asked() {
    let asr = FakeModel::serving("asr", "transcription", 0.9).kind("speech-recognition");
    let llm = FakeModel::serving("llm", "text_generation", 0.9).kind("text-generation");
    let mut task = composite(
        Strategy::Sequential,
        FailurePolicy::FailFast,
        vec![
            step("listen", "transcription", &[], None),
            step("answer", "text_generation", &[], None),
            step("again", "text_generation", &[], None),
        ],
    );
    task.composite.as_mut().unwrap().steps[1].task.input_from =
        Some(StepId::new("listen").unwrap());
    let result = orchestrator(&[&asr, &llm])
        .execute(task, Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded, "{:?}", result.error);
    assert_eq!(result.model_id.clone().unwrap().as_str(), "llm");
    assert_eq!(result.routing.reason, Reason::Composite);
    let call = &llm.calls()[0];
    // The fake answers with its task type: that text is the input of the
    // step that takes it, and reaches the text model reshaped as a
    // transcript.
    assert_eq!(call.input, TaskInput::Text("transcription".to_owned()));
    assert_eq!(
        call.context["steps"]["listen"],
        json!({"transcript": "transcription"})
    );
    assert_eq!(call.task_id.as_str(), format!("{}/answer", result.task_id));
    assert_eq!(asr.calls()[0].input, TaskInput::Text("clip".to_owned()));
    // Without `input_from`, a step takes the composite's input.
    assert_eq!(llm.calls()[1].input, TaskInput::Text("clip".to_owned()));
    let steps = &result.steps;
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0].attempts, 1);
    assert_eq!(steps[1].model_id.as_ref().unwrap().as_str(), "llm");
    assert!(result.metrics.attempts.iter().all(|a| a.step.is_some()));
    assert!(result.routing.fallbacks_taken.is_empty());
}

#[tokio::test(start_paused = true)]
async fn parallel_steps_run_at_once() {
    let models: Vec<FakeModel> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let model = FakeModel::serving(id, &format!("type_{id}"), 0.9);
            model.behave(Behaviour::Answer(200 * MS));
            model
        })
        .collect();
    let task = composite(
        Strategy::Parallel,
        FailurePolicy::FailFast,
        vec![
            step("a", "type_a", &[], None),
            step("b", "type_b", &[], None),
            step("c", "type_c", &[], None),
        ],
    );
    let started = Instant::now();
    let result = orchestrator(&models.iter().collect::<Vec<_>>())
        .execute(task, Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert!(started.elapsed() < 300 * MS, "took {:?}", started.elapsed());
    // The output is the last step's in list order.
    assert_eq!(result.model_id.unwrap().as_str(), "c");
}

#[tokio::test(start_paused = true)]
async fn a_branch_runs_only_when_its_condition_holds_and_no_match_fails() {
    let first = FakeModel::serving("first", "classify", 0.9);
    let refine = FakeModel::serving("refine", "refine", 0.9);
    let branches = || {
        vec![
            step("first", "classify", &[], None),
            step(
                "refine",
                "refine",
                &[],
                Some("steps.first.text == 'classify'"),
            ),
            step(
                "other",
                "refine",
                &[],
                Some("steps.first.text != 'classify'"),
            ),
        ]
    };
    let orchestrator = orchestrator(&[&first, &refine]);
    let matched = orchestrator
        .execute(
            composite(Strategy::Conditional, FailurePolicy::FailFast, branches()),
            Deadline::NONE,
            None,
        )
        .await
        .unwrap();
    assert_eq!(matched.status, TaskStatus::Succeeded);
    assert_eq!(
        statuses(&matched),
        [
            ("first", TaskStatus::Succeeded),
            ("refine", TaskStatus::Succeeded),
            ("other", TaskStatus::Skipped)
        ]
    );

    let mut none = branches();
    none[1].when = Some("steps.first.text == 'never'".to_owned());
    none[2].when = Some("false".to_owned());
    let unmatched = orchestrator
        .execute(
            composite(Strategy::Conditional, FailurePolicy::FailFast, none),
            Deadline::NONE,
            None,
        )
        .await
        .unwrap();
    assert_eq!(unmatched.status, TaskStatus::Failed);
    let error = unmatched.error.unwrap();
    assert_eq!(error.kind, FailureKind::Precondition);
    assert!(
        error.message.contains("no branch matched"),
        "{}",
        error.message
    );
    assert_eq!(refine.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_the_rest_and_continue_lets_it_run() {
    let broken = FakeModel::serving("broken", "broken", 0.9);
    broken.behave(Behaviour::FailAfter(50 * MS, unavailable()));
    let slow = FakeModel::serving("slow", "slow", 0.9);
    slow.behave(Behaviour::Answer(200 * MS));
    let steps = || {
        vec![
            step("bad", "broken", &[], None),
            step("good", "slow", &[], None),
            step("after_bad", "slow", &["bad"], None),
        ]
    };
    let orchestrator = orchestrator(&[&broken, &slow]);
    let fast = orchestrator
        .execute(
            composite(Strategy::Parallel, FailurePolicy::FailFast, steps()),
            Deadline::NONE,
            None,
        )
        .await
        .unwrap();
    assert_eq!(fast.status, TaskStatus::Failed);
    assert!(
        fast.error
            .as_ref()
            .unwrap()
            .message
            .starts_with("step `bad` failed")
    );
    assert_eq!(
        statuses(&fast),
        [
            ("bad", TaskStatus::Failed),
            ("good", TaskStatus::Cancelled),
            ("after_bad", TaskStatus::Cancelled)
        ]
    );

    // Without a named output step, the output is the last step's, which
    // did not run: the composite ends as it did.
    let unnamed = orchestrator
        .execute(
            composite(Strategy::Parallel, FailurePolicy::Continue, steps()),
            Deadline::NONE,
            None,
        )
        .await
        .unwrap();
    assert_eq!(unnamed.status, TaskStatus::DependencyFailed);
    let mut named = composite(Strategy::Parallel, FailurePolicy::Continue, steps());
    named.composite.as_mut().unwrap().output_step = Some(StepId::new("good").unwrap());
    let carried_on = orchestrator
        .execute(named, Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(
        statuses(&carried_on),
        [
            ("bad", TaskStatus::Failed),
            ("good", TaskStatus::Succeeded),
            ("after_bad", TaskStatus::DependencyFailed)
        ]
    );
    assert_eq!(carried_on.status, TaskStatus::Succeeded);
    assert_eq!(carried_on.model_id.unwrap().as_str(), "slow");
}

#[tokio::test(start_paused = true)]
async fn a_recipe_stands_in_when_no_healthy_model_serves_the_type() {
    let gama = FakeModel::serving("gama", "audio_question_answering", 0.95);
    let asr = FakeModel::serving("wav2vec2", "transcription", 0.9).kind("speech-recognition");
    let llm = FakeModel::serving("llm", "text_generation", 0.9).kind("text-generation");
    let orchestrator = orchestrator(&[&gama, &asr, &llm]);
    orchestrator
        .registry()
        .get(&ModelId::new("gama").unwrap())
        .unwrap()
        .replicas()[0]
        .set_health(Health::NotServing);
    let task = Task::new(
        TaskId::generate(),
        TaskType::new("audio_question_answering").unwrap(),
        TaskInput::Text("clip".to_owned()),
    );
    let result = orchestrator
        .execute(task, Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded, "{:?}", result.error);
    let recipe = result.recipe.clone().unwrap();
    assert!(recipe.reason.contains("gama"), "{}", recipe.reason);
    assert_eq!(result.routing.reason, Reason::Recipe);
    assert_eq!(
        statuses(&result),
        [
            ("transcription", TaskStatus::Succeeded),
            ("text_generation", TaskStatus::Succeeded)
        ]
    );
    assert!(gama.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_late_step_cannot_spend_the_time_of_the_steps_after_it() {
    let first = FakeModel::serving("first", "one", 0.9).estimate(1000 * MS);
    first.behave(Behaviour::Answer(500 * MS));
    let last = FakeModel::serving("last", "two", 0.9).estimate(1000 * MS);
    let orchestrator = orchestrator(&[&first, &last]);
    let task = composite(
        Strategy::Sequential,
        FailurePolicy::FailFast,
        vec![
            step("first", "one", &[], None),
            step("last", "two", &[], None),
        ],
    );
    let deadline = Instant::now() + 1200 * MS;
    let result = orchestrator
        .execute(task, Deadline::at(deadline), None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::DeadlineExceeded);
    assert_eq!(
        statuses(&result),
        [
            ("first", TaskStatus::Succeeded),
            ("last", TaskStatus::DeadlineExceeded)
        ]
    );
    // The first step had half the time (its estimate is half the path).
    assert_eq!(result.steps[0].budget, Some(600 * MS));
    assert!(last.calls().is_empty(), "the last step was never sent");

    // A step that overruns its share is cut at it.
    first.behave(Behaviour::Answer(900 * MS));
    let task = composite(
        Strategy::Sequential,
        FailurePolicy::FailFast,
        vec![
            step("first", "one", &[], None),
            step("last", "two", &[], None),
        ],
    );
    let started = Instant::now();
    let result = orchestrator
        .execute(task, Deadline::at(started + 1200 * MS), None)
        .await
        .unwrap();
    assert_eq!(result.steps[0].status, TaskStatus::DeadlineExceeded);
    assert!(started.elapsed() <= 601 * MS, "{:?}", started.elapsed());
}

#[tokio::test]
async fn an_invalid_condition_or_an_unserved_step_is_refused_at_submission() {
    let model = FakeModel::serving("m", "known", 0.9);
    let orchestrator = orchestrator(&[&model]);
    let bad = composite(
        Strategy::Sequential,
        FailurePolicy::FailFast,
        vec![
            step("first", "known", &[], None),
            step(
                "second",
                "known",
                &[],
                Some("steps.first.output.confidence <"),
            ),
        ],
    );
    let error = orchestrator
        .submit(bad, Deadline::NONE, None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    assert!(error.to_string().contains("step `second`"), "{error}");

    let unserved = composite(
        Strategy::Sequential,
        FailurePolicy::FailFast,
        vec![
            step("first", "known", &[], None),
            step("x", "unknown", &[], None),
        ],
    );
    let error = orchestrator
        .submit(unserved, Deadline::NONE, None)
        .await
        .unwrap_err();
    assert!(error.to_string().starts_with("step `x`"), "{error}");
    assert!(model.calls().is_empty());
}

#[test]
fn plan_shows_stages_and_the_critical_path() {
    let fast = FakeModel::serving("fast", "fast", 0.9).estimate(10 * MS);
    let slow = FakeModel::serving("slow", "slow", 0.9).estimate(300 * MS);
    let orchestrator = orchestrator(&[&fast, &slow]);
    let task = composite(
        Strategy::Parallel,
        FailurePolicy::FailFast,
        vec![
            step("a", "fast", &[], None),
            step("b", "slow", &["a"], None),
            step("c", "fast", &["a"], None),
        ],
    );
    let (_, routing, plan) = orchestrator.plan(task).unwrap();
    let plan = plan.unwrap();
    assert_eq!(routing.reason, Reason::Composite);
    let stages: Vec<Vec<&str>> = plan
        .stages
        .iter()
        .map(|s| s.iter().map(StepId::as_str).collect())
        .collect();
    assert_eq!(stages, [vec!["a"], vec!["b", "c"]]);
    let critical: Vec<&str> = plan.critical_path.iter().map(StepId::as_str).collect();
    assert_eq!(critical, ["a", "b"]);
    assert_eq!(plan.estimated_latency, 310 * MS);
    assert!(plan.steps.iter().all(|s| s.routing.is_some()));
}

#[tokio::test(start_paused = true)]
async fn a_step_without_an_estimate_still_gets_a_fair_share() {
    let quick = FakeModel::serving("quick", "quick", 0.9).estimate(Duration::ZERO);
    quick.behave(Behaviour::Answer(50 * MS));
    let slow = FakeModel::serving("slow", "slow", 0.9).estimate(1000 * MS);
    let orchestrator = orchestrator(&[&quick, &slow]);
    let task = composite(
        Strategy::Sequential,
        FailurePolicy::FailFast,
        vec![step("a", "quick", &[], None), step("b", "slow", &[], None)],
    );
    let result = orchestrator
        .execute(task, Deadline::at(Instant::now() + 10_000 * MS), None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded, "{:?}", result.error);
    // Counted as the mean of the known estimates: half of the time.
    assert_eq!(result.steps[0].budget, Some(5000 * MS));
}

#[tokio::test(start_paused = true)]
async fn a_failed_branch_fails_a_conditional_composite_even_when_continuing() {
    let first = FakeModel::serving("first", "classify", 0.9);
    let broken = FakeModel::serving("broken", "refine", 0.9);
    broken.behave(Behaviour::Fail(unavailable()));
    let task = composite(
        Strategy::Conditional,
        FailurePolicy::Continue,
        vec![
            step("first", "classify", &[], None),
            step("refine", "refine", &[], Some("true")),
            step("other", "refine", &[], Some("false")),
        ],
    );
    let result = orchestrator(&[&first, &broken])
        .execute(task, Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Failed);
    assert!(
        result.error.unwrap().message.contains("`refine`"),
        "the branch that ran is the output step"
    );
}

#[tokio::test(start_paused = true)]
async fn a_condition_that_fails_to_evaluate_stops_running_steps_under_fail_fast() {
    let slow = FakeModel::serving("slow", "slow", 0.9);
    slow.behave(Behaviour::Answer(10_000 * MS));
    let task = composite(
        Strategy::Parallel,
        FailurePolicy::FailFast,
        vec![
            step("long", "slow", &[], None),
            step("broken", "slow", &[], Some("input.missing > 1")),
        ],
    );
    let started = Instant::now();
    let result = orchestrator(&[&slow])
        .execute(task, Deadline::NONE, None)
        .await
        .unwrap();
    assert!(started.elapsed() < 100 * MS, "{:?}", started.elapsed());
    assert_eq!(
        statuses(&result),
        [
            ("long", TaskStatus::Cancelled),
            ("broken", TaskStatus::Failed)
        ]
    );
    // Cancelled before its call began: no call was made for it.
    assert_eq!(result.steps[0].attempts, 0);
    assert!(slow.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_condition_can_run_a_recovery_step_when_continuing() {
    let broken = FakeModel::serving("broken", "broken", 0.9);
    broken.behave(Behaviour::Fail(unavailable()));
    let backup = FakeModel::serving("backup", "backup", 0.9);
    let task = composite(
        Strategy::Sequential,
        FailurePolicy::Continue,
        vec![
            step("try", "broken", &[], None),
            step(
                "recover",
                "backup",
                &[],
                Some("steps.try.status == 'FAILED'"),
            ),
        ],
    );
    let result = orchestrator(&[&broken, &backup])
        .execute(task, Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert_eq!(result.model_id.unwrap().as_str(), "backup");
}

#[tokio::test]
async fn a_huge_step_timeout_is_no_bound_and_step_context_is_checked() {
    let model = FakeModel::serving("m", "known", 0.9);
    let orchestrator = orchestrator(&[&model]);
    let mut task = composite(
        Strategy::Sequential,
        FailurePolicy::FailFast,
        vec![step("a", "known", &[], None)],
    );
    task.composite.as_mut().unwrap().steps[0].task.timeout = Some(Duration::MAX);
    let result = orchestrator
        .execute(task, Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded, "{:?}", result.error);

    let mut reserved = composite(
        Strategy::Sequential,
        FailurePolicy::FailFast,
        vec![step("a", "known", &[], None)],
    );
    reserved.composite.as_mut().unwrap().steps[0].task.context =
        crate::testing::object(json!({"steps": {"x": 1}}));
    let error = orchestrator
        .submit(reserved, Deadline::NONE, None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    assert!(error.to_string().starts_with("step `a`"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn steps_waiting_for_their_model_count_against_max_queue() {
    // One call at a time, each 100 ms: the steps of a parallel composite
    // wait for the model's slot, and each waiting step is queued work.
    let slow = FakeModel::serving("slow", "echo", 0.9).limit(1);
    slow.behave(Behaviour::Answer(100 * MS));
    let orchestrator = testing::orchestrator(
        &[&slow],
        SchedulerSettings {
            max_queue: 2,
            ..SchedulerSettings::default()
        },
    );
    let task = composite(
        Strategy::Parallel,
        FailurePolicy::Continue,
        (0..4)
            .map(|i| step(&format!("s{i}"), "echo", &[], None))
            .collect(),
    );
    let running = tokio::spawn({
        let orchestrator = Arc::clone(&orchestrator);
        async move { orchestrator.execute(task, Deadline::NONE, None).await }
    });
    let mut most = 0;
    while !running.is_finished() {
        most = most.max(orchestrator.queued());
        tokio::time::sleep(MS).await;
    }
    let result = running.await.unwrap().unwrap();
    assert!(most <= 2, "{most} steps queued with max_queue = 2");
    let refused: Vec<&str> = result
        .steps
        .iter()
        .filter(|s| {
            s.error
                .as_ref()
                .is_some_and(|e| e.kind == FailureKind::Exhausted)
        })
        .map(|s| s.step.as_str())
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "one step finds the queue full: {:?}",
        statuses(&result)
    );
    assert_eq!(slow.calls().len(), 3);
}
