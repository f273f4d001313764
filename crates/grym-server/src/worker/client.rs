//! The gRPC implementation of the core's [`ModelClient`]: one lazily
//! connected HTTP/2 channel per worker replica ([`super::channel`]), shared
//! by every call, with HTTP/2 keep-alive so a dead worker is noticed
//! between calls. The remaining time
//! of each call travels to the worker as its `grpc-timeout`, and the trace
//! it belongs to as its `traceparent`.
//!
//! An `https://` worker is reached over TLS with the `[worker_tls]` settings
//! in force: the channel is rebuilt at the first call after a reload put new
//! ones in force. An `http://` worker stays plaintext whatever they say. A
//! TLS failure is the replica's unavailability, logged once with its reason.
//!
//! The stack of a worker call is short on purpose: trace propagation, then
//! the channel. Timeouts, concurrency limits and queueing are the core's,
//! per model and per task, where the deadline and the priority are known.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::FutureExt;
use futures::future::BoxFuture;
use grym_core::{
    ChunkSink, Description, FailureKind, Health, InferCall, ModelClient, ModelId, Output,
    WorkerError,
};
use grym_proto::worker::v1 as wire;
use grym_telemetry::{ClientPropagation, ClientPropagationLayer};
use http::uri::Authority;
use rustls::pki_types::ServerName;
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::Layer as _;
use tracing::Instrument as _;
use wire::model_worker_client::ModelWorkerClient;

use super::channel::{Target, WorkerChannel};
use super::convert;
use super::discovery::Discovery;
use super::tls::{self, Reported, TlsSource};
use crate::config::{Config, WorkerTls};

/// How worker connections behave.
#[derive(Debug, Clone)]
pub(crate) struct ChannelSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    /// The `[worker_tls]` settings in force, shared by every channel.
    pub(crate) tls: Arc<TlsSource>,
    /// The `dns://` pools' last known addresses, shared by start-up, every
    /// reload and the discovery loop.
    pub(crate) discovery: Arc<Discovery>,
}

impl ChannelSettings {
    /// The settings `config` gives.
    pub(crate) fn from_config(config: &Config) -> Self {
        Self {
            connect_timeout: config.connect_timeout,
            max_message_bytes: config.max_message_bytes,
            tls: TlsSource::new(Arc::clone(&config.worker_tls)),
            discovery: Arc::new(Discovery::new(config.discovery.clone())),
        }
    }
}

/// A worker reached over gRPC.
pub(crate) struct GrpcModelClient {
    /// The worker's host and port, as traces name them.
    host: String,
    port: u16,
    /// The worker's `host:port`, to build channels with.
    authority: Authority,
    max_message_bytes: usize,
    stubs: ArcSwap<Stubs>,
    outcomes: Arc<Outcomes>,
    /// Whether the worker implements `InferStream`: [`UNKNOWN`] until a
    /// streaming call has told.
    streams: Arc<AtomicU8>,
}

/// Not known yet whether the worker implements `InferStream`.
const UNKNOWN: u8 = 0;
/// It does.
const STREAMS: u8 = 1;
/// It answered `UNIMPLEMENTED`: streaming calls are plain `Infer` calls.
const NO_STREAMS: u8 = 2;

/// What the end of a call tells of its replica.
struct Outcomes {
    model: ModelId,
    /// The endpoint as configured, for logs.
    address: String,
    host: String,
    port: u16,
    /// Where an `https://` endpoint's TLS settings come from; `None` for
    /// `http://`.
    tls: Option<Arc<TlsSource>>,
    /// The name the worker's certificate is checked against when the host
    /// is an address a pool's name resolved to.
    tls_name: Option<String>,
    /// Bounds connecting, a TLS handshake and a TLS diagnosis.
    connect_timeout: Duration,
    reported: Reported,
    /// Set once the worker was found to serve no `grpc.health.v1`: it is
    /// then probed by Describe, which is logged once.
    probed_by_describe: std::sync::atomic::AtomicBool,
}

/// The clients of one channel, and the TLS settings it was built with.
struct Stubs {
    tls: Option<Arc<WorkerTls>>,
    worker: ModelWorkerClient<ClientPropagation<WorkerChannel>>,
    health: HealthClient<WorkerChannel>,
}

