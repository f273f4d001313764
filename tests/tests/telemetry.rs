//! Telemetry end to end: grymd and its workers export to a real OTLP
//! receiver. One `ExecuteTask` that falls back is one trace from the
//! agent's `traceparent` through grymd's steps into both workers; the
//! metrics arrive with their attributes; `GetBottlenecks` names a slow model
//! and clears the finding once it is fast again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use grym_e2e::otlp::{OtlpReceiver, PointValue, ReceivedSpan};
use grym_e2e::{Grymd, Process, analyse_in_trace, task_request, text, worker_with_env};
use grym_proto::orchestrator::v1 as api;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

const WAIT: Duration = Duration::from_secs(15);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn export_to(receiver: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200".to_owned()),
    ]
}

async fn sim(model: &str, capability: &str, extra: &[&str], env: &[(&str, String)]) -> Process {
    let mut args = vec!["sim", "--model-id", model, "--capability", capability];
    args.extend(extra);
    worker_with_env(&args, env).await
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn child_of<'a>(spans: &[&'a ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .copied()
        .filter(|s| s.parent_span_id.as_deref() == Some(parent.span_id.as_str()))
        .collect()
}

/// Waits until the receiver holds `count` spans named `name` of `service`.
async fn spans_of(
    receiver: &OtlpReceiver,
    service: &str,
    name: &str,
    count: usize,
) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + WAIT;
    loop {
        let spans = receiver.spans();
        let found = spans
            .iter()
            .filter(|s| s.service_name == service && s.name == name)
            .count();
        if found >= count {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "{count} `{name}` spans of {service} never arrived; got {:?}",
            spans
                .iter()
                .map(|s| (&s.service_name, &s.name))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_task_with_a_fallback_is_one_trace_from_the_agent_into_the_workers() {
    let receiver = OtlpReceiver::start().await;
    let env = export_to(&receiver);
    let gama = sim("gama", "audio_analysis:0.95", &["--fail-rate", "1"], &env).await;
    let wav2vec2 = sim("wav2vec2", "audio_analysis:0.7", &[], &env).await;
    let config = format!(
        "builtin_workers = false\n[[workers]]\nid = \"gama\"\nendpoint = \"{}\"\n[[workers]]\nid = \"wav2vec2\"\nendpoint = \"{}\"\n",
        gama.endpoint(),
        wav2vec2.endpoint()
    );
    let grymd = Grymd::start_with_env(&config, &env).await;

    let result = analyse_in_trace(&grymd, TRACE_ID, CALLER_SPAN).await;
    assert_eq!(result.status(), api::TaskStatus::Succeeded);
    assert_eq!(result.model_id, "wav2vec2");
    assert_eq!(result.routing.unwrap().fallbacks_taken, ["wav2vec2"]);

    spans_of(
        &receiver,
        "grym-worker",
        "grym.worker.v1.ModelWorker/Infer",
        2,
    )
    .await;
    // grymd's task span ends last.
    let spans = spans_of(&receiver, "grymd", "task", 1).await;
    let traced: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();

    // grymd continued the caller's trace...
    let server = named(&spans, "grym.orchestrator.v1.Orchestrator/ExecuteTask");
    assert_eq!(server.len(), 1);
    let server = server[0];
    assert_eq!(server.trace_id, TRACE_ID);
    assert_eq!(server.parent_span_id.as_deref(), Some(CALLER_SPAN));
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.attribute("rpc.system"), "grpc");
    assert_eq!(server.attribute("rpc.method"), "ExecuteTask");

    // ... with one task span under the call, and its steps under it.
    let task = child_of(&traced, server);
    let task: Vec<_> = task.into_iter().filter(|s| s.name == "task").collect();
    assert_eq!(task.len(), 1, "{traced:#?}");
    let task = task[0];
    assert_eq!(task.attribute("grym.task.type"), "audio_analysis");
    assert_eq!(task.attribute("grym.task.status"), "succeeded");
    assert_eq!(task.attribute("grym.task.fallback"), true);
    assert_eq!(task.attribute("grym.model"), "wav2vec2");
    let steps: Vec<&str> = child_of(&traced, task)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    for step in ["analyse", "plan", "queue wait", "attempt", "feedback"] {
        assert!(
            steps.contains(&step),
            "no `{step}` under the task: {steps:?}"
        );
    }
    let plan = named(&spans, "plan")[0];
    assert_eq!(plan.attribute("grym.plan.model"), "gama");
    assert_eq!(plan.attribute("grym.plan.reason"), "Route");

    // Two attempts: gama failed, wav2vec2 answered; each made one client
    // call that the worker continued.
    let attempts: Vec<&ReceivedSpan> = child_of(&traced, task)
        .into_iter()
        .filter(|s| s.name == "attempt")
        .collect();
    assert_eq!(attempts.len(), 2);
    for (attempt, model, outcome) in [
        (attempts[0], "gama", "failure"),
        (attempts[1], "wav2vec2", "success"),
    ] {
        assert_eq!(attempt.attribute("gen_ai.request.model"), model);
        assert_eq!(
            attempt.attribute("gen_ai.operation.name"),
            "generate_content"
        );
        assert_eq!(attempt.attribute("gen_ai.provider.name"), "grym");
        assert_eq!(attempt.attribute("grym.model"), model);
        assert_eq!(attempt.attribute("grym.task.type"), "audio_analysis");
        assert_eq!(attempt.attribute("grym.attempt.outcome"), outcome);
        let children = child_of(&traced, attempt);
        let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"prepare context"), "{names:?}");
        let client = children
            .iter()
            .find(|s| s.name == "grym.worker.v1.ModelWorker/Infer")
            .unwrap_or_else(|| panic!("no client call under the {model} attempt: {names:?}"));
        assert_eq!(client.kind, SpanKind::Client);
        assert_eq!(client.service_name, "grymd");
        assert_eq!(client.attribute("rpc.system"), "grpc");
        assert_eq!(client.attribute("server.address"), "127.0.0.1");
        assert!(client.attribute("server.port").is_i64(), "{client:?}");
        assert!(
            client.attribute("rpc.grpc.status_code").is_i64(),
            "{client:?}"
        );
        assert_eq!(
            client.status == StatusCode::Error,
            model == "gama",
            "only the failed call is an error"
        );
        let in_worker = child_of(&traced, client);
        assert_eq!(
            in_worker.len(),
            1,
            "the {model} worker did not continue the trace"
        );
        assert_eq!(in_worker[0].service_name, "grym-worker");
        assert_eq!(in_worker[0].kind, SpanKind::Server);
    }
    assert_eq!(attempts[0].status, StatusCode::Error);

    // The metrics, with the attributes dashboards group by.
    let durations = receiver.wait_for_metric("grym.task.duration", WAIT).await;
    let point = durations
        .iter()
        .rev()
        .find(|p| p.service_name == "grymd")
        .unwrap();
    assert_eq!(point.attribute("task_type"), "audio_analysis");
    assert_eq!(point.attribute("status"), "succeeded");
    assert_eq!(point.attribute("priority"), "normal");
    assert!(matches!(
        point.value,
        PointValue::Histogram { count: 1, .. }
    ));
    let calls = receiver
        .wait_for_metric("grym.worker.call.duration", WAIT)
        .await;
    for (model, outcome) in [("gama", "failure"), ("wav2vec2", "success")] {
        assert!(
            calls
                .iter()
                .any(|p| p.attribute("model") == model && p.attribute("outcome") == outcome),
            "no {model}/{outcome} call: {calls:?}"
        );
    }
    let fallbacks = receiver.wait_for_metric("grym.fallback.count", WAIT).await;
    let fallback = fallbacks.last().unwrap();
    assert_eq!(fallback.attribute("from_model"), "gama");
    assert_eq!(fallback.attribute("to_model"), "wav2vec2");
    assert_eq!(fallback.value.as_f64(), 1.0);
    let selections = receiver.wait_for_metric("grym.selection.count", WAIT).await;
    assert!(selections.iter().any(|p| p.attribute("model") == "gama"));
    let waits = receiver.wait_for_metric("grym.task.queue_wait", WAIT).await;
    assert!(waits.iter().any(|p| p.attribute("model") == "gama"));
    let in_flight = receiver.wait_for_metric("grym.model.in_flight", WAIT).await;
    assert!(in_flight.iter().any(|p| p.attribute("model") == "wav2vec2"));
    receiver.wait_for_metric("grym.model.queued", WAIT).await;
    for name in [
        "grym.context.cache.hits",
        "grym.context.cache.misses",
        "grym.context.cache.evictions",
        "grym.context.cache.bytes",
    ] {
        receiver.wait_for_metric(name, WAIT).await;
    }

    // A refused task is counted by reason.
    let status = grymd
        .client()
        .await
        .execute_task(task_request("no_such_type", text("x")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let rejected = receiver.wait_for_metric("grym.task.rejected", WAIT).await;
    assert_eq!(rejected.last().unwrap().attribute("reason"), "no_model");
    // So is a malformed one, refused before it reaches the core.
    let status = grymd
        .client()
        .await
        .execute_task(task_request("", text("x")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let deadline = Instant::now() + WAIT;
    while !receiver
        .metric("grym.task.rejected")
        .iter()
        .any(|p| p.attribute("reason") == "invalid")
    {
        assert!(
            Instant::now() < deadline,
            "the malformed task was not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn get_bottlenecks_names_a_slow_model_and_clears_it_when_it_recovers() {
    let receiver = OtlpReceiver::start().await;
    let env = export_to(&receiver);
    let slow = sim("asr", "transcription", &["--latency-ms", "150"], &[]).await;
    let port = slow.address().port();
    // Declared at 20 ms, it takes 150: slow, by over 1.5 times.
    let config = format!(
        "builtin_workers = false\nhealth_interval = \"200ms\"\n\
         [selection]\nhalf_life = \"1s\"\n\
         [bottlenecks]\ninterval = \"300ms\"\nmin_samples = 3\n\
         [[workers]]\nid = \"asr\"\nendpoint = \"{}\"\n\
         capabilities = [{{ task_type = \"transcription\", confidence = 0.9, estimated_latency = \"20ms\" }}]\n",
        slow.endpoint()
    );
    let grymd = Grymd::start_with_env(&config, &env).await;
    let mut client = grymd.client().await;
    let bottlenecks = |mut client: grym_e2e::OrchestratorClient<tonic::transport::Channel>| async move {
        client
            .get_bottlenecks(api::GetBottlenecksRequest {})
            .await
            .unwrap()
            .into_inner()
    };
    for _ in 0..5 {
        client
            .execute_task(task_request("transcription", text("hi")))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + WAIT;
    let finding = loop {
        let response = bottlenecks(client.clone()).await;
        if let Some(found) = response
            .bottlenecks
            .iter()
            .find(|b| b.kind == "slow_model" && b.subject == "asr/transcription")
        {
            assert_eq!(response.interval.unwrap().nanos, 300_000_000);
            break found.clone();
        }
        assert!(Instant::now() < deadline, "the slow model was never found");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(finding.value > finding.threshold);
    assert!(finding.message.contains("asr"), "{}", finding.message);
    assert!(finding.since.is_some());
    let active = receiver
        .wait_for_metric("grym.bottleneck.active", WAIT)
        .await;
    assert!(
        active.iter().any(|p| p.attribute("kind") == "slow_model"
            && p.attribute("subject") == "asr/transcription")
    );

    // The same model, fast again on the same address.
    drop(slow);
    let _fast = sim(
        "asr",
        "transcription",
        &["--listen", &format!("127.0.0.1:{port}")],
        &[],
    )
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        // Calls keep the statistics fresh while the slow ones decay.
        let _ = client
            .execute_task(task_request("transcription", text("hi")))
            .await;
        let response = bottlenecks(client.clone()).await;
        if !response.bottlenecks.iter().any(|b| b.kind == "slow_model") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the finding never cleared: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        grymd.process().log().contains("bottleneck ended"),
        "{}",
        grymd.process().log()
    );
    // The gauge says it is over rather than leave its last 1 standing.
    let deadline = Instant::now() + WAIT;
    while !receiver
        .metric("grym.bottleneck.active")
        .iter()
        .any(|p| p.attribute("subject") == "asr/transcription" && p.value.as_f64() == 0.0)
    {
        assert!(Instant::now() < deadline, "the gauge never fell to 0");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn refused_credentials_are_counted_by_reason() {
    let receiver = OtlpReceiver::start().await;
    let env = export_to(&receiver);
    let grymd = Grymd::start_with_env(
        "[[auth.tokens]]\ntoken = \"a-token-of-tenant-a\"\ntenant = \"a\"\n",
        &env,
    )
    .await;
    let status = grymd
        .client()
        .await
        .execute_task(task_request("audio_analysis", text("x")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let failed = receiver.wait_for_metric("grym.auth.failed", WAIT).await;
    assert_eq!(failed.last().unwrap().attribute("reason"), "missing_token");
}
