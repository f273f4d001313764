//! The registry of models.
//!
//! A model is one [`ModelEntry`]: its description, its performance
//! statistics per task type, and its [`Replica`]s (endpoints serving the
//! same model), each with its own health, in-flight count and latency
//! estimate. What a model is and whether it is up change as the [`probe`]
//! learns them; the statistics change with every call; the replicas of a
//! pool change as the server's discovery finds them. Readers on the
//! request path take no global lock: descriptions and lists of replicas
//! are `ArcSwap` snapshots, health, in-flight counts and latency estimates
//! are atomics, and each (model, task type) statistics cell has its own
//! short lock.
//!
//! A registry is immutable once built; the orchestrator swaps in a new one
//! when the worker list changes, reusing the entries of unchanged models so
//! their statistics and health carry over, and calls in flight keep the
//! entry they started with.
//!
//! - [`entry`]: one model, and the choice of its replica for a call;
//! - [`replica`]: one endpoint, and a call in flight on it;
//! - [`balance`]: the power of two choices over peak-EWMA latency that
//!   chooses among a model's replicas;
//! - [`probe`] keeps every model described and health-checked;
//! - [`stats`] holds the decayed statistics of each (model, task type); the
//!   selector, which owns their half-life, records into and reads them;
//! - [`outlier`] ejects a replica whose calls fail, on the evidence of the
//!   calls themselves, and lets it back in through one probe call;
//! - [`budget`] bounds the retries a model's failures may cause.

pub(crate) mod balance;
pub(crate) mod budget;
pub(crate) mod entry;
pub(crate) mod outlier;
pub mod probe;
pub(crate) mod replica;
pub(crate) mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use self::budget::{BudgetUse, RetrySettings};
pub use self::entry::{ModelEntry, ReplicaChanges, Replicas};
pub use self::outlier::EjectionSettings;
pub(crate) use self::replica::InFlight;
pub use self::replica::{Chosen, Replica};
pub use self::stats::{CallOutcome, StatsSnapshot};
use crate::error::SettingError;
use crate::ids::ModelId;

/// Every registered model, by id.
#[derive(Debug, Default)]
pub struct Registry {
    models: BTreeMap<ModelId, Arc<ModelEntry>>,
}

impl Registry {
    /// Builds a registry; two models with one id are an error naming it.
    pub fn new(entries: impl IntoIterator<Item = ModelEntry>) -> Result<Self, SettingError> {
        Self::from_arcs(entries.into_iter().map(Arc::new))
    }

    fn from_arcs(entries: impl IntoIterator<Item = Arc<ModelEntry>>) -> Result<Self, SettingError> {
        let mut models = BTreeMap::new();
        for entry in entries {
            let id = entry.id().clone();
            if models.insert(id.clone(), entry).is_some() {
                return Err(SettingError::new(
                    "id",
                    format!("model `{id}` is registered twice"),
                ));
            }
        }
        Ok(Self { models })
    }

    /// A registry of `entries` that keeps this registry's entry wherever a
    /// model is unchanged, with its health and statistics.
    pub fn succeed_with(
        &self,
        entries: impl IntoIterator<Item = ModelEntry>,
    ) -> Result<Self, SettingError> {
        Self::from_arcs(
            entries
                .into_iter()
                .map(|entry| match self.models.get(entry.id()) {
                    Some(old) if old.same_as(&entry) => Arc::clone(old),
                    _ => Arc::new(entry),
                }),
        )
    }

    /// The models, ordered by id.
    pub fn models(&self) -> impl ExactSizeIterator<Item = &Arc<ModelEntry>> {
        self.models.values()
    }

    /// One model by id.
    pub fn get(&self, id: &ModelId) -> Option<&Arc<ModelEntry>> {
        self.models.get(id)
    }
}

#[cfg(test)]
mod tests;