impl GrpcModelClient {
    /// A client for the worker at `endpoint`; nothing connects until the
    /// first call, so a worker that starts later is still reached. Over
    /// TLS, its certificate is checked against `tls_name` when given (a
    /// pool's name, for an address it resolved to), unless `[worker_tls]
    /// domain` says another.
    pub(crate) fn new(
        model: ModelId,
        endpoint: &str,
        tls_name: Option<&str>,
        settings: &ChannelSettings,
    ) -> Result<Self, String> {
        let address = endpoint.to_owned();
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|error| format!("`{endpoint}` is not a URI: {error}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("`{endpoint}` is neither http:// nor https://")),
        };
        let Some(authority) = uri.authority().cloned() else {
            return Err(format!("`{endpoint}` names no host"));
        };
        let host = authority.host().to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = https.then(|| Arc::clone(&settings.tls));
        let tls_name = tls_name.map(str::to_owned);
        let stubs = Stubs::build(
            &authority,
            port,
            tls.as_ref().map(|source| source.current()),
            tls_name.as_deref(),
            settings.connect_timeout,
            settings.max_message_bytes,
        )?;
        Ok(Self {
            outcomes: Arc::new(Outcomes {
                model,
                address,
                host: host.clone(),
                port,
                tls,
                tls_name,
                connect_timeout: settings.connect_timeout,
                reported: Reported::default(),
                probed_by_describe: std::sync::atomic::AtomicBool::new(false),
            }),
            host,
            port,
            authority,
            max_message_bytes: settings.max_message_bytes,
            stubs: ArcSwap::from_pointee(stubs),
            streams: Arc::new(AtomicU8::new(UNKNOWN)),
        })
    }

    /// The clients to call with: the channel built with the TLS settings in
    /// force, rebuilt when a reload has replaced them.
    fn stubs(&self) -> Arc<Stubs> {
        let stubs = self.stubs.load_full();
        let Some(source) = &self.outcomes.tls else {
            return stubs;
        };
        let tls = source.current();
        if stubs
            .tls
            .as_ref()
            .is_some_and(|built| Arc::ptr_eq(built, &tls))
        {
            return stubs;
        }
        let rebuilt = match Stubs::build(
            &self.authority,
            self.port,
            Some(Arc::clone(&tls)),
            self.outcomes.tls_name.as_deref(),
            self.outcomes.connect_timeout,
            self.max_message_bytes,
        ) {
            Ok(rebuilt) => rebuilt,
            Err(error) => {
                // The reload checked these settings, so this is unexpected;
                // keep the working channel, marked so it is not retried.
                tracing::error!(model = %self.outcomes.model, endpoint = %self.outcomes.address, %error, "the new [worker_tls] settings do not apply to this worker; keeping the old ones");
                Stubs {
                    tls: Some(tls),
                    worker: stubs.worker.clone(),
                    health: stubs.health.clone(),
                }
            }
        };
        let rebuilt = Arc::new(rebuilt);
        self.stubs.store(Arc::clone(&rebuilt));
        rebuilt
    }
}

impl Outcomes {
    /// The failure of a call, with a TLS failure reported once and named
    /// as what it is: the replica's unavailability. Its details stay in
    /// the log: they name hosts and files the caller has no business
    /// knowing.
    async fn failed(&self, status: &tonic::Status) -> WorkerError {
        match self.tls_failure(status).await {
            Some(reason) => {
                self.reported
                    .failed(self.model.as_str(), &self.address, &reason);
                WorkerError::new(
                    FailureKind::Unavailable,
                    format!(
                        "the worker of `{}` is unreachable: TLS with it failed (grymd's log says why)",
                        self.model
                    ),
                )
            }
            None => convert::worker_error(&self.model, status),
        }
    }

    /// What went wrong in TLS, when the call failed because of it: found
    /// in the call's error, or, for a connection that closed without a
    /// reason, by a handshake of grymd's own (once: while the failure is
    /// on record its reason is reused).
    async fn tls_failure(&self, status: &tonic::Status) -> Option<String> {
        let source = self.tls.as_ref()?;
        if let Some(reason) = tls::failure(status) {
            return Some(reason);
        }
        if !tls::is_transport(status) {
            return None;
        }
        if let Some(known) = self.reported.last() {
            return Some(known);
        }
        tls::diagnose(
            &source.current(),
            self.tls_name.as_deref(),
            &self.host,
            self.port,
            self.connect_timeout,
        )
        .await
    }

