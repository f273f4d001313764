//! Steps 1 to 3 at submission: a task is analysed, its dependencies
//! checked, planned and admitted, or refused at once with an [`Error`].
//! Once accepted it is live in the history, written to the store when it is
//! durable (and refused after all if the store cannot take it), and runs in
//! a tokio task of its own, whose life [`lifecycle`](super::lifecycle)
//! follows. A task claimed again from the store enters the same way.

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

/// How a task enters: new from a caller, or claimed again from the store.
pub(super) enum Entry {
    /// Submitted now; written to the store first when `durable`.
    New {
        /// Whether it is written to the store.
        durable: bool,
    },
    /// Accepted before, by this replica or another, and claimed again:
    /// nothing refuses it for being too much, and it keeps its deadline and
    /// what it had done.
    Resumed {
        /// Where it stood when last written.
        snapshot: Box<TaskResult>,
        /// How many times it was started before.
        runs: u32,
    },
}

impl Orchestrator {
    /// Accepts a task and returns at once; the task runs on its own. Refused
    /// at once when it cannot be accepted. `deadline` is the caller's; the
    /// task's own `timeout` counts from now, and the earlier wins. With a
    /// store, the task is written before this returns.
    pub async fn submit(
        self: &Arc<Self>,
        task: Task,
        deadline: Deadline,
        events: Option<mpsc::UnboundedSender<TaskEvent>>,
    ) -> Result<TaskHandle, Error> {
        self.enter(task, deadline, events, true).await
    }

    /// Accepts a task, written to the store first when it is `submitted`
    /// (or with `durable_execute`), and starts its life.
    pub(super) async fn enter(
        self: &Arc<Self>,
        task: Task,
        deadline: Deadline,
        events: Option<mpsc::UnboundedSender<TaskEvent>>,
        submitted: bool,
    ) -> Result<TaskHandle, Error> {
        let span = task_span(&task);
        let store = self.store_for(submitted);
        let entry = Entry::New {
            durable: store.is_some(),
        };
        let entered = async {
            if let Some(session) = &task.session_id {
                self.load_session(&task.tenant, session).await?;
            }
            self.load_dependencies(&task).await?;
            let accepted = span.in_scope(|| self.accept(task, deadline, events, entry))?;
            let Some(store) = store else {
                return Ok(self.launch(accepted, &span));
            };
            // Once the write has begun, the submission completes in a task
            // of its own, whether or not its caller still waits: a task
            // committed is always run, one refused is always forgotten.
            let (this, span) = (Arc::clone(self), span.clone());
            self.tasks
                .spawn(async move { this.commit(store.as_ref(), accepted, &span).await })
                .await
                .unwrap_or_else(|_| {
                    Err(Error::StoreUnavailable {
                        reason: "the write of the task did not finish".into(),
                    })
                })
        }
        .await;
        if let Err(error) = &entered {
            self.instruments.rejected(error);
            span.record("task.rejected", error.label());
            span.record("otel.status_code", "ERROR");
            span.record("error.type", error.label());
        }
        entered
    }

    /// Writes an accepted task to the store, then starts its life; or, when
    /// the store refuses it, ends it as never accepted.
    async fn commit(
        self: &Arc<Self>,
        store: &dyn crate::store::Store,
        mut accepted: Accepted,
        span: &tracing::Span,
    ) -> Result<TaskHandle, Error> {
        match self.write_accepted(store, &mut accepted).await {
            Ok(()) => Ok(self.launch(accepted, span)),
            Err(error) => {
                // Whatever began to wait for it (a dependent, a cancel)
                // sees it end, refused.
                self.history.refuse(
                    &accepted.task.tenant,
                    &accepted.task.id,
                    &accepted.live,
                    &error,
                );
                Err(error)
            }
        }
    }

