//! Steps 1 to 3 at submission: a task is analysed, its dependencies
//! checked, planned and admitted, or refused at once with an [`Error`].
//! Once accepted it is live in the history and runs in a tokio task of its
//! own, whose life [`lifecycle`](super::lifecycle) follows.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::Orchestrator;
use super::handle::TaskHandle;
use super::job::emit;
use super::lifecycle::{Accepted, Dependency};
use crate::deadline::Deadline;
use crate::error::Error;
use crate::history::LiveTask;
use crate::plan::{Planned, analysis};
use crate::schedule::deps;
use crate::task::{Task, TaskEvent, TaskResult, TaskStatus};

impl Orchestrator {
    /// Accepts a task and returns at once; the task runs on its own. Refused
    /// at once when it cannot be accepted. `deadline` is the caller's; the
    /// task's own `timeout` counts from now, and the earlier wins.
    pub fn submit(
        self: &Arc<Self>,
        task: Task,
        deadline: Deadline,
        events: Option<mpsc::UnboundedSender<TaskEvent>>,
    ) -> Result<TaskHandle, Error> {
        // The root of the task's trace: analysis and planning here, the
        // rest in the task it spawns.
        let span = tracing::info_span!(
            "task",
            task.id = %task.id,
            task.r#type = %task.task_type,
            task.priority = task.priority.as_str(),
            task.composite = task.composite.is_some(),
            task.status = tracing::field::Empty,
            task.fallback = tracing::field::Empty,
            task.rejected = tracing::field::Empty,
            grym.model = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error.r#type = tracing::field::Empty,
        );
        let accepted = span.in_scope(|| self.accept(task, deadline, events, &span));
        if let Err(error) = &accepted {
            self.instruments.rejected(error);
            span.record("task.rejected", error.label());
            span.record("otel.status_code", "ERROR");
            span.record("error.type", error.label());
        }
        accepted
    }

    /// What `submit` does, inside the task's span.
    fn accept(
        self: &Arc<Self>,
        mut task: Task,
        deadline: Deadline,
        events: Option<mpsc::UnboundedSender<TaskEvent>>,
        span: &tracing::Span,
    ) -> Result<TaskHandle, Error> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let arrived = Instant::now();
        tracing::debug_span!("analyse")
            .in_scope(|| analysis::analyse(&mut task, &self.context, self.planner.limits()))?;
        deps::check(&task.id, &task.depends_on, |id| {
            self.history.contains(&task.tenant, id)
        })?;
        let plan = self.plan_in_span(&mut task, arrived)?;
        let deadline = deadline.earliest(Deadline::after_timeout(arrived, task.timeout));
        let queued = self.admit(&task, &plan, deadline)?;

        // Resolve each dependency now, so a result evicted later is not lost.
        let dependencies: Vec<Dependency> = task
            .depends_on
            .iter()
            .map(|dep| {
                let receiver = match self.history.live(&task.tenant, dep) {
                    Some(live) => live.subscribe(),
                    None => {
                        watch::Sender::new(self.history.finished(&task.tenant, dep)).subscribe()
                    }
                };
                (dep.clone(), receiver)
            })
            .collect();
        let live = Arc::new(LiveTask::new(TaskResult {
            task_id: task.id.clone(),
            status: TaskStatus::Queued,
            model_id: None,
            output: None,
            error: None,
            metrics: Default::default(),
            routing: plan.routing(&task.task_type),
            queued_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            tenant: task.tenant.clone(),
            steps: Vec::new(),
            recipe: match &plan {
                Planned::Composite(run) => run.recipe.clone(),
                Planned::Single(_) => None,
            },
        }));
        if self
            .history
            .insert(&task.tenant, &task.id, Arc::clone(&live))
            .is_err()
        {
            return Err(Error::AlreadyExists {
                id: task.id.clone(),
            });
        }
        // Shutdown may have begun since the check above, after its sweep of
        // the live tasks: this one is then cancelled like the others.
        if self.closing.load(Ordering::SeqCst) {
            live.cancel.cancel();
        }
        emit(events.as_ref(), || TaskEvent::Queued);
        let handle = TaskHandle::of(task.id.clone(), &live);
        let accepted = Accepted {
            task,
            live,
            dependencies,
            plan,
            deadline,
            arrived,
            events,
            queued,
        };
        self.tasks.spawn(
            Arc::clone(self)
                .lifecycle(accepted)
                .instrument(span.clone()),
        );
        Ok(handle)
    }

    /// Plans `task` in a `plan` span that records the choice.
    fn plan_in_span(&self, task: &mut Task, now: Instant) -> Result<Planned, Error> {
        let span = tracing::debug_span!(
            "plan",
            plan.model = tracing::field::Empty,
            plan.score = tracing::field::Empty,
            plan.reason = tracing::field::Empty,
            plan.candidates = tracing::field::Empty,
            plan.recipe = tracing::field::Empty,
            plan.steps = tracing::field::Empty,
        );
        let plan = span.in_scope(|| self.planner.plan(task, &self.registry.load(), now))?;
        // The span is at debug level: off unless traces are exported.
        match &plan {
            _ if span.is_disabled() => {}
            Planned::Single(plan) => {
                if let Some(first) = plan.candidates.first() {
                    span.record("plan.model", first.model.id().as_str());
                    span.record("plan.score", first.breakdown.score);
                }
                span.record("plan.reason", plan.reason.as_str());
                span.record("plan.candidates", plan.candidates.len());
            }
            Planned::Composite(run) => {
                span.record("plan.steps", run.graph.nodes.len());
                if let Some(recipe) = &run.recipe {
                    span.record("plan.recipe", recipe.task_type.as_str());
                    span.record("plan.reason", "Recipe");
                }
            }
        }
        Ok(plan)
    }
}
