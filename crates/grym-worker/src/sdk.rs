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
//!
//! When its shutdown future completes the worker drains: health turns
//! `NOT_SERVING` at once (overall and for the service), new calls are
//! refused with `UNAVAILABLE` (the orchestrator takes them elsewhere), and
//! running and queued calls get [`Worker::shutdown_grace`] to end and answer;
//! a call still running then ends `UNAVAILABLE`. Open health `Watch` streams
//! are ended, so none keeps the worker from exiting, and `serve` returns
//! within the grace period plus a second.
//! Failures are gRPC statuses: a refusal of the input (`INVALID_ARGUMENT`
//! and its kin) tells the orchestrator no model will do better; any other
//! failure makes it try the next model.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use grym_proto::worker::v1 as pb;
use pb::model_worker_server::{ModelWorker, ModelWorkerServer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::error::Error;

/// The default largest message a worker accepts or sends: 64 MiB, room for
/// several minutes of uncompressed audio.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The longest a TLS handshake with a caller may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time running and queued calls get to end once shutdown
/// begins.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// After the grace period, the longest the calls left may take to end once
/// told to.
const CUT_WITHIN: Duration = Duration::from_millis(300);

/// After the drain, the longest connections may take to send their last
/// answers and close.
const CLOSE_WITHIN: Duration = Duration::from_millis(300);

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
        inputs: Vec::new(),
    }
}

/// `capability`, taking only `inputs` (by default it takes any input).
pub fn accepting(mut capability: pb::Capability, inputs: &[pb::InputKind]) -> pb::Capability {
    capability.inputs = inputs.iter().map(|&kind| kind as i32).collect();
    capability
}

/// Reads a kind of input as written on a command line: `text`, `audio` or
/// `json`.
pub fn parse_input_kind(text: &str) -> Result<pb::InputKind, String> {
    match text {
        "text" => Ok(pb::InputKind::Text),
        "audio" => Ok(pb::InputKind::Audio),
        "json" => Ok(pb::InputKind::Json),
        other => Err(format!("`{other}` is not text, audio or json")),
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
    shutdown_grace: Duration,
    health: bool,
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
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            health: true,
        }
    }

    /// Serves no `grpc.health.v1`, as some third-party workers do: grymd
    /// then probes the worker by Describe. For tests of that path.
    pub fn without_health(mut self) -> Self {
        self.health = false;
        self
    }

    /// Gives running and queued calls `grace` to end once shutdown begins
    /// (default [`DEFAULT_SHUTDOWN_GRACE`]; zero ends them at once).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
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

    /// Serves on `listener` until `shutdown` completes, then drains: see the
    /// module's documentation.
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
        let calls = Arc::new(Calls::default());
        let service = Service {
            model: self.model,
            limit: self.max_concurrency.map(|running| Limit {
                permits: Semaphore::new(running),
                waiting: AtomicUsize::new(0),
                max_waiting: self.max_queue.unwrap_or(running * 4),
            }),
            calls: Arc::clone(&calls),
        };
        let (closed, mut on_close) = watch::channel(false);
        let drained = drain(shutdown, self.shutdown_grace, reporter, calls, closed);
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls)?;
        }
        let server = server
            // Outermost: each call runs in a span that continues the
            // caller's `traceparent`, so the model's work joins its trace.
            .layer(grym_telemetry::ServerTraceLayer)
            .add_optional_service(self.health.then_some(health))
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
                drained,
            );
        tokio::pin!(server);
        let close_deadline = async {
            // An error means the drain is gone: the server ended first.
            let _ = on_close.wait_for(|closed| *closed).await;
            tokio::time::sleep(CLOSE_WITHIN).await;
        };
        tokio::select! {
            served = &mut server => served?,
            () = close_deadline => {
                tracing::warn!(within = ?CLOSE_WITHIN, "connections still open after the drain were cut");
            }
        }
        Ok(())
    }
}

