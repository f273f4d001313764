//! Models: what they are, what they serve, and whether they are up.

use std::fmt;
use std::time::Duration;

use crate::error::Error;
use crate::task::{TaskType, check_name};

/// A model's id, for example `gama`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(String);

impl ModelId {
    /// Validates a model id (field `model_id`).
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        check_name("model_id", &id)?;
        Ok(Self(id))
    }

    /// An id the code itself names; checked in debug builds.
    pub(crate) fn literal(id: &'static str) -> Self {
        debug_assert!(check_name("model_id", id).is_ok());
        Self(id.to_owned())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of a model, for example `audio-language`; context is shaped per
/// kind. Free text: workers bring kinds the orchestrator has never seen.
pub type ModelKind = String;

/// A task type a model serves, and how well.
#[derive(Debug, Clone, PartialEq)]
pub struct Capability {
    /// The task type.
    pub task_type: TaskType,
    /// Declared confidence, in [0, 1].
    pub confidence: f64,
    /// Expected duration of one call.
    pub estimated_latency: Duration,
    /// Calls the model takes at once; `None` when unlimited.
    pub max_concurrency: Option<u32>,
}

impl Capability {
    /// Checks the confidence lies in [0, 1]; `field` names where it came from.
    pub fn validate(&self, field: &'static str) -> Result<(), Error> {
        if (0.0..=1.0).contains(&self.confidence) {
            Ok(())
        } else {
            Err(Error::invalid(
                field,
                format!(
                    "confidence {} for `{}` is outside [0, 1]",
                    self.confidence, self.task_type
                ),
            ))
        }
    }
}

/// Where a model's capabilities come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilitySource {
    /// Not known yet: the worker has not described itself.
    Unknown,
    /// The worker's Describe answer.
    Worker,
    /// The configuration, which overrides the worker.
    Config,
}

/// What a model is and serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    /// The model's kind; empty while unknown.
    pub kind: ModelKind,
    /// The task types it serves.
    pub capabilities: Vec<Capability>,
    /// Where `capabilities` come from.
    pub source: CapabilitySource,
}

impl Description {
    /// A model nothing is known about yet.
    pub fn unknown() -> Self {
        Self {
            kind: ModelKind::new(),
            capabilities: Vec::new(),
            source: CapabilitySource::Unknown,
        }
    }

    /// The capability for a task type, if the model serves it.
    pub fn capability(&self, task_type: &TaskType) -> Option<&Capability> {
        self.capabilities
            .iter()
            .find(|capability| &capability.task_type == task_type)
    }
}

/// Whether a model's worker is up, by its grpc.health.v1 service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not checked yet.
    Unknown = 0,
    /// Serving.
    Serving = 1,
    /// Not serving or unreachable.
    NotServing = 2,
}

impl Health {
    pub(crate) fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Serving,
            2 => Self::NotServing,
            _ => Self::Unknown,
        }
    }
}
