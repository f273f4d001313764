//! Step 8 of a task's way: watching the whole for bottlenecks, and the
//! metrics that show it.
//!
//! - [`detector`] judges an [`Observation`] against the thresholds (pure);
//! - [`instruments`] records the metrics, and reads the gauges through the
//!   [`Gauges`] the executor implements, so this module never names it.
//!
//! The [`Watcher`] keeps what only the watch reads (what each model's queue
//! and calls took, what each composite type's steps took) and the active
//! findings. Its [`run`](Watcher::run) loop gathers an observation on a
//! period from whoever owns the rest of the state, and logs each finding as
//! it begins and ends.

pub(crate) mod detector;
pub(crate) mod instruments;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::detector::{
    BottleneckSettings, Change, CompositeObservation, Detector, Finding, Kind, Observation,
};
use crate::context::CacheStats;
use crate::ids::{ModelId, TaskType};
use crate::plan::graph::Graph;
use crate::registry::stats::DecayedMean;
use crate::task::{MAX_STEPS, TaskResult};

/// The most composite task types (and steps of each) kept for the
/// analysis: their names are the callers', so they are bounded.
const MAX_COMPOSITE_TYPES: usize = 256;

/// The most ended findings the gauge keeps reporting as 0.
const MAX_ENDED: usize = 1024;

/// What the gauges read at each export.
pub(crate) trait Gauges: Send + Sync + 'static {
    /// Calls running on each model.
    fn in_flight(&self) -> Vec<(ModelId, u64)>;
    /// Calls waiting for each model's slot.
    fn waiting(&self) -> Vec<(ModelId, u64)>;
    /// The context cache's counters.
    fn cache(&self) -> CacheStats;
    /// The active findings.
    fn findings(&self) -> Arc<Vec<Finding>>;
    /// The findings that were active once and are not now.
    fn ended_findings(&self) -> Arc<Vec<(Kind, String)>>;
}

/// What a model's queue and calls took recently.
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// Time waiting for a slot.
    pub(crate) wait: DecayedMean,
    /// Time of successful calls.
    pub(crate) call: DecayedMean,
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

