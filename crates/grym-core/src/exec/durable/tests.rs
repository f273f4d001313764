//! Durable work over a [`FakeStore`]: what is written when, what recovery
//! and the tending loop take up, and how outages are met. Time is paused;
//! wall-clock deadlines are written relative to `SystemTime::now()`.

use serde_json::json;

use super::*;
use crate::error::{ErrorKind, FailureKind};
use crate::exec::OrchestratorSettings;
use crate::ids::{ModelId, ModelKind, SessionId, StepId, TaskType};
use crate::model::Health;
use crate::plan::selection::SelectionSettings;
use crate::registry::stats::CallOutcome;
use crate::registry::{ModelEntry, Registry};
use crate::store::{DurabilitySettings, Outcome, StoredSession};
use crate::task::{
    CompositeSpec, FailurePolicy, Output, Policy, Reason, Routing, StepResult, StepSpec, StepTask,
    Strategy, TaskInput,
};
use crate::testing::{Behaviour, FakeModel, FakeStore, Holder, Op, object};
use tokio_util::sync::CancellationToken;

const MS: Duration = Duration::from_millis(1);

/// An orchestrator over `entries` that writes to `store`.
fn over(
    store: &Arc<FakeStore>,
    entries: Vec<ModelEntry>,
    durability: DurabilitySettings,
) -> Arc<Orchestrator> {
    let registry = Registry::new(entries).unwrap();
    let settings = OrchestratorSettings {
        selection: SelectionSettings {
            seed: Some(3),
            ..SelectionSettings::default()
        },
        durability,
        ..OrchestratorSettings::default()
    };
    let store: Arc<dyn Store> = Arc::clone(store) as Arc<dyn Store>;
    Arc::new(Orchestrator::new(Arc::new(registry), settings).with_store(store))
}

/// A new store and an orchestrator over `models`, described and serving.
fn durable(models: &[&FakeModel]) -> (Arc<FakeStore>, Arc<Orchestrator>) {
    durable_with(models, DurabilitySettings::default())
}

fn durable_with(
    models: &[&FakeModel],
    durability: DurabilitySettings,
) -> (Arc<FakeStore>, Arc<Orchestrator>) {
    let store = FakeStore::new();
    let entries = models.iter().map(|m| m.described_entry()).collect();
    let orchestrator = over(&store, entries, durability);
    (store, orchestrator)
}

fn id(id: &str) -> TaskId {
    TaskId::new(id).unwrap()
}

fn key(task: &str) -> TaskKey {
    TaskKey::new(&Tenant::anonymous(), &id(task))
}

fn task(task: &str, task_type: &str) -> Task {
    Task::new(
        id(task),
        TaskType::new(task_type).unwrap(),
        TaskInput::Text("hello".to_owned()),
    )
}

/// Where `task` stood as a replica last wrote it.
fn snapshot(task: &Task, status: TaskStatus) -> TaskResult {
    TaskResult {
        task_id: task.id.clone(),
        status,
        model_id: None,
        output: None,
        error: None,
        metrics: Default::default(),
        routing: Routing {
            task_type: task.task_type.clone(),
            policy: Policy::Scored,
            reason: Reason::HighestScore,
            estimated_latency: Duration::ZERO,
            candidates: Vec::new(),
            fallbacks_taken: Vec::new(),
            summary: None,
            excluded: Vec::new(),
        },
        queued_at: SystemTime::now(),
        started_at: (status != TaskStatus::Queued).then(SystemTime::now),
        finished_at: status.is_final().then(SystemTime::now),
        tenant: task.tenant.clone(),
        steps: Vec::new(),
        recipe: None,
    }
}

/// An unfinished task as a replica left it: `runs` starts, last seen at
/// `status`.
fn record(task: Task, status: TaskStatus, runs: u32) -> TaskRecord {
    TaskRecord {
        snapshot: snapshot(&task, status),
        deadline: None,
        runs,
        task,
    }
}

fn sequence(task_id: &str, steps: Vec<StepSpec>) -> Task {
    let mut task = task(task_id, "pipeline");
    task.input = TaskInput::Text("clip".to_owned());
    task.composite = Some(Box::new(CompositeSpec {
        strategy: Strategy::Sequential,
        steps,
        failure_policy: FailurePolicy::FailFast,
        output_step: None,
    }));
    task
}

fn step(id: &str, task_type: &str) -> StepSpec {
    StepSpec {
        id: StepId::new(id).unwrap(),
        task: StepTask::of(TaskType::new(task_type).unwrap()),
        after: Vec::new(),
        when: None,
    }
}

/// `listen` (transcription), then `answer` (text generation) on what was
/// heard.
fn listen_then_answer(task_id: &str) -> Task {
    let mut answer = step("answer", "text_generation");
    answer.task.input_from = Some(StepId::new("listen").unwrap());
    sequence(task_id, vec![step("listen", "transcription"), answer])
}

/// The `listen` step as it ended in an earlier run.
fn listened(heard: &str) -> StepResult {
    StepResult {
        step: StepId::new("listen").unwrap(),
        task_type: TaskType::new("transcription").unwrap(),
        status: TaskStatus::Succeeded,
        model_id: Some(ModelId::new("asr").unwrap()),
        output: Some(Output {
            text: Some(heard.to_owned()),
            ..Output::default()
        }),
        error: None,
        latency: 10 * MS,
        queue_wait: Duration::ZERO,
        attempts: 1,
        routing: None,
        budget: None,
    }
}

