//! The one door from the core to a model: [`ModelClient`].
//!
//! The server implements it over gRPC; tests implement it with fakes. The
//! core never sees a transport type.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::error::FailureKind;
use crate::ids::{TaskId, TaskType, Tenant};
use crate::model::{Description, Health};
use crate::task::{Output, OutputChunk, TaskInput};

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
    /// Context prepared for this model, shared with the transform cache
    /// when it was found there: read it, or clone what must change.
    pub context: Arc<Map<String, Value>>,
    /// When the call must have ended; the client passes it on to the worker.
    pub deadline: Instant,
    /// Which run of the task the call belongs to, from 1: a task runs again
    /// when the replica that ran it stopped first. With the tenant and the
    /// task id, an idempotency key for the worker.
    pub attempt: u32,
    /// Who submitted the task: task ids are unique within a tenant only.
    pub tenant: Tenant,
}

/// A failed worker call. The client that made it names the kind, from
/// what the worker answered or what the transport saw.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct WorkerError {
    /// What kind of failure it was.
    pub kind: FailureKind,
    /// The worker's own message, or the client's account of the failure.
    pub message: String,
}

impl WorkerError {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Where a streaming call hands each chunk of output, in the order the
/// worker sent them, before its final output.
pub type ChunkSink = Box<dyn FnMut(OutputChunk) + Send>;

/// A way to reach one model's worker.
pub trait ModelClient: Send + Sync + 'static {
    /// Runs the model once.
    fn infer(&self, call: InferCall) -> BoxFuture<'static, Result<Output, WorkerError>>;

    /// Runs the model once, handing `chunks` each piece of output the
    /// worker sends before its final one; the answer is the final output,
    /// as [`infer`](Self::infer) gives it. By default a plain `infer`,
    /// which sends no chunks.
    fn infer_streaming(
        &self,
        call: InferCall,
        chunks: ChunkSink,
    ) -> BoxFuture<'static, Result<Output, WorkerError>> {
        drop(chunks);
        self.infer(call)
    }

    /// Asks the worker what it is and serves.
    fn describe(&self) -> BoxFuture<'static, Result<Description, WorkerError>>;

    /// Asks the worker whether it is serving.
    fn check_health(&self) -> BoxFuture<'static, Health>;
}