/// The watch's own statistics and its findings.
#[derive(Debug)]
pub(crate) struct Watcher {
    settings: BottleneckSettings,
    half_life: Duration,
    loads: DashMap<ModelId, Mutex<Load>>,
    composites: DashMap<TaskType, Mutex<CompositeStats>>,
    /// The active findings of the last analysis.
    findings: ArcSwap<Vec<Finding>>,
    /// Every finding that was once active, so the gauge can report 0 for
    /// those that ended rather than leave their last 1 standing.
    ended: ArcSwap<Vec<(Kind, String)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Watcher {
    /// A watcher judging by `settings`, its means decaying with
    /// `half_life`.
    pub(crate) fn new(settings: BottleneckSettings, half_life: Duration) -> Self {
        Self {
            settings,
            half_life,
            loads: DashMap::new(),
            composites: DashMap::new(),
            findings: ArcSwap::from_pointee(Vec::new()),
            ended: ArcSwap::from_pointee(Vec::new()),
        }
    }

    pub(crate) fn settings(&self) -> &BottleneckSettings {
        &self.settings
    }

    /// The active findings of the last analysis.
    pub(crate) fn findings(&self) -> Arc<Vec<Finding>> {
        self.findings.load_full()
    }

    /// Findings that were active once and are not now.
    pub(crate) fn ended(&self) -> Arc<Vec<(Kind, String)>> {
        self.ended.load_full()
    }

    /// Changes `model`'s load cell; a read first, so the id is cloned only
    /// at its first use.
    fn with_load(&self, model: &ModelId, change: impl FnOnce(&mut Load)) {
        let cell = match self.loads.get(model) {
            Some(cell) => cell,
            None => self.loads.entry(model.clone()).or_default().downgrade(),
        };
        change(&mut lock(cell.value()));
    }

    /// Records a wait for `model`'s slot.
    pub(crate) fn waited(&self, model: &ModelId, waited: Duration) {
        let half_life = self.half_life;
        self.with_load(model, |load| {
            load.wait.record(waited, Instant::now(), half_life);
        });
    }

    /// Records a successful call of `model`.
    pub(crate) fn answered(&self, model: &ModelId, latency: Duration) {
        let half_life = self.half_life;
        self.with_load(model, |load| {
            load.call.record(latency, Instant::now(), half_life);
        });
    }

    /// `model`'s mean wait, the weight of its waits, and its mean call.
    pub(crate) fn load_of(&self, model: &ModelId, now: Instant) -> (Duration, f64, Duration) {
        self.loads
            .get(model)
            .map_or((Duration::ZERO, 0.0, Duration::ZERO), |load| {
                let load = lock(load.value());
                (
                    load.wait.mean(),
                    load.wait.weight(now, self.half_life),
                    load.call.mean(),
                )
            })
    }

    /// Feeds a finished composite into the statistics of its type: in a
    /// run slower than the type's recent mean, the share of each step on
    /// the run's critical path (by the steps' real latencies).
    pub(crate) fn composite_ended(&self, task_type: &TaskType, graph: &Graph, result: &TaskResult) {
        if !self.composites.contains_key(task_type) && self.composites.len() >= MAX_COMPOSITE_TYPES
        {
            return;
        }
        let now = Instant::now();
        let half_life = self.half_life;
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
        let mut stats = lock(stats.value());
        let slow = stats.total.count() > 0 && total >= stats.total.mean();
        stats.total.record(total, now, half_life);
        if !slow || path.len() < 2 || total.is_zero() {
            return;
        }
        stats.slow_runs.record_value(1.0, now, half_life);
        for i in path {
            let step = graph.nodes[i].spec.id.as_str();
            if !stats.shares.contains_key(step) && stats.shares.len() >= MAX_STEPS {
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

    /// What the composites' statistics say at `now`.
    pub(crate) fn composite_observations(&self, now: Instant) -> Vec<CompositeObservation> {
        self.composites
            .iter()
            .map(|entry| {
                let stats = lock(entry.value());
                CompositeObservation {
                    task_type: entry.key().to_string(),
                    runs: stats.slow_runs.weight(now, self.half_life),
                    steps: stats
                        .shares
                        .iter()
                        .map(|(step, share)| (step.clone(), share.mean_value()))
                        .collect(),
                }
            })
            .collect()
    }

    /// Analyses `observe()` every period until `cancel` fires, logging each
    /// finding as it begins and ends.
    pub(crate) async fn run(&self, observe: impl Fn() -> Observation, cancel: CancellationToken) {
        let mut detector = Detector::new(self.settings.clone());
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let changes = detector.analyse(&observe(), SystemTime::now());
            for change in &changes {
                match change {
                    Change::Began(finding) => tracing::warn!(
                        kind = finding.kind.as_str(),
                        subject = %finding.subject,
                        value = finding.value,
                        threshold = finding.threshold,
                        "bottleneck began: {}",
                        finding.message
                    ),
                    Change::Ended(finding) => tracing::info!(
                        kind = finding.kind.as_str(),
                        subject = %finding.subject,
                        "bottleneck ended: {}",
                        finding.message
                    ),
                }
            }
            if !changes.is_empty() {
                self.remember_ended(&changes, &detector.active());
            }
            self.findings.store(Arc::new(detector.active()));
        }
    }

    /// Adds the findings that ended to those the gauge reports as 0, less
    /// any active again; bounded, the oldest forgotten first.
    fn remember_ended(&self, changes: &[Change], active: &[Finding]) {
        let mut all: Vec<(Kind, String)> = self.ended.load().as_ref().clone();
        all.extend(changes.iter().filter_map(|change| match change {
            Change::Ended(finding) => Some((finding.kind, finding.subject.clone())),
            Change::Began(_) => None,
        }));
        all.retain(|(kind, subject)| {
            !active
                .iter()
                .any(|f| f.kind == *kind && &f.subject == subject)
        });
        all.sort();
        all.dedup();
        let excess = all.len().saturating_sub(MAX_ENDED);
        all.drain(..excess);
        self.ended.store(Arc::new(all));
    }
}
