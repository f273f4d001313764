//! An accepted task's life, in its own tokio task: it waits for its
//! dependencies (and is then planned again, with fresh statistics), waits in
//! its model's queue for a slot, then runs; or, for a composite, runs its
//! steps. Whatever happens (a deadline, a cancellation, a panic below) it
//! ends with exactly one result, recorded in the history and told to
//! whoever follows it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::SystemTime;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Orchestrator;
use super::job::{Ending, Events, Job, emit};
use crate::context::ContentHash;
use crate::deadline::Deadline;
use crate::error::FailureKind;
use crate::history::LiveTask;
use crate::ids::{TaskId, TaskType};
use crate::plan::Planned;
use crate::plan::graph::Graph;
use crate::schedule::Queued;
use crate::task::{Task, TaskEvent, TaskResult, TaskStatus};

/// A task's results as they come, for tasks that wait for it.
pub(crate) type Dependency = (TaskId, watch::Receiver<Option<Arc<TaskResult>>>);

/// What `submit` hands to the task it spawns.
pub(crate) struct Accepted {
    pub(crate) task: Task,
    /// The task as the store is to keep it, until it is written.
    pub(crate) record: Option<Task>,
    pub(crate) live: Arc<LiveTask>,
    pub(crate) dependencies: Vec<Dependency>,
    pub(crate) plan: Planned,
    pub(crate) deadline: Deadline,
    pub(crate) arrived: Instant,
    pub(crate) events: Events,
    /// Counts the task as queued until it starts or ends.
    pub(crate) queued: Queued,
}