    /// Takes up a task claimed from the store again, in a span of its own;
    /// refused (the caller then ends it) when it can no longer be planned.
    pub(super) fn take_up(
        self: &Arc<Self>,
        task: Task,
        deadline: Deadline,
        snapshot: TaskResult,
        runs: u32,
    ) -> Result<(), Error> {
        let span = task_span(&task);
        let entry = Entry::Resumed {
            snapshot: Box::new(snapshot),
            runs,
        };
        let accepted = span.in_scope(|| self.accept(task, deadline, None, entry))?;
        self.launch(accepted, &span);
        Ok(())
    }

    /// Steps 1 to 3, inside the task's span: analysis, dependencies, plan,
    /// admission; the task is then live in the history.
    fn accept(
        self: &Arc<Self>,
        mut task: Task,
        deadline: Deadline,
        events: Option<mpsc::UnboundedSender<TaskEvent>>,
        entry: Entry,
    ) -> Result<Accepted, Error> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let arrived = Instant::now();
        tracing::debug_span!("analyse")
            .in_scope(|| analysis::analyse(&mut task, &self.context, self.planner.limits()))?;
        deps::check(&task.id, &task.depends_on, |id| {
            self.history.contains(&task.tenant, id)
        })?;
        // The store keeps the task as the caller gave it: planning takes a
        // composite's steps out of it.
        let record = matches!(entry, Entry::New { durable: true }).then(|| task.clone());
        let plan = self.plan_in_span(&mut task, arrived)?;
        let (deadline, queued) = match &entry {
            Entry::New { .. } => {
                let deadline = deadline.earliest(Deadline::after_timeout(arrived, task.timeout));
                (deadline, self.admit(&task, &plan, deadline)?)
            }
            Entry::Resumed { .. } => (deadline, self.scheduler.readmit()),
        };

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
        let routing = plan.routing(&task.task_type);
        let recipe = match &plan {
            Planned::Composite(run) => run.recipe.clone(),
            Planned::Single(_) => None,
        };
        let live = Arc::new(match entry {
            Entry::New { durable } => LiveTask::new(
                TaskResult {
                    task_id: task.id.clone(),
                    status: TaskStatus::Queued,
                    model_id: None,
                    output: None,
                    error: None,
                    metrics: Default::default(),
                    routing,
                    queued_at: SystemTime::now(),
                    started_at: None,
                    finished_at: None,
                    tenant: task.tenant.clone(),
                    steps: Vec::new(),
                    recipe,
                },
                durable,
                0,
            ),
            Entry::Resumed { snapshot, runs } => {
                // What it had done stays (attempts, a composite's ended
                // steps); it is queued again, on a fresh plan.
                let mut snapshot = *snapshot;
                snapshot.status = TaskStatus::Queued;
                snapshot.routing = routing;
                snapshot.recipe = recipe;
                LiveTask::new(snapshot, true, runs)
            }
        });
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
        // the live tasks: this one then goes like the others.
        if self.closing.load(Ordering::SeqCst) {
            if live.durable {
                live.leave();
            } else {
                live.cancel.cancel();
            }
        }
        Ok(Accepted {
            task,
            record,
            live,
            dependencies,
            plan,
            deadline,
            arrived,
            events,
            queued,
        })
    }

    /// Starts an accepted task's life in a tokio task of its own.
    fn launch(self: &Arc<Self>, accepted: Accepted, span: &tracing::Span) -> TaskHandle {
        emit(accepted.events.as_ref(), || TaskEvent::Queued);
        let handle = TaskHandle::of(accepted.task.id.clone(), &accepted.live);
        // Boxed where it is made: the lifecycle's state is large, and
        // the tracker, the span and the runtime's task cell each moved it.
        let lifecycle = Box::pin(Arc::clone(self).lifecycle(accepted));
        self.tasks.spawn(lifecycle.instrument(span.clone()));
        handle
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

/// The root of a task's trace: analysis and planning in it, the rest in the
/// task it spawns. At debug level: exported with traces, and free without
/// them.
fn task_span(task: &Task) -> tracing::Span {
    tracing::debug_span!(
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
    )
}
