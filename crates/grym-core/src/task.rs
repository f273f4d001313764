//! Tasks and their results.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::composite::recipe::RecipeUse;
use crate::composite::{CompositeSpec, StepId};
use crate::error::Error;
use crate::model::ModelId;
pub use crate::scheduler::queue::Priority;
use crate::selection::Routing;

/// The longest id or task type accepted, in bytes.
const MAX_NAME_LEN: usize = 256;

/// Checks a caller-supplied name: not empty, bounded, printable, no spaces.
pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!("is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// A task's id: the caller's, or a time-ordered UUID the server assigns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(String);

impl TaskId {
    /// Validates a caller-supplied id (field `task.id`).
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        check_name("task.id", &id)?;
        Ok(Self(id))
    }

    /// A fresh, time-ordered id (UUID v7).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id of a composite's step, as its worker sees it: `parent/step`.
    pub(crate) fn of_step(parent: &TaskId, step: &StepId) -> Self {
        Self(format!("{parent}/{step}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a task asks for, for example `audio_analysis`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskType(String);

impl TaskType {
    /// Validates a task type (field `task.type`).
    pub fn new(task_type: impl Into<String>) -> Result<Self, Error> {
        let task_type = task_type.into();
        check_name("task.type", &task_type)?;
        Ok(Self(task_type))
    }

    /// A type the code itself names; checked in debug builds.
    pub(crate) fn literal(task_type: &'static str) -> Self {
        debug_assert!(check_name("task.type", task_type).is_ok());
        Self(task_type.to_owned())
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Encoded audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// The encoded bytes, shared rather than copied.
    pub data: Bytes,
    /// The MIME type; analysis fills it in from the bytes when empty.
    pub mime_type: String,
}

/// The payload of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskInput {
    /// Plain text.
    Text(String),
    /// Encoded audio.
    Audio(Audio),
    /// Any JSON value.
    Json(Value),
}

/// A unit of work, validated.
#[derive(Debug, Clone, PartialEq)]
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
    pub session_id: Option<String>,
    /// Who submitted it: sessions and cached context are never shared
    /// between tenants. Empty for callers that name none.
    pub tenant: String,
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
            tenant: String::new(),
            composite: None,
        }
    }
}

/// What a model produced.
#[derive(Debug, Clone, Default, PartialEq)]
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

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Accepted, waiting for its dependencies or for a model.
    Queued,
    /// A model is working on it.
    Running,
    /// Finished with an output.
    Succeeded,
    /// Finished without an output.
    Failed,
    /// Its deadline passed before a model finished it.
    DeadlineExceeded,
    /// Cancelled by its caller.
    Cancelled,
    /// A task it depends on did not succeed, so it never ran; for a step,
    /// a step it waits for.
    DependencyFailed,
    /// A step whose condition was false, so it did not run.
    Skipped,
}

impl TaskStatus {
    /// Whether the task has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// Why a task, or one attempt of it, did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// The gRPC status code name, for example `UNAVAILABLE`.
    pub code: &'static str,
    /// A message safe to show the caller.
    pub message: String,
}

/// The outcome of one call to a model worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The worker returned an output.
    Succeeded,
    /// The worker returned an error or could not be reached.
    Failed,
    /// The call ran out of time.
    TimedOut,
}

/// One call to a model worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The model called.
    pub model_id: ModelId,
    /// How the call ended.
    pub outcome: AttemptOutcome,
    /// How long it took.
    pub latency: Duration,
    /// The error, when it failed.
    pub error: Option<TaskError>,
    /// The composite step it was made for.
    pub step: Option<StepId>,
}

/// The outcome of one step of a composite.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// The step.
    pub step: StepId,
    /// Its task type.
    pub task_type: TaskType,
    /// How it ended.
    pub status: TaskStatus,
    /// The model that produced its output, or was tried last.
    pub model_id: Option<ModelId>,
    /// Its output, on success.
    pub output: Option<Output>,
    /// Why it did not succeed.
    pub error: Option<TaskError>,
    /// From the moment its waits were met to its end.
    pub latency: Duration,
    /// Time spent waiting for a model's slot.
    pub queue_wait: Duration,
    /// Calls made.
    pub attempts: u32,
    /// How it was routed, when it was.
    pub routing: Option<Routing>,
    /// Its share of the composite's deadline.
    pub budget: Option<Duration>,
}

