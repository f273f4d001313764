//! Telemetry over OTLP/HTTP end to end: grymd and a Rust worker, told
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`, deliver both signals to an
//! OTLP/HTTP receiver, with span attributes that follow the OpenTelemetry
//! conventions; a receiver that answers 503 at first still gets every span;
//! a Python worker exports its RPC server metric the same way.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use grym_e2e::otlp::{OtlpReceiver, ReceivedSpan};
use grym_e2e::python::python_worker_with_env;
use grym_e2e::{Grymd, analyse_in_trace, worker_with_env};
use grym_proto::orchestrator::v1 as api;
use grym_proto::worker::v1 as wire;

const WAIT: Duration = Duration::from_secs(20);
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";
const WORKER_CALL: &str = "grym.worker.v1.ModelWorker/Infer";
const EXECUTE_TASK: &str = "grym.orchestrator.v1.Orchestrator/ExecuteTask";

/// The attributes the `tracing` bridge adds of its own when left to its
/// defaults.
const BRIDGE_NOISE: &[&str] = &["busy_ns", "idle_ns", "thread.id", "thread.name", "target"];

fn export_over_http(receiver: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200".to_owned()),
    ]
}

/// Waits until every span of `names` has arrived from `service`, and
/// returns all spans received.
async fn wait_for_spans(
    receiver: &OtlpReceiver,
    service: &str,
    names: &[&str],
) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + WAIT;
    loop {
        let spans = receiver.spans();
        let missing: Vec<&&str> = names
            .iter()
            .filter(|name| {
                !spans
                    .iter()
                    .any(|s| s.service_name == service && s.name == **name)
            })
            .collect();
        if missing.is_empty() {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} of {service} never arrived; got {:?}",
            spans
                .iter()
                .map(|s| (&s.service_name, &s.name))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn one<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.service_name == service && s.name == name)
        .unwrap_or_else(|| panic!("no `{name}` of {service}"))
}

#[tokio::test]
async fn grymd_and_a_worker_deliver_both_signals_over_otlp_http_by_the_conventions() {
    let receiver = OtlpReceiver::start_http().await;
    let env = export_over_http(&receiver);
    let worker = worker_with_env(
        &[
            "sim",
            "--model-id",
            "gama",
            "--capability",
            "audio_analysis:0.95",
        ],
        &env,
    )
    .await;
    let config = format!(
        "builtin_workers = false\n[[workers]]\nid = \"gama\"\nendpoint = \"{}\"\n",
        worker.endpoint()
    );
    let grymd = Grymd::start_with_env(&config, &env).await;

    let result = analyse_in_trace(&grymd, TRACE_ID, CALLER_SPAN).await;
    assert_eq!(result.status(), api::TaskStatus::Succeeded);

    wait_for_spans(&receiver, "grym-worker", &[WORKER_CALL]).await;
    let spans = wait_for_spans(
        &receiver,
        "grymd",
        &[EXECUTE_TASK, "task", "attempt", WORKER_CALL],
    )
    .await;

    // The attempt names its GenAI operation and provider; grym's own
    // attributes are all under `grym.`.
    let attempt = one(&spans, "grymd", "attempt");
    assert_eq!(
        attempt.attribute("gen_ai.operation.name"),
        "generate_content"
    );
    assert_eq!(attempt.attribute("gen_ai.provider.name"), "grym");
    assert_eq!(attempt.attribute("gen_ai.request.model"), "gama");
    assert_eq!(attempt.attribute("grym.model"), "gama");
    assert_eq!(attempt.attribute("grym.attempt.outcome"), "success");
    assert!(
        attempt.attribute("grym.endpoint").is_string(),
        "{attempt:?}"
    );
    for bare in ["model", "endpoint", "outcome", "attempt.outcome"] {
        assert!(!attempt.attributes.contains_key(bare), "{attempt:?}");
    }
    let task = one(&spans, "grymd", "task");
    assert_eq!(task.attribute("grym.task.type"), "audio_analysis");
    assert_eq!(task.attribute("grym.task.status"), "succeeded");
    let plan = one(&spans, "grymd", "plan");
    assert!(plan.attribute("grym.plan.candidates").is_i64(), "{plan:?}");

    // The client call has the server's port as an integer and its code.
    let client = one(&spans, "grymd", WORKER_CALL);
    assert_eq!(client.attribute("server.address"), "127.0.0.1");
    assert_eq!(
        client.attribute("server.port"),
        i64::from(worker.address().port())
    );
    assert_eq!(client.attribute("rpc.grpc.status_code"), 0);

    // Both servers name their caller.
    let served = one(&spans, "grym-worker", WORKER_CALL);
    assert_eq!(served.trace_id, TRACE_ID);
    assert_eq!(
        served.parent_span_id.as_deref(),
        Some(client.span_id.as_str())
    );
    assert_eq!(served.attribute("client.address"), "127.0.0.1");
    assert!(served.attribute("client.port").is_i64(), "{served:?}");
    assert_eq!(served.attribute("rpc.grpc.status_code"), 0);
    let execute = one(&spans, "grymd", EXECUTE_TASK);
    assert_eq!(execute.attribute("client.address"), "127.0.0.1");

    // No bridge noise on any span, and both processes say their version.
    for span in &spans {
        for key in BRIDGE_NOISE {
            assert!(!span.attributes.contains_key(*key), "{key} on {span:?}");
        }
        assert!(
            !span.attributes.keys().any(|key| key.starts_with("code.")),
            "{span:?}"
        );
        assert_eq!(
            span.resource
                .get("service.version")
                .and_then(|v| v.as_str()),
            Some(env!("CARGO_PKG_VERSION")),
            "{:?}",
            span.resource
        );
    }

    // Metrics arrive over HTTP too: grymd's own, and the worker's RPC
    // server metric, which grymd records for its own calls as well.
    let durations = receiver.wait_for_metric("grym.task.duration", WAIT).await;
    assert!(durations.iter().any(|p| p.service_name == "grymd"));
    let deadline = Instant::now() + WAIT;
    loop {
        let calls = receiver.metric("rpc.server.call.duration");
        let worker_call = calls.iter().any(|p| {
            p.service_name == "grym-worker"
                && p.unit == "s"
                && p.attribute("rpc.system") == "grpc"
                && p.attribute("rpc.service") == "grym.worker.v1.ModelWorker"
                && p.attribute("rpc.method") == "Infer"
                && p.attribute("rpc.grpc.status_code") == 0
        });
        let grymd_call = calls
            .iter()
            .any(|p| p.service_name == "grymd" && p.attribute("rpc.method") == "ExecuteTask");
        if worker_call && grymd_call {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rpc.server.call.duration of both never arrived: {calls:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_collector_answering_503_at_first_still_gets_every_span() {
    let receiver = OtlpReceiver::start_http_unavailable_for(2).await;
    let mut env = export_over_http(&receiver);
    // Spans alone, so the refused requests are span batches.
    env.push(("OTEL_METRICS_EXPORTER", "none".to_owned()));
    let grymd = Grymd::start_with_env("", &env).await;
    let result = analyse_in_trace(&grymd, TRACE_ID, CALLER_SPAN).await;
    assert_eq!(result.status(), api::TaskStatus::Succeeded);

    // Every span of the task arrives although the first batch was refused
    // twice: it was sent again, not dropped.
    wait_for_spans(
        &receiver,
        "grymd",
        &[
            EXECUTE_TASK,
            "task",
            "analyse",
            "plan",
            "queue wait",
            "attempt",
            "feedback",
        ],
    )
    .await;
    assert_eq!(receiver.refused(), 2);
    assert!(
        receiver
            .spans()
            .iter()
            .filter(|s| s.name == "task")
            .all(|s| s.trace_id == TRACE_ID)
    );
}

#[tokio::test]
async fn a_python_worker_exports_its_rpc_server_metric_over_otlp_http() {
    let receiver = OtlpReceiver::start_http().await;
    let worker = python_worker_with_env("merge", &[], &export_over_http(&receiver)).await;
    let mut client = wire::model_worker_client::ModelWorkerClient::connect(worker.endpoint())
        .await
        .unwrap();
    client.describe(wire::DescribeRequest {}).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let calls = receiver.metric("rpc.server.call.duration");
        if calls.iter().any(|p| {
            p.service_name == "grym-py-worker"
                && p.unit == "s"
                && p.attribute("rpc.system") == "grpc"
                && p.attribute("rpc.service") == "grym.worker.v1.ModelWorker"
                && p.attribute("rpc.method") == "Describe"
                && p.attribute("rpc.grpc.status_code") == 0
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Python worker's call metric never arrived: {calls:?}\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
