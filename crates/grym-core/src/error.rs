//! The one error type of the core: what went wrong with a request, in a closed
//! set of kinds that the server maps onto gRPC status codes in one place.
//!
//! A task that was accepted never ends in an [`Error`]: its failures are
//! reported in its [`TaskResult`](crate::TaskResult).

use crate::model::ModelId;
use crate::task::TaskType;

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
}

impl Error {
    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest { .. } => ErrorKind::InvalidRequest,
            Self::NoModelForTaskType { .. } => ErrorKind::FailedPrecondition,
            Self::NoHealthyModel { .. } | Self::Undescribed { .. } => ErrorKind::Unavailable,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field,
            reason: reason.into(),
        }
    }
}