/// How the orchestrator ran a task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// From arrival to result.
    pub total_latency: Duration,
    /// From arrival to the first call: dependencies and the model's queue.
    pub queue_wait: Duration,
    /// Parts of context found already transformed in the shared cache.
    pub context_cache_hits: u32,
    /// Parts of context transformed for this task.
    pub context_cache_misses: u32,
    /// Time spent in worker calls, summed over attempts.
    pub worker_latency: Duration,
    /// Every worker call, in order.
    pub attempts: Vec<Attempt>,
}

impl Metrics {
    /// The models called, in order, each once.
    pub fn models_used(&self) -> Vec<&ModelId> {
        let mut used: Vec<&ModelId> = Vec::with_capacity(self.attempts.len());
        for attempt in &self.attempts {
            if !used.contains(&&attempt.model_id) {
                used.push(&attempt.model_id);
            }
        }
        used
    }
}

/// The final outcome of an accepted task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// The task's id.
    pub task_id: TaskId,
    /// The final status.
    pub status: TaskStatus,
    /// The model that produced the output, or was tried last.
    pub model_id: Option<ModelId>,
    /// The output, on success.
    pub output: Option<Output>,
    /// Why it did not succeed.
    pub error: Option<TaskError>,
    /// How it ran.
    pub metrics: Metrics,
    /// Which models were considered, which was chosen and why.
    pub routing: Routing,
    /// When it was accepted.
    pub queued_at: SystemTime,
    /// When its first call started.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub finished_at: Option<SystemTime>,
    /// Who submitted it: only that tenant can see or cancel it.
    pub tenant: String,
    /// For a composite, each ended step, in list order.
    pub steps: Vec<StepResult>,
    /// The recipe that stood in for the task type, if one did.
    pub recipe: Option<RecipeUse>,
}

/// What happens to a task, in order, for a caller that follows it.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    /// Accepted and waiting.
    Queued,
    /// A model was chosen (again, after waiting) and the task is about to run.
    ModelChosen(Routing),
    /// Its first call is starting.
    Started,
    /// One call ended.
    AttemptFinished(Attempt),
    /// A step of a composite is starting.
    StepStarted {
        /// The step.
        step: StepId,
        /// How it was routed.
        routing: Box<Routing>,
        /// Its share of the composite's deadline.
        budget: Option<Duration>,
    },
    /// A step of a composite ended.
    StepFinished(Box<StepResult>),
    /// The task ended; the last event.
    Finished(Box<TaskResult>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn field_of(err: Error) -> &'static str {
        match err {
            Error::InvalidRequest { field, .. } => field,
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_task_type_names_the_field() {
        assert_eq!(field_of(TaskType::new("").unwrap_err()), "task.type");
    }

    #[test]
    fn names_with_whitespace_or_excess_length_are_refused() {
        assert_eq!(field_of(TaskId::new("a b").unwrap_err()), "task.id");
        assert_eq!(
            field_of(TaskId::new("x".repeat(257)).unwrap_err()),
            "task.id"
        );
        assert!(TaskId::new("x".repeat(256)).is_ok());
    }

    #[test]
    fn generated_ids_are_unique_and_ordered() {
        let a = TaskId::generate();
        let b = TaskId::generate();
        assert_ne!(a, b);
        assert!(a < b, "UUID v7 ids sort by creation time: {a} then {b}");
    }

    #[test]
    fn models_used_lists_each_model_once_in_order() {
        let attempt = |id: &str| Attempt {
            model_id: ModelId::new(id).unwrap(),
            outcome: AttemptOutcome::Failed,
            latency: Duration::ZERO,
            error: None,
            step: None,
        };
        let metrics = Metrics {
            attempts: vec![attempt("gama"), attempt("wav2vec2"), attempt("gama")],
            ..Metrics::default()
        };
        let used: Vec<&str> = metrics.models_used().iter().map(|m| m.as_str()).collect();
        assert_eq!(used, ["gama", "wav2vec2"]);
    }
}
