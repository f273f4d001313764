//! The one error type of the core: what went wrong with a request, in a closed
//! set of kinds that the server maps onto gRPC status codes in one place.
//!
//! A task that was accepted never ends in an [`Error`]: its failures are
//! reported in its [`TaskResult`](crate::TaskResult).

use crate::composite::StepId;
use crate::model::ModelId;
use crate::task::{TaskId, TaskType};

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
    #[error("invalid task.depends_on: unknown task id(s): {}", list_tasks(ids))]
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
    /// A live task has the same id.
    #[error("task `{id}` already exists and has not finished")]
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
    /// No live or kept task has the id.
    #[error("no task `{id}` is known (finished results are kept for a limited time)")]
    TaskNotFound {
        /// The id.
        id: TaskId,
    },
    /// The sessions' byte budget is spent.
    #[error("the sessions' memory budget is spent; delete sessions or retry later")]
    SessionsFull,
    /// The orchestrator is shutting down.
    #[error("grymd is shutting down; submit to another instance")]
    ShuttingDown,
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

fn list_tasks(ids: &[TaskId]) -> String {
    ids.iter()
        .map(TaskId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(ids: &[ModelId]) -> String {
    ids.iter()
        .map(ModelId::as_str)
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
            Self::QueueFull { .. } | Self::SessionsFull => ErrorKind::CapacityExhausted,
            Self::TaskNotFound { .. } => ErrorKind::NotFound,
            Self::NoModelForTaskType { .. } => ErrorKind::FailedPrecondition,
            Self::NoHealthyModel { .. } | Self::Undescribed { .. } | Self::ShuttingDown => {
                ErrorKind::Unavailable
            }
            Self::InStep { error, .. } => error.kind(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field,
            reason: reason.into(),
        }
    }
}
