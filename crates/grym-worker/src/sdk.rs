//! A small SDK for writing a model worker in Rust.
//!
//! Implement [`Model`] and hand it to [`Worker`]: it serves
//! `grym.worker.v1.ModelWorker`, reports itself serving on `grpc.health.v1`
//! (overall and per service), offers server reflection, and queues calls
//! beyond the model's concurrency limit rather than running them at once.
//! Failures are gRPC statuses: `UNAVAILABLE`, `RESOURCE_EXHAUSTED` and
//! `DEADLINE_EXCEEDED` tell the orchestrator another model may succeed;
//! `INVALID_ARGUMENT` tells it none will.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use grym_proto::worker::v1 as pb;
use pb::model_worker_server::{ModelWorker, ModelWorkerServer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// The default largest message a worker accepts or sends: 64 MiB, room for
/// several minutes of uncompressed audio.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A model that a worker serves.
pub trait Model: Send + Sync + 'static {
    /// What the model is and which task types it serves.
    fn describe(&self) -> pb::DescribeResponse;

    /// Runs the model once.
    fn infer(
        &self,
        request: pb::InferRequest,
    ) -> impl Future<Output = Result<pb::Output, Status>> + Send;
}

/// A capability entry for [`Model::describe`].
pub fn capability(
    task_type: &str,
    confidence: f64,
    estimated_latency: Duration,
    max_concurrency: u32,
) -> pb::Capability {
    pb::Capability {
        task_type: task_type.to_owned(),
        confidence,
        estimated_latency: prost_types::Duration::try_from(estimated_latency).ok(),
        max_concurrency,
    }
}

/// Refuses a call whose task type the model does not serve.
pub fn check_task_type(
    description: &pb::DescribeResponse,
    request: &pb::InferRequest,
) -> Result<(), Status> {
    if description
        .capabilities
        .iter()
        .any(|c| c.task_type == request.task_type)
    {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "model `{}` does not serve task type `{}`",
            description.model_id, request.task_type
        )))
    }
}

/// Why a worker could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptors.
    #[error("building the reflection service failed")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("the gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves a [`Model`] over gRPC.
pub struct Worker<M> {
    model: Arc<M>,
    max_concurrency: Option<usize>,
    max_message_bytes: usize,
}

impl<M: Model> Worker<M> {
    /// A worker for `model`, with no concurrency limit.
    pub fn new(model: M) -> Self {
        Self {
            model: Arc::new(model),
            max_concurrency: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// Runs at most `limit` calls at once; later ones wait their turn.
    pub fn max_concurrency(mut self, limit: usize) -> Self {
        self.max_concurrency = Some(limit.max(1));
        self
    }

    /// The largest message accepted or sent.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Serves on `listener` until `shutdown` completes, then drains calls in
    /// flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<ModelWorkerServer<Service<M>>>()
            .await;
        let (reflection_v1, reflection_v1alpha) =
            grym_proto::reflection_services(&[pb::model_worker_server::SERVICE_NAME])?;
        let service = Service {
            model: self.model,
            permits: self.max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
        };
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                ModelWorkerServer::new(service)
                    .max_decoding_message_size(self.max_message_bytes)
                    .max_encoding_message_size(self.max_message_bytes),
            )
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await?;
        Ok(())
    }
}

struct Service<M> {
    model: Arc<M>,
    permits: Option<Arc<Semaphore>>,
}

#[tonic::async_trait]
impl<M: Model> ModelWorker for Service<M> {
    async fn describe(
        &self,
        _request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        Ok(Response::new(self.model.describe()))
    }

    async fn infer(
        &self,
        request: Request<pb::InferRequest>,
    ) -> Result<Response<pb::InferResponse>, Status> {
        let _permit = match &self.permits {
            Some(permits) => Some(
                permits
                    .acquire()
                    .await
                    .map_err(|_| Status::unavailable("the worker is shutting down"))?,
            ),
            None => None,
        };
        let output = self.model.infer(request.into_inner()).await?;
        Ok(Response::new(pb::InferResponse {
            output: Some(output),
        }))
    }
}

/// Completes on SIGINT or SIGTERM: the usual `shutdown` for [`Worker::serve`].
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down");
}
