//! grym-telemetry's exporters, in this process, against the OTLP receiver
//! the end-to-end tests use: a traced gRPC call between a client and a
//! server (both with grym-telemetry's layers) and a few metrics arrive with
//! their attributes, units and parent links.
//!
//! It installs the process-global subscriber and providers, so this file
//! holds one test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::Duration;

use grym_e2e::otlp::{MetricKind, OtlpReceiver, PointValue};
use grym_telemetry::{
    ClientPropagationLayer, DURATION_BUCKETS_SECONDS, LogFormat, ServerTraceLayer, TelemetryConfig,
};
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tower::Layer as _;
use tracing::Instrument as _;

const WAIT: Duration = Duration::from_secs(20);
const REFLECTION_CALL: &str = "grpc.reflection.v1.ServerReflection/ServerReflectionInfo";

// Multi-threaded: the exporters' threads need the runtime to drive their
// gRPC calls while a test thread waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_otlp_receiver_with_attributes_and_parent_links() {
    let receiver = OtlpReceiver::start().await;
    let mut config = TelemetryConfig::new("telemetry-test", LogFormat::Json)
        .with_otlp_endpoint(receiver.endpoint());
    config.metric_export_interval = Duration::from_millis(100);
    config.resource_attributes = vec![KeyValue::new("deployment.environment", "e2e")];
    let guard = grym_telemetry::init_with(config).unwrap();
    assert!(guard.exports_traces() && guard.exports_metrics());

    // A gRPC server traced by the server layer ...
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let reflection = tonic_reflection::server::Builder::configure()
        .build_v1()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(ServerTraceLayer)
            .add_service(reflection)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                stopped.await.ok();
            }),
    );

    // ... called, inside the agent's span, through the client layer.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(ClientPropagationLayer.layer(channel));
    let agent = tracing::info_span!("agent", task.r#type = "audio_analysis");
    async {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        while responses.message().await.unwrap().is_some() {}
        tracing::info!(services = 1, "listed the services");
    }
    .instrument(agent)
    .await;

    let meter = grym_telemetry::meter();
    meter.u64_counter("grym.selection.count").build().add(
        2,
        &[
            KeyValue::new("model", "gama"),
            KeyValue::new("task_type", "audio_analysis"),
        ],
    );
    meter
        .f64_histogram("grym.task.duration")
        .with_unit("s")
        .build()
        .record(0.8, &[KeyValue::new("status", "succeeded")]);

    // Metrics arrive on the periodic export, before any shutdown.
    let selections = receiver.wait_for_metric("grym.selection.count", WAIT).await;
    let last = selections.last().unwrap();
    assert_eq!(last.service_name, "telemetry-test");
    assert_eq!(last.kind, MetricKind::Sum { monotonic: true });
    assert_eq!(last.value, PointValue::Int(2));
    assert_eq!(last.attribute("model"), "gama");
    assert_eq!(last.attribute("task_type"), "audio_analysis");

    let durations = receiver.wait_for_metric("grym.task.duration", WAIT).await;
    let last = durations.last().unwrap();
    assert_eq!(last.unit, "s");
    assert_eq!(last.kind, MetricKind::Histogram);
    assert_eq!(last.attribute("status"), "succeeded");
    let PointValue::Histogram {
        count, sum, bounds, ..
    } = &last.value
    else {
        panic!("not a histogram: {last:?}");
    };
    assert_eq!((*count, *sum), (1, Some(0.8)));
    // Seconds get buckets for seconds, without the instrument asking.
    assert_eq!(bounds, DURATION_BUCKETS_SECONDS);

    // The server layer measured the call, by the RPC conventions' names.
    let calls = receiver
        .wait_for_metric("rpc.server.call.duration", WAIT)
        .await;
    let call = calls.last().unwrap();
    assert_eq!(call.unit, "s");
    assert_eq!(call.kind, MetricKind::Histogram);
    assert_eq!(call.attribute("rpc.system"), "grpc");
    assert_eq!(call.attribute("rpc.method"), "ServerReflectionInfo");
    assert_eq!(call.attribute("rpc.grpc.status_code"), 0);

    // Shutting down flushes the spans still in the batch.
    guard.shutdown().await.unwrap();
    let server_span = receiver.wait_for_span(REFLECTION_CALL, WAIT).await;
    let agent = receiver.wait_for_span("agent", WAIT).await;

    assert_eq!(agent.service_name, "telemetry-test");
    assert_eq!(agent.attribute("task.type"), "audio_analysis");
    assert_eq!(agent.parent_span_id, None);
    assert!(
        agent
            .events
            .iter()
            .any(|event| event == "listed the services"),
        "{:?}",
        agent.events
    );

    // The server continued the agent's trace, across a real HTTP/2 call.
    assert_eq!(server_span.trace_id, agent.trace_id);
    assert_eq!(
        server_span.parent_span_id.as_deref(),
        Some(agent.span_id.as_str())
    );
    assert_eq!(server_span.kind, SpanKind::Server);
    assert_eq!(server_span.attribute("rpc.system"), "grpc");
    assert_eq!(
        server_span.attribute("rpc.service"),
        "grpc.reflection.v1.ServerReflection"
    );
    assert_eq!(server_span.attribute("rpc.method"), "ServerReflectionInfo");
    assert_eq!(server_span.attribute("rpc.grpc.status_code"), 0);
    assert_eq!(server_span.attribute("client.address"), "127.0.0.1");
    assert!(server_span.attribute("client.port").is_i64());
    assert_eq!(
        server_span
            .resource
            .get("service.version")
            .and_then(|v| v.as_str()),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_ne!(server_span.status, StatusCode::Error);
    assert!(server_span.duration() <= agent.duration());

    let resource = &receiver.trace_requests()[0].resource_spans[0].resource;
    let environment = resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .any(|kv| kv.key == "deployment.environment");
    assert!(environment, "{resource:?}");

    stop.send(()).ok();
    server.await.unwrap().unwrap();
}
