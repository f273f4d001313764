//! The registry of models.
//!
//! The set of models is fixed when the registry is built; what each model is
//! (its [`Description`]) and whether it is up ([`Health`]) change as the
//! [`probe`](crate::probe) learns them. Readers on the request path take no
//! lock: descriptions are `ArcSwap` snapshots and health is an atomic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use arc_swap::ArcSwap;

use crate::client::ModelClient;
use crate::error::Error;
use crate::model::{Description, Health, ModelId};

/// One registered model and the way to reach it.
pub struct ModelEntry {
    id: ModelId,
    endpoint: String,
    client: Arc<dyn ModelClient>,
    description: ArcSwap<Description>,
    /// Capabilities fixed by configuration: the worker's own are then ignored.
    pinned: bool,
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
            pinned: false,
            health: AtomicU8::new(Health::Unknown as u8),
        }
    }

    /// Fixes the model's capabilities (and its kind, when not empty) from
    /// configuration; the worker's Describe then only fills in an empty kind.
    pub fn with_description(mut self, description: Description) -> Self {
        self.description = ArcSwap::from_pointee(description);
        self.pinned = true;
        self
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
        if self.pinned {
            self.description.load().kind.is_empty()
        } else {
            self.description.load().source == crate::CapabilitySource::Unknown
        }
    }

    /// Records what the worker said of itself, keeping pinned capabilities.
    pub fn learn_description(&self, described: Description) {
        if self.pinned {
            let current = self.description.load_full();
            if current.kind.is_empty() {
                self.description.store(Arc::new(Description {
                    kind: described.kind,
                    ..(*current).clone()
                }));
            }
        } else {
            self.description.store(Arc::new(described));
        }
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
