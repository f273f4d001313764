//! Models: what they are, what they serve, and whether they are up.

use std::time::Duration;

use crate::error::SettingError;
use crate::ids::Modality;
use crate::ids::{ModelKind, TaskType};

/// A task type a model serves, and how well: what a worker's Describe
/// answers, or a `[[workers]] capabilities` entry that overrides it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capability {
    /// The task type.
    pub task_type: TaskType,
    /// Declared confidence, in [0, 1].
    pub confidence: f64,
    /// Expected duration of one call, for example `"800ms"`.
    #[serde(default, with = "humantime_serde")]
    pub estimated_latency: Duration,
    /// Calls the model takes at once; `None` (0 or absent when written)
    /// when unlimited.
    #[serde(default, deserialize_with = "zero_is_unlimited")]
    pub max_concurrency: Option<u32>,
    /// The inputs it accepts for this type (`["audio"]`, say); empty when
    /// it accepts any.
    #[serde(default)]
    pub inputs: Vec<Modality>,
}

/// Reads a concurrency where 0 means unlimited.
fn zero_is_unlimited<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    let limit = <u32 as serde::Deserialize>::deserialize(deserializer)?;
    Ok((limit > 0).then_some(limit))
}

impl Capability {
    /// Whether the model takes `input` for this type.
    pub fn accepts(&self, input: Modality) -> bool {
        self.inputs.is_empty() || self.inputs.contains(&input)
    }

    /// What it accepts, as a phrase: `audio input only`, `text or json
    /// input`; `any input` when it declares none.
    pub fn accepted(&self) -> String {
        match self.inputs.as_slice() {
            [] => "any input".to_owned(),
            [one] => format!("{one} input only"),
            many => format!(
                "{} input",
                many.iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        }
    }

    /// Checks the confidence lies in [0, 1].
    pub fn validate(&self) -> Result<(), SettingError> {
        if (0.0..=1.0).contains(&self.confidence) {
            Ok(())
        } else {
            Err(SettingError::new(
                "confidence",
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
            kind: ModelKind::default(),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