impl Orchestrator {
    /// A task's life after acceptance: it always ends with
    /// `history.finish`.
    pub(super) async fn lifecycle(self: Arc<Self>, accepted: Accepted) -> Arc<TaskResult> {
        let (task, live, events) = (&accepted.task, &accepted.live, accepted.events.as_ref());
        let cancel = live.cancel.clone();
        let composite = match &accepted.plan {
            Planned::Composite(run) => Some(Arc::clone(run)),
            Planned::Single(_) => None,
        };
        let job = Job {
            task,
            live,
            deadline: accepted.deadline,
            arrived: accepted.arrived,
            events,
            context_hash: (!task.context.is_empty()).then(|| ContentHash::of(&task.context)),
            step: None,
            upstream: &[],
        };
        let progress = self.progress(job, accepted.dependencies, accepted.plan, accepted.queued);
        // Whether shutdown let the task go before it ended on its own.
        let mut left = false;
        let ending = tokio::select! {
            biased;
            () = cancel.cancelled() => if live.is_left() {
                left = true;
                Ending::failed(
                    TaskStatus::Cancelled,
                    FailureKind::Unavailable,
                    "grymd stopped before the task ended; the task stays accepted and runs again \
                     after a restart or on another replica",
                )
            } else {
                Ending::cancelled()
            },
            ending = AssertUnwindSafe(progress).catch_unwind() => ending.unwrap_or_else(|_| {
                // A panic below (a model client's, say) must not leave the
                // task without its result.
                tracing::error!(task.id = %task.id, "the task's execution panicked");
                Ending::failed(
                    TaskStatus::Failed,
                    FailureKind::Internal,
                    "an internal error ended the task",
                )
            }),
        };

        let mut result = live.snapshot();
        let finished_at = SystemTime::now();
        result.status = ending.status;
        result.output = ending.output;
        result.error = ending.error;
        result.model_id = ending
            .model
            .or_else(|| result.metrics.attempts.last().map(|a| a.model_id.clone()));
        match &composite {
            // A composite's steps are routed on their own: the models of
            // one step are not fallbacks of another's.
            Some(run) => super::composite::settle_steps(&run.graph, &mut result, events),
            None => {
                result.routing.fallbacks_taken = result
                    .metrics
                    .models_used()
                    .into_iter()
                    .skip(1)
                    .cloned()
                    .collect();
            }
        }
        result.metrics.total_latency = accepted.arrived.elapsed();
        if result.started_at.is_none() {
            result.metrics.queue_wait = result.metrics.total_latency;
        }
        result.finished_at = Some(finished_at);
        if let Some(error) = &result.error {
            tracing::warn!(task.id = %task.id, task.r#type = %task.task_type, status = ?result.status, code = (self.failure_names)(error.kind), reason = %error.message, "task did not succeed");
        }
        self.record_end(task, &result, composite.as_deref().map(|run| &run.graph));
        self.write_final(task, live, &result, left).await;
        let result = self.history.finish(&task.tenant, &task.id, result);
        emit(events, || TaskEvent::Finished(Box::new((*result).clone())));
        result
    }

    /// What a task's end says: on its span, in its metrics, and for a
    /// composite, in the statistics the bottleneck analysis reads.
    fn record_end(&self, task: &Task, result: &TaskResult, graph: Option<&Graph>) {
        let span = tracing::Span::current();
        span.record("grym.task.status", result.status.as_str());
        if let Some(model) = &result.model_id {
            span.record("grym.model", model.as_str());
        }
        span.record(
            "grym.task.fallback",
            !result.routing.fallbacks_taken.is_empty(),
        );
        if let Some(error) = &result.error {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", (self.failure_names)(error.kind));
        }
        // A composite's type is the caller's free text: metrics label it
        // `composite`, unless a configured recipe stood in.
        let label = match (graph, &result.recipe) {
            (Some(_), None) => TaskType::literal("composite"),
            _ => task.task_type.clone(),
        };
        self.instruments.task_finished(
            &label,
            result.status,
            task.priority,
            result.metrics.total_latency,
        );
        if let Some(graph) = graph {
            self.watcher.composite_ended(&task.task_type, graph, result);
        }
    }

    /// Dependencies, then the model's queue, then the attempts; or for a
    /// composite, its steps.
    async fn progress(
        &self,
        job: Job<'_>,
        dependencies: Vec<Dependency>,
        plan: Planned,
        queued: Queued,
    ) -> Ending {
        let plan = match plan {
            Planned::Single(plan) => plan,
            Planned::Composite(run) => {
                if let Some(ending) = wait_for(job.deadline, dependencies).await {
                    return ending;
                }
                return Box::pin(self.run_composite(job, &run, queued)).await;
            }
        };
        // The plan made at submission stands unless the task waits for
        // dependencies first: then the best model may have changed.
        let submitted_plan = dependencies.is_empty().then_some(plan);
        if let Some(ending) = wait_for(job.deadline, dependencies).await {
            return ending;
        }
        let key = self.scheduler.key(job.task.priority, job.deadline);
        let chosen = self
            .plan_and_wait(
                &job.task.task_type,
                job.task.input.modality(),
                submitted_plan,
                key,
                job.deadline,
                |plan, fresh| {
                    // The routing is built only for a snapshot that needs it or
                    // a caller that follows the task.
                    if fresh || job.events.is_some() {
                        let routing = plan.routing();
                        if fresh {
                            job.live
                                .update(|snapshot| snapshot.routing = routing.clone());
                        }
                        job.emit(|| TaskEvent::ModelChosen(routing));
                    }
                    None
                },
            )
            .await;
        let (plan, slot) = match chosen {
            Ok(chosen) => chosen,
            Err(ending) => return ending,
        };
        drop(queued);
        self.start(job).await;
        // Boxed: a task waiting in a queue holds only the small future of its
        // waiting state, not the larger one of running calls.
        Box::pin(self.run(job, &plan, key, slot)).await
    }
}

/// Waits for every dependency to succeed, within the deadline; the task's
/// ending if one does not.
async fn wait_for(deadline: Deadline, dependencies: Vec<Dependency>) -> Option<Ending> {
    for (dep, mut receiver) in dependencies {
        let waited = async {
            loop {
                if let Some(result) = receiver.borrow_and_update().clone() {
                    return Some(result);
                }
                if receiver.changed().await.is_err() {
                    return receiver.borrow().clone();
                }
            }
        };
        let Ok(result) = deadline.bound(waited).await else {
            return Some(Ending::failed(
                TaskStatus::DeadlineExceeded,
                FailureKind::DeadlineExceeded,
                "the deadline passed while the task waited; no model was called",
            ));
        };
        let reason = match result {
            Some(result) if result.status == TaskStatus::Succeeded => continue,
            Some(result) => format!(
                "dependency `{dep}` ended {:?}; the task did not run",
                result.status
            ),
            None => format!("dependency `{dep}` ended without a result"),
        };
        return Some(Ending::failed(
            TaskStatus::DependencyFailed,
            FailureKind::Precondition,
            reason,
        ));
    }
    None
}
