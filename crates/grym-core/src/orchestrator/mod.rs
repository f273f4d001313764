//! The orchestrator: takes a task along its way and returns its one result.
//!
//! A request that cannot be accepted is an [`Error`], at once: bad input,
//! unknown dependencies or a cycle, an id in use, a full queue, a type no
//! model serves. From then on every outcome (success, worker failure after
//! fallbacks, deadline, cancellation, a failed dependency) is a
//! [`TaskResult`], recorded exactly once, so the caller always learns how
//! its task ended.
//!
//! An accepted task runs in a task of its own: it waits for its
//! dependencies (and is then planned again, with fresh statistics), waits in
//! its model's queue for a slot, then runs. A deadline that passes while it
//! waits ends it without a worker seeing it; cancelling it (or dropping an
//! `execute` call) ends it wherever it is, aborting a call in flight.
//!
//! Models are tried in the plan's order. A retriable failure (unavailable,
//! overloaded, timed out) moves on to the next model while the caller's
//! deadline allows; any other failure (the worker refused the input) ends
//! the task, since another model would refuse it too. Each attempt has its
//! own `worker_timeout` within the caller's deadline. Every attempt's outcome
//! is fed back into the model's statistics before the next selection reads
//! them, except a refusal of the input, which says nothing of the model.
//!
//! A composite task (or a recipe chain standing in for a task type no
//! healthy model serves) runs its steps as [`composite`] says, each step
//! planned, queued and tried like a task of its own.

mod bottlenecks;
mod composite;

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::analysis::{self, Requirements};
use crate::bottleneck::{BottleneckSettings, Finding, Kind};
use crate::client::{InferCall, WorkerError, WorkerErrorKind};
use crate::composite::recipe::{self, RecipeUse, Recipes};
use crate::composite::{Graph, StepId, budget};
use crate::context::canonical::ContentHash;
use crate::context::{ContextManager, ContextSettings, Upstream};
use crate::error::Error;
use crate::instruments::{Instruments, priority_label, rejection_label, status_label};
use crate::model::ModelId;
use crate::registry::{ModelEntry, Registry};
use crate::scheduler::SchedulerSettings;
use crate::scheduler::deps::{self, DependencyError};
use crate::scheduler::queue::QueueKey;
use crate::scheduler::slots::{ModelSlots, Slot};
use crate::scheduler::store::{LiveTask, TaskStore};
use crate::selection::{Candidate, Plan, Reason, Routing, SelectionSettings, Selector};
use crate::stats::{CallOutcome, DecayedMean};
use crate::task::{
    Attempt, AttemptOutcome, Output, Task, TaskError, TaskEvent, TaskId, TaskResult, TaskStatus,
    TaskType,
};

pub use self::composite::{CompositePlan, StepPlan};

/// Settings of the orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub struct OrchestratorSettings {
    /// The longest one worker call may take.
    pub worker_timeout: Duration,
    /// How models are chosen.
    pub selection: SelectionSettings,
    /// Seeds selection's randomness, for repeatable runs.
    pub seed: Option<u64>,
    /// How tasks are queued.
    pub scheduler: SchedulerSettings,
    /// How context is shaped and kept.
    pub context: ContextSettings,
    /// Chains that stand in for task types no healthy model serves.
    pub recipes: Recipes,
    /// When a finding is a bottleneck.
    pub bottlenecks: BottleneckSettings,
    /// Whether metrics are recorded: off when they go nowhere, so requests
    /// do not pay for them.
    pub metrics: bool,
}

impl Default for OrchestratorSettings {
    fn default() -> Self {
        Self {
            worker_timeout: Duration::from_secs(30),
            selection: SelectionSettings::default(),
            seed: None,
            scheduler: SchedulerSettings::default(),
            context: ContextSettings::default(),
            recipes: Recipes::with_defaults(),
            bottlenecks: BottleneckSettings::default(),
            metrics: true,
        }
    }
}

/// What a model's queue and calls took recently.
#[derive(Debug, Default)]
struct Load {
    /// Time waiting for a slot.
    wait: DecayedMean,
    /// Time of successful calls.
    call: DecayedMean,
}

/// What a composite task type and its steps took recently.
#[derive(Debug, Default)]
struct CompositeStats {
    /// Total latency of every run: what makes a run slow.
    total: DecayedMean,
    /// The slow runs read (only their weight counts).
    slow_runs: DecayedMean,
    /// In slow runs, each step's share of the run, when it was on the
    /// run's critical path with another step.
    shares: HashMap<String, DecayedMean>,
}

/// The most composite task types (and steps of each) kept for the
/// bottleneck analysis: their names are the callers', so they are bounded.
const MAX_COMPOSITE_TYPES: usize = 256;

/// Runs tasks on the models of a registry.
#[derive(Debug)]
pub struct Orchestrator {
    registry: ArcSwap<Registry>,
    selector: Selector,
    worker_timeout: Duration,
    scheduler: SchedulerSettings,
    context: Arc<ContextManager>,
    recipes: Recipes,
    store: TaskStore,
    slots: DashMap<ModelId, Arc<ModelSlots>>,
    /// Tasks accepted and not yet running.
    queued: AtomicUsize,
    seq: AtomicU64,
    tasks: TaskTracker,
    /// Set when shutdown begins: new tasks are refused.
    closing: AtomicBool,
    instruments: Instruments,
    /// The gauges read at each export, registered once.
    gauges: OnceLock<Vec<Arc<dyn Any + Send + Sync>>>,
    loads: DashMap<ModelId, Mutex<Load>>,
    composites: DashMap<TaskType, Mutex<CompositeStats>>,
    bottleneck_settings: BottleneckSettings,
    /// The active findings of the last analysis.
    findings: ArcSwap<Vec<Finding>>,
    /// Every finding that was once active, so the gauge can report 0 for
    /// those that ended rather than leave their last 1 standing.
    ended: ArcSwap<Vec<(Kind, String)>>,
}

