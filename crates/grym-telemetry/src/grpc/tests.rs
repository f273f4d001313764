//! The layers around in-memory services, with spans recorded into memory.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use opentelemetry::Value;
use opentelemetry::trace::{
    SpanId, SpanKind, Status, TraceContextExt as _, TraceId, TracerProvider as _,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::{Layer as _, Service as _, ServiceExt as _};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const EXECUTE_TASK: &str = "/grym.orchestrator.v1.Orchestrator/ExecuteTask";

/// Spans recorded into memory while the guard lives.
struct Recorder {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
    _default: tracing::subscriber::DefaultGuard,
}

impl Recorder {
    fn start() -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        Self {
            exporter,
            _provider: provider,
            _default: tracing::subscriber::set_default(subscriber),
        }
    }

    fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().unwrap()
    }

    fn span(&self, name: &str) -> SpanData {
        let spans = self.spans();
        spans
            .iter()
            .find(|span| span.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no span {name} in {:?}", names(&spans)))
    }
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|span| span.name.to_string()).collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// A gRPC response body: one message, then trailers.
struct GrpcBody(VecDeque<Frame<Bytes>>);

impl GrpcBody {
    fn ending_with(status: u16) -> Self {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", status.into());
        Self(VecDeque::from([
            Frame::data(Bytes::from_static(b"\0\0\0\0\0")),
            Frame::trailers(trailers),
        ]))
    }

    fn empty() -> Self {
        Self(VecDeque::new())
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// Reads a body to its end.
async fn drain<B: Body + Unpin>(mut body: B) {
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        assert!(frame.is_ok());
    }
}

fn request(path: &str) -> http::Request<()> {
    http::Request::builder().uri(path).body(()).unwrap()
}

fn with_traceparent(mut request: http::Request<()>) -> http::Request<()> {
    request.headers_mut().insert(
        "traceparent",
        format!("00-{TRACE}-{PARENT}-01").parse().unwrap(),
    );
    request
}

/// A handler that works inside a span of its own and answers `status` in
/// trailers.
fn handler(
    status: u16,
) -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<GrpcBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<GrpcBody>, Infallible>>,
> + Clone {
    tower::service_fn(move |_request: http::Request<()>| async move {
        tracing::info_span!("handler").in_scope(|| tracing::info!("working"));
        Ok::<_, Infallible>(http::Response::new(GrpcBody::ending_with(status)))
    })
}

#[tokio::test]
async fn the_server_span_continues_the_callers_trace_with_rpc_attributes() {
    let recorder = Recorder::start();
    let service = ServerTraceLayer.layer(handler(14));
    let response = service
        .oneshot(with_traceparent(request(EXECUTE_TASK)))
        .await
        .unwrap();
    drain(response.into_body()).await;

    let server = recorder.span("grym.orchestrator.v1.Orchestrator/ExecuteTask");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(
        server.span_context.trace_id(),
        TraceId::from_hex(TRACE).unwrap()
    );
    assert_eq!(server.parent_span_id, SpanId::from_hex(PARENT).unwrap());
    assert!(server.parent_span_is_remote);
    assert_eq!(attribute(&server, "rpc.system"), Some("grpc".into()));
    assert_eq!(
        attribute(&server, "rpc.service"),
        Some("grym.orchestrator.v1.Orchestrator".into())
    );
    assert_eq!(attribute(&server, "rpc.method"), Some("ExecuteTask".into()));
    // UNAVAILABLE, from the trailers, is a server fault.
    assert_eq!(
        attribute(&server, "rpc.grpc.status_code"),
        Some(14_i64.into())
    );
    assert!(
        matches!(server.status, Status::Error { .. }),
        "{:?}",
        server.status
    );

    // The handler ran inside it.
    let handler = recorder.span("handler");
    assert_eq!(handler.parent_span_id, server.span_context.span_id());
    assert_eq!(
        handler.span_context.trace_id(),
        server.span_context.trace_id()
    );
}

#[tokio::test]
async fn a_trailers_only_status_is_recorded_and_a_client_error_is_no_fault() {
    let recorder = Recorder::start();
    let service = ServerTraceLayer.layer(tower::service_fn(|_: http::Request<()>| async {
        let mut response = http::Response::new(GrpcBody::empty());
        response.headers_mut().insert("grpc-status", 5.into());
        Ok::<_, Infallible>(response)
    }));
    let response = service.oneshot(request(EXECUTE_TASK)).await.unwrap();
    drain(response.into_body()).await;

    let server = recorder.span("grym.orchestrator.v1.Orchestrator/ExecuteTask");
    assert_eq!(
        attribute(&server, "rpc.grpc.status_code"),
        Some(5_i64.into())
    );
    assert_eq!(server.status, Status::Unset);
    // Without a traceparent the call starts a trace of its own.
    assert_eq!(server.parent_span_id, SpanId::INVALID);
}

#[tokio::test]
async fn health_checks_are_not_traced() {
    let recorder = Recorder::start();
    let service = ServerTraceLayer.layer(handler(0));
    let response = service
        .oneshot(request("/grpc.health.v1.Health/Check"))
        .await
        .unwrap();
    drain(response.into_body()).await;
    let spans = recorder.spans();
    assert_eq!(names(&spans), ["handler"], "only the handler's own span");
    assert_eq!(spans[0].parent_span_id, SpanId::INVALID);
}

#[tokio::test]
async fn the_client_layer_sends_the_current_span_context() {
    let recorder = Recorder::start();
    let seen = Arc::new(Mutex::new(None));
    let capture = {
        let seen = Arc::clone(&seen);
        tower::service_fn(move |request: http::Request<()>| {
            let seen = Arc::clone(&seen);
            async move {
                *seen.lock().unwrap() = request.headers().get("traceparent").cloned();
                Ok::<_, Infallible>(http::Response::new(()))
            }
        })
    };
    let service = ClientPropagationLayer.layer(capture);

    // Outside any span nothing is sent.
    service
        .clone()
        .oneshot(request(EXECUTE_TASK))
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), None);

    let caller = tracing::info_span!("caller");
    let expected = caller.context().span().span_context().clone();
    service
        .oneshot(request(EXECUTE_TASK))
        .instrument(caller)
        .await
        .unwrap();
    let header = seen.lock().unwrap().clone().expect("a traceparent header");
    assert_eq!(
        header.to_str().unwrap(),
        format!("00-{}-{}-01", expected.trace_id(), expected.span_id())
    );
    drop(recorder);
}

