//! The gRPC implementation of the core's [`ModelClient`]: one lazily
//! connected tonic channel per worker, reused by every call, with HTTP/2
//! keep-alive so a dead worker is noticed between calls. The remaining time
//! of each call travels to the worker as its `grpc-timeout`, and the trace
//! it belongs to as its `traceparent`.
//!
//! The stack of a worker call is short on purpose: trace propagation, then
//! the channel. Timeouts, concurrency limits and queueing are the core's,
//! per model and per task, where the deadline and the priority are known.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use grym_core::{Description, Health, InferCall, ModelClient, ModelId, Output, WorkerError};
use grym_proto::worker::v1 as wire;
use grym_telemetry::{ClientPropagation, ClientPropagationLayer};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::Layer as _;
use tracing::Instrument as _;
use wire::model_worker_client::ModelWorkerClient;

use super::convert;

/// How worker connections behave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) max_message_bytes: usize,
}

/// A worker reached over gRPC.
pub(crate) struct GrpcModelClient {
    model: ModelId,
    /// The worker's host and port, as traces name them.
    host: String,
    port: u16,
    worker: ModelWorkerClient<ClientPropagation<Channel>>,
    health: HealthClient<Channel>,
}

impl GrpcModelClient {
    /// A client for the worker at `endpoint`; nothing connects until the
    /// first call, so a worker that starts later is still reached.
    pub(crate) fn new(
        model: ModelId,
        endpoint: &str,
        settings: ChannelSettings,
    ) -> Result<Self, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(endpoint.to_owned())?;
        let host = endpoint.uri().host().unwrap_or_default().to_owned();
        let port = endpoint.uri().port_u16().unwrap_or(80);
        let channel = endpoint
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Self {
            model,
            host,
            port,
            // Calls carry their trace on; health checks belong to none.
            worker: ModelWorkerClient::new(ClientPropagationLayer.layer(channel.clone()))
                .max_decoding_message_size(settings.max_message_bytes)
                .max_encoding_message_size(settings.max_message_bytes),
            health: HealthClient::new(channel),
        })
    }
}

impl ModelClient for GrpcModelClient {
    fn infer(&self, call: InferCall) -> BoxFuture<'static, Result<Output, WorkerError>> {
        let mut worker = self.worker.clone();
        let model = self.model.clone();
        let remaining = call.deadline.saturating_duration_since(Instant::now());
        let mut request = tonic::Request::new(convert::infer_request(call));
        request.set_timeout(remaining);
        let span = tracing::debug_span!(
            "grym.worker.v1.ModelWorker/Infer",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = "grym.worker.v1.ModelWorker",
            rpc.method = "Infer",
            server.address = %self.host,
            server.port = self.port,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error.r#type = tracing::field::Empty,
        );
        async move {
            let answer = worker.infer(request).await;
            let code = match &answer {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            };
            let span = tracing::Span::current();
            span.record("rpc.grpc.status_code", code as i32);
            if code != tonic::Code::Ok {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", format!("{code:?}").as_str());
            }
            match answer {
                Ok(response) => Ok(convert::output_from_worker(response.into_inner().output)),
                Err(status) => Err(convert::worker_error(&model, &status)),
            }
        }
        .instrument(span)
        .boxed()
    }

    fn describe(&self) -> BoxFuture<'static, Result<Description, WorkerError>> {
        let mut worker = self.worker.clone();
        let model = self.model.clone();
        async move {
            match worker.describe(wire::DescribeRequest {}).await {
                Ok(response) => convert::description_from_worker(response.into_inner()),
                Err(status) => Err(convert::worker_error(&model, &status)),
            }
        }
        .boxed()
    }

    /// Asks for the `grym.worker.v1.ModelWorker` service's health, and for
    /// the server's overall health when the worker does not name services.
    fn check_health(&self) -> BoxFuture<'static, Health> {
        let mut health = self.health.clone();
        async move {
            for service in [wire::model_worker_server::SERVICE_NAME, ""] {
                let request = HealthCheckRequest {
                    service: service.to_owned(),
                };
                match health.check(request).await {
                    Ok(response) if response.get_ref().status() == ServingStatus::Serving => {
                        return Health::Serving;
                    }
                    Err(status) if status.code() == tonic::Code::NotFound => continue,
                    _ => return Health::NotServing,
                }
            }
            Health::NotServing
        }
        .boxed()
    }
}
