//! The server span of each incoming call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

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
        ServerTrace { inner }
    }
}

/// Runs every gRPC call inside an `info` span that continues the caller's
/// trace.
///
/// The span is named after the call (`grym.orchestrator.v1.Orchestrator/ExecuteTask`),
/// has kind `server`, the attributes `rpc.system = "grpc"`, `rpc.service`,
/// `rpc.method` and, once the call ends, `rpc.grpc.status_code`; its status
/// is an error for the codes that mean a server fault (`UNKNOWN`,
/// `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`,
/// `DATA_LOSS`), as the OpenTelemetry RPC conventions ask. Its parent is the
/// span context of the request's `traceparent`, when there is one. The span
/// stays entered while the handler runs and while the response body is
/// produced, and ends with the body. Calls to `grpc.health.v1.Health` are
/// not traced.
#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
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
        let span = server_span(&request);
        let inner = span.in_scope(|| self.inner.call(request));
        ResponseFuture { inner, span }
    }
}

/// The span of one call, disabled for calls that are not traced.
fn server_span<B>(request: &http::Request<B>) -> Span {
    // gRPC paths are `/package.Service/Method`.
    let path = request.uri().path();
    let Some(name) = path.strip_prefix('/') else {
        return Span::none();
    };
    let Some((service, method)) = name.split_once('/') else {
        return Span::none();
    };
    if service == UNTRACED_SERVICE {
        return Span::none();
    }
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
        rpc.grpc.status_code = Empty,
        otel.status_code = Empty,
    );
    // Fails only when no OpenTelemetry layer is installed (traces are not
    // exported), where there is no parent to set.
    let _ = span.set_parent(crate::extract(request.headers()));
    span
}

/// Records the `grpc-status` found in `headers`, if any.
fn record_status(span: &Span, headers: &http::HeaderMap) {
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i64>().ok())
    else {
        return;
    };
    span.record("rpc.grpc.status_code", code);
    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
    // DATA_LOSS: the server failed; other codes are the caller's to judge.
    if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
        span.record("otel.status_code", "error");
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ServerTrace`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Span,
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
            let _entered = this.span.enter();
            ready!(this.inner.poll(cx))
        };
        let span = this.span.clone();
        Poll::Ready(match result {
            Ok(response) => {
                // A call that fails before its first message answers with
                // the status in its headers ("trailers-only").
                record_status(&span, response.headers());
                Ok(response.map(|inner| TracedBody { inner, span }))
            }
            Err(error) => {
                span.record("otel.status_code", "error");
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
        span: Span,
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
        let _entered = this.span.enter();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(trailers) = frame.trailers_ref()
        {
            record_status(this.span, trailers);
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