    /// A call that reached the worker ends a TLS failure on record.
    fn succeeded(&self) {
        if self.tls.is_some() {
            self.reported.succeeded(self.model.as_str(), &self.address);
        }
    }
}

impl Stubs {
    /// The clients of a new, lazily connected channel to `authority`, over
    /// TLS with `tls` when given, checking the certificate against
    /// `tls_name` unless `tls` names a domain of its own (else against the
    /// host).
    fn build(
        authority: &Authority,
        port: u16,
        tls: Option<Arc<WorkerTls>>,
        tls_name: Option<&str>,
        connect_timeout: Duration,
        max_message_bytes: usize,
    ) -> Result<Self, String> {
        // An IPv6 address is bracketed in a URI, bare in a socket address
        // and a certificate.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let verified = match &tls {
            Some(tls) => {
                let name = tls.domain().or(tls_name).unwrap_or(host);
                let name = ServerName::try_from(name.to_owned())
                    .map_err(|_| format!("`{name}` is not a DNS name or an IP address"))?;
                Some((tls.rustls(), name))
            }
            None => None,
        };
        let channel = WorkerChannel::lazy(Target {
            https: tls.is_some(),
            authority: authority.clone(),
            host,
            port,
            tls: verified,
            connect_timeout,
        });
        Ok(Self {
            tls,
            // Calls carry their trace on; health checks belong to none.
            worker: ModelWorkerClient::new(ClientPropagationLayer.layer(channel.clone()))
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            health: HealthClient::new(channel),
        })
    }
}

impl GrpcModelClient {
    /// The client span of one call of `Infer` or `InferStream`.
    fn call_span(&self, stream: bool) -> tracing::Span {
        macro_rules! span {
            ($name:literal, $method:literal) => {
                tracing::debug_span!(
                    $name,
                    otel.kind = "client",
                    rpc.system = "grpc",
                    rpc.service = "grym.worker.v1.ModelWorker",
                    rpc.method = $method,
                    server.address = %self.host,
                    // Signed: the bridge writes unsigned integers as text.
                    server.port = i64::from(self.port),
                    rpc.grpc.status_code = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                    error.r#type = tracing::field::Empty,
                )
            };
        }
        if stream {
            span!("grym.worker.v1.ModelWorker/InferStream", "InferStream")
        } else {
            span!("grym.worker.v1.ModelWorker/Infer", "Infer")
        }
    }
}

/// Records a call's gRPC code on the current span.
fn record_code(code: tonic::Code) {
    let span = tracing::Span::current();
    span.record("rpc.grpc.status_code", code as i32);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", format!("{code:?}").as_str());
    }
}

