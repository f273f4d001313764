//! Waiting for a model: plan (or take the plan made at submission), then
//! wait in the chosen model's queue for a slot, within the deadline. A
//! reload that replaced the chosen model while the task waited sends it
//! back to planning, keeping its place in line.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument;

use super::Orchestrator;
use super::job::Ending;
use crate::deadline::Deadline;
use crate::error::FailureKind;
use crate::ids::TaskType;
use crate::plan::selection::Plan;
use crate::registry::ModelEntry;
use crate::schedule::NoSlot;
use crate::schedule::queue::QueueKey;
use crate::schedule::slots::Slot;
use crate::task::TaskStatus;

/// How often a task may find its chosen model replaced before it takes the
/// slot it has.
const MAX_REPLANS: u32 = 3;

impl Orchestrator {
    /// Plans `task_type` (or takes the plan made at submission) and waits
    /// for a slot on the chosen model; plans again, keeping its place in
    /// line, if a reload replaced that model while it waited. `chosen` sees
    /// each plan (and whether it is fresh) and may end the task instead.
    pub(super) async fn plan_and_wait(
        &self,
        task_type: &TaskType,
        mut submitted: Option<Plan>,
        key: QueueKey,
        deadline: Deadline,
        mut chosen: impl FnMut(&Plan, bool) -> Option<Ending>,
    ) -> Result<(Plan, Slot), Ending> {
        let mut replans = 0;
        loop {
            let (plan, fresh) = match submitted.take() {
                Some(plan) => (plan, false),
                None => match self.planner.selector.plan(
                    task_type,
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
            .instrument(tracing::debug_span!("queue wait", model = %model.id()))
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