/// From `shutdown` on: health `NOT_SERVING`, new calls refused, `grace`
/// for the others, then the rest ended; then every health `Watch` ended
/// and `closed` set.
async fn drain(
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    mut reporter: tonic_health::server::HealthReporter,
    calls: Arc<Calls>,
    closed: watch::Sender<bool>,
) {
    const SERVICE: &str = pb::model_worker_server::SERVICE_NAME;
    shutdown.await;
    // Refusing first: whoever hears NOT_SERVING finds new calls refused.
    let running = calls.close();
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status(SERVICE, tonic_health::ServingStatus::NotServing)
        .await;
    tracing::info!(
        ?grace,
        calls = running,
        "draining: new calls are refused, those running may end"
    );
    if tokio::time::timeout(grace, calls.idle()).await.is_err() {
        tracing::warn!(
            calls = calls.count(),
            "the grace period ran out; the calls still running end UNAVAILABLE"
        );
        calls.cut();
        let _ = tokio::time::timeout(CUT_WITHIN, calls.idle()).await;
    }
    // A name's status gone ends the Watch streams that follow it.
    reporter.clear_service_status("").await;
    reporter.clear_service_status(SERVICE).await;
    closed.send_replace(true);
}

/// The calls a worker runs or queues, and whether it still takes new ones.
/// A call's way in and out touches two atomics only: the hot path pays
/// nothing for the drain.
#[derive(Default)]
struct Calls {
    in_flight: AtomicUsize,
    closed: AtomicBool,
    /// Woken when the last call in flight ends once closed.
    idle: Notify,
    /// Set when the calls in flight are to end now.
    cut: watch::Sender<bool>,
}

impl Calls {
    /// Counts a new call until the guard is dropped; `None` once closed.
    fn enter(self: &Arc<Self>) -> Option<CallGuard> {
        // Counted first, then checked: a drain that closes meanwhile either
        // is seen here or sees this call in its count.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = CallGuard(Arc::clone(self));
        (!self.closed.load(Ordering::SeqCst)).then_some(guard)
    }

    /// Refuses new calls; how many are in flight.
    fn close(&self) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        self.count()
    }

    fn count(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Tells the calls in flight to end now.
    fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Completes when no call is in flight.
    async fn idle(&self) {
        loop {
            let woken = self.idle.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            woken.await;
        }
    }

    /// Completes once the calls in flight are told to end.
    async fn cut_off(&self) {
        let mut cut = self.cut.subscribe();
        // An error cannot happen: `self` holds the sender.
        let _ = cut.wait_for(|cut| *cut).await;
    }
}

/// One call counted in flight; dropping it, however the call ends, ends
/// the count.
struct CallGuard(Arc<Calls>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let calls = &self.0;
        if calls.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && calls.closed.load(Ordering::SeqCst)
        {
            calls.idle.notify_waiters();
        }
    }
}

struct Service<M> {
    model: Arc<M>,
    limit: Option<Limit>,
    calls: Arc<Calls>,
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
        let output = self.run(request.into_inner()).await?;
        Ok(Response::new(pb::InferResponse {
            output: Some(output),
        }))
    }

    type InferStreamStream = tokio_stream::Once<Result<pb::InferStreamResponse, Status>>;

    /// The whole output as the stream's one message: a Rust model sends no
    /// chunks.
    async fn infer_stream(
        &self,
        request: Request<pb::InferStreamRequest>,
    ) -> Result<Response<Self::InferStreamStream>, Status> {
        let Some(call) = request.into_inner().request else {
            return Err(Status::invalid_argument(
                "invalid request: InferStreamRequest.request is required",
            ));
        };
        let output = self.run(call).await?;
        Ok(Response::new(tokio_stream::once(Ok(
            pb::InferStreamResponse {
                event: Some(pb::infer_stream_response::Event::Output(output)),
            },
        ))))
    }
}

impl<M: Model> Service<M> {
    /// One call: counted in flight, queued for a turn under the limit, run,
    /// and cut when the drain's grace runs out.
    async fn run(&self, request: pb::InferRequest) -> Result<pb::Output, Status> {
        let Some(_call) = self.calls.enter() else {
            return Err(Status::unavailable(
                "the worker is shutting down; call another replica",
            ));
        };
        tracing::debug!(task.id = %request.task_id, task.r#type = %request.task_type, "infer");
        let run = async {
            let _turn = match &self.limit {
                Some(limit) => Some(limit.turn().await?),
                None => None,
            };
            self.model.infer(request).await
        };
        tokio::select! {
            output = run => output,
            () = self.calls.cut_off() => Err(Status::unavailable(
                "the worker stopped before the call ended (its shutdown grace ran out)",
            )),
        }
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