impl ModelClient for GrpcModelClient {
    fn infer(&self, call: InferCall) -> BoxFuture<'static, Result<Output, WorkerError>> {
        let mut worker = self.stubs().worker.clone();
        let outcomes = Arc::clone(&self.outcomes);
        let remaining = call.deadline.saturating_duration_since(Instant::now());
        let mut request = tonic::Request::new(convert::infer_request(call));
        request.set_timeout(remaining);
        async move {
            let answer = worker.infer(request).await;
            record_code(match &answer {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            });
            match answer {
                Ok(response) => {
                    outcomes.succeeded();
                    Ok(convert::output_from_worker(response.into_inner().output))
                }
                Err(status) => Err(outcomes.failed(&status).await),
            }
        }
        .instrument(self.call_span(false))
        .boxed()
    }

    /// Calls `InferStream`, handing on each chunk as it arrives; a worker
    /// that answers `UNIMPLEMENTED` is called with `Infer` instead, then
    /// and from then on.
    fn infer_streaming(
        &self,
        call: InferCall,
        mut chunks: ChunkSink,
    ) -> BoxFuture<'static, Result<Output, WorkerError>> {
        let known = self.streams.load(Ordering::Relaxed);
        if known == NO_STREAMS {
            return self.infer(call);
        }
        let mut worker = self.stubs().worker.clone();
        let outcomes = Arc::clone(&self.outcomes);
        let streams = Arc::clone(&self.streams);
        let deadline = call.deadline;
        let inner = convert::infer_request(call);
        // Kept only while it is not known whether the worker streams.
        let fallback = (known == UNKNOWN).then(|| inner.clone());
        let mut request = tonic::Request::new(wire::InferStreamRequest {
            request: Some(inner),
        });
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let infer_span = self.call_span(false);
        async move {
            let mut stream = match worker.infer_stream(request).await {
                Ok(response) => response.into_inner(),
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    if let Some(plain) = fallback {
                        streams.store(NO_STREAMS, Ordering::Relaxed);
                        record_code(status.code());
                        let mut request = tonic::Request::new(plain);
                        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
                        let answer = worker.infer(request).instrument(infer_span).await;
                        return match answer {
                            Ok(response) => {
                                outcomes.succeeded();
                                Ok(convert::output_from_worker(response.into_inner().output))
                            }
                            Err(status) => Err(outcomes.failed(&status).await),
                        };
                    }
                    record_code(status.code());
                    return Err(outcomes.failed(&status).await);
                }
                Err(status) => {
                    record_code(status.code());
                    return Err(outcomes.failed(&status).await);
                }
            };
            streams.store(STREAMS, Ordering::Relaxed);
            let mut output = None;
            loop {
                match stream.message().await {
                    Ok(Some(message)) => match (message.event, &output) {
                        (_, Some(_)) => {
                            record_code(tonic::Code::Internal);
                            return Err(WorkerError::new(
                                FailureKind::Internal,
                                format!(
                                    "the worker of `{}` sent more after its final output",
                                    outcomes.model
                                ),
                            ));
                        }
                        (Some(wire::infer_stream_response::Event::Chunk(chunk)), None) => {
                            chunks(convert::chunk_from_worker(chunk));
                        }
                        (Some(wire::infer_stream_response::Event::Output(last)), None) => {
                            output = Some(last);
                        }
                        (None, None) => {}
                    },
                    Ok(None) => break,
                    Err(status) => {
                        record_code(status.code());
                        return Err(outcomes.failed(&status).await);
                    }
                }
            }
            record_code(tonic::Code::Ok);
            outcomes.succeeded();
            match output {
                Some(output) => Ok(convert::output_from_worker(Some(output))),
                None => Err(WorkerError::new(
                    FailureKind::Internal,
                    format!(
                        "the worker of `{}` ended its InferStream without a final output",
                        outcomes.model
                    ),
                )),
            }
        }
        .instrument(self.call_span(true))
        .boxed()
    }

    fn describe(&self) -> BoxFuture<'static, Result<Description, WorkerError>> {
        let mut worker = self.stubs().worker.clone();
        let outcomes = Arc::clone(&self.outcomes);
        async move {
            match worker.describe(wire::DescribeRequest {}).await {
                Ok(response) => {
                    outcomes.succeeded();
                    convert::description_from_worker(response.into_inner())
                }
                Err(status) => Err(outcomes.failed(&status).await),
            }
        }
        .boxed()
    }

    /// Asks for the `grym.worker.v1.ModelWorker` service's health, and for
    /// the server's overall health when the worker does not name services.
    /// A worker that serves no `grpc.health.v1` (UNIMPLEMENTED) is serving
    /// when it answers Describe.
    fn check_health(&self) -> BoxFuture<'static, Health> {
        let stubs = self.stubs();
        let mut health = stubs.health.clone();
        let mut worker = stubs.worker.clone();
        let outcomes = Arc::clone(&self.outcomes);
        async move {
            for service in [wire::model_worker_server::SERVICE_NAME, ""] {
                let request = HealthCheckRequest {
                    service: service.to_owned(),
                };
                match health.check(request).await {
                    Ok(response) => {
                        outcomes.succeeded();
                        if response.get_ref().status() == ServingStatus::Serving {
                            return Health::Serving;
                        }
                        return Health::NotServing;
                    }
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        outcomes.succeeded();
                        continue;
                    }
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        outcomes.succeeded();
                        if !outcomes
                            .probed_by_describe
                            .swap(true, std::sync::atomic::Ordering::Relaxed)
                        {
                            tracing::info!(
                                model = %outcomes.model,
                                endpoint = %outcomes.address,
                                "the worker serves no grpc.health.v1; it is probed by Describe"
                            );
                        }
                        return match worker.describe(wire::DescribeRequest {}).await {
                            Ok(_) => Health::Serving,
                            Err(status) => {
                                outcomes.failed(&status).await;
                                Health::NotServing
                            }
                        };
                    }
                    Err(status) => {
                        // Logs a TLS failure; the probe only hears "not serving".
                        outcomes.failed(&status).await;
                        return Health::NotServing;
                    }
                }
            }
            Health::NotServing
        }
        .boxed()
    }
}
