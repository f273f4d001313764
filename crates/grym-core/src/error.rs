//! The core's words for what went wrong, in closed sets the server maps onto
//! gRPC in one place:
//! - [`Error`]: why a request could not be accepted, with its [`ErrorKind`];
//! - [`FailureKind`]: why an accepted task, one of its steps or one worker
//!   call did not succeed, carried in its result;
//! - [`SettingError`]: a setting out of its range, naming the key.
//!
//! A task that was accepted never ends in an [`Error`]: its failures are
//! reported in its [`TaskResult`](crate::TaskResult).

use std::time::Duration;

use crate::ids::{ModelId, NameError, StepId, TaskId, TaskType};

/// Why a request could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is missing or malformed.
    #[error("invalid {field}: {reason}")]
    InvalidRequest {
        /// The field's path in the API, for example `task.type`.
        field: &'static str,
        /// What is wrong with it, safe to show the caller.
        reason: String,
    },
    /// No registered model declares the task type.
    #[error("no registered model serves task type `{task_type}`")]
    NoModelForTaskType {
        /// The task type asked for.
        task_type: TaskType,
    },
    /// No described model serves the task type, but some models have not
    /// described themselves yet and may.
    #[error(
        "no model serves task type `{task_type}` yet; waiting for these to describe themselves: {}",
        list(undescribed)
    )]
    Undescribed {
        /// The task type asked for.
        task_type: TaskType,
        /// The models whose workers have not answered Describe.
        undescribed: Vec<ModelId>,
    },
    /// Dependencies name tasks that are not known.
    #[error("invalid task.depends_on: unknown task id(s): {}", list(ids))]
    UnknownDependencies {
        /// The unknown ids.
        ids: Vec<TaskId>,
    },
    /// The dependencies would close a cycle.
    #[error("invalid task.depends_on: the dependencies form a cycle: {}", path.iter().map(TaskId::as_str).collect::<Vec<_>>().join(" -> "))]
    DependencyCycle {
        /// The ids on the cycle, starting and ending with the new task.
        path: Vec<TaskId>,
    },
    /// A task of the same tenant has the same id: live, or ended and its
    /// result still kept.
    #[error("task `{id}` already exists: GetTask answers where it stands or how it ended")]
    AlreadyExists {
        /// The id.
        id: TaskId,
    },
    /// The queue is full.
    #[error("the queue is full ({max_queue} tasks waiting); retry later")]
    QueueFull {
        /// The configured bound.
        max_queue: usize,
    },
    /// The task's model has too much work queued ahead of it: it could not
    /// finish before its deadline, or would wait beyond `max_queue_wait`.
    #[error("{0}")]
    Overloaded(Box<Shed>),
    /// No live or kept task has the id.
    #[error("no task `{id}` is known (finished results are kept for a limited time)")]
    TaskNotFound {
        /// The id.
        id: TaskId,
    },
    /// No session has the id.
    #[error("no session `{id}`")]
    SessionNotFound {
        /// The id.
        id: crate::ids::SessionId,
    },
    /// The sessions' byte budget is spent.
    #[error("the sessions' memory budget is spent; delete sessions or retry later")]
    SessionsFull,
    /// The orchestrator is shutting down.
    #[error("grymd is shutting down; submit to another instance")]
    ShuttingDown,
    /// The task store could not do its part of the request: a submission
    /// is then not accepted, a read not answered.
    #[error("the task store is unavailable; retry later ({reason})")]
    StoreUnavailable {
        /// What the store said, safe to show (no credentials).
        reason: String,
    },
    /// Models declare the task type, but every one of them is down.
    #[error(
        "no healthy model serves task type `{task_type}` now (not serving: {})",
        list(down)
    )]
    NoHealthyModel {
        /// The task type asked for.
        task_type: TaskType,
        /// The models that serve it and are down.
        down: Vec<ModelId>,
    },
    /// Models serve the task type, but none of those left takes the
    /// task's kind of input.
    #[error(
        "no model that serves task type `{task_type}` accepts {modality} input ({})",
        list(refused)
    )]
    InputNotAccepted {
        /// The task type asked for.
        task_type: TaskType,
        /// The task's input.
        modality: crate::ids::Modality,
        /// The models that serve the type, each with what it accepts:
        /// `` `audio-features` accepts audio input only ``.
        refused: Vec<String>,
    },
    /// A step of a composite cannot be planned.
    #[error("step `{step}`: {error}")]
    InStep {
        /// The step's id.
        step: StepId,
        /// Why.
        #[source]
        error: Box<Error>,
    },
}

