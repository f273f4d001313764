//! The registry of models.
//!
//! The set of models is fixed when the registry is built; what each model is
//! (its [`Description`]) and whether it is up ([`Health`]) change as the
//! [`probe`](crate::probe) learns them. Readers on the request path take no
//! lock: descriptions are `ArcSwap` snapshots and health is an atomic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use arc_swap::ArcSwap;

use crate::client::ModelClient;
use crate::error::Error;
use crate::model::{Capability, CapabilitySource, Description, Health, ModelId, ModelKind};

/// One registered model and the way to reach it.
pub struct ModelEntry {
    id: ModelId,
    endpoint: String,
    client: Arc<dyn ModelClient>,
    description: ArcSwap<Description>,
    /// The kind was fixed by configuration; the worker's is ignored.
    pinned_kind: bool,
    /// The capabilities were fixed by configuration; the worker's are ignored.
    pinned_capabilities: bool,
    /// Whether the worker's own description was learnt, or is not needed.
    described: AtomicBool,
    health: AtomicU8,
}

impl std::fmt::Debug for ModelEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEntry")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .field("description", &self.description.load())
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl ModelEntry {
    /// A model whose worker will describe itself.
    pub fn new(id: ModelId, endpoint: impl Into<String>, client: Arc<dyn ModelClient>) -> Self {
        Self {
            id,
            endpoint: endpoint.into(),
            client,
            description: ArcSwap::from_pointee(Description::unknown()),
            pinned_kind: false,
            pinned_capabilities: false,
            described: AtomicBool::new(false),
            health: AtomicU8::new(Health::Unknown as u8),
        }
    }

    /// Fixes the model's kind; the worker's own is then ignored.
    pub fn with_kind(mut self, kind: ModelKind) -> Self {
        self.pinned_kind = true;
        self.description.store(Arc::new(Description {
            kind,
            ..(*self.description.load_full()).clone()
        }));
        self.settle();
        self
    }

    /// Fixes the model's capabilities; the worker's own are then ignored.
    pub fn with_capabilities(mut self, capabilities: Vec<Capability>) -> Self {
        self.pinned_capabilities = true;
        self.description.store(Arc::new(Description {
            capabilities,
            source: CapabilitySource::Config,
            ..(*self.description.load_full()).clone()
        }));
        self.settle();
        self
    }

    /// Nothing is left to learn from the worker once both are pinned.
    fn settle(&mut self) {
        if self.pinned_kind && self.pinned_capabilities {
            *self.described.get_mut() = true;
        }
    }

    /// The model's id.
    pub fn id(&self) -> &ModelId {
        &self.id
    }

    /// The worker's address, for display.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The client that reaches the worker.
    pub fn client(&self) -> &Arc<dyn ModelClient> {
        &self.client
    }

    /// A snapshot of what the model is and serves.
    pub fn description(&self) -> Arc<Description> {
        self.description.load_full()
    }

    /// Whether the description is still to be learnt from the worker.
    pub fn needs_description(&self) -> bool {
        !self.described.load(Ordering::Acquire)
    }

    /// Records what the worker said of itself, keeping what configuration
    /// pinned.
    pub fn learn_description(&self, described: Description) {
        let current = self.description.load_full();
        let learnt = Description {
            kind: if self.pinned_kind {
                current.kind.clone()
            } else {
                described.kind
            },
            capabilities: if self.pinned_capabilities {
                current.capabilities.clone()
            } else {
                described.capabilities
            },
            source: if self.pinned_capabilities {
                CapabilitySource::Config
            } else {
                CapabilitySource::Worker
            },
        };
        self.description.store(Arc::new(learnt));
        self.described.store(true, Ordering::Release);
    }

    /// The last known health.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Records a health check's answer.
    pub fn set_health(&self, health: Health) {
        self.health.store(health as u8, Ordering::Relaxed);
    }
}

/// Every registered model, by id.
#[derive(Debug, Default)]
pub struct Registry {
    models: BTreeMap<ModelId, Arc<ModelEntry>>,
}

impl Registry {
    /// Builds a registry; two models with one id are an error naming it.
    pub fn new(entries: impl IntoIterator<Item = ModelEntry>) -> Result<Self, Error> {
        let mut models = BTreeMap::new();
        for entry in entries {
            let id = entry.id.clone();
            if models.insert(id.clone(), Arc::new(entry)).is_some() {
                return Err(Error::invalid(
                    "workers.id",
                    format!("model `{id}` is registered twice"),
                ));
            }
        }
        Ok(Self { models })
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
mod tests {
    use super::*;
    use crate::testing::FakeModel;

    fn worker_description() -> Description {
        let fake = FakeModel::serving("gama", "audio_analysis", 0.95);
        let entry = fake.described_entry();
        (*entry.description()).clone()
    }

    #[test]
    fn a_pinned_kind_keeps_the_workers_capabilities() {
        let entry = FakeModel::serving("gama", "audio_analysis", 0.95)
            .entry()
            .with_kind("audio-language".to_owned());
        assert!(entry.needs_description());
        entry.learn_description(worker_description());
        let description = entry.description();
        assert_eq!(description.kind, "audio-language");
        assert_eq!(description.capabilities.len(), 1);
        assert_eq!(description.source, CapabilitySource::Worker);
    }

    #[test]
    fn pinned_capabilities_keep_the_workers_kind() {
        let entry = FakeModel::serving("gama", "audio_analysis", 0.95)
            .entry()
            .with_capabilities(Vec::new());
        assert!(entry.needs_description());
        entry.learn_description(worker_description());
        let description = entry.description();
        assert_eq!(description.kind, "fake");
        assert!(description.capabilities.is_empty());
        assert_eq!(description.source, CapabilitySource::Config);
    }

    #[test]
    fn a_fully_pinned_model_needs_no_description() {
        let entry = FakeModel::serving("gama", "audio_analysis", 0.95)
            .entry()
            .with_kind("audio-language".to_owned())
            .with_capabilities(Vec::new());
        assert!(!entry.needs_description());
    }

    #[test]
    fn a_model_registered_twice_is_refused() {
        let fake = FakeModel::serving("gama", "audio_analysis", 0.95);
        assert!(Registry::new([fake.entry(), fake.entry()]).is_err());
    }
}
