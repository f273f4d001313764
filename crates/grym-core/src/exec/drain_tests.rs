//! A drain: new tasks refused at once, running and queued ones given the
//! grace period, what is left ended (or, for durable tasks, handed back to
//! the store). Time is paused.

use super::*;
use crate::error::{ErrorKind, FailureKind};
use crate::ids::TaskType;
use crate::plan::selection::SelectionSettings;
use crate::store::DurabilitySettings;
use crate::task::{TaskInput, TaskStatus};
use crate::testing::{self, Behaviour, FakeModel, FakeStore, Holder};

fn task(id: &str) -> Task {
    Task::new(
        TaskId::new(id).unwrap(),
        TaskType::new("transcription").unwrap(),
        TaskInput::Text("hello".to_owned()),
    )
}

/// A model that answers after `answer`, one call at a time.
fn one_at_a_time(answer: Duration) -> FakeModel {
    let model = FakeModel::serving("only", "transcription", 0.9).limit(1);
    model.behave(Behaviour::Answer(answer));
    model
}

async fn submit(orchestrator: &Arc<Orchestrator>, id: &str) -> TaskHandle {
    orchestrator
        .submit(task(id), Deadline::NONE, None)
        .await
        .unwrap()
}

fn durable(model: &FakeModel) -> (Arc<FakeStore>, Arc<Orchestrator>) {
    let store = FakeStore::new();
    let registry = Registry::new([model.described_entry()]).unwrap();
    let settings = OrchestratorSettings {
        selection: SelectionSettings {
            seed: Some(3),
            ..SelectionSettings::default()
        },
        durability: DurabilitySettings::default(),
        ..OrchestratorSettings::default()
    };
    let kept: Arc<dyn Store> = Arc::clone(&store) as Arc<dyn Store>;
    let orchestrator = Orchestrator::new(Arc::new(registry), settings).with_store(kept);
    (store, Arc::new(orchestrator))
}

#[tokio::test(start_paused = true)]
async fn a_drain_lets_running_and_queued_tasks_finish_and_refuses_new_ones() {
    let model = one_at_a_time(Duration::from_secs(2));
    let orchestrator = testing::orchestrator(&[&model], SchedulerSettings::default());
    let running = submit(&orchestrator, "running").await;
    let queued = submit(&orchestrator, "queued").await;
    tokio::time::sleep(Duration::from_millis(10)).await;

    let started = Instant::now();
    let draining = tokio::spawn({
        let orchestrator = Arc::clone(&orchestrator);
        async move { orchestrator.drain(Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let refused = orchestrator
        .submit(task("late"), Deadline::NONE, None)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable);
    assert!(matches!(refused, Error::ShuttingDown), "{refused:?}");

    assert_eq!(running.result().await.status, TaskStatus::Succeeded);
    assert_eq!(queued.result().await.status, TaskStatus::Succeeded);
    assert!(draining.await.unwrap(), "every task ended on its own");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the drain ended with its last task, not with the grace period: {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn what_the_grace_period_does_not_cover_ends_cancelled() {
    let model = one_at_a_time(Duration::from_secs(3600));
    let orchestrator = testing::orchestrator(&[&model], SchedulerSettings::default());
    let running = submit(&orchestrator, "running").await;
    let queued = submit(&orchestrator, "queued").await;
    tokio::time::sleep(Duration::from_millis(10)).await;

    let started = Instant::now();
    assert!(!orchestrator.drain(Duration::from_secs(2)).await);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(3));
    for handle in [running, queued] {
        let result = handle.result().await;
        assert_eq!(result.status, TaskStatus::Cancelled);
        assert_eq!(result.error.as_ref().unwrap().kind, FailureKind::Cancelled);
    }
}

#[tokio::test(start_paused = true)]
async fn a_drain_hands_durable_tasks_left_at_its_end_back_to_the_store() {
    let model = one_at_a_time(Duration::from_secs(3600));
    let (store, orchestrator) = durable(&model);
    let running = submit(&orchestrator, "running").await;
    let queued = submit(&orchestrator, "queued").await;
    tokio::time::sleep(Duration::from_millis(10)).await;

    assert!(!orchestrator.drain(Duration::from_secs(1)).await);
    for (handle, id) in [(running, "running"), (queued, "queued")] {
        let result = handle.result().await;
        assert_eq!(result.status, TaskStatus::Cancelled);
        assert_eq!(
            result.error.as_ref().unwrap().kind,
            FailureKind::Unavailable,
            "the caller is told the task stays accepted"
        );
        let row = store
            .row(&crate::store::TaskKey::new(
                &Tenant::anonymous(),
                &TaskId::new(id).unwrap(),
            ))
            .unwrap();
        assert!(row.result.is_none(), "{id} stays unfinished in the store");
        assert_eq!(row.holder, Holder::Nobody, "{id} was handed back");
    }
}

#[tokio::test(start_paused = true)]
async fn a_drain_with_nothing_running_ends_at_once() {
    let model = one_at_a_time(Duration::ZERO);
    let orchestrator = testing::orchestrator(&[&model], SchedulerSettings::default());
    let started = Instant::now();
    assert!(orchestrator.drain(Duration::from_secs(30)).await);
    assert!(started.elapsed() < Duration::from_millis(10));
}
