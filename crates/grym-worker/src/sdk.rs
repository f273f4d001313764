//! A small SDK for writing a model worker in Rust.
//!
//! Implement [`Model`] and hand it to [`Worker`]: it serves
//! `grym.worker.v1.ModelWorker`, reports itself serving on `grpc.health.v1`
//! (overall and per service), offers server reflection, and queues calls
//! beyond the model's concurrency limit rather than running them at once.
//! The queue is bounded (four waiting calls per running one by default): a
//! call that finds it full is refused at once with `RESOURCE_EXHAUSTED`, and
//! a queued call waits no longer than its own gRPC deadline.
//! With [`Worker::tls`] it serves TLS only, and with a client CA it requires
//! and verifies its callers' certificates (mTLS).
//! Failures are gRPC statuses: a refusal of the input (`INVALID_ARGUMENT`
//! and its kin) tells the orchestrator no model will do better; any other
//! failure makes it try the next model.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use grym_proto::worker::v1 as pb;
use pb::model_worker_server::{ModelWorker, ModelWorkerServer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::error::Error;

/// The default largest message a worker accepts or sends: 64 MiB, room for
/// several minutes of uncompressed audio.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The longest a TLS handshake with a caller may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Serves a [`Model`] over gRPC.
pub struct Worker<M> {
    model: Arc<M>,
    max_concurrency: Option<usize>,
    max_queue: Option<usize>,
    max_message_bytes: usize,
    tls: Option<ServerTlsConfig>,
}

impl<M: Model> Worker<M> {
    /// A worker for `model`, with no concurrency limit.
    pub fn new(model: M) -> Self {
        Self {
            model: Arc::new(model),
            max_concurrency: None,
            max_queue: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tls: None,
        }
    }

    /// Runs at most `limit` calls at once; later ones wait their turn.
    pub fn max_concurrency(mut self, limit: usize) -> Self {
        self.max_concurrency = Some(limit.max(1));
        self
    }

    /// Lets at most `calls` wait for a turn (default: four per running call).
    pub fn max_queue(mut self, calls: usize) -> Self {
        self.max_queue = Some(calls);
        self
    }

    /// The largest message accepted or sent.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Serves TLS only, as `identity` (a PEM certificate chain and its
    /// key); with `client_ca` (PEM), every caller must present a certificate
    /// that CA signed. A handshake that fails closes that connection only.
    /// Refused when the certificate, key or CA is not usable PEM.
    pub fn tls(
        mut self,
        identity: Identity,
        client_ca: Option<Certificate>,
    ) -> Result<Self, Error> {
        let mut config = ServerTlsConfig::new()
            .identity(identity)
            // A caller that opens a connection and never finishes its
            // handshake does not hold it for ever.
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let Some(ca) = client_ca {
            config = config.client_ca_root(ca);
        }
        // Checked now, so a bad file stops the worker before it listens.
        tonic::transport::Server::builder().tls_config(config.clone())?;
        self.tls = Some(config);
        Ok(self)
    }

    /// Serves on `listener` until `shutdown` completes, then drains calls in
    /// flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<ModelWorkerServer<Service<M>>>()
            .await;
        let (reflection_v1, reflection_v1alpha) =
            grym_proto::reflection_services(&[pb::model_worker_server::SERVICE_NAME])?;
        let service = Service {
            model: self.model,
            limit: self.max_concurrency.map(|running| Limit {
                permits: Semaphore::new(running),
                waiting: AtomicUsize::new(0),
                max_waiting: self.max_queue.unwrap_or(running * 4),
            }),
        };
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls)?;
        }
        server
            // Outermost: each call runs in a span that continues the
            // caller's `traceparent`, so the model's work joins its trace.
            .layer(grym_telemetry::ServerTraceLayer)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                ModelWorkerServer::new(service)
                    .max_decoding_message_size(self.max_message_bytes)
                    .max_encoding_message_size(self.max_message_bytes),
            )
            // TCP_NODELAY on each accepted connection: the builder's
            // `tcp_nodelay` does not reach a listener passed in.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await?;
        Ok(())
    }
}

struct Service<M> {
    model: Arc<M>,
    limit: Option<Limit>,
}

/// The concurrency limit and its bounded queue.
struct Limit {
    permits: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Limit {
    /// A turn to run, waiting in the queue if there is room in it.
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Status> {
        if let Ok(permit) = self.permits.try_acquire() {
            return Ok(permit);
        }
        // Counted as waiting until it leaves the queue, also when the caller
        // gives up and the call is dropped.
        let _waiting = Waiting(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            return Err(Status::resource_exhausted(
                "the worker is at capacity and its queue is full",
            ));
        }
        self.permits
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the worker is shutting down"))
    }
}

/// One call in the queue; dropping it leaves the queue.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
        let request = request.into_inner();
        tracing::debug!(task.id = %request.task_id, task.r#type = %request.task_type, "infer");
        let _turn = match &self.limit {
            Some(limit) => Some(limit.turn().await?),
            None => None,
        };
        let output = self.model.infer(request).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_with_resource_exhausted() {
        let limit = Limit {
            permits: Semaphore::new(1),
            waiting: AtomicUsize::new(0),
            max_waiting: 1,
        };
        let running = limit.turn().await.unwrap();
        let queued = limit.turn();
        tokio::pin!(queued);
        // The second call waits in the queue ...
        assert!(futures_poll_once(queued.as_mut()).await.is_none());
        // ... and a third finds the queue full.
        let status = limit.turn().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        drop(running);
        assert!(queued.await.is_ok());
        assert_eq!(limit.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_queued_call_that_is_dropped_leaves_the_queue() {
        let limit = Limit {
            permits: Semaphore::new(1),
            waiting: AtomicUsize::new(0),
            max_waiting: 1,
        };
        let _running = limit.turn().await.unwrap();
        {
            let queued = limit.turn();
            tokio::pin!(queued);
            assert!(futures_poll_once(queued.as_mut()).await.is_none());
            assert_eq!(limit.waiting.load(Ordering::Acquire), 1);
        }
        assert_eq!(limit.waiting.load(Ordering::Acquire), 0);
    }

    /// Polls a future once, returning its output if it was ready.
    async fn futures_poll_once<F: Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
