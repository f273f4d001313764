//! What an accepted task comes to: its status, its attempts, its metrics,
//! its one final result, and the events on the way.

use std::time::{Duration, SystemTime};

use crate::error::FailureKind;
use crate::ids::{ModelId, StepId, TaskId, TaskType, Tenant};
use crate::task::{Output, RecipeUse, Routing};

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

    /// The status as metrics and spans name it: `succeeded`,
    /// `deadline_exceeded`; conditions and messages read it in capitals.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Cancelled => "cancelled",
            Self::DependencyFailed => "dependency_failed",
            Self::Skipped => "skipped",
        }
    }
}

/// Why a task, or one attempt of it, did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskError {
    /// What kind of failure it was.
    pub kind: FailureKind,
    /// A message safe to show the caller.
    pub message: String,
}

impl TaskError {
    /// A failure of `kind`, explained by `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The outcome of one call to a model worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AttemptOutcome {
    /// The worker returned an output.
    Succeeded,
    /// The worker returned an error or could not be reached.
    Failed,
    /// The call ran out of time.
    TimedOut,
    /// Another call of the same task (a hedge, or the call it hedged)
    /// answered first, and this one was cancelled.
    Abandoned,
}

/// One call to a model worker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// The replica called.
    #[serde(default)]
    pub endpoint: String,
    /// Whether the call was a hedge: sent while an earlier call of the same
    /// task was still running past the model's usual time.
    #[serde(default)]
    pub hedge: bool,
}

/// The outcome of one step of a composite.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    pub tenant: Tenant,
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
    /// A piece of output a worker sent before its call ended; chunks come
    /// in the order it sent them, before that call's `AttemptFinished`.
    OutputChunk {
        /// The step whose model sent it, in a composite.
        step: Option<StepId>,
        /// The model that sent it.
        model: ModelId,
        /// The piece.
        chunk: crate::task::OutputChunk,
    },
    /// The task ended; the last event.
    Finished(Box<TaskResult>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_used_lists_each_model_once_in_order() {
        let attempt = |id: &str| Attempt {
            model_id: ModelId::new(id).unwrap(),
            outcome: AttemptOutcome::Failed,
            latency: Duration::ZERO,
            error: None,
            step: None,
            endpoint: String::new(),
            hedge: false,
        };
        let metrics = Metrics {
            attempts: vec![attempt("gama"), attempt("wav2vec2"), attempt("gama")],
            ..Metrics::default()
        };
        let used: Vec<&str> = metrics.models_used().iter().map(|m| m.as_str()).collect();
        assert_eq!(used, ["gama", "wav2vec2"]);
    }
}
