//! Waiting for a model: admission at submission (shed at once when the
//! planned model cannot take the task in time), then plan (or take the
//! plan made at submission) and wait in the chosen model's queue for a
//! slot, within the deadline. A reload that replaced the chosen model while
//! the task waited sends it back to planning, keeping its place in line.
//!
//! What a model is expected to take per call ([`Orchestrator::expected_latency`])
//! is its recent mean latency for the task type, or before any answer the
//! latency its capability declares: admission reads it to estimate the
//! model's throughput, and the attempts to leave unsent a call that could
//! not finish in the time left.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::Orchestrator;
use super::hedge::MEASURED_ANSWERS;
use super::job::Ending;
use crate::deadline::Deadline;
use crate::error::{Error, FailureKind};
use crate::ids::Modality;
use crate::ids::TaskType;
use crate::plan::Planned;
use crate::plan::selection::Plan;
use crate::registry::ModelEntry;
use crate::schedule::queue::QueueKey;
use crate::schedule::slots::Slot;
use crate::schedule::{Ask, NoSlot, Queued};
use crate::task::{Task, TaskStatus};

/// How often a task may find its chosen model replaced before it takes the
/// slot it has.
const MAX_REPLANS: u32 = 3;

impl Orchestrator {
    /// Admits a task planned at submission, or refuses it at once. A single
    /// task that waits for nothing is admitted for its planned model and
    /// shed when that model's queue is too long for it; one that waits for
    /// dependencies (its model is chosen later) and a composite (whose
    /// steps are admitted one by one) are bounded by `max_queue` only.
    pub(super) fn admit(
        &self,
        task: &Task,
        plan: &Planned,
        deadline: Deadline,
    ) -> Result<Queued, Error> {
        let first = match plan {
            Planned::Single(plan) if task.depends_on.is_empty() => plan.candidates.first(),
            _ => None,
        };
        let Some(first) = first else {
            return self.scheduler.admit();
        };
        let now = Instant::now();
        let ask = Ask {
            priority: task.priority,
            deadline,
            service: self.expected_latency(&first.model, &task.task_type, now),
        };
        self.scheduler.admit_for(&first.model, ask, now)
    }

    /// How long one call of `model` for `task_type` is expected to take:
    /// its recent mean latency; before any answer, its declared estimate or
    /// what its timeouts lasted, whichever is longer (the rule scoring
    /// uses), so a model that has only ever hung is not sent calls that
    /// cannot wait that long; `None` when nothing is known.
    pub(super) fn expected_latency(
        &self,
        model: &ModelEntry,
        task_type: &TaskType,
        now: Instant,
    ) -> Option<Duration> {
        let stats = self.planner.selector.rates(model, task_type, now);
        let expected = if stats.successes > 0.0 {
            stats.mean_latency
        } else {
            let declared = model
                .description()
                .capability(task_type)
                .map(|capability| capability.estimated_latency);
            declared.unwrap_or_default().max(stats.mean_latency)
        };
        (!expected.is_zero()).then_some(expected)
    }

    /// How long an answer of `model` for `task_type` can take and still be
    /// usual: the 99th percentile of its recent answers once it has
    /// [`MEASURED_ANSWERS`] of them; before that, the longer of the slowest
    /// of them and its declared estimate; never what its timeouts lasted. A call
    /// the caller's deadline cut after this long is blamed on the model;
    /// one cut sooner, as a normal answer near the mean would be by a
    /// tight deadline, says nothing of it.
    pub(super) fn usual_latency(
        &self,
        model: &ModelEntry,
        task_type: &TaskType,
        now: Instant,
    ) -> Option<Duration> {
        let stats = self.planner.selector.stats(model, task_type, now);
        let usual = if stats.successes >= MEASURED_ANSWERS {
            stats.p99
        } else {
            let declared = model
                .description()
                .capability(task_type)
                .map(|capability| capability.estimated_latency);
            let answered = (stats.successes > 0.0).then_some(stats.p99);
            declared.max(answered)?
        };
        (!usual.is_zero()).then_some(usual)
    }

