//! Tasks as the core holds them once their request is read, and everything
//! their results say: data only, no behaviour beyond reading it.
//!
//! - this module: the [`Task`], its input and a model's [`Output`];
//! - `composite`: a composite's steps as the caller wrote them, and the
//!   recipe that stood in for a task type;
//! - `result`: statuses, attempts, metrics, results and events;
//! - `routing`: how a task was routed, with every candidate's score.

mod composite;
mod result;
mod routing;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::ids::{Modality, Priority, SessionId, TaskId, TaskType, Tenant};

pub(crate) use self::composite::MAX_STEPS;
pub use self::composite::{CompositeSpec, FailurePolicy, RecipeUse, StepSpec, StepTask, Strategy};
pub use self::result::{
    Attempt, AttemptOutcome, Metrics, StepResult, TaskError, TaskEvent, TaskResult, TaskStatus,
};
pub use self::routing::{CandidateScore, Exclusion, Policy, Reason, Routing, ScoreBreakdown};

/// Encoded audio.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Audio {
    /// The encoded bytes, shared rather than copied.
    pub data: Bytes,
    /// The MIME type; analysis fills it in from the bytes when empty.
    pub mime_type: String,
}

/// The payload of a task.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TaskInput {
    /// Plain text.
    Text(String),
    /// Encoded audio.
    Audio(Audio),
    /// Any JSON value.
    Json(Value),
}

impl TaskInput {
    /// What kind of payload it is.
    pub fn modality(&self) -> Modality {
        match self {
            Self::Text(_) => Modality::Text,
            Self::Audio(_) => Modality::Audio,
            Self::Json(_) => Modality::Json,
        }
    }
}

/// A unit of work, validated.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// The task's id.
    pub id: TaskId,
    /// What is asked.
    pub task_type: TaskType,
    /// The payload.
    pub input: TaskInput,
    /// Parameters passed through to the model.
    pub parameters: Map<String, Value>,
    /// How urgent it is.
    pub priority: Priority,
    /// The longest it may take from submission to result, if bounded.
    pub timeout: Option<Duration>,
    /// Tasks that must have succeeded before it runs.
    pub depends_on: Vec<TaskId>,
    /// Context given inline, for the models it runs on.
    pub context: Map<String, Value>,
    /// The session whose context it shares and extends, if any.
    pub session_id: Option<SessionId>,
    /// Who submitted it: sessions and cached context are never shared
    /// between tenants.
    pub tenant: Tenant,
    /// Its steps, when it is a composite.
    pub composite: Option<Box<CompositeSpec>>,
}

impl Task {
    /// A task with the default priority, no timeout and no dependencies.
    pub fn new(id: TaskId, task_type: TaskType, input: TaskInput) -> Self {
        Self {
            id,
            task_type,
            input,
            parameters: Map::new(),
            priority: Priority::default(),
            timeout: None,
            depends_on: Vec::new(),
            context: Map::new(),
            session_id: None,
            tenant: Tenant::anonymous(),
            composite: None,
        }
    }
}

/// A piece of a model's output that its worker sent before the call ended:
/// a segment found, the next words of a transcript.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputChunk {
    /// Text.
    pub text: Option<String>,
    /// Structured.
    pub json: Option<Value>,
}

/// What a model produced.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Output {
    /// Text output.
    pub text: Option<String>,
    /// Structured output.
    pub json: Option<Value>,
    /// Binary output; empty when none.
    pub data: Bytes,
    /// The MIME type of `data`.
    pub data_mime_type: String,
}