/// The task's final result, looked up every 10 ms for at most 10 s.
async fn settled(orchestrator: &Orchestrator, task: &str) -> TaskResult {
    for _ in 0..1_000 {
        if let Ok(result) = orchestrator.get(&id(task), &Tenant::anonymous()).await
            && result.status.is_final()
        {
            return result;
        }
        tokio::time::sleep(10 * MS).await;
    }
    panic!("`{task}` did not end within 10 s");
}

fn called(model: &FakeModel) -> Vec<(String, u32)> {
    model
        .calls()
        .iter()
        .map(|call| (call.task_id.to_string(), call.attempt))
        .collect()
}

/// Keeps the store tended until dropped.
struct Tending(CancellationToken);

impl Drop for Tending {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn tend(orchestrator: &Arc<Orchestrator>) -> Tending {
    let token = CancellationToken::new();
    tokio::spawn(Arc::clone(orchestrator).keep_lease(token.clone()));
    tokio::spawn(Arc::clone(orchestrator).tend_store(token.clone()));
    Tending(token)
}

fn capability_attempts(orchestrator: &Orchestrator) -> f64 {
    orchestrator.models()[0].capabilities[0].stats.attempts
}

// ---- what is written when ----

#[tokio::test(start_paused = true)]
async fn a_submitted_task_is_written_queued_with_no_runs_before_submit_returns() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    let timed = Task {
        timeout: Some(Duration::from_secs(60)),
        ..task("t", "transcription")
    };
    let before = SystemTime::now();
    let handle = orchestrator
        .submit(timed, Deadline::NONE, None)
        .await
        .unwrap();
    // The task may already have started: what matters is that its
    // acceptance was written first.
    assert_eq!(
        store.ops_on(&key("t"))[..1],
        [Op::Accept {
            key: key("t"),
            status: TaskStatus::Queued,
            runs: 0,
            taken: true,
        }]
    );
    let row = store.row(&key("t")).unwrap();
    assert_eq!(row.holder, Holder::Us);
    assert_eq!(row.record.task.id, id("t"));
    let deadline = row.record.deadline.expect("a timed task has a deadline");
    let left = deadline.duration_since(before).unwrap();
    assert!(
        left >= Duration::from_secs(59) && left <= Duration::from_secs(61),
        "{left:?}"
    );
    assert_eq!(handle.result().await.status, TaskStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn the_start_is_written_with_one_run_and_the_end_with_the_final_result() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    let result = orchestrator
        .submit(task("t", "transcription"), Deadline::NONE, None)
        .await
        .unwrap()
        .result()
        .await;
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert_eq!(
        store.ops_on(&key("t")),
        [
            Op::Accept {
                key: key("t"),
                status: TaskStatus::Queued,
                runs: 0,
                taken: true,
            },
            Op::Update {
                key: key("t"),
                status: TaskStatus::Running,
                runs: 1,
                steps: 0,
                finished: false,
            },
            Op::Finish {
                key: key("t"),
                status: TaskStatus::Succeeded,
                taken: true,
            },
        ]
    );
    let row = store.row(&key("t")).unwrap();
    assert_eq!(row.record.runs, 1);
    assert_eq!(row.result.as_ref(), Some(&*result));
    assert_eq!(called(&model), [("t".to_owned(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn an_executed_task_is_written_only_with_durable_execute() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    let result = orchestrator
        .execute(task("e", "transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded);
    let (events, _receiver) = tokio::sync::mpsc::unbounded_channel();
    let streamed = orchestrator
        .stream(task("s", "transcription"), Deadline::NONE, events)
        .await
        .unwrap();
    assert_eq!(streamed.result().await.status, TaskStatus::Succeeded);
    assert!(store.ops_on(&key("e")).is_empty(), "{:?}", store.ops());
    assert!(store.ops_on(&key("s")).is_empty(), "{:?}", store.ops());

    let (store, orchestrator) = durable_with(
        &[&model],
        DurabilitySettings {
            durable_execute: true,
            ..DurabilitySettings::default()
        },
    );
    orchestrator
        .execute(task("e", "transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    let ops = store.ops_on(&key("e"));
    assert!(
        matches!(
            ops.as_slice(),
            [
                Op::Accept { taken: true, .. },
                Op::Update { runs: 1, .. },
                Op::Finish {
                    status: TaskStatus::Succeeded,
                    taken: true,
                    ..
                }
            ]
        ),
        "{ops:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_outage_refuses_submissions_with_nothing_left_live_and_the_id_free_after() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    assert!(orchestrator.store_serving());
    store.set_down(true);
    let error = orchestrator
        .submit(task("t", "transcription"), Deadline::NONE, None)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::StoreUnavailable { .. }), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(!orchestrator.store_serving());
    assert!(
        orchestrator
            .history
            .get(&Tenant::anonymous(), &id("t"))
            .is_none()
    );
    assert_eq!(orchestrator.queued(), 0);
    // Reading a task this replica does not hold needs the store too.
    let error = orchestrator
        .get(&id("t"), &Tenant::anonymous())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::StoreUnavailable { .. }), "{error:?}");

    store.set_down(false);
    let result = orchestrator
        .submit(task("t", "transcription"), Deadline::NONE, None)
        .await
        .unwrap()
        .result()
        .await;
    assert!(orchestrator.store_serving());
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert_eq!(called(&model), [("t".to_owned(), 1)]);
    assert_eq!(store.finishes(&key("t")), [TaskStatus::Succeeded]);
}

#[tokio::test(start_paused = true)]
async fn a_submission_whose_caller_leaves_during_the_write_still_runs_once_written() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    store.hang_op("accept", true);
    // The caller goes away (its deadline passes, it disconnects) while the
    // store has not answered.
    let submitted = tokio::time::timeout(
        100 * MS,
        orchestrator.submit(task("t", "transcription"), Deadline::NONE, None),
    )
    .await;
    assert!(submitted.is_err());
    assert_eq!(store.ops(), [Op::Hung("accept")]);
    // The write goes on without it: once committed, the task runs, never
    // left live and unrun.
    store.hang_op("accept", false);
    let result = tokio::time::timeout(10 * MS * 100, async {
        loop {
            if let Ok(result) = orchestrator.get(&id("t"), &Tenant::anonymous()).await
                && result.status.is_final()
            {
                return result;
            }
            tokio::time::sleep(10 * MS).await;
        }
    })
    .await
    .expect("the task ends");
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert_eq!(orchestrator.queued(), 0);
    assert_eq!(store.finishes(&key("t")), [TaskStatus::Succeeded]);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_of_a_task_the_store_then_refuses_returns() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    store.hang_op("accept", true);
    let submitting = {
        let orchestrator = Arc::clone(&orchestrator);
        tokio::spawn(async move {
            orchestrator
                .submit(task("t", "transcription"), Deadline::NONE, None)
                .await
                .map(|_| ())
        })
    };
    tokio::time::sleep(10 * MS).await;
    let cancelling = {
        let orchestrator = Arc::clone(&orchestrator);
        tokio::spawn(async move { orchestrator.cancel(&id("t"), &Tenant::anonymous()).await })
    };
    tokio::time::sleep(10 * MS).await;
    store.set_down(true);
    store.hang_op("accept", false);
    let submitted = submitting.await.unwrap();
    assert!(
        matches!(submitted, Err(Error::StoreUnavailable { .. })),
        "{submitted:?}"
    );
    let cancelled = tokio::time::timeout(Duration::from_secs(1), cancelling).await;
    assert!(
        cancelled.is_ok(),
        "the cancel still waits for a task never accepted"
    );
}

#[tokio::test(start_paused = true)]
async fn an_id_unfinished_in_the_store_is_refused_and_a_finished_one_replaced() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    store.put(
        record(task("theirs", "transcription"), TaskStatus::Running, 1),
        Holder::Other,
    );
    let error = orchestrator
        .submit(task("theirs", "transcription"), Deadline::NONE, None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AlreadyExists);
    assert!(
        orchestrator
            .history
            .get(&Tenant::anonymous(), &id("theirs"))
            .is_none()
    );
    assert_eq!(store.row(&key("theirs")).unwrap().holder, Holder::Other);

    let done = task("done", "transcription");
    let ended = snapshot(&done, TaskStatus::Succeeded);
    store.put_final(record(done.clone(), TaskStatus::Running, 1), ended);
    let result = orchestrator
        .submit(done, Deadline::NONE, None)
        .await
        .unwrap()
        .result()
        .await;
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert_eq!(store.finishes(&key("done")), [TaskStatus::Succeeded]);
    assert_eq!(called(&model), [("done".to_owned(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn the_first_final_result_written_stands() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    model.behave(Behaviour::Answer(100 * MS));
    let (store, orchestrator) = durable(&[&model]);
    let handle = orchestrator
        .submit(task("t", "transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    tokio::time::sleep(10 * MS).await;
    // Another replica took the task over and ended it first.
    let theirs = snapshot(&task("t", "transcription"), TaskStatus::Cancelled);
    assert!(store.finish(&key("t"), &theirs).await.unwrap());
    handle.result().await;
    let row = store.row(&key("t")).unwrap();
    assert_eq!(row.result.unwrap().status, TaskStatus::Cancelled);
    assert!(store.ops_on(&key("t")).contains(&Op::Finish {
        key: key("t"),
        status: TaskStatus::Succeeded,
        taken: false,
    }));
}

// ---- recovery ----

#[tokio::test(start_paused = true)]
async fn recovery_takes_up_left_tasks_in_acceptance_order_and_ends_each_once() {
    let model = FakeModel::serving("only", "transcription", 0.9).limit(1);
    model.behave(Behaviour::Answer(10 * MS));
    let (store, orchestrator) = durable(&[&model]);
    store.put(
        record(task("queued", "transcription"), TaskStatus::Queued, 0),
        Holder::Nobody,
    );
    store.put(
        record(task("running", "transcription"), TaskStatus::Running, 1),
        Holder::Nobody,
    );
    store.put(
        record(task("theirs", "transcription"), TaskStatus::Running, 1),
        Holder::Other,
    );
    assert_eq!(orchestrator.recover().await, Ok(2));
    assert_eq!(
        settled(&orchestrator, "queued").await.status,
        TaskStatus::Succeeded
    );
    assert_eq!(
        settled(&orchestrator, "running").await.status,
        TaskStatus::Succeeded
    );
    // The one that had started once before is sent as its second attempt.
    assert_eq!(
        called(&model),
        [("queued".to_owned(), 1), ("running".to_owned(), 2)]
    );
    assert_eq!(store.finishes(&key("queued")), [TaskStatus::Succeeded]);
    assert_eq!(store.finishes(&key("running")), [TaskStatus::Succeeded]);
    assert_eq!(store.row(&key("running")).unwrap().record.runs, 2);
    let theirs = store.row(&key("theirs")).unwrap();
    assert_eq!(theirs.holder, Holder::Other);
    assert!(theirs.result.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_task_the_store_says_is_held_here_but_is_not_run_here_is_let_go_and_runs() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    // As an accept whose answer was lost after it committed leaves it.
    store.put(
        record(task("stray", "transcription"), TaskStatus::Queued, 0),
        Holder::Us,
    );
    let _tending = tend(&orchestrator);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        settled(&orchestrator, "stray").await.status,
        TaskStatus::Succeeded
    );
    assert_eq!(called(&model), [("stray".to_owned(), 1)]);
    assert_eq!(store.finishes(&key("stray")), [TaskStatus::Succeeded]);
}

#[tokio::test(start_paused = true)]
async fn a_task_started_max_attempts_times_ends_failed_without_calling_the_model() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    store.put(
        record(task("worn", "transcription"), TaskStatus::Running, 3),
        Holder::Nobody,
    );
    assert_eq!(orchestrator.recover().await, Ok(1));
    let result = settled(&orchestrator, "worn").await;
    assert_eq!(result.status, TaskStatus::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, FailureKind::Unavailable);
    assert!(
        error.message.contains("max_attempts 3"),
        "{}",
        error.message
    );
    assert_eq!(store.finishes(&key("worn")), [TaskStatus::Failed]);
    assert!(model.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_task_past_its_wall_clock_deadline_ends_deadline_exceeded_without_calling_the_model() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    let mut late = record(task("late", "transcription"), TaskStatus::Queued, 0);
    late.deadline = Some(SystemTime::now() - Duration::from_secs(1));
    store.put(late, Holder::Nobody);
    let mut timely = record(task("timely", "transcription"), TaskStatus::Queued, 0);
    timely.deadline = Some(SystemTime::now() + Duration::from_secs(3600));
    store.put(timely, Holder::Nobody);
    assert_eq!(orchestrator.recover().await, Ok(2));
    let result = settled(&orchestrator, "late").await;
    assert_eq!(result.status, TaskStatus::DeadlineExceeded);
    assert_eq!(result.error.unwrap().kind, FailureKind::DeadlineExceeded);
    assert_eq!(store.finishes(&key("late")), [TaskStatus::DeadlineExceeded]);
    assert_eq!(
        settled(&orchestrator, "timely").await.status,
        TaskStatus::Succeeded
    );
    assert_eq!(called(&model), [("timely".to_owned(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_task_whose_model_is_undescribed_at_recovery_runs_once_it_is_described() {
    let model = FakeModel::serving("late", "transcription", 0.9);
    let store = FakeStore::new();
    let orchestrator = over(&store, vec![model.entry()], DurabilitySettings::default());
    store.put(
        record(task("t", "transcription"), TaskStatus::Queued, 0),
        Holder::Nobody,
    );
    orchestrator.recover().await.unwrap();
    assert!(model.calls().is_empty());
    assert_eq!(
        store.row(&key("t")).unwrap().holder,
        Holder::Nobody,
        "a task that waits for its model is left claimable"
    );
    // The probe describes the model.
    let registry = orchestrator.registry();
    let entry = registry.get(&ModelId::new("late").unwrap()).unwrap();
    entry.learn_description(model.description());
    entry.replicas()[0].set_health(Health::Serving);
    let _tending = tend(&orchestrator);
    assert_eq!(
        settled(&orchestrator, "t").await.status,
        TaskStatus::Succeeded
    );
    assert_eq!(store.finishes(&key("t")), [TaskStatus::Succeeded]);
}

#[tokio::test(start_paused = true)]
async fn a_task_taken_over_while_its_model_is_down_is_released_and_runs_once_it_is_healthy() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    let registry = orchestrator.registry();
    let replica = Arc::clone(&registry.models().next().unwrap().replicas()[0]);
    replica.set_health(Health::NotServing);
    let _tending = tend(&orchestrator);
    tokio::time::sleep(10 * MS).await;
    // A replica that ran it stopped renewing its lease.
    store.put(
        record(task("t", "transcription"), TaskStatus::Running, 1),
        Holder::Nobody,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(model.calls().is_empty());
    let row = store.row(&key("t")).unwrap();
    assert!(row.result.is_none());
    assert_eq!(row.holder, Holder::Nobody, "released while it waits");
    assert!(store.ops().contains(&Op::Release(vec![key("t")])));

    replica.set_health(Health::Serving);
    assert_eq!(
        settled(&orchestrator, "t").await.status,
        TaskStatus::Succeeded
    );
    assert_eq!(called(&model), [("t".to_owned(), 2)]);
    assert_eq!(store.finishes(&key("t")), [TaskStatus::Succeeded]);
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_ended_before_the_restart_lets_its_dependent_run() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    let a = task("a", "transcription");
    let ended = snapshot(&a, TaskStatus::Succeeded);
    store.put_final(record(a, TaskStatus::Running, 1), ended);
    let b = Task {
        depends_on: vec![id("a")],
        ..task("b", "transcription")
    };
    store.put(record(b, TaskStatus::Queued, 0), Holder::Nobody);
    assert_eq!(orchestrator.recover().await, Ok(1));
    assert_eq!(
        settled(&orchestrator, "b").await.status,
        TaskStatus::Succeeded
    );
    assert_eq!(called(&model), [("b".to_owned(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_new_task_may_depend_on_one_that_ended_before_the_restart() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    let a = task("a", "transcription");
    let ended = snapshot(&a, TaskStatus::Succeeded);
    store.put_final(record(a, TaskStatus::Running, 1), ended);
    let b = Task {
        depends_on: vec![id("a")],
        ..task("b", "transcription")
    };
    let b = orchestrator
        .submit(b, Deadline::NONE, None)
        .await
        .unwrap()
        .result()
        .await;
    assert_eq!(b.status, TaskStatus::Succeeded);
    assert_eq!(called(&model), [("b".to_owned(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_dependent_taken_up_while_its_dependency_waits_for_its_model_waits_for_it() {
    let asr = FakeModel::serving("asr", "transcription", 0.9);
    let llm = FakeModel::serving("llm", "text_generation", 0.9);
    let (store, orchestrator) = durable(&[&asr, &llm]);
    let registry = orchestrator.registry();
    let asr_replica = Arc::clone(
        &registry
            .get(&ModelId::new("asr").unwrap())
            .unwrap()
            .replicas()[0],
    );
    asr_replica.set_health(Health::NotServing);
    store.put(
        record(task("a", "transcription"), TaskStatus::Queued, 0),
        Holder::Nobody,
    );
    let b = Task {
        depends_on: vec![id("a")],
        ..task("b", "text_generation")
    };
    store.put(record(b, TaskStatus::Queued, 0), Holder::Nobody);
    let _tending = tend(&orchestrator);
    tokio::time::sleep(Duration::from_secs(2)).await;
    asr_replica.set_health(Health::Serving);
    assert_eq!(
        settled(&orchestrator, "a").await.status,
        TaskStatus::Succeeded
    );
    let b = settled(&orchestrator, "b").await;
    assert_eq!(b.status, TaskStatus::Succeeded, "{:?}", b.error);
}

#[tokio::test(start_paused = true)]
async fn a_composite_whose_first_step_had_ended_runs_only_the_rest_after_recovery() {
    let asr = FakeModel::serving("asr", "transcription", 0.9);
    let llm = FakeModel::serving("llm", "text_generation", 0.9);
    let (store, orchestrator) = durable(&[&asr, &llm]);
    let mut left = record(listen_then_answer("c"), TaskStatus::Running, 1);
    left.snapshot.steps = vec![listened("heard before")];
    store.put(left, Holder::Nobody);
    assert_eq!(orchestrator.recover().await, Ok(1));
    let result = settled(&orchestrator, "c").await;
    assert_eq!(result.status, TaskStatus::Succeeded, "{:?}", result.error);
    assert!(asr.calls().is_empty(), "the ended step ran again");
    let calls = llm.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].input, TaskInput::Text("heard before".to_owned()));
    assert_eq!(calls[0].attempt, 2);
    let steps: Vec<_> = result
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.status))
        .collect();
    assert_eq!(
        steps,
        [
            ("listen", TaskStatus::Succeeded),
            ("answer", TaskStatus::Succeeded)
        ]
    );
    assert_eq!(store.finishes(&key("c")), [TaskStatus::Succeeded]);
}

#[tokio::test(start_paused = true)]
async fn a_step_ended_before_the_restart_still_hands_its_output_on_as_context() {
    let asr = FakeModel::serving("asr", "transcription", 0.9);
    let llm = FakeModel::serving("llm", "text_generation", 0.9);
    let (store, orchestrator) = durable(&[&asr, &llm]);
    let mut left = record(listen_then_answer("c"), TaskStatus::Running, 1);
    left.snapshot.steps = vec![listened("heard before")];
    store.put(left, Holder::Nobody);
    orchestrator.recover().await.unwrap();
    settled(&orchestrator, "c").await;
    let call = &llm.calls()[0];
    assert!(
        call.context
            .get("steps")
            .is_some_and(|s| s.get("listen").is_some()),
        "as in a run without restart, `answer` sees `listen`'s output: {:?}",
        call.context
    );
}

#[tokio::test(start_paused = true)]
async fn a_composite_left_at_shutdown_resumes_on_the_next_start_without_rerunning_ended_steps() {
    let asr = FakeModel::serving("asr", "transcription", 0.9);
    let llm = FakeModel::serving("llm", "text_generation", 0.9);
    llm.behave(Behaviour::Answer(Duration::from_secs(3600)));
    let (store, first) = durable(&[&asr, &llm]);
    first
        .submit(listen_then_answer("c"), Deadline::NONE, None)
        .await
        .unwrap();
    assert!(
        store
            .row(&key("c"))
            .unwrap()
            .record
            .task
            .composite
            .is_some(),
        "the stored task keeps its steps"
    );
    tokio::time::sleep(100 * MS).await;
    first.shutdown().await;
    let row = store.row(&key("c")).unwrap();
    assert!(row.result.is_none());
    assert_eq!(
        row.record.snapshot.steps.len(),
        1,
        "the ended step was written"
    );

    llm.behave(Behaviour::Answer(Duration::ZERO));
    let entries = vec![asr.described_entry(), llm.described_entry()];
    let second = over(&store, entries, DurabilitySettings::default());
    assert_eq!(second.recover().await, Ok(1));
    let result = settled(&second, "c").await;
    assert_eq!(result.status, TaskStatus::Succeeded, "{:?}", result.error);
    assert_eq!(asr.calls().len(), 1, "`listen` ran again");
    assert_eq!(llm.calls().len(), 2);
    assert_eq!(store.finishes(&key("c")), [TaskStatus::Succeeded]);
}

#[tokio::test(start_paused = true)]
async fn no_update_is_written_after_a_tasks_final_result() {
    let asr = FakeModel::serving("asr", "transcription", 0.9);
    let llm = FakeModel::serving("llm", "text_generation", 0.9);
    let (store, orchestrator) = durable(&[&asr, &llm]);
    let result = orchestrator
        .submit(listen_then_answer("c"), Deadline::NONE, None)
        .await
        .unwrap()
        .result()
        .await;
    assert_eq!(result.status, TaskStatus::Succeeded);
    tokio::time::sleep(100 * MS).await;
    let ops = store.ops_on(&key("c"));
    let finish = ops
        .iter()
        .position(|op| matches!(op, Op::Finish { .. }))
        .unwrap();
    assert_eq!(finish, ops.len() - 1, "written after the end: {ops:?}");
}

#[tokio::test(start_paused = true)]
async fn a_task_ended_unrun_while_the_store_refuses_its_result_is_written_later() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    store.put(
        record(task("worn", "transcription"), TaskStatus::Running, 3),
        Holder::Nobody,
    );
    store.fail_op("finish", true);
    orchestrator.recover().await.unwrap();
    assert_eq!(
        settled(&orchestrator, "worn").await.status,
        TaskStatus::Failed
    );
    store.fail_op("finish", false);
    let _tending = tend(&orchestrator);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(store.finishes(&key("worn")), [TaskStatus::Failed]);
}

// ---- cancellation and reads through the store ----

#[tokio::test(start_paused = true)]
async fn a_cancellation_asked_in_the_store_cancels_the_running_task_within_one_renewal() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    model.behave(Behaviour::Answer(Duration::from_secs(3600)));
    let (store, orchestrator) = durable(&[&model]);
    let handle = orchestrator
        .submit(task("t", "transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    let _tending = tend(&orchestrator);
    tokio::time::sleep(10 * MS).await;
    assert_eq!(model.calls().len(), 1);
    // Another replica's CancelTask.
    assert!(store.request_cancel(&key("t")).await.unwrap());
    let asked = Instant::now();
    let renewal = DurabilitySettings::default().renew_every();
    let result = tokio::time::timeout(renewal + 10 * MS, handle.result())
        .await
        .expect("cancelled within one renewal");
    assert_eq!(result.status, TaskStatus::Cancelled);
    assert!(asked.elapsed() <= renewal, "{:?}", asked.elapsed());
    assert_eq!(store.finishes(&key("t")), [TaskStatus::Cancelled]);
}

#[tokio::test(start_paused = true)]
async fn get_and_cancel_of_a_task_held_elsewhere_read_the_store() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    let theirs = task("theirs", "transcription");
    store.put(
        record(theirs.clone(), TaskStatus::Running, 1),
        Holder::Other,
    );
    let anonymous = Tenant::anonymous();
    let got = orchestrator.get(&id("theirs"), &anonymous).await.unwrap();
    assert_eq!(got.status, TaskStatus::Running);
    assert!(store.ops().contains(&Op::Get(key("theirs"))));
    // Another tenant does not see it.
    let other = Tenant::new("globex").unwrap();
    assert_eq!(
        orchestrator
            .get(&id("theirs"), &other)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    let cancelling = {
        let orchestrator = Arc::clone(&orchestrator);
        tokio::spawn(async move {
            orchestrator
                .cancel(&id("theirs"), &Tenant::anonymous())
                .await
        })
    };
    tokio::time::sleep(250 * MS).await;
    assert!(store.row(&key("theirs")).unwrap().cancel_requested);
    assert!(!cancelling.is_finished(), "it waits for the task's end");
    // The replica that holds it cancels it at its renewal.
    let cancelled = snapshot(&theirs, TaskStatus::Cancelled);
    assert!(store.finish(&key("theirs"), &cancelled).await.unwrap());
    let result = tokio::time::timeout(Duration::from_secs(1), cancelling)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(result.status, TaskStatus::Cancelled);
    // Ended, it is read as it ended, and cancelling it again changes nothing.
    let again = orchestrator
        .cancel(&id("theirs"), &anonymous)
        .await
        .unwrap();
    assert_eq!(again.status, TaskStatus::Cancelled);

    for missing in [
        orchestrator.get(&id("nobody"), &anonymous).await,
        orchestrator.cancel(&id("nobody"), &anonymous).await,
    ] {
        assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
    }
    assert!(model.calls().is_empty());
}

// ---- outages after acceptance, and shutdown ----

#[tokio::test(start_paused = true)]
async fn a_final_result_the_store_could_not_take_is_written_once_it_is_back() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    model.behave(Behaviour::Answer(100 * MS));
    let (store, orchestrator) = durable(&[&model]);
    let handle = orchestrator
        .submit(task("t", "transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    store.set_down(true);
    // The caller hears the end even though the store did not take it.
    assert_eq!(handle.result().await.status, TaskStatus::Succeeded);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(store.row(&key("t")).unwrap().result.is_none());
    let refused = store
        .ops()
        .iter()
        .filter(|op| **op == Op::Refused("finish"))
        .count();
    assert!(refused >= 3, "tried again every second: {refused}");

    store.set_down(false);
    tokio::time::sleep(1_100 * MS).await;
    let row = store.row(&key("t")).unwrap();
    assert_eq!(row.result.unwrap().status, TaskStatus::Succeeded);
    assert_eq!(store.finishes(&key("t")), [TaskStatus::Succeeded]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(store.finishes(&key("t")), [TaskStatus::Succeeded], "once");
}

#[tokio::test(start_paused = true)]
async fn shutdown_leaves_durable_tasks_unfinished_and_released_for_the_next_start() {
    let model = FakeModel::serving("only", "transcription", 0.9).limit(1);
    model.behave(Behaviour::Answer(Duration::from_secs(3600)));
    let (store, first) = durable(&[&model]);
    let running = first
        .submit(task("running", "transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    let queued = first
        .submit(task("queued", "transcription"), Deadline::NONE, None)
        .await
        .unwrap();
    let (events, _receiver) = tokio::sync::mpsc::unbounded_channel();
    let streamed = first
        .stream(task("streamed", "transcription"), Deadline::NONE, events)
        .await
        .unwrap();
    tokio::time::sleep(10 * MS).await;
    assert_eq!(called(&model), [("running".to_owned(), 1)]);
    first.shutdown().await;

    for handle in [running, queued] {
        let result = handle.result().await;
        assert_eq!(result.status, TaskStatus::Cancelled);
        assert_eq!(
            result.error.as_ref().unwrap().kind,
            FailureKind::Unavailable
        );
    }
    let streamed = streamed.result().await;
    assert_eq!(streamed.status, TaskStatus::Cancelled);
    assert_eq!(
        streamed.error.as_ref().unwrap().kind,
        FailureKind::Cancelled
    );
    for left in ["running", "queued"] {
        let row = store.row(&key(left)).unwrap();
        assert!(row.result.is_none(), "{left} was finished");
        assert_eq!(row.holder, Holder::Nobody, "{left} was not released");
        assert!(store.finishes(&key(left)).is_empty());
    }
    let released: Vec<TaskKey> = store
        .ops()
        .into_iter()
        .filter_map(|op| match op {
            Op::Release(keys) => Some(keys),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(released.len(), 2);
    assert!(released.contains(&key("running")) && released.contains(&key("queued")));
    assert!(store.row(&key("streamed")).is_none());

    // The next start takes both up; the one that had started runs again as
    // its second attempt.
    model.behave(Behaviour::Answer(Duration::ZERO));
    let second = over(
        &store,
        vec![model.described_entry()],
        DurabilitySettings::default(),
    );
    assert_eq!(second.recover().await, Ok(2));
    assert_eq!(
        settled(&second, "running").await.status,
        TaskStatus::Succeeded
    );
    assert_eq!(
        settled(&second, "queued").await.status,
        TaskStatus::Succeeded
    );
    assert_eq!(
        called(&model)[1..],
        [("running".to_owned(), 2), ("queued".to_owned(), 1)]
    );
}

// ---- outcomes shared between replicas ----

fn theirs(model: &str, outcome: CallOutcome) -> Outcome {
    Outcome {
        model: ModelId::new(model).unwrap(),
        task_type: TaskType::new("transcription").unwrap(),
        outcome,
        latency: 20 * MS,
    }
}

#[tokio::test(start_paused = true)]
async fn other_replicas_outcomes_reach_the_statistics_after_the_first_read() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    for _ in 0..3 {
        store.publish_theirs(theirs("only", CallOutcome::Success));
    }
    let _tending = tend(&orchestrator);
    tokio::time::sleep(10 * MS).await;
    assert_eq!(
        capability_attempts(&orchestrator),
        0.0,
        "what others did before this replica started is not read"
    );
    for _ in 0..4 {
        store.publish_theirs(theirs("only", CallOutcome::Failure));
    }
    store.publish_theirs(theirs("gone", CallOutcome::Failure));
    tokio::time::sleep(DurabilitySettings::default().renew_every()).await;
    let stats = &orchestrator.models()[0].capabilities[0].stats;
    assert!((stats.attempts - 4.0).abs() < 0.01, "{stats:?}");
    assert!((stats.failures - 4.0).abs() < 0.01, "{stats:?}");
    let cursors: Vec<u64> = store
        .ops()
        .into_iter()
        .filter_map(|op| match op {
            Op::OthersOutcomes(cursor) => Some(cursor),
            _ => None,
        })
        .collect();
    assert_eq!(cursors[..2], [0, 3]);

    // This replica's own calls are published for the others.
    orchestrator
        .submit(task("t", "transcription"), Deadline::NONE, None)
        .await
        .unwrap()
        .result()
        .await;
    tokio::time::sleep(DurabilitySettings::default().renew_every()).await;
    let published = store.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].model.as_str(), "only");
    assert_eq!(published[0].outcome, CallOutcome::Success);
}

#[tokio::test(start_paused = true)]
async fn other_replicas_failures_move_the_choice_to_another_model() {
    let flaky = FakeModel::serving("flaky", "transcription", 0.95);
    let steady = FakeModel::serving("steady", "transcription", 0.7);
    let (store, orchestrator) = durable(&[&flaky, &steady]);
    let first = || {
        orchestrator
            .plan(task("p", "transcription"))
            .unwrap()
            .1
            .candidates[0]
            .model_id
            .to_string()
    };
    assert_eq!(first(), "flaky");
    let _tending = tend(&orchestrator);
    tokio::time::sleep(10 * MS).await;
    for _ in 0..50 {
        store.publish_theirs(theirs("flaky", CallOutcome::Failure));
    }
    tokio::time::sleep(DurabilitySettings::default().renew_every()).await;
    assert_eq!(first(), "steady");
    assert!(flaky.calls().is_empty());
}

// ---- sessions ----

#[tokio::test(start_paused = true)]
async fn a_session_put_is_written_through_and_refused_during_an_outage() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    let anonymous = Tenant::anonymous();
    let s1 = SessionId::new("s1").unwrap();
    let context = object(json!({"user": "ada"}));
    orchestrator
        .put_session(&anonymous, &s1, context.clone(), true)
        .await
        .unwrap();
    assert!(store.ops().contains(&Op::PutSession(s1.clone())));
    assert_eq!(
        store.stored_session(&anonymous, &s1).unwrap().context,
        context
    );

    store.set_down(true);
    let s2 = SessionId::new("s2").unwrap();
    let error = orchestrator
        .put_session(&anonymous, &s2, context, true)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::StoreUnavailable { .. }), "{error:?}");
    store.set_down(false);
    assert!(store.stored_session(&anonymous, &s2).is_none());
    assert!(orchestrator.session(&anonymous, &s2).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_session_put_the_store_refused_leaves_the_session_as_it_was() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    let anonymous = Tenant::anonymous();
    let s1 = SessionId::new("s1").unwrap();
    let before = object(json!({"user": "ada"}));
    orchestrator
        .put_session(&anonymous, &s1, before.clone(), true)
        .await
        .unwrap();
    store.set_down(true);
    let refused = orchestrator
        .put_session(&anonymous, &s1, object(json!({"user": "grace"})), true)
        .await;
    assert!(refused.is_err());
    store.set_down(false);
    let session = orchestrator.session(&anonymous, &s1).await.unwrap();
    assert_eq!(*session.context, before, "the refused put was applied");
}

#[tokio::test(start_paused = true)]
async fn a_session_only_in_the_store_is_read_back_by_session_and_by_a_task_naming_it() {
    let model = FakeModel::serving("only", "transcription", 0.9);
    let (store, orchestrator) = durable(&[&model]);
    let anonymous = Tenant::anonymous();
    let earlier = (ModelKind::new("fake"), object(json!({"text": "earlier"})));
    for (name, user) in [("s1", "ada"), ("s2", "grace")] {
        store.put_stored_session(
            &anonymous,
            &SessionId::new(name).unwrap(),
            StoredSession {
                context: object(json!({"user": user})),
                entries: vec![earlier.clone()],
            },
        );
    }
    let s1 = SessionId::new("s1").unwrap();
    let session = orchestrator.session(&anonymous, &s1).await.unwrap();
    assert_eq!(session.context["user"], "ada");
    assert_eq!(session.entries.len(), 1);
    assert_eq!(session.entries[0].context["text"], "earlier");

    let s2 = SessionId::new("s2").unwrap();
    let named = Task {
        session_id: Some(s2.clone()),
        ..task("t", "transcription")
    };
    let result = orchestrator
        .submit(named, Deadline::NONE, None)
        .await
        .unwrap()
        .result()
        .await;
    assert_eq!(result.status, TaskStatus::Succeeded);
    let call = &model.calls()[0];
    assert_eq!(call.context["user"], "grace");
    assert_eq!(call.context["history"].as_array().unwrap().len(), 1);
    // The task's output joins the session in the store too.
    tokio::time::sleep(10 * MS).await;
    assert_eq!(
        store.stored_session(&anonymous, &s2).unwrap().entries.len(),
        2
    );
    assert!(store.ops().contains(&Op::AppendSession(s2)));
}
