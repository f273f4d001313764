//! Steps 1 to 3 at submission: a task is analysed, its dependencies
//! checked, planned and admitted, or refused at once with an [`Error`].
//! Once accepted it is live in the history, written to the store when it is
//! durable (and refused after all if the store cannot take it), and runs in
//! a tokio task of its own, whose life [`lifecycle`](super::lifecycle)
//! follows. A task claimed again from the store enters the same way.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TrackedFuture;
use tracing::Instrument;
use tracing::instrument::Instrumented;

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

/// A task accepted by [`Orchestrator::take_in`].
pub(super) enum Entered {
    /// Written to the store and running on its own.
    Running(TaskHandle),
    /// Accepted, to be started by the caller (in the task's span).
    Accepted(Box<Accepted>, tracing::Span),
}

/// An accepted task's life run on its caller's task; see
/// [`Orchestrator::attached`].
pub(super) struct Attached<F: Future + Send + 'static>
where
    F::Output: Send,
{
    /// `None` once it has ended.
    life: Option<TrackedFuture<F>>,
    cancel: CancellationToken,
}

impl<F> Future for Attached<F>
where
    F: Future + Send + Unpin + 'static,
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Polled again after its end, it has nothing more to give.
        let Some(life) = self.life.as_mut() else {
            return Poll::Pending;
        };
        let output = std::task::ready!(Pin::new(life).poll(cx));
        self.life = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for Attached<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        if let Some(life) = self.life.take() {
            self.cancel.cancel();
            // Without a runtime there is nothing left to tell the end to.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(life);
            }
        }
    }
}

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
        Ok(
            match self.take_in(task, deadline, events, submitted).await? {
                Entered::Running(handle) => handle,
                Entered::Accepted(accepted, span) => self.launch(accepted, &span),
            },
        )
    }

    /// Accepts a task, written to the store first when it is `submitted`
    /// (or with `durable_execute`): then already running on its own;
    /// otherwise left to the caller to start.
    pub(super) async fn take_in(
        self: &Arc<Self>,
        task: Task,
        deadline: Deadline,
        events: Option<mpsc::UnboundedSender<TaskEvent>>,
        submitted: bool,
    ) -> Result<Entered, Error> {
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
                return Ok(Entered::Accepted(Box::new(accepted), span.clone()));
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
                .map(Entered::Running)
        }
        .await;
        if let Err(error) = &entered {
            self.instruments.rejected(error);
            span.record("grym.task.rejected", error.label());
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
    fn launch(
        self: &Arc<Self>,
        accepted: impl Into<Box<Accepted>>,
        span: &tracing::Span,
    ) -> TaskHandle {
        let accepted = accepted.into();
        let handle = TaskHandle::of(accepted.task.id.clone(), &accepted.live);
        self.tasks.spawn(self.life(accepted, span));
        handle
    }

    /// An accepted task's life, to run on the caller's task: if the caller
    /// goes before it ends, the task is cancelled and ends on a task of its
    /// own, so it still has exactly one result. Spares a task that needs
    /// no caller but its own one spawn and the wake-up of its result.
    pub(super) fn attached(
        self: &Arc<Self>,
        accepted: Box<Accepted>,
        span: &tracing::Span,
    ) -> Attached<impl Future<Output = Arc<TaskResult>> + Send + 'static> {
        let cancel = accepted.live.cancel.clone();
        Attached {
            life: Some(self.tasks.track_future(self.life(accepted, span))),
            cancel,
        }
    }

    /// The future of an accepted task's life, in its span. Boxed where it
    /// is made: its state is large, and the tracker, the span and the
    /// runtime's task cell each moved it.
    fn life(
        self: &Arc<Self>,
        accepted: Box<Accepted>,
        span: &tracing::Span,
    ) -> Instrumented<Pin<Box<impl Future<Output = Arc<TaskResult>> + Send + 'static>>> {
        emit(accepted.events.as_ref(), || TaskEvent::Queued);
        Box::pin(Arc::clone(self).lifecycle(*accepted)).instrument(span.clone())
    }

    /// Plans `task` in a `plan` span that records the choice.
    fn plan_in_span(&self, task: &mut Task, now: Instant) -> Result<Planned, Error> {
        let span = tracing::debug_span!(
            "plan",
            grym.plan.model = tracing::field::Empty,
            grym.plan.score = tracing::field::Empty,
            grym.plan.reason = tracing::field::Empty,
            grym.plan.candidates = tracing::field::Empty,
            grym.plan.recipe = tracing::field::Empty,
            grym.plan.steps = tracing::field::Empty,
        );
        let plan = span.in_scope(|| self.planner.plan(task, &self.registry.load(), now))?;
        // The span is at debug level: off unless traces are exported.
        match &plan {
            _ if span.is_disabled() => {}
            Planned::Single(plan) => {
                if let Some(first) = plan.candidates.first() {
                    span.record("grym.plan.model", first.model.id().as_str());
                    span.record("grym.plan.score", first.breakdown.score);
                }
                span.record("grym.plan.reason", plan.reason.as_str());
                span.record("grym.plan.candidates", count(plan.candidates.len()));
            }
            Planned::Composite(run) => {
                span.record("grym.plan.steps", count(run.graph.nodes.len()));
                if let Some(recipe) = &run.recipe {
                    span.record("grym.plan.recipe", recipe.task_type.as_str());
                    span.record("grym.plan.reason", "Recipe");
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
        grym.task.id = %task.id,
        grym.task.r#type = %task.task_type,
        grym.task.priority = task.priority.as_str(),
        grym.task.composite = task.composite.is_some(),
        grym.task.status = tracing::field::Empty,
        grym.task.fallback = tracing::field::Empty,
        grym.task.rejected = tracing::field::Empty,
        grym.model = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error.r#type = tracing::field::Empty,
    )
}

/// A count as a span attribute: signed, since the OpenTelemetry bridge
/// writes unsigned integers as text.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