/// Why a task was shed at admission, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shed {
    /// The model the task was planned on.
    pub model: ModelId,
    /// The expected wait for the model's slot: the work queued ahead of the
    /// task over the model's measured throughput.
    pub queued_ahead: Duration,
    /// How long one call of the model is expected to take.
    pub service: Duration,
    /// The time left before the task's deadline, when that was the bound.
    pub left: Option<Duration>,
    /// The configured bound on the wait, when that was the bound.
    pub max_queue_wait: Duration,
}

impl Shed {
    /// When the caller may try again: once the work queued ahead now has
    /// cleared, at least a millisecond.
    pub fn retry_after(&self) -> Duration {
        self.queued_ahead.max(Duration::from_millis(1))
    }
}

impl std::fmt::Display for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_millis();
        match self.left {
            Some(left) => write!(
                f,
                "model `{}` cannot start this task before its deadline: ~{} ms of work queued \
                 ahead, ~{} ms per call, {} ms left; retry in ~{} ms",
                self.model,
                ms(self.queued_ahead),
                ms(self.service),
                ms(left),
                ms(self.retry_after()),
            ),
            None => write!(
                f,
                "model `{}` has ~{} ms of work queued ahead of this task, more than \
                 scheduler.max_queue_wait ({} ms); retry in ~{} ms",
                self.model,
                ms(self.queued_ahead),
                ms(self.max_queue_wait),
                ms(self.retry_after()),
            ),
        }
    }
}

fn list(ids: &[impl std::fmt::Display]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closed set of error kinds; the server turns each into a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong; retrying it unchanged will not help.
    InvalidRequest,
    /// The request is well formed but the system cannot serve it as it is.
    FailedPrecondition,
    /// The system cannot serve it now; the same request may succeed later.
    Unavailable,
    /// What the request names does not exist.
    NotFound,
    /// What the request would create exists already.
    AlreadyExists,
    /// A bounded resource is full; retry later.
    CapacityExhausted,
}

impl Error {
    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest { .. }
            | Self::UnknownDependencies { .. }
            | Self::DependencyCycle { .. } => ErrorKind::InvalidRequest,
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::QueueFull { .. } | Self::SessionsFull | Self::Overloaded(_) => {
                ErrorKind::CapacityExhausted
            }
            Self::TaskNotFound { .. } | Self::SessionNotFound { .. } => ErrorKind::NotFound,
            Self::NoModelForTaskType { .. } | Self::InputNotAccepted { .. } => {
                ErrorKind::FailedPrecondition
            }
            Self::NoHealthyModel { .. }
            | Self::Undescribed { .. }
            | Self::ShuttingDown
            | Self::StoreUnavailable { .. } => ErrorKind::Unavailable,
            Self::InStep { error, .. } => error.kind(),
        }
    }

    /// Why a task was refused, as metrics name it.
    pub fn label(&self) -> &'static str {
        match self {
            Self::QueueFull { .. } => "queue_full",
            Self::Overloaded(_) => "overloaded",
            Self::ShuttingDown => "shutting_down",
            Self::StoreUnavailable { .. } => "store_unavailable",
            Self::NoModelForTaskType { .. } => "no_model",
            Self::NoHealthyModel { .. } | Self::Undescribed { .. } => "no_healthy_model",
            Self::AlreadyExists { .. } => "already_exists",
            other => match other.kind() {
                ErrorKind::InvalidRequest => "invalid",
                ErrorKind::FailedPrecondition => "failed_precondition",
                ErrorKind::Unavailable => "unavailable",
                ErrorKind::NotFound => "not_found",
                ErrorKind::AlreadyExists => "already_exists",
                ErrorKind::CapacityExhausted => "capacity_exhausted",
            },
        }
    }

    /// How long the caller should wait before trying again, when the
    /// refusal says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Overloaded(shed) => Some(shed.retry_after()),
            Self::InStep { error, .. } => error.retry_after(),
            _ => None,
        }
    }

    /// A malformed field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field,
            reason: reason.into(),
        }
    }

    /// A refused name in `field`.
    pub fn invalid_name(field: &'static str, error: NameError) -> Self {
        Self::invalid(field, error.to_string())
    }
}

