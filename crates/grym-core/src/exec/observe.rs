//! What others read of the orchestrator's state, each as a snapshot: the
//! watch's [`Observation`], the metrics' [`Gauges`], and the models as
//! `ListModels` shows them.

use std::sync::Arc;

use tokio::time::Instant;

use super::Orchestrator;
use crate::context::CacheStats;
use crate::ids::{ModelId, ModelKind};
use crate::model::{Capability, CapabilitySource, Health};
use crate::registry::StatsSnapshot;
use crate::watch::Gauges;
use crate::watch::detector::{Finding, Kind, LoadObservation, ModelObservation, Observation};

/// A registered model as it stands, with its statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelView {
    /// Its id.
    pub id: ModelId,
    /// Its kind; empty while unknown.
    pub kind: ModelKind,
    /// Serving when any replica serves.
    pub health: Health,
    /// Calls in flight on all replicas.
    pub in_flight: u32,
    /// Each replica, as it stands.
    pub replicas: Vec<ReplicaView>,
    /// Where its capabilities come from.
    pub source: CapabilitySource,
    /// What it serves, each with its recent performance.
    pub capabilities: Vec<CapabilityView>,
}

/// One replica of a model, as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaView {
    /// Its endpoint's address.
    pub endpoint: String,
    /// Its last known health.
    pub health: Health,
    /// Calls running on it now.
    pub in_flight: u32,
    /// Whether outlier ejection keeps it out of rotation.
    pub ejected: bool,
}

/// A capability of a model, with the model's recent performance on it.
#[derive(Debug, Clone, PartialEq)]
pub struct CapabilityView {
    /// What it declares.
    pub capability: Capability,
    /// Its statistics for the task type now.
    pub stats: StatsSnapshot,
}

impl Orchestrator {
    /// Every registered model as it stands now, by id.
    pub fn models(&self) -> Vec<ModelView> {
        let selector = &self.planner.selector;
        let now = Instant::now();
        self.registry
            .load()
            .models()
            .map(|entry| {
                let description = entry.description();
                ModelView {
                    id: entry.id().clone(),
                    kind: description.kind.clone(),
                    health: entry.health(),
                    in_flight: entry.in_flight(),
                    replicas: entry
                        .replicas()
                        .iter()
                        .map(|r| ReplicaView {
                            endpoint: r.endpoint().to_owned(),
                            health: r.health(),
                            in_flight: r.in_flight(),
                            ejected: r.is_ejected(),
                        })
                        .collect(),
                    source: description.source,
                    capabilities: description
                        .capabilities
                        .iter()
                        .map(|capability| CapabilityView {
                            capability: capability.clone(),
                            stats: selector.stats(entry, &capability.task_type, now),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// What the bottleneck analysis reads, as it stands now.
    pub(super) fn observation(&self) -> Observation {
        let now = Instant::now();
        let registry = self.registry.load();
        let mut observation = Observation::default();
        for model in registry.models() {
            let description = model.description();
            for capability in &description.capabilities {
                let stats = self
                    .planner
                    .selector
                    .rates(model, &capability.task_type, now);
                observation.models.push(ModelObservation {
                    model: model.id().to_string(),
                    task_type: capability.task_type.to_string(),
                    estimate: capability.estimated_latency,
                    mean_latency: stats.mean_latency,
                    samples: stats.attempts,
                    error_rate: stats.error_rate(),
                });
            }
            let (running, waiting) = self.scheduler.load_of(model.id());
            let (mean_wait, waits, mean_call) = self.watcher.load_of(model.id(), now);
            observation.loads.push(LoadObservation {
                model: model.id().to_string(),
                running,
                limit: self.scheduler.concurrency_limit(model),
                waiting,
                mean_wait,
                waits,
                mean_call,
            });
        }
        let cache = self.context.cache_stats_now();
        observation.cache_hits = cache.hits;
        observation.cache_misses = cache.misses;
        observation.composites = self.watcher.composite_observations(now);
        observation
    }
}

impl Gauges for Orchestrator {
    fn in_flight(&self) -> Vec<(ModelId, u64)> {
        self.registry
            .load()
            .models()
            .map(|model| (model.id().clone(), u64::from(model.in_flight())))
            .collect()
    }

    fn waiting(&self) -> Vec<(ModelId, u64)> {
        self.scheduler.waiting_per_model()
    }

    fn cache(&self) -> CacheStats {
        self.context.cache_stats_now()
    }

    fn findings(&self) -> Arc<Vec<Finding>> {
        self.watcher.findings()
    }

    fn ended_findings(&self) -> Arc<Vec<(Kind, String)>> {
        self.watcher.ended()
    }
}