#[tokio::test]
async fn client_and_server_layers_make_one_trace() {
    let recorder = Recorder::start();
    // What the client sends is what the server receives.
    let service = ClientPropagationLayer.layer(ServerTraceLayer.layer(handler(0)));
    let caller = tracing::info_span!("caller");
    let response = service
        .oneshot(request(EXECUTE_TASK))
        .instrument(caller.clone())
        .await
        .unwrap();
    drain(response.into_body()).await;
    drop(caller);

    let caller = recorder.span("caller");
    let server = recorder.span("grym.orchestrator.v1.Orchestrator/ExecuteTask");
    let handler = recorder.span("handler");
    assert_eq!(
        server.span_context.trace_id(),
        caller.span_context.trace_id()
    );
    assert_eq!(server.parent_span_id, caller.span_context.span_id());
    assert_eq!(handler.parent_span_id, server.span_context.span_id());
    assert_eq!(
        attribute(&server, "rpc.grpc.status_code"),
        Some(0_i64.into())
    );
    assert_eq!(server.status, Status::Unset);
}

#[tokio::test]
async fn a_call_dropped_before_its_status_ends_cancelled() {
    let recorder = Recorder::start();
    let mut service = ServerTraceLayer.layer(tower::service_fn(|_: http::Request<()>| async {
        std::future::pending::<Result<http::Response<GrpcBody>, Infallible>>().await
    }));
    let call = service.call(request(EXECUTE_TASK));
    // The caller goes away while the handler still works.
    drop(tokio::time::timeout(std::time::Duration::from_millis(10), call).await);
    let server = recorder.span("grym.orchestrator.v1.Orchestrator/ExecuteTask");
    assert_eq!(
        attribute(&server, "rpc.grpc.status_code"),
        Some(1_i64.into())
    );
    assert_eq!(
        server.status,
        Status::Unset,
        "cancelling is no server fault"
    );
}

#[tokio::test]
async fn a_client_call_its_caller_drops_records_cancelled_on_the_callers_span() {
    let recorder = Recorder::start();
    let mut service =
        ClientPropagationLayer.layer(tower::service_fn(|_: http::Request<()>| async {
            std::future::pending::<Result<http::Response<GrpcBody>, Infallible>>().await
        }));
    let span = tracing::info_span!("client call", rpc.grpc.status_code = tracing::field::Empty);
    let call = span.in_scope(|| service.call(request(EXECUTE_TASK)));
    drop(tokio::time::timeout(std::time::Duration::from_millis(10), call).await);
    drop(span);
    let client = recorder.span("client call");
    assert_eq!(
        attribute(&client, "rpc.grpc.status_code"),
        Some(1_i64.into())
    );

    // A call that ends keeps the status its caller records.
    let mut service = ClientPropagationLayer.layer(handler(0));
    let span = tracing::info_span!("answered", rpc.grpc.status_code = tracing::field::Empty);
    let response = span
        .in_scope(|| service.call(request(EXECUTE_TASK)))
        .await
        .unwrap();
    drain(response.into_body()).await;
    span.record("rpc.grpc.status_code", 0_i64);
    drop(span);
    let answered = recorder.span("answered");
    assert_eq!(
        attribute(&answered, "rpc.grpc.status_code"),
        Some(0_i64.into())
    );
}