/// Why an accepted task, a step or one worker call did not succeed.
///
/// Whoever observes the failure names its kind: the orchestrator for what
/// it sees (a deadline, a cancellation, a full queue), the worker client for
/// what a worker answered. The kind alone decides what happens next: a
/// failure the request caused ([`blames_request`](Self::blames_request))
/// is not retried on another model and says nothing of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FailureKind {
    /// The input was refused as malformed.
    InvalidInput,
    /// The input was refused as out of the range the model takes.
    OutOfRange,
    /// What the call names does not exist where it ran.
    NotFound,
    /// What the call would create exists already.
    Conflict,
    /// A condition the task needed did not hold: a dependency or a step
    /// failed, no branch matched, a condition could not be evaluated.
    Precondition,
    /// The caller may not do this.
    Denied,
    /// The caller's identity was not accepted.
    Unauthenticated,
    /// The worker does not implement what was asked.
    Unsupported,
    /// The model could not be reached or is not serving.
    Unavailable,
    /// The call was abandoned midway, for example on a conflict inside the
    /// worker; another try may succeed.
    Aborted,
    /// A bounded resource is full: a model's queue, a worker at capacity.
    Exhausted,
    /// Time ran out: the caller's deadline or the worker timeout.
    DeadlineExceeded,
    /// Cancelled by the caller or by shutdown.
    Cancelled,
    /// Data was lost or corrupted inside the worker.
    DataLoss,
    /// A failure inside a worker or inside the orchestrator.
    Internal,
    /// No reason was given.
    Unknown,
}

impl FailureKind {
    /// Whether the request itself caused the failure: another model would
    /// refuse it too, and the model is not to blame.
    pub fn blames_request(self) -> bool {
        matches!(
            self,
            Self::InvalidInput
                | Self::NotFound
                | Self::Precondition
                | Self::Denied
                | Self::Unsupported
        )
    }

    /// The kind in the core's own words; the server names kinds in
    /// telemetry as its callers know them (see
    /// [`Orchestrator::with_failure_names`](crate::Orchestrator::with_failure_names)).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::OutOfRange => "out_of_range",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Precondition => "precondition",
            Self::Denied => "denied",
            Self::Unauthenticated => "unauthenticated",
            Self::Unsupported => "unsupported",
            Self::Unavailable => "unavailable",
            Self::Aborted => "aborted",
            Self::Exhausted => "exhausted",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Cancelled => "cancelled",
            Self::DataLoss => "data_loss",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

/// A setting out of its range or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{key}`: {reason}")]
pub struct SettingError {
    /// The key, from the settings' own table: `max_queue`,
    /// `routes[0].model`; the configuration adds the table's name.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl SettingError {
    /// `key` is wrong for `reason`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same error, its key within `table`.
    pub fn within(self, table: &str) -> Self {
        Self {
            key: format!("{table}.{}", self.key),
            reason: self.reason,
        }
    }
}
