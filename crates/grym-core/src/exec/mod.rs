//! Steps 5 and 7 of a task's way, and the [`Orchestrator`] that takes a
//! task along all of them.
//!
//! A request that cannot be accepted is an [`Error`], at once: bad input,
//! unknown dependencies or a cycle, an id in use, a full queue, a type no
//! model serves. From then on every outcome (success, worker failure after
//! fallbacks, deadline, cancellation, a failed dependency) is a
//! [`TaskResult`], recorded exactly once, so the caller always learns how
//! its task ended.
//!
//! The rooms, in the order a task meets them:
//! - [`accept`]: analysis, planning, admission, and the task's own tokio
//!   task;
//! - [`lifecycle`]: dependencies, the wait for a slot, and the one result;
//! - [`slot`]: planning again when needed and waiting for a model's slot;
//! - [`attempt`]: the fallback loop and each worker call, with feedback;
//! - [`composite`]: a composite's steps, each a small task of its own;
//! - [`observe`]: what the watch, the gauges and `ListModels` read;
//! - [`sessions`]: what the session and context RPCs reach.
//!
//! This type is a facade: the data of a task moves down through the rooms
//! and does not come back here between steps.

mod accept;
mod attempt;
mod call;
mod composite;
mod durable;
mod handle;
mod hedge;
mod job;
mod lifecycle;
mod observe;
mod sessions;
mod slot;

use std::any::Any;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::handle::TaskHandle;
pub use self::hedge::HedgingSettings;
pub use self::observe::{CapabilityView, ModelView, ReplicaView};
use crate::context::{ContextManager, ContextSettings};
use crate::deadline::Deadline;
use crate::error::{Error, FailureKind};
use crate::history::TaskStore;
use crate::ids::TaskId;
use crate::ids::Tenant;
use crate::limits::Limits;
use crate::plan::analysis::{self, Requirements};
use crate::plan::recipe::Recipes;
use crate::plan::selection::{SelectionSettings, Selector};
use crate::plan::view::CompositePlan;
use crate::plan::{Planned, Planner};
use crate::registry::{EjectionSettings, Registry, RetrySettings};
use crate::schedule::{Scheduler, SchedulerSettings};
use crate::store::{DurabilitySettings, Outcome, Store, TaskKey};
use crate::task::{Routing, Task, TaskEvent, TaskResult};
use crate::watch::detector::{BottleneckSettings, Finding};
use crate::watch::instruments::Instruments;
use crate::watch::{Gauges, Watcher};

/// Settings of the orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub struct OrchestratorSettings {
    /// The longest one worker call may take.
    pub worker_timeout: Duration,
    /// How models are chosen.
    pub selection: SelectionSettings,
    /// How tasks are queued.
    pub scheduler: SchedulerSettings,
    /// How context is shaped and kept.
    pub context: ContextSettings,
    /// Chains that stand in for task types no healthy model serves.
    pub recipes: Recipes,
    /// When a finding is a bottleneck.
    pub bottlenecks: BottleneckSettings,
    /// What one request may carry.
    pub limits: Limits,
    /// How accepted work is kept, when there is a store.
    pub durability: DurabilitySettings,
    /// When a replica whose calls fail is taken out of rotation.
    pub ejection: EjectionSettings,
    /// How failed calls are retried, and how many retries failures may
    /// cause.
    pub retries: RetrySettings,
    /// Which task types send a second call when the first is slow.
    pub hedging: HedgingSettings,
    /// Whether metrics are recorded: off when they go nowhere, so requests
    /// do not pay for them.
    pub metrics: bool,
}

impl Default for OrchestratorSettings {
    fn default() -> Self {
        Self {
            worker_timeout: Duration::from_secs(30),
            selection: SelectionSettings::default(),
            scheduler: SchedulerSettings::default(),
            context: ContextSettings::default(),
            recipes: Recipes::with_defaults(),
            bottlenecks: BottleneckSettings::default(),
            limits: Limits::default(),
            durability: DurabilitySettings::default(),
            ejection: EjectionSettings::default(),
            retries: RetrySettings::default(),
            hedging: HedgingSettings::default(),
            metrics: true,
        }
    }
}

/// Runs tasks on the models of a registry.
#[derive(Debug)]
pub struct Orchestrator {
    registry: ArcSwap<Registry>,
    planner: Planner,
    scheduler: Scheduler,
    context: ContextManager,
    history: TaskStore,
    watcher: Watcher,
    instruments: Instruments,
    /// The gauges read at each export, registered once.
    gauges: OnceLock<Vec<Arc<dyn Any + Send + Sync>>>,
    worker_timeout: Duration,
    /// Every task's own tokio task, waited for at shutdown.
    tasks: TaskTracker,
    /// Set when shutdown begins: new tasks are refused.
    closing: AtomicBool,
    /// How failures are named in metrics, spans and logs.
    failure_names: fn(FailureKind) -> &'static str,
    /// Where accepted work is written, if anywhere.
    store: Option<Arc<dyn Store>>,
    durability: DurabilitySettings,
    ejection: EjectionSettings,
    retries: RetrySettings,
    hedging: HedgingSettings,
    /// Whether the store answered its last operation.
    store_serving: AtomicBool,
    /// Worker calls' outcomes not yet published to the other replicas.
    outcomes: Mutex<Vec<Outcome>>,
    /// Tasks this replica let go unfinished at shutdown, to release.
    left: Mutex<Vec<TaskKey>>,
    /// Tasks whose final result is being written again: still held here.
    finishing: Arc<Mutex<HashSet<TaskKey>>>,
    /// Fires when shutdown begins: writes still retried give up, the task
    /// they are for runs again after the restart.
    stopping: CancellationToken,
}