    /// Plans `task_type` (or takes the plan made at submission) and waits
    /// for a slot on the chosen model; plans again, keeping its place in
    /// line, if a reload replaced that model while it waited. `chosen` sees
    /// each plan (and whether it is fresh) and may end the task instead.
    /// A fresh plan leaves out the models that do not take `input`.
    pub(super) async fn plan_and_wait(
        &self,
        task_type: &TaskType,
        input: Modality,
        mut submitted: Option<Plan>,
        key: QueueKey,
        deadline: Deadline,
        mut chosen: impl FnMut(&Plan, bool) -> Option<Ending>,
    ) -> Result<(Plan, Slot), Ending> {
        let mut replans = 0;
        loop {
            let (plan, fresh) = match submitted.take() {
                Some(plan) => (plan, false),
                None => match self.planner.selector.plan_for(
                    task_type,
                    Some(input),
                    &self.registry.load(),
                    Instant::now(),
                ) {
                    Ok(plan) => (plan, true),
                    Err(error) => {
                        return Err(Ending::failed(
                            TaskStatus::Failed,
                            FailureKind::Unavailable,
                            error.to_string(),
                        ));
                    }
                },
            };
            if let Some(ending) = chosen(&plan, fresh) {
                return Err(ending);
            }
            let Some(first) = plan.candidates.first() else {
                return Err(Ending::failed(
                    TaskStatus::Failed,
                    FailureKind::Unavailable,
                    "no candidate model",
                ));
            };
            let slot = self
                .wait_slot(&first.model, task_type, key, deadline)
                .await?;
            let current = self
                .registry
                .load()
                .get(first.model.id())
                .is_some_and(|entry| Arc::ptr_eq(entry, &first.model));
            replans += 1;
            if current || replans >= MAX_REPLANS {
                self.instruments.selected(first.model.id(), task_type);
                return Ok((plan, slot));
            }
        }
    }