/// A submitted task, to wait for or cancel.
#[derive(Debug)]
pub struct TaskHandle {
    id: TaskId,
    done: watch::Receiver<Option<Arc<TaskResult>>>,
    cancel: CancellationToken,
}

impl TaskHandle {
    /// The task's id.
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// The token that cancels the task.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the task's final result.
    pub async fn result(mut self) -> Arc<TaskResult> {
        loop {
            if let Some(result) = self.done.borrow_and_update().clone() {
                return result;
            }
            if self.done.changed().await.is_err() {
                // The sender is dropped only after the final result is sent.
                if let Some(result) = self.done.borrow().clone() {
                    return result;
                }
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Counts a task as queued until it starts or ends.
struct QueuedGuard<'a>(&'a AtomicUsize);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A task's results as they come, for tasks that wait for it.
type Dependency = (TaskId, watch::Receiver<Option<Arc<TaskResult>>>);

/// How a task will run.
enum Planned {
    /// On one model, with fallbacks.
    Single(Plan),
    /// As steps.
    Composite(Arc<CompositeRun>),
}

/// A composite, checked, with what its steps were estimated to take.
#[derive(Debug)]
struct CompositeRun {
    graph: Graph,
    /// Each step's estimated latency when the composite was planned.
    estimates: Vec<Duration>,
    /// The recipe it stands for, if it is one.
    recipe: Option<RecipeUse>,
}

impl CompositeRun {
    /// The routing the composite itself shows.
    fn routing(&self, task_type: &TaskType) -> Routing {
        let (_, estimate) = self.graph.critical_path(&self.estimates);
        match &self.recipe {
            Some(recipe) => Routing::composite(
                task_type.clone(),
                Reason::Recipe,
                estimate,
                format!(
                    "{}; the recipe {} stands in",
                    recipe.reason,
                    recipe
                        .chain
                        .iter()
                        .map(TaskType::as_str)
                        .collect::<Vec<_>>()
                        .join(" -> ")
                ),
            ),
            None => Routing::composite(
                task_type.clone(),
                Reason::Composite,
                estimate,
                format!(
                    "a {:?} composite of {} step(s), each routed on its own",
                    self.graph.strategy,
                    self.graph.nodes.len()
                )
                .to_lowercase(),
            ),
        }
    }
}

/// What `submit` hands to the task it spawns.
struct Accepted {
    task: Task,
    live: Arc<LiveTask>,
    dependencies: Vec<Dependency>,
    plan: Planned,
    deadline: Option<Instant>,
    arrived: Instant,
    events: Option<mpsc::UnboundedSender<TaskEvent>>,
}

/// One task's state, shared by the steps of its life.
#[derive(Clone, Copy)]
struct Job<'a> {
    task: &'a Task,
    live: &'a LiveTask,
    deadline: Option<Instant>,
    arrived: Instant,
    events: Option<&'a mpsc::UnboundedSender<TaskEvent>>,
    /// The hash of the task's inline context, computed once.
    context_hash: Option<ContentHash>,
    /// The composite step it runs, if it is one.
    step: Option<&'a StepId>,
    /// The outputs of the steps it waits for.
    upstream: &'a [Arc<Upstream>],
}

/// What a session keeps of a task's output.
fn session_entry(
    task: &Task,
    model: &ModelId,
    output: &Output,
) -> serde_json::Map<String, serde_json::Value> {
    let mut entry = serde_json::Map::new();
    entry.insert("task_id".into(), task.id.as_str().into());
    entry.insert("task_type".into(), task.task_type.as_str().into());
    entry.insert("model_id".into(), model.as_str().into());
    if let Some(text) = &output.text {
        entry.insert("text".into(), text.clone().into());
    }
    if let Some(json) = &output.json {
        entry.insert("json".into(), json.clone());
    }
    entry
}

/// How a task ended, before its result is assembled.
struct Ending {
    status: TaskStatus,
    output: Option<Output>,
    error: Option<TaskError>,
    /// The model to report, when not the last one called.
    model: Option<ModelId>,
}

impl Ending {
    fn failed(status: TaskStatus, code: &'static str, message: String) -> Self {
        Self {
            status,
            output: None,
            error: Some(TaskError { code, message }),
            model: None,
        }
    }
}

/// Marks a task running, for its snapshot and whoever follows it.
fn started(job: Job<'_>) {
    job.live.update(|snapshot| {
        snapshot.status = TaskStatus::Running;
        snapshot.started_at = Some(SystemTime::now());
        snapshot.metrics.queue_wait = job.arrived.elapsed();
    });
    emit(job.events, || TaskEvent::Started);
}

/// Sends an event to whoever follows the task, if anyone does.
fn emit(events: Option<&mpsc::UnboundedSender<TaskEvent>>, event: impl FnOnce() -> TaskEvent) {
    if let Some(events) = events {
        let _ = events.send(event());
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How one attempt ended.
enum CallEnd {
    Answered(Output),
    Failed(WorkerError),
    /// The caller's own deadline passed.
    CallerDeadline,
    /// The orchestrator's worker timeout passed.
    WorkerTimeout,
}

impl CallEnd {
    /// What the attempt says of the model, if anything.
    fn feedback(&self) -> Option<CallOutcome> {
        match self {
            Self::Answered(_) => Some(CallOutcome::Success),
            Self::Failed(error) => match error.kind {
                WorkerErrorKind::Rejected => None,
                WorkerErrorKind::Timeout => Some(CallOutcome::Timeout),
                WorkerErrorKind::Unavailable
                | WorkerErrorKind::Overloaded
                | WorkerErrorKind::Internal => Some(CallOutcome::Failure),
            },
            // The caller's deadline cut the call short: that says nothing of
            // the model.
            Self::CallerDeadline => None,
            Self::WorkerTimeout => Some(CallOutcome::Timeout),
        }
    }
}

impl Orchestrator {
    /// An orchestrator over `registry`.
    pub fn new(registry: Arc<Registry>, settings: OrchestratorSettings) -> Self {
        Self {
            registry: ArcSwap::new(registry),
            selector: Selector::new(settings.selection, settings.seed),
            worker_timeout: settings.worker_timeout,
            store: TaskStore::new(
                settings.scheduler.max_results,
                settings.scheduler.result_retention,
            ),
            scheduler: settings.scheduler,
            context: Arc::new(ContextManager::new(settings.context)),
            recipes: settings.recipes,
            slots: DashMap::new(),
            queued: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            closing: AtomicBool::new(false),
            instruments: Instruments::new(settings.metrics),
            gauges: OnceLock::new(),
            loads: DashMap::new(),
            composites: DashMap::new(),
            bottleneck_settings: settings.bottlenecks,
            findings: ArcSwap::from_pointee(Vec::new()),
            ended: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Counts a task refused before it reached the orchestrator (a
    /// malformed request, say), under `reason`, with those it refuses.
    pub fn record_rejection(&self, reason: &'static str) {
        self.instruments.rejected_for(reason);
    }

    /// Registers the gauges (models' calls in flight and waiting, the
    /// context cache, the active bottlenecks) read at each metrics export.
    pub fn observe_metrics(self: &Arc<Self>) {
        self.gauges
            .get_or_init(|| self.instruments.observe(Arc::downgrade(self)));
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

    /// The context manager: sessions and the transform cache.
    pub fn context(&self) -> &Arc<ContextManager> {
        &self.context
    }

    /// The half-life of the performance statistics.
    pub fn stats_half_life(&self) -> Duration {
        self.selector.settings().half_life
    }

    /// Analyses and plans a task without running it: its routing and, for
    /// a composite or a recipe chain, the plan of its steps.
    pub fn plan(
        &self,
        mut task: Task,
    ) -> Result<(Requirements, Routing, Option<CompositePlan>), Error> {
        let requirements = self.check(&mut task)?;
        let now = Instant::now();
        Ok(match self.plan_task(&mut task, now)? {
            Planned::Single(plan) => (requirements, plan.routing(Vec::new()), None),
            Planned::Composite(run) => (
                requirements,
                run.routing(&task.task_type),
                Some(self.composite_plan(&run, now)),
            ),
        })
    }

    /// How a task will run: on the models that serve its type, as its
    /// composite's steps, or, when no healthy model serves its type, as the
    /// type's recipe chain if every step of it can be planned.
    /// A composite's steps leave the task for the plan.
    fn plan_task(&self, task: &mut Task, now: Instant) -> Result<Planned, Error> {
        let registry = self.registry.load();
        if let Some(spec) = task.composite.take() {
            let graph = Graph::build(*spec)?;
            let estimates = self.estimate_steps(&graph, &registry, now)?;
            return Ok(Planned::Composite(Arc::new(CompositeRun {
                graph,
                estimates,
                recipe: None,
            })));
        }
        match self.selector.plan(&task.task_type, &registry, now) {
            Ok(plan) => Ok(Planned::Single(plan)),
            Err(error @ (Error::NoModelForTaskType { .. } | Error::NoHealthyModel { .. })) => {
                let Some(chain) = self.recipes.get(&task.task_type) else {
                    return Err(error);
                };
                let graph = Graph::build(recipe::composite(chain)?)?;
                // A chain that cannot run either leaves the direct error,
                // which names the task type asked for.
                let Ok(estimates) = self.estimate_steps(&graph, &registry, now) else {
                    return Err(error);
                };
                Ok(Planned::Composite(Arc::new(CompositeRun {
                    graph,
                    estimates,
                    recipe: Some(RecipeUse {
                        task_type: task.task_type.clone(),
                        chain: chain.to_vec(),
                        reason: error.to_string(),
                    }),
                })))
            }
            Err(error) => Err(error),
        }
    }

    /// Validates a task: its input (recognising audio), its context, and a
    /// composite's steps' inputs and contexts, naming the step.
    fn check(&self, task: &mut Task) -> Result<Requirements, Error> {
        let requirements =
            tracing::debug_span!("analyse").in_scope(|| analysis::analyse(&mut *task))?;
        self.context.check("task.context", &task.context)?;
        if let Some(composite) = &mut task.composite {
            for step in &mut composite.steps {
                let checked = self
                    .context
                    .check("task.composite.steps.task.context", &step.task.context)
                    .and_then(|()| match &mut step.task.input {
                        Some(input) => analysis::analyse_input(
                            input,
                            "task.composite.steps.task.input.audio.data",
                        )
                        .map(drop),
                        None => Ok(()),
                    });
                checked.map_err(|error| Error::InStep {
                    step: step.id.clone(),
                    error: Box::new(error),
                })?;
            }
        }
        Ok(requirements)
    }

    /// Each step's estimated latency, an unknown one counting as the mean
    /// of the others; an error names a step no model can serve.
    fn estimate_steps(
        &self,
        graph: &Graph,
        registry: &Registry,
        now: Instant,
    ) -> Result<Vec<Duration>, Error> {
        let mut estimates = graph
            .nodes
            .iter()
            .map(|node| {
                self.selector
                    .plan(&node.spec.task.task_type, registry, now)
                    .map(|plan| plan.estimated_latency)
                    .map_err(|error| Error::InStep {
                        step: node.spec.id.clone(),
                        error: Box::new(error),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        budget::fill_unknown(&mut estimates);
        Ok(estimates)
    }

    /// Runs a task to its end. `deadline` is the caller's, when it set one.
    /// Dropping the returned future cancels the task.
    pub async fn execute(
        self: &Arc<Self>,
        task: Task,
        deadline: Option<Instant>,
    ) -> Result<TaskResult, Error> {
        self.execute_with_events(task, deadline, None).await
    }

    /// [`execute`](Self::execute), telling `events` what happens on the way.
    pub async fn execute_with_events(
        self: &Arc<Self>,
        task: Task,
        deadline: Option<Instant>,
        events: Option<mpsc::UnboundedSender<TaskEvent>>,
    ) -> Result<TaskResult, Error> {
        let handle = self.submit(task, deadline, events)?;
        let cancel_on_drop = handle.cancel.clone().drop_guard();
        let result = handle.result().await;
        cancel_on_drop.disarm();
        Ok(Arc::unwrap_or_clone(result))
    }

    /// Accepts a task and returns at once; the task runs on its own. Refused
    /// at once when it cannot be accepted. `deadline` is the caller's, if
    /// any; the task's own `timeout` counts from now, and the earlier wins.
    pub fn submit(
        self: &Arc<Self>,
        task: Task,
        deadline: Option<Instant>,
        events: Option<mpsc::UnboundedSender<TaskEvent>>,
    ) -> Result<TaskHandle, Error> {
        // The root of the task's trace: analysis and planning here, the
        // rest in the task it spawns.
        let span = tracing::info_span!(
            "task",
            task.id = %task.id,
            task.r#type = %task.task_type,
            task.priority = priority_label(task.priority),
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
            span.record("task.rejected", rejection_label(error));
            span.record("otel.status_code", "ERROR");
            span.record("error.type", rejection_label(error));
        }
        accepted
    }

    /// What `submit` does, inside the task's span.
    fn accept(
        self: &Arc<Self>,
        mut task: Task,
        deadline: Option<Instant>,
        events: Option<mpsc::UnboundedSender<TaskEvent>>,
        span: &tracing::Span,
    ) -> Result<TaskHandle, Error> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let arrived = Instant::now();
        self.check(&mut task)?;
        deps::check(&task.id, &task.depends_on, |id| {
            self.store
                .tenant_of(id)
                .is_some_and(|owner| owner == task.tenant)
        })
        .map_err(|error| match error {
            DependencyError::Unknown(ids) => Error::UnknownDependencies { ids },
            DependencyError::Cycle(path) => Error::DependencyCycle { path },
        })?;
        let plan = {
            let span = tracing::debug_span!(
                "plan",
                plan.model = tracing::field::Empty,
                plan.score = tracing::field::Empty,
                plan.reason = tracing::field::Empty,
                plan.candidates = tracing::field::Empty,
                plan.recipe = tracing::field::Empty,
                plan.steps = tracing::field::Empty,
            );
            let plan = span.in_scope(|| self.plan_task(&mut task, arrived))?;
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
            plan
        };
        // A timeout too far out to represent is no bound at all.
        let deadline = earliest(
            deadline,
            task.timeout
                .and_then(|timeout| arrived.checked_add(timeout)),
        );
        // Counted as queued from here; the task's own guard uncounts it.
        self.admit()?;

        // Resolve each dependency now, so a result evicted later is not lost.
        let dependencies: Vec<Dependency> = task
            .depends_on
            .iter()
            .map(|dep| {
                let receiver = match self.store.live(dep) {
                    Some(live) => live.subscribe(),
                    None => watch::Sender::new(self.store.finished(dep)).subscribe(),
                };
                (dep.clone(), receiver)
            })
            .collect();
        let snapshot = TaskResult {
            task_id: task.id.clone(),
            status: TaskStatus::Queued,
            model_id: None,
            output: None,
            error: None,
            metrics: Default::default(),
            routing: match &plan {
                Planned::Single(plan) => plan.routing(Vec::new()),
                Planned::Composite(run) => run.routing(&task.task_type),
            },
            queued_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            tenant: task.tenant.clone(),
            steps: Vec::new(),
            recipe: match &plan {
                Planned::Composite(run) => run.recipe.clone(),
                Planned::Single(_) => None,
            },
        };
        let live = Arc::new(LiveTask::new(snapshot));
        if self
            .store
            .insert(task.id.clone(), Arc::clone(&live))
            .is_err()
        {
            self.queued.fetch_sub(1, Ordering::AcqRel);
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
        let handle = TaskHandle {
            id: task.id.clone(),
            done: live.subscribe(),
            cancel: live.cancel.clone(),
        };
        let this = Arc::clone(self);
        let span = span.clone();
        self.tasks.spawn(
            async move {
                let accepted = Accepted {
                    task,
                    live,
                    dependencies,
                    plan,
                    deadline,
                    arrived,
                    events,
                };
                this.lifecycle(accepted).await;
            }
            .instrument(span),
        );
        Ok(handle)
    }

    /// Counts a task in the queue, or refuses it when the queue is full.
    fn admit(&self) -> Result<(), Error> {
        let max_queue = self.scheduler.max_queue;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < max_queue).then_some(queued + 1)
            })
            .map(|_| ())
            .map_err(|_| Error::QueueFull { max_queue })
    }

    /// Where a task of `tenant` stands: live, or finished and still kept.
    /// Another tenant's task is not found.
    pub fn get(&self, id: &TaskId, tenant: &str) -> Result<TaskResult, Error> {
        self.store
            .get(id)
            .filter(|result| result.tenant == tenant)
            .ok_or_else(|| Error::TaskNotFound { id: id.clone() })
    }

    /// Cancels a live task and waits until it has ended; a finished task is
    /// left as it is. Either way, its final result.
    pub async fn cancel(&self, id: &TaskId, tenant: &str) -> Result<TaskResult, Error> {
        if self.store.tenant_of(id).is_none_or(|owner| owner != tenant) {
            return Err(Error::TaskNotFound { id: id.clone() });
        }
        if let Some(live) = self.store.live(id) {
            let done = live.subscribe();
            live.cancel.cancel();
            let handle = TaskHandle {
                id: id.clone(),
                done,
                cancel: live.cancel.clone(),
            };
            return Ok(Arc::unwrap_or_clone(handle.result().await));
        }
        self.get(id, tenant)
    }

    /// Tasks accepted and not yet running.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Begins shutdown: refuses new tasks and cancels every live one (each
    /// still ends with its result).
    pub fn begin_shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        for live in self.store.live_tasks() {
            live.cancel.cancel();
        }
    }

    /// Shuts down and waits until every task has ended.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// A task's life after acceptance: it always ends with `store.finish`.
    async fn lifecycle(self: Arc<Self>, accepted: Accepted) {
        let Accepted {
            task,
            live,
            dependencies,
            plan,
            deadline,
            arrived,
            events,
        } = accepted;
        let queued = QueuedGuard(&self.queued);
        let cancel = live.cancel.clone();
        let composite = match &plan {
            Planned::Composite(run) => Some(Arc::clone(run)),
            Planned::Single(_) => None,
        };
        let ending = tokio::select! {
            biased;
            () = cancel.cancelled() => Ending::failed(
                TaskStatus::Cancelled,
                "CANCELLED",
                "the task was cancelled".to_owned(),
            ),
            ending = AssertUnwindSafe(self.progress(
                Job {
                    task: &task,
                    live: &live,
                    deadline,
                    arrived,
                    events: events.as_ref(),
                    context_hash: (!task.context.is_empty()).then(|| ContentHash::of(&task.context)),
                    step: None,
                    upstream: &[],
                },
                dependencies,
                plan,
                queued,
            ))
            .catch_unwind() => ending.unwrap_or_else(|_| {
                // A panic below (a model client's, say) must not leave the
                // task without its result.
                tracing::error!(task.id = %task.id, "the task's execution panicked");
                Ending::failed(
                    TaskStatus::Failed,
                    "INTERNAL",
                    "an internal error ended the task".to_owned(),
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
            Some(run) => composite::settle_steps(&run.graph, &mut result, events.as_ref()),
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
        result.metrics.total_latency = arrived.elapsed();
        if result.started_at.is_none() {
            result.metrics.queue_wait = result.metrics.total_latency;
        }
        result.finished_at = Some(finished_at);
        if let Some(error) = &result.error {
            tracing::warn!(task.id = %task.id, task.r#type = %task.task_type, status = ?result.status, code = error.code, reason = %error.message, "task did not succeed");
        }
        self.record_end(&task, &result, composite.as_deref().map(|run| &run.graph));
        let result = self.store.finish(&task.id, result);
        emit(events.as_ref(), || {
            TaskEvent::Finished(Box::new((*result).clone()))
        });
    }

    /// What a task's end says: on its span, in its metrics, and for a
    /// composite, in the statistics the bottleneck analysis reads.
    fn record_end(&self, task: &Task, result: &TaskResult, graph: Option<&Graph>) {
        let span = tracing::Span::current();
        span.record("task.status", status_label(result.status));
        if let Some(model) = &result.model_id {
            span.record("grym.model", model.as_str());
        }
        span.record("task.fallback", !result.routing.fallbacks_taken.is_empty());
        if let Some(error) = &result.error {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", error.code);
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
            self.record_composite(&task.task_type, graph, result);
        }
    }

    /// Feeds a finished composite into the statistics of its type: in a
    /// run slower than the type's recent mean, the share of each step on
    /// the run's critical path (by the steps' real latencies).
    fn record_composite(&self, task_type: &TaskType, graph: &Graph, result: &TaskResult) {
        if !self.composites.contains_key(task_type) && self.composites.len() >= MAX_COMPOSITE_TYPES
        {
            return;
        }
        let now = Instant::now();
        let half_life = self.selector.settings().half_life;
        let total = result.metrics.total_latency;
        let latencies: Vec<Duration> = graph
            .nodes
            .iter()
            .map(|node| {
                result
                    .steps
                    .iter()
                    .find(|s| s.step == node.spec.id)
                    .map_or(Duration::ZERO, |s| s.latency)
            })
            .collect();
        let (path, _) = graph.critical_path(&latencies);
        let stats = self.composites.entry(task_type.clone()).or_default();
        let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
        let slow = stats.total.count() > 0 && total >= stats.total.mean();
        stats.total.record(total, now, half_life);
        if !slow || path.len() < 2 || total.is_zero() {
            return;
        }
        stats.slow_runs.record_value(1.0, now, half_life);
        for i in path {
            let step = graph.nodes[i].spec.id.as_str();
            if !stats.shares.contains_key(step) && stats.shares.len() >= crate::composite::MAX_STEPS
            {
                continue;
            }
            let share = latencies[i].as_secs_f64() / total.as_secs_f64();
            stats
                .shares
                .entry(step.to_owned())
                .or_default()
                .record_value(share, now, half_life);
        }
    }

    /// Dependencies, then the model's queue, then the attempts; or for a
    /// composite, its steps.
    async fn progress(
        &self,
        job: Job<'_>,
        dependencies: Vec<Dependency>,
        plan: Planned,
        queued: QueuedGuard<'_>,
    ) -> Ending {
        let Job {
            task,
            live,
            deadline,
            events,
            ..
        } = job;
        let plan = match plan {
            Planned::Single(plan) => plan,
            Planned::Composite(run) => {
                if let Some(ending) = self.wait_for(deadline, dependencies).await {
                    return ending;
                }
                return Box::pin(self.run_composite(job, &run, queued)).await;
            }
        };
        // The plan made at submission stands unless the task waits for
        // dependencies first: then the best model may have changed.
        let submitted_plan = dependencies.is_empty().then_some(plan);
        if let Some(ending) = self.wait_for(deadline, dependencies).await {
            return ending;
        }
        let key = QueueKey {
            priority: task.priority,
            deadline,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        };
        let chosen = self
            .plan_and_wait(
                &task.task_type,
                submitted_plan,
                key,
                deadline,
                |plan, fresh| {
                    // The routing is built only for a snapshot that needs it
                    // or a caller that follows the task.
                    if fresh || events.is_some() {
                        let routing = plan.routing(Vec::new());
                        if fresh {
                            live.update(|snapshot| snapshot.routing = routing.clone());
                        }
                        emit(events, || TaskEvent::ModelChosen(routing));
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
        started(job);
        // Boxed: a task waiting in a queue holds only the small future of its
        // waiting state, not the larger one of running calls.
        Box::pin(self.run(job, &plan, key, slot)).await
    }

    /// Waits for every dependency to succeed, within the deadline; the
    /// task's ending if one does not.
    async fn wait_for(
        &self,
        deadline: Option<Instant>,
        dependencies: Vec<Dependency>,
    ) -> Option<Ending> {
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
            let result = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, waited).await {
                    Ok(result) => result,
                    Err(_) => {
                        return Some(Ending::failed(
                            TaskStatus::DeadlineExceeded,
                            "DEADLINE_EXCEEDED",
                            "the deadline passed while the task waited; no model was called"
                                .to_owned(),
                        ));
                    }
                },
                None => waited.await,
            };
            match result {
                Some(result) if result.status == TaskStatus::Succeeded => {}
                Some(result) => {
                    return Some(Ending::failed(
                        TaskStatus::DependencyFailed,
                        "FAILED_PRECONDITION",
                        format!(
                            "dependency `{dep}` ended {:?}; the task did not run",
                            result.status
                        ),
                    ));
                }
                None => {
                    return Some(Ending::failed(
                        TaskStatus::DependencyFailed,
                        "FAILED_PRECONDITION",
                        format!("dependency `{dep}` ended without a result"),
                    ));
                }
            }
        }
        None
    }

    /// Plans `task_type` (or takes the plan made at submission) and waits
    /// for a slot on the chosen model; plans again, keeping its place in
    /// line, if a reload replaced that model while it waited. `chosen` sees
    /// each plan (and whether it is fresh) and may end the task instead.
    async fn plan_and_wait(
        &self,
        task_type: &TaskType,
        mut submitted: Option<Plan>,
        key: QueueKey,
        deadline: Option<Instant>,
        mut chosen: impl FnMut(&Plan, bool) -> Option<Ending>,
    ) -> Result<(Plan, Slot), Ending> {
        let mut replans = 0;
        loop {
            let (plan, fresh) = match submitted.take() {
                Some(plan) => (plan, false),
                None => match self
                    .selector
                    .plan(task_type, &self.registry.load(), Instant::now())
                {
                    Ok(plan) => (plan, true),
                    Err(error) => {
                        return Err(Ending::failed(
                            TaskStatus::Failed,
                            "UNAVAILABLE",
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
                    "UNAVAILABLE",
                    "no candidate model".to_owned(),
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
            if current || replans >= 3 {
                self.instruments
                    .selected(first.model.id().as_str(), task_type);
                return Ok((plan, slot));
            }
        }
    }

    /// [`slot`](Self::slot) in a `queue wait` span, the wait recorded
    /// (for the metric and the bottleneck analysis) however it ends.
    async fn wait_slot(
        &self,
        model: &ModelEntry,
        task_type: &TaskType,
        key: QueueKey,
        deadline: Option<Instant>,
    ) -> Result<Slot, Ending> {
        let waiting = Instant::now();
        let slot = self
            .slot(model, key, deadline)
            .instrument(tracing::debug_span!("queue wait", model = %model.id()))
            .await;
        let waited = waiting.elapsed();
        self.instruments
            .queue_waited(task_type, key.priority, model.id().as_str(), waited);
        self.load(model.id()).lock().wait.record(
            waited,
            Instant::now(),
            self.selector.settings().half_life,
        );
        slot
    }

    /// A slot on `model`'s queue, within the deadline.
    async fn slot(
        &self,
        model: &ModelEntry,
        key: QueueKey,
        deadline: Option<Instant>,
    ) -> Result<Slot, Ending> {
        // Read first: the model's slots exist after its first call, and a
        // read neither clones the id nor locks its shard for writing.
        let slots = match self.slots.get(model.id()) {
            Some(slots) => Arc::clone(slots.value()),
            None => Arc::clone(
                self.slots
                    .entry(model.id().clone())
                    .or_insert_with(|| {
                        // Room for twice the queue: waiters that gave up
                        // linger until a sweep, which then runs once per many
                        // pushes.
                        Arc::new(ModelSlots::new(
                            self.scheduler.max_queue.max(1) * 2,
                            self.scheduler.aging_interval,
                        ))
                    })
                    .value(),
            ),
        };
        let limit = self.concurrency_limit(model);
        let acquired = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, slots.acquire(key, limit))
                .await
                .map_err(|_| {
                    Ending::failed(
                        TaskStatus::DeadlineExceeded,
                        "DEADLINE_EXCEEDED",
                        format!(
                            "the deadline passed while waiting for model `{}`",
                            model.id()
                        ),
                    )
                })?,
            None => slots.acquire(key, limit).await,
        };
        acquired.map_err(|_| {
            Ending::failed(
                TaskStatus::Failed,
                "RESOURCE_EXHAUSTED",
                format!("the queue of model `{}` is full", model.id()),
            )
        })
    }

    /// Calls a model takes at once: what it declares per replica (the most
    /// of its capabilities) times its replicas, or the configured default.
    fn concurrency_limit(&self, model: &ModelEntry) -> u32 {
        let declared = model
            .description()
            .capabilities
            .iter()
            .filter_map(|c| c.max_concurrency)
            .max();
        match declared {
            Some(per_replica) => per_replica
                .saturating_mul(u32::try_from(model.replicas().len()).unwrap_or(u32::MAX)),
            None => self.scheduler.default_model_concurrency,
        }
    }

    /// Tries the plan's models in order until one answers, the failure is
    /// final, or time runs out. The first model's slot is held already;
    /// each fallback waits for a slot of its own.
    async fn run(&self, job: Job<'_>, plan: &Plan, key: QueueKey, first_slot: Slot) -> Ending {
        let Job {
            task,
            live,
            deadline,
            events,
            step,
            ..
        } = job;
        let mut first_slot = Some(first_slot);
        let mut last_error: Option<TaskError> = None;
        let mut tried = 0_usize;
        // The model that failed last, for the fallback count.
        let mut failed: Option<&ModelId> = None;
        for candidate in &plan.candidates {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if let (Some(from), Some(error)) = (failed.take(), &last_error) {
                self.instruments.fell_back(
                    from.as_str(),
                    candidate.model.id().as_str(),
                    error.code,
                );
            }
            let _slot = match first_slot.take() {
                Some(slot) => slot,
                None => match self
                    .wait_slot(&candidate.model, &task.task_type, key, deadline)
                    .await
                {
                    Ok(slot) => slot,
                    Err(ending) => return ending,
                },
            };
            // A model whose every replica went down since planning is skipped.
            let Some((end, latency)) = self.attempt(job, candidate).await else {
                continue;
            };
            tried += 1;
            let model = &candidate.model;
            if let Some(outcome) = end.feedback() {
                tracing::debug_span!("feedback", model = %model.id(), outcome = ?outcome).in_scope(
                    || {
                        model.record(
                            &task.task_type,
                            Instant::now(),
                            self.selector.settings().half_life,
                            outcome,
                            latency,
                        );
                    },
                );
            }
            let (attempt_outcome, error, retriable) = match &end {
                CallEnd::Answered(_) => (AttemptOutcome::Succeeded, None, false),
                CallEnd::Failed(error) => (
                    if error.kind == WorkerErrorKind::Timeout {
                        AttemptOutcome::TimedOut
                    } else {
                        AttemptOutcome::Failed
                    },
                    Some(TaskError {
                        code: error.code,
                        message: format!("model `{}` failed: {}", model.id(), error.message),
                    }),
                    error.kind.is_retriable(),
                ),
                CallEnd::CallerDeadline => (
                    AttemptOutcome::TimedOut,
                    Some(TaskError {
                        code: "DEADLINE_EXCEEDED",
                        message: format!(
                            "the deadline passed while model `{}` was running",
                            model.id()
                        ),
                    }),
                    false,
                ),
                CallEnd::WorkerTimeout => (
                    AttemptOutcome::TimedOut,
                    Some(TaskError {
                        code: "DEADLINE_EXCEEDED",
                        message: format!(
                            "model `{}` did not answer within {:?}",
                            model.id(),
                            self.worker_timeout
                        ),
                    }),
                    true,
                ),
            };
            let attempt = Attempt {
                model_id: model.id().clone(),
                outcome: attempt_outcome,
                latency,
                error: error.clone(),
                step: step.cloned(),
            };
            live.update(|snapshot| {
                snapshot.metrics.worker_latency += latency;
                snapshot.metrics.attempts.push(attempt.clone());
                snapshot.model_id = Some(model.id().clone());
            });
            emit(events, || TaskEvent::AttemptFinished(attempt));
            match end {
                CallEnd::Answered(output) => {
                    // A composite's steps read the session but do not write
                    // it: each sees only the steps it waits for, and the
                    // composite records its one output at its end.
                    if let Some(session) = task.session_id.as_ref().filter(|_| step.is_none()) {
                        self.context.record(
                            &task.tenant,
                            session,
                            model.description().kind.clone(),
                            session_entry(task, model.id(), &output),
                        );
                    }
                    return Ending {
                        status: TaskStatus::Succeeded,
                        output: Some(output),
                        error: None,
                        model: None,
                    };
                }
                CallEnd::CallerDeadline => {
                    return Ending {
                        status: TaskStatus::DeadlineExceeded,
                        output: None,
                        error,
                        model: None,
                    };
                }
                _ if !retriable => {
                    return Ending {
                        status: TaskStatus::Failed,
                        output: None,
                        error,
                        model: None,
                    };
                }
                _ => {
                    if let Some(error) = &error {
                        tracing::info!(task.id = %task.id, model = %model.id(), code = error.code, "attempt failed, trying the next model");
                    }
                    last_error = error;
                    failed = Some(model.id());
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ending::failed(
                TaskStatus::DeadlineExceeded,
                "DEADLINE_EXCEEDED",
                format!("the deadline passed after {tried} attempt(s)"),
            );
        }
        let error = match last_error {
            Some(last) if tried > 1 => TaskError {
                code: last.code,
                message: format!(
                    "all {tried} models tried failed; the last: {}",
                    last.message
                ),
            },
            Some(last) => last,
            None => TaskError {
                code: "UNAVAILABLE",
                message: "no replica of any candidate model was available".to_owned(),
            },
        };
        Ending {
            status: TaskStatus::Failed,
            output: None,
            error: Some(error),
            model: None,
        }
    }

    /// One call to one candidate, within the caller's deadline and the
    /// worker timeout.
    async fn attempt(&self, job: Job<'_>, candidate: &Candidate) -> Option<(CallEnd, Duration)> {
        let Job {
            task,
            live,
            deadline,
            context_hash,
            upstream,
            ..
        } = job;
        let replica = candidate.model.pick_replica()?;
        let worker_deadline = Instant::now() + self.worker_timeout;
        let (call_deadline, caller_bound) = match deadline {
            Some(d) if d <= worker_deadline => (d, true),
            _ => (worker_deadline, false),
        };
        let model = candidate.model.id();
        let span = tracing::debug_span!(
            "attempt",
            model = %model,
            endpoint = replica.endpoint(),
            grym.task.r#type = %task.task_type,
            gen_ai.request.model = %model,
            attempt.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let target_kind = candidate.model.description().kind.clone();
        let prepare_span = tracing::debug_span!(
            parent: &span,
            "prepare context",
            target.kind = %target_kind,
            cache.hits = tracing::field::Empty,
            cache.misses = tracing::field::Empty,
        );
        let prepared = self
            .context
            .prepare(
                &task.tenant,
                context_hash.map(|hash| (&task.context, hash)),
                task.session_id.as_deref(),
                upstream,
                &target_kind,
            )
            .instrument(prepare_span.clone())
            .await;
        prepare_span.record("cache.hits", prepared.cache_hits);
        prepare_span.record("cache.misses", prepared.cache_misses);
        if prepared.cache_hits + prepared.cache_misses > 0 {
            live.update(|snapshot| {
                snapshot.metrics.context_cache_hits += prepared.cache_hits;
                snapshot.metrics.context_cache_misses += prepared.cache_misses;
            });
        }
        let call = InferCall {
            task_id: task.id.clone(),
            task_type: task.task_type.clone(),
            input: task.input.clone(),
            parameters: task.parameters.clone(),
            context: prepared.context,
            deadline: call_deadline,
        };
        let _in_flight = replica.start_call();
        // The call's own time, without the context's preparation: what the
        // statistics and the worker-call metric describe.
        let started = Instant::now();
        // The client is called inside the span, so the call it makes (and
        // the `traceparent` it sends) is the attempt's child.
        let answer =
            async { tokio::time::timeout_at(call_deadline, replica.client().infer(call)).await }
                .instrument(span.clone())
                .await;
        let timed_out = || {
            if caller_bound {
                CallEnd::CallerDeadline
            } else {
                CallEnd::WorkerTimeout
            }
        };
        let end = match answer {
            Ok(Ok(output)) => CallEnd::Answered(output),
            // A failure that comes as the deadline passes (the worker or the
            // transport giving up on the same deadline) is that deadline; a
            // refusal of the input stays a refusal.
            Ok(Err(error))
                if error.kind != WorkerErrorKind::Rejected && Instant::now() >= call_deadline =>
            {
                timed_out()
            }
            Ok(Err(error)) => CallEnd::Failed(error),
            Err(_) => timed_out(),
        };
        let latency = started.elapsed();
        let outcome = match &end {
            CallEnd::Answered(_) => "success",
            CallEnd::Failed(error) if error.kind == WorkerErrorKind::Rejected => "rejected",
            CallEnd::Failed(_) => "failure",
            CallEnd::CallerDeadline | CallEnd::WorkerTimeout => "timeout",
        };
        span.record("attempt.outcome", outcome);
        if outcome != "success" {
            span.record("otel.status_code", "ERROR");
        }
        self.instruments
            .worker_called(model.as_str(), outcome, latency);
        if outcome == "success" {
            self.load(model).lock().call.record(
                latency,
                Instant::now(),
                self.selector.settings().half_life,
            );
        }
        Some((end, latency))
    }
}

#[cfg(test)]
mod tests;