impl Orchestrator {
    /// An orchestrator over `registry`.
    pub fn new(registry: Arc<Registry>, settings: OrchestratorSettings) -> Self {
        let half_life = settings.selection.half_life;
        Self {
            registry: ArcSwap::new(registry),
            planner: Planner::new(
                Selector::new(settings.selection),
                settings.recipes,
                settings.limits,
            ),
            history: TaskStore::new(
                settings.scheduler.max_results,
                settings.scheduler.result_retention,
            ),
            scheduler: Scheduler::new(settings.scheduler),
            context: ContextManager::new(settings.context),
            watcher: Watcher::new(settings.bottlenecks, half_life),
            instruments: Instruments::new(settings.metrics),
            gauges: OnceLock::new(),
            worker_timeout: settings.worker_timeout,
            tasks: TaskTracker::new(),
            closing: AtomicBool::new(false),
            failure_names: FailureKind::as_str,
            store: None,
            durability: settings.durability,
            ejection: settings.ejection,
            retries: settings.retries,
            hedging: settings.hedging,
            store_serving: AtomicBool::new(true),
            outcomes: Mutex::new(Vec::new()),
            left: Mutex::new(Vec::new()),
            finishing: Arc::default(),
            stopping: CancellationToken::new(),
        }
    }

    /// Writes accepted work to `store`: every submitted task, and with
    /// `durable_execute` every task; sessions too. Call
    /// [`recover`](Self::recover) next, then keep
    /// [`tend_store`](Self::tend_store) running.
    #[must_use]
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Names failures in metrics, spans and logs as `names` says: the
    /// server names them as its callers know them (`UNAVAILABLE`), where
    /// the core's own words would be `unavailable`.
    #[must_use]
    pub fn with_failure_names(mut self, names: fn(FailureKind) -> &'static str) -> Self {
        self.failure_names = names;
        self
    }

    /// The current registry of models.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// Replaces the registry, typically with one made by
    /// [`Registry::succeed_with`] from the current one, so unchanged models
    /// keep their statistics and health. Calls in flight finish on the
    /// entries they started with.
    pub fn replace_registry(&self, next: Registry) {
        self.registry.store(Arc::new(next));
    }

    /// Analyses and plans a task without running it: its routing and, for
    /// a composite or a recipe chain, the plan of its steps.
    pub fn plan(
        &self,
        mut task: Task,
    ) -> Result<(Requirements, Routing, Option<CompositePlan>), Error> {
        let requirements = analysis::analyse(&mut task, &self.context, self.planner.limits())?;
        let now = Instant::now();
        let registry = self.registry.load();
        let planned = self.planner.plan(&mut task, &registry, now)?;
        let composite = match &planned {
            Planned::Single(_) => None,
            Planned::Composite(run) => Some(run.view(&self.planner.selector, &registry, now)),
        };
        Ok((requirements, planned.routing(&task.task_type), composite))
    }

    /// Runs a task to its end, within `deadline` (the caller's). Dropping
    /// the returned future cancels the task. Written to the store only with
    /// `durable_execute`: its caller is connected and sees a failure if
    /// grymd stops.
    pub async fn execute(
        self: &Arc<Self>,
        task: Task,
        deadline: Deadline,
        events: Option<mpsc::UnboundedSender<TaskEvent>>,
    ) -> Result<TaskResult, Error> {
        self.execute_shared(task, deadline, events)
            .await
            .map(Arc::unwrap_or_clone)
    }

    /// [`execute`](Self::execute), answering with the result the history
    /// keeps rather than a copy of it: for a caller that only reads it.
    pub async fn execute_shared(
        self: &Arc<Self>,
        task: Task,
        deadline: Deadline,
        events: Option<mpsc::UnboundedSender<TaskEvent>>,
    ) -> Result<Arc<TaskResult>, Error> {
        Ok(match self.take_in(task, deadline, events, false).await? {
            accept::Entered::Accepted(accepted, span) => self.attached(accepted, &span).await,
            accept::Entered::Running(handle) => {
                let cancel_on_drop = handle.cancellation().drop_guard();
                let result = handle.result().await;
                cancel_on_drop.disarm();
                result
            }
        })
    }

    /// Accepts a task that its caller follows (`StreamTask`) and returns at
    /// once. Written to the store only with `durable_execute`, as
    /// [`execute`](Self::execute).
    pub async fn stream(
        self: &Arc<Self>,
        task: Task,
        deadline: Deadline,
        events: mpsc::UnboundedSender<TaskEvent>,
    ) -> Result<TaskHandle, Error> {
        self.enter(task, deadline, Some(events), false).await
    }

