//! The one door from the core to a model: [`ModelClient`].
//!
//! The server implements it over gRPC; tests implement it with fakes. The
//! core never sees a transport type.

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::model::{Description, Health};
use crate::task::{TaskId, TaskInput, TaskType};

/// One inference call.
#[derive(Debug, Clone)]
pub struct InferCall {
    /// The task the call serves, for the worker's logs.
    pub task_id: TaskId,
    /// The task type.
    pub task_type: TaskType,
    /// The payload.
    pub input: TaskInput,
    /// Model parameters.
    pub parameters: Map<String, Value>,
    /// Context prepared for this model.
    pub context: Map<String, Value>,
    /// When the call must have ended; the client passes it on to the worker.
    pub deadline: Instant,
}

/// How a worker call failed, as far as the orchestrator's decisions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerErrorKind {
    /// The worker could not be reached or is not serving.
    Unavailable,
    /// The call ran out of time.
    Timeout,
    /// The worker is at capacity.
    Overloaded,
    /// The worker refused the input; another attempt with it will not help.
    Rejected,
    /// Any other failure inside the worker.
    Internal,
}

impl WorkerErrorKind {
    /// Whether another model might succeed where this one failed: any
    /// failure but a refusal of the input, which another model would refuse
    /// too. A crash inside one model says nothing of the next.
    pub fn is_retriable(self) -> bool {
        !matches!(self, Self::Rejected)
    }
}

/// A failed worker call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WorkerError {
    /// What the failure means for the orchestrator.
    pub kind: WorkerErrorKind,
    /// The gRPC status code name the worker answered, for example `UNAVAILABLE`.
    pub code: &'static str,
    /// The worker's own message.
    pub message: String,
}

/// A way to reach one model's worker.
pub trait ModelClient: Send + Sync + 'static {
    /// Runs the model once.
    fn infer(&self, call: InferCall) -> BoxFuture<'static, Result<crate::Output, WorkerError>>;

    /// Asks the worker what it is and serves.
    fn describe(&self) -> BoxFuture<'static, Result<Description, WorkerError>>;

    /// Asks the worker whether it is serving.
    fn check_health(&self) -> BoxFuture<'static, Health>;
}
