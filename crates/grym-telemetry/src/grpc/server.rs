//! The server span of each incoming call.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use tokio::time::Instant;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The code a call ends with when it is dropped before its status is
/// known: the caller went away, or gave up.
const CANCELLED: i64 = 1;

/// The code of a call whose service failed without a gRPC status.
const UNKNOWN: i64 = 2;

/// The service whose calls are not traced: health probes arrive every few
/// seconds from every prober and would drown the traces that matter.
const UNTRACED_SERVICE: &str = "grpc.health.v1.Health";

/// Wraps a server's routes in [`ServerTrace`].
///
/// ```
/// # async fn example(
/// #     listener: tokio::net::TcpListener,
/// #     health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
/// # ) -> Result<(), tonic::transport::Error> {
/// tonic::transport::Server::builder()
///     // Outermost, so that the span covers everything the call does.
///     .layer(grym_telemetry::ServerTraceLayer)
///     .add_service(health)
///     .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
///     .await
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTraceLayer;

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        // Made when the server is built, after `init` installed the meter
        // provider; a no-op when metrics are not exported.
        let duration = crate::meter()
            .f64_histogram("rpc.server.call.duration")
            .with_unit("s")
            .with_description("How long incoming gRPC calls take, to their status")
            .build();
        ServerTrace { inner, duration }
    }
}

/// Runs every gRPC call inside a span that continues the caller's trace,
/// and measures it.
///
/// The span is named after the call (`grym.orchestrator.v1.Orchestrator/ExecuteTask`),
/// has kind `server`, the attributes `rpc.system = "grpc"`, `rpc.service`,
/// `rpc.method`, `client.address` and `client.port` (the peer, when the
/// connection is TCP) and, once the call ends, `rpc.grpc.status_code`
/// (`CANCELLED`, 1, for a call dropped before its status); its status
/// is an error for the codes that mean a server fault (`UNKNOWN`,
/// `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`,
/// `DATA_LOSS`), as the OpenTelemetry RPC conventions ask. Its parent is the
/// span context of the request's `traceparent`, when there is one. The span
/// stays entered while the handler runs and while the response body is
/// produced, and ends with the body.
///
/// Each call's duration, from its arrival to its status, is recorded in
/// the histogram `rpc.server.call.duration` (seconds) with `rpc.system`,
/// `rpc.service`, `rpc.method` and `rpc.grpc.status_code`. Calls to
/// `grpc.health.v1.Health` are neither traced nor measured.
#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
    duration: Histogram<f64>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ServerTrace<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = CallRecord::start(&request, &self.duration);
        let inner = call.span.in_scope(|| self.inner.call(request));
        ResponseFuture {
            inner,
            call: Some(call),
        }
    }
}

/// One call being served: its span, and what its measurement needs.
#[derive(Debug)]
struct CallRecord {
    span: Span,
    /// `None` for the calls that are not measured.
    measure: Option<Measure>,
    code: Option<i64>,
}

#[derive(Debug)]
struct Measure {
    duration: Histogram<f64>,
    started: Instant,
    service: String,
    method: String,
}

impl CallRecord {
    /// The record of a call, with no span nor measurement for calls that
    /// are not traced.
    fn start<B>(request: &http::Request<B>, duration: &Histogram<f64>) -> Self {
        // gRPC paths are `/package.Service/Method`.
        let names = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|name| Some((name, name.split_once('/')?)))
            .filter(|(_, (service, _))| *service != UNTRACED_SERVICE);
        let Some((name, (service, method))) = names else {
            return Self {
                span: Span::none(),
                measure: None,
                code: None,
            };
        };
        let peer = peer_address(request.extensions());
        // At debug level, like every grym span: traces take it whenever they
        // are exported, and without an exporter no layer wants it, so a call
        // pays nothing for it (an info span would have its fields formatted for
        // log lines at creation and at every record).
        let span = tracing::debug_span!(
            "grpc.server",
            otel.name = name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            client.address = peer.map(|peer| peer.ip().to_string()),
            client.port = peer.map(|peer| i64::from(peer.port())),
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
        );
        // Fails only when no OpenTelemetry layer is installed (traces are not
        // exported), where there is no parent to set.
        let _ = span.set_parent(crate::extract(request.headers()));
        Self {
            span,
            measure: Some(Measure {
                duration: duration.clone(),
                started: Instant::now(),
                service: service.to_owned(),
                method: method.to_owned(),
            }),
            code: None,
        }
    }

    /// Records the `grpc-status` found in `headers`, if any.
    fn status_in(&mut self, headers: &http::HeaderMap) {
        if let Some(code) = headers
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<i64>().ok())
        {
            self.end_with(code);
        }
    }

    /// Records the call's status on its span and measures the call, once.
    fn end_with(&mut self, code: i64) {
        if self.code.is_some() {
            return;
        }
        self.code = Some(code);
        self.span.record("rpc.grpc.status_code", code);
        // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
        // DATA_LOSS: the server failed; other codes are the caller's to judge.
        if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
            self.span.record("otel.status_code", "error");
        }
        if let Some(measure) = &self.measure {
            measure.duration.record(
                measure.started.elapsed().as_secs_f64(),
                &[
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", measure.service.clone()),
                    KeyValue::new("rpc.method", measure.method.clone()),
                    KeyValue::new("rpc.grpc.status_code", code),
                ],
            );
        }
    }
}

impl Drop for CallRecord {
    /// A call dropped before its status (the caller cancelled, or its
    /// connection went) ends `CANCELLED`.
    fn drop(&mut self) {
        self.end_with(CANCELLED);
    }
}

/// The peer of a call on a TCP connection, plain or TLS, as tonic's server
/// records it.
fn peer_address(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|tls| tls.get_ref().remote_addr())
        })
}

pin_project_lite::pin_project! {
    /// The response future of [`ServerTrace`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<CallRecord>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TracedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.call.as_ref().map(|call| call.span.enter());
            ready!(this.inner.poll(cx))
        };
        let Some(mut call) = this.call.take() else {
            // Polled again after it answered: nothing more is recorded.
            return Poll::Ready(result.map(|response| response.map(TracedBody::untraced)));
        };
        Poll::Ready(match result {
            Ok(response) => {
                // A call that fails before its first message answers with
                // the status in its headers ("trailers-only").
                call.status_in(response.headers());
                Ok(response.map(|inner| TracedBody {
                    inner,
                    call: Some(call),
                }))
            }
            Err(error) => {
                call.end_with(UNKNOWN);
                Err(error)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call's `grpc-status` from its
    /// trailers; the call's span ends when it is dropped.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        call: Option<CallRecord>,
    }
}

impl<B> TracedBody<B> {
    fn untraced(inner: B) -> Self {
        Self { inner, call: None }
    }
}

impl<B: Body> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        // Streaming handlers do their work while the body is polled.
        let span = this.call.as_ref().map(|call| call.span.clone());
        let _entered = span.as_ref().map(Span::enter);
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(call) = this.call.as_mut()
            && let Some(Ok(frame)) = &frame
            && let Some(trailers) = frame.trailers_ref()
        {
            call.status_in(trailers);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
