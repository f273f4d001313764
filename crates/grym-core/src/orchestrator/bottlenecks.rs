//! Step 8 of a task's way, the orchestrator's part: gathering the live
//! statistics for the [`bottleneck`](crate::bottleneck) detectors on a
//! period, and keeping what each model's queue and calls took.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Load, Orchestrator};
use crate::bottleneck::{
    BottleneckSettings, Change, CompositeObservation, Detector, Finding, Kind, LoadObservation,
    ModelObservation, Observation,
};

/// The most ended findings the gauge keeps reporting as 0.
const MAX_ENDED: usize = 1024;
use crate::model::ModelId;

/// A model's [`Load`] cell, held for one update.
pub(super) struct LoadGuard<'a>(dashmap::mapref::one::Ref<'a, ModelId, Mutex<Load>>);

impl LoadGuard<'_> {
    pub(super) fn lock(&self) -> MutexGuard<'_, Load> {
        self.0
            .value()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Orchestrator {
    /// Findings that were active once and are not now.
    pub(crate) fn ended_bottlenecks(&self) -> Arc<Vec<(Kind, String)>> {
        self.ended.load_full()
    }

    /// The active bottleneck findings of the last analysis.
    pub fn bottlenecks(&self) -> Arc<Vec<Finding>> {
        self.findings.load_full()
    }

    /// The thresholds of the bottleneck analysis.
    pub fn bottleneck_settings(&self) -> &BottleneckSettings {
        &self.bottleneck_settings
    }

    /// Analyses the statistics for bottlenecks every period until `cancel`
    /// fires, logging each finding as it begins and ends.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        let mut detector = Detector::new(self.bottleneck_settings.clone());
        let mut ticker = tokio::time::interval(self.bottleneck_settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let changes = detector.analyse(&self.observation(), SystemTime::now());
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
            let ended: Vec<(Kind, String)> = changes
                .iter()
                .filter_map(|change| match change {
                    Change::Ended(finding) => Some((finding.kind, finding.subject.clone())),
                    Change::Began(_) => None,
                })
                .collect();
            if !ended.is_empty() || changes.iter().any(|c| matches!(c, Change::Began(_))) {
                let active = detector.active();
                let mut all: Vec<(Kind, String)> = self.ended.load().as_ref().clone();
                all.extend(ended);
                all.retain(|(kind, subject)| {
                    !active
                        .iter()
                        .any(|f| f.kind == *kind && &f.subject == subject)
                });
                all.sort();
                all.dedup();
                // Bounded: the oldest ended findings are forgotten first.
                let excess = all.len().saturating_sub(MAX_ENDED);
                all.drain(..excess);
                self.ended.store(Arc::new(all));
            }
            self.findings.store(Arc::new(detector.active()));
        }
    }

    /// What the bottleneck analysis reads, as it stands now.
    fn observation(&self) -> Observation {
        let now = Instant::now();
        let half_life = self.selector.settings().half_life;
        let registry = self.registry.load();
        let mut observation = Observation::default();
        for model in registry.models() {
            let description = model.description();
            for capability in &description.capabilities {
                let stats = model.rates(&capability.task_type, now, half_life);
                observation.models.push(ModelObservation {
                    model: model.id().to_string(),
                    task_type: capability.task_type.to_string(),
                    estimate: capability.estimated_latency,
                    mean_latency: stats.mean_latency,
                    samples: stats.attempts,
                    error_rate: stats.error_rate(),
                });
            }
            let (running, waiting) = self
                .slots
                .get(model.id())
                .map_or((0, 0), |slots| (slots.running(), slots.waiting()));
            let (mean_wait, waits, mean_call) =
                self.loads
                    .get(model.id())
                    .map_or((Duration::ZERO, 0.0, Duration::ZERO), |load| {
                        let load = load.lock().unwrap_or_else(PoisonError::into_inner);
                        (
                            load.wait.mean(),
                            load.wait.weight(now, half_life),
                            load.call.mean(),
                        )
                    });
            observation.loads.push(LoadObservation {
                model: model.id().to_string(),
                running,
                limit: self.concurrency_limit(model),
                waiting,
                mean_wait,
                waits,
                mean_call,
            });
        }
        let cache = self.context.cache_stats_now();
        observation.cache_hits = cache.hits;
        observation.cache_misses = cache.misses;
        for entry in &self.composites {
            let stats = entry.value().lock().unwrap_or_else(PoisonError::into_inner);
            observation.composites.push(CompositeObservation {
                task_type: entry.key().to_string(),
                runs: stats.slow_runs.weight(now, half_life),
                steps: stats
                    .shares
                    .iter()
                    .map(|(step, share)| (step.clone(), share.mean_value()))
                    .collect(),
            });
        }
        observation
    }

    /// The recent load of `model`, locked for an update.
    pub(super) fn load(&self, model: &ModelId) -> LoadGuard<'_> {
        let entry = match self.loads.get(model) {
            Some(entry) => entry,
            None => self.loads.entry(model.clone()).or_default().downgrade(),
        };
        LoadGuard(entry)
    }

    /// Calls waiting for each model's slot.
    pub(crate) fn waiting_per_model(&self) -> Vec<(String, u64)> {
        self.slots
            .iter()
            .map(|entry| {
                (
                    entry.key().to_string(),
                    u64::try_from(entry.value().waiting()).unwrap_or(u64::MAX),
                )
            })
            .collect()
    }
}