    /// Where a task of `tenant` stands: live here, finished and still kept
    /// here, or as the store has it (accepted by another replica, or before
    /// a restart). Another tenant's task is not found.
    pub async fn get(&self, id: &TaskId, tenant: &Tenant) -> Result<TaskResult, Error> {
        if let Some(result) = self.history.get(tenant, id) {
            return Ok(result);
        }
        self.stored(tenant, id)
            .await?
            .ok_or_else(|| Error::TaskNotFound { id: id.clone() })
    }

    /// Cancels a live task and waits until it has ended; a finished task is
    /// left as it is. Either way, its final result. A task another replica
    /// runs is cancelled there, at its next renewal.
    pub async fn cancel(&self, id: &TaskId, tenant: &Tenant) -> Result<TaskResult, Error> {
        if let Some(live) = self.history.live(tenant, id) {
            let handle = TaskHandle::of(id.clone(), &live);
            live.cancel.cancel();
            return Ok(Arc::unwrap_or_clone(handle.result().await));
        }
        if let Some(result) = self.history.get(tenant, id) {
            return Ok(result);
        }
        self.cancel_elsewhere(tenant, id).await
    }

    /// Tasks and steps accepted and not yet running.
    pub fn queued(&self) -> usize {
        self.scheduler.queued()
    }

    /// Counts a task refused before it reached the orchestrator (a
    /// malformed request, say), under `reason`, with those it refuses.
    pub fn record_rejection(&self, reason: &'static str) {
        self.instruments.rejected_for(reason);
    }

    /// Counts a call refused for its credentials (`missing_token`,
    /// `unknown_token`, ...).
    pub fn record_auth_failure(&self, reason: &'static str) {
        self.instruments.auth_failed(reason);
    }

    /// The active bottleneck findings of the last analysis.
    pub fn bottlenecks(&self) -> Arc<Vec<Finding>> {
        self.watcher.findings()
    }

    /// The thresholds of the bottleneck analysis.
    pub fn bottleneck_settings(&self) -> &BottleneckSettings {
        self.watcher.settings()
    }

    /// Registers the gauges (models' calls in flight and waiting, the
    /// context cache, the active bottlenecks) read at each metrics export.
    pub fn observe_metrics(self: &Arc<Self>) {
        self.gauges.get_or_init(|| {
            let gauges: Arc<dyn Gauges> = Arc::clone(self) as Arc<dyn Gauges>;
            self.instruments.observe(Arc::downgrade(&gauges))
        });
    }

    /// Analyses the statistics for bottlenecks every period until `cancel`
    /// fires.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        self.watcher.run(|| self.observation(), cancel).await;
    }

    /// Clears the context cache's expired and evicted entries every period
    /// until `cancel` fires.
    pub async fn maintain(self: Arc<Self>, cancel: CancellationToken) {
        self.context.maintain(cancel).await;
    }

    /// Refuses new tasks from now on ([`Error::ShuttingDown`]), the first
    /// step of [`drain`](Self::drain), for a caller that must have it taken
    /// before it tells anyone it drains.
    pub fn refuse_new_tasks(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.tasks.close();
    }

    /// Drains: refuses new tasks at once ([`Error::ShuttingDown`]), and
    /// gives the running and queued ones up to `grace` to end on their own
    /// and answer their callers; then ends what is left as
    /// [`begin_shutdown`](Self::begin_shutdown) does, waits for it, and hands
    /// the durable tasks it let go back to the store, still queued for the
    /// next start or another replica. Whether every task ended on its own.
    ///
    /// The lease is the caller's to keep renewing meanwhile
    /// ([`keep_lease`](Self::keep_lease)), so no other replica takes over a
    /// task that is still running here.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.refuse_new_tasks();
        let ended = tokio::time::timeout(grace, self.tasks.wait()).await.is_ok();
        if !ended {
            let live = self.history.live_tasks();
            let durable = live.iter().filter(|task| task.durable).count();
            tracing::warn!(
                tasks = live.len(),
                durable,
                ?grace,
                "the grace period ran out: the tasks still running or queued end now, durable ones \
                 stay accepted in the store"
            );
        }
        self.shutdown().await;
        ended
    }

    /// Begins shutdown at once: refuses new tasks and cancels every live one
    /// (each still ends with its result). A task written to the store is let
    /// go instead: it ends here, but not in the store, where the next start
    /// or another replica takes it up.
    pub fn begin_shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.stopping.cancel();
        for live in self.history.live_tasks() {
            if live.durable {
                live.leave();
            } else {
                live.cancel.cancel();
            }
        }
    }

    /// Shuts down at once and waits until every task has ended; then hands
    /// the tasks it let go back to the store.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        self.tasks.close();
        self.tasks.wait().await;
        self.release_left().await;
    }
}

#[cfg(test)]
mod drain_tests;
#[cfg(test)]
mod tests;