    /// A slot on `model`'s queue within the deadline, in a `queue wait`
    /// span, the wait recorded (for the metric and the bottleneck
    /// analysis) however it ends.
    pub(super) async fn wait_slot(
        &self,
        model: &ModelEntry,
        task_type: &TaskType,
        key: QueueKey,
        deadline: Deadline,
    ) -> Result<Slot, Ending> {
        let waiting = Instant::now();
        let slot = self
            .scheduler
            .acquire(model, key, deadline)
            .instrument(tracing::debug_span!("queue wait", grym.model = %model.id()))
            .await;
        let waited = waiting.elapsed();
        self.instruments
            .queue_waited(task_type, key.priority, model.id(), waited);
        self.watcher.waited(model.id(), waited);
        slot.map_err(|no_slot| match no_slot {
            NoSlot::Deadline => Ending::failed(
                TaskStatus::DeadlineExceeded,
                FailureKind::DeadlineExceeded,
                format!(
                    "the deadline passed while waiting for model `{}`",
                    model.id()
                ),
            ),
            NoSlot::Full => Ending::failed(
                TaskStatus::Failed,
                FailureKind::Exhausted,
                format!("the queue of model `{}` is full", model.id()),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use crate::deadline::Deadline;
    use crate::error::{Error, ErrorKind};
    use crate::ids::{ModelId, TaskId, TaskType};
    use crate::schedule::SchedulerSettings;
    use crate::task::{Task, TaskInput, TaskStatus};
    use crate::testing::{self, Behaviour, FakeModel};

    const MS: Duration = Duration::from_millis(1);

    fn task() -> Task {
        Task::new(
            TaskId::generate(),
            TaskType::new("transcription").unwrap(),
            TaskInput::Text("hello".to_owned()),
        )
    }

    /// One slot, 100 ms a call, declared so.
    fn one_slot_model(id: &str, confidence: f64) -> FakeModel {
        let model = FakeModel::serving(id, "transcription", confidence)
            .limit(1)
            .estimate(100 * MS);
        model.behave(Behaviour::Answer(100 * MS));
        model
    }

    fn overloaded(error: &Error) -> bool {
        error.kind() == ErrorKind::CapacityExhausted && matches!(error, Error::Overloaded(_))
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_cannot_finish_before_its_deadline_is_refused_at_once() {
        let model = one_slot_model("m", 0.9);
        let orchestrator = testing::orchestrator(&[&model], SchedulerSettings::default());
        let deadline = Deadline::after(Instant::now(), 1_050 * MS);
        let mut handles = Vec::new();
        let mut refused = Vec::new();
        // The k-th waits k * 100 ms and runs 100 ms: ten fit in 1,050 ms.
        for _ in 0..12 {
            match orchestrator.submit(task(), deadline, None).await {
                Ok(handle) => handles.push(handle),
                Err(error) => refused.push(error),
            }
        }
        assert_eq!(handles.len(), 10);
        assert_eq!(refused.len(), 2);
        for error in &refused {
            assert!(overloaded(error), "{error}");
            assert!(error.to_string().contains("before its deadline"), "{error}");
            assert_eq!(error.retry_after(), Some(1_000 * MS), "{error}");
        }
        for handle in handles {
            assert_eq!(handle.result().await.status, TaskStatus::Succeeded);
        }
        assert_eq!(model.calls().len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_the_expected_wait_is_bounded_by_max_queue_wait() {
        let model = one_slot_model("m", 0.9);
        let settings = SchedulerSettings {
            max_queue_wait: 500 * MS,
            ..SchedulerSettings::default()
        };
        let orchestrator = testing::orchestrator(&[&model], settings);
        let mut admitted = 0;
        let mut refusal = None;
        for _ in 0..8 {
            match orchestrator.submit(task(), Deadline::NONE, None).await {
                Ok(_) => admitted += 1,
                Err(error) => refusal = Some(error),
            }
        }
        // Waits of 0, 100, ..., 500 ms are admitted; 600 ms is not.
        assert_eq!(admitted, 6);
        let error = refusal.unwrap();
        assert!(overloaded(&error), "{error}");
        assert!(error.to_string().contains("max_queue_wait"), "{error}");
        // Once the queue drains, a task is admitted again.
        tokio::time::sleep(1_000 * MS).await;
        assert!(
            orchestrator
                .submit(task(), Deadline::NONE, None)
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn higher_priority_work_is_not_counted_behind_lower() {
        let model = one_slot_model("m", 0.9);
        let settings = SchedulerSettings {
            max_queue_wait: 500 * MS,
            ..SchedulerSettings::default()
        };
        let orchestrator = testing::orchestrator(&[&model], settings);
        while orchestrator
            .submit(task(), Deadline::NONE, None)
            .await
            .is_ok()
        {}
        let mut urgent = task();
        urgent.priority = crate::ids::Priority::High;
        let result = orchestrator.execute(urgent, Deadline::NONE, None).await;
        assert_eq!(result.unwrap().status, TaskStatus::Succeeded);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_cannot_finish_in_the_time_left_is_never_sent_nor_counted() {
        // Declared 10 ms, measured 100 ms: admission lets the second task in
        // on the estimate; once the first answer is measured, the 50 ms left
        // when its slot comes are too few.
        let model = FakeModel::serving("m", "transcription", 0.9)
            .limit(1)
            .estimate(10 * MS);
        model.behave(Behaviour::Answer(100 * MS));
        let orchestrator = testing::orchestrator(&[&model], SchedulerSettings::default());
        let first = orchestrator
            .submit(task(), Deadline::NONE, None)
            .await
            .unwrap();
        let doomed = orchestrator
            .submit(task(), Deadline::after(Instant::now(), 150 * MS), None)
            .await
            .unwrap();
        assert_eq!(first.result().await.status, TaskStatus::Succeeded);
        let result = doomed.result().await;
        assert_eq!(result.status, TaskStatus::DeadlineExceeded);
        let message = &result.error.as_ref().unwrap().message;
        assert!(message.contains("not sent to model `m`"), "{message}");
        assert!(result.metrics.attempts.is_empty());
        assert_eq!(model.calls().len(), 1);
        let registry = orchestrator.registry.load();
        let entry = registry.get(&ModelId::new("m").unwrap()).unwrap();
        let stats = orchestrator.planner.selector.rates(
            entry,
            &TaskType::new("transcription").unwrap(),
            Instant::now(),
        );
        assert!((stats.attempts - 1.0).abs() < 0.01, "{stats:?}");
        assert_eq!(stats.failures + stats.timeouts, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_doomed_call_goes_to_a_fallback_that_fits() {
        let slow = FakeModel::serving("slow", "transcription", 0.9)
            .limit(1)
            .estimate(10 * MS);
        slow.behave(Behaviour::Answer(100 * MS));
        let fast = FakeModel::serving("fast", "transcription", 0.5).estimate(10 * MS);
        fast.behave(Behaviour::Answer(10 * MS));
        let orchestrator = testing::orchestrator(&[&slow, &fast], SchedulerSettings::default());
        let first = orchestrator
            .submit(task(), Deadline::NONE, None)
            .await
            .unwrap();
        let second = orchestrator
            .submit(task(), Deadline::after(Instant::now(), 150 * MS), None)
            .await
            .unwrap();
        assert_eq!(
            first.result().await.model_id.as_ref().unwrap().as_str(),
            "slow"
        );
        let result = second.result().await;
        assert_eq!(result.status, TaskStatus::Succeeded);
        assert_eq!(result.model_id.as_ref().unwrap().as_str(), "fast");
        assert_eq!(result.metrics.attempts.len(), 1);
        assert_eq!(slow.calls().len(), 1);
    }
}
