//! The Prometheus scrape endpoint end to end: grymd serves `/metrics` on
//! `[metrics] listen` (or where `OTEL_METRICS_EXPORTER=prometheus` asks)
//! with no OTLP exporter at all, Debian's real Prometheus scrapes it, and
//! every query of the shipped Grafana dashboard returns data.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::net::SocketAddr;
use std::time::Duration;

use grym_e2e::prometheus::{Prometheus, Sample, http_get};
use grym_e2e::{
    Grymd, OrchestratorClient, Process, audio, free_port, grymd_refusing, sine_wav, task_request,
    text, worker, workspace_root,
};
use grym_proto::orchestrator::v1 as api;
use tonic::transport::Channel;

/// The longest a condition may take to hold.
const WAIT: Duration = Duration::from_secs(45);

async fn sim(model: &str, kind: &str, capability: &str, extra: &[&str]) -> Process {
    let mut args = vec![
        "sim",
        "--model-id",
        model,
        "--kind",
        kind,
        "--capability",
        capability,
    ];
    args.extend(extra);
    worker(&args).await
}

/// Models for every series the dashboard shows: GAMA fails every call and
/// falls back to wav2vec2; `translation` fails with no fallback; the ASR
/// model declares 20 ms and takes 150 (a slow-model bottleneck); the text
/// model takes reshaped, cached context.
struct Models {
    _workers: Vec<Process>,
    config: String,
}

async fn models() -> Models {
    let gama = sim(
        "gama",
        "audio-language",
        "audio_analysis:0.95",
        &["--fail-rate", "1"],
    )
    .await;
    let wav2vec2 = sim(
        "wav2vec2",
        "audio-classification",
        "audio_analysis:0.7",
        &[],
    )
    .await;
    let llama = sim("llama", "text-generation", "text_generation:0.9", &[]).await;
    let broken = sim(
        "broken",
        "text-generation",
        "translation",
        &["--fail-rate", "1"],
    )
    .await;
    let asr = sim(
        "asr",
        "speech-recognition",
        "transcription",
        &["--latency-ms", "150"],
    )
    .await;
    let mut config = String::from(
        "builtin_workers = false\nhealth_interval = \"200ms\"\n\
         [bottlenecks]\ninterval = \"300ms\"\nmin_samples = 3\n",
    );
    for (id, process) in [
        ("gama", &gama),
        ("wav2vec2", &wav2vec2),
        ("llama", &llama),
        ("broken", &broken),
    ] {
        config.push_str(&format!(
            "[[workers]]\nid = \"{id}\"\nendpoint = \"{}\"\n",
            process.endpoint()
        ));
    }
    config.push_str(&format!(
        "[[workers]]\nid = \"asr\"\nendpoint = \"{}\"\n\
         capabilities = [{{ task_type = \"transcription\", confidence = 0.9, estimated_latency = \"20ms\" }}]\n",
        asr.endpoint()
    ));
    Models {
        _workers: vec![gama, wav2vec2, llama, broken, asr],
        config,
    }
}

fn in_session(mut request: api::ExecuteTaskRequest, session: &str) -> api::ExecuteTaskRequest {
    request.task.as_mut().unwrap().session_id = session.to_owned();
    request
}

/// A sequence: transcribe, then answer from the transcript.
fn composite() -> api::ExecuteTaskRequest {
    let step = |id: &str, task_type: &str, input_from: &str| api::Step {
        id: id.to_owned(),
        task: Some(api::StepTask {
            r#type: task_type.to_owned(),
            input_from: input_from.to_owned(),
            ..api::StepTask::default()
        }),
        ..api::Step::default()
    };
    api::ExecuteTaskRequest {
        task: Some(api::Task {
            r#type: "pipeline".to_owned(),
            input: Some(api::TaskInput {
                kind: Some(text("is it going to rain")),
            }),
            composite: Some(api::Composite {
                strategy: api::Strategy::Sequential as i32,
                steps: vec![
                    step("listen", "transcription", ""),
                    step("answer", "text_generation", "listen"),
                ],
                failure_policy: api::FailurePolicy::FailFast as i32,
                output_step: String::new(),
            }),
            ..api::Task::default()
        }),
    }
}

async fn status_of(
    client: &mut OrchestratorClient<Channel>,
    request: api::ExecuteTaskRequest,
) -> api::TaskStatus {
    client
        .execute_task(request)
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
        .status()
}

/// One round of every kind of task the dashboard charts.
async fn workload(client: &mut OrchestratorClient<Channel>) {
    use api::TaskStatus::{Failed, Succeeded};
    let wav = audio(sine_wav(440.0, 16_000, 0.2), "audio/wav");
    // GAMA fails, wav2vec2 answers: a fallback.
    let analysis = in_session(task_request("audio_analysis", wav), "walk");
    assert_eq!(status_of(client, analysis).await, Succeeded);
    // The analysis reshaped for the text model: a miss, then a hit.
    for _ in 0..2 {
        let answer = in_session(task_request("text_generation", text("which bird?")), "walk");
        assert_eq!(status_of(client, answer).await, Succeeded);
    }
    // Slow calls, enough for the bottleneck watch.
    for _ in 0..4 {
        let transcription = task_request("transcription", text("hi"));
        assert_eq!(status_of(client, transcription).await, Succeeded);
    }
    assert_eq!(status_of(client, composite()).await, Succeeded);
    assert_eq!(
        status_of(client, task_request("translation", text("bonjour"))).await,
        Failed
    );
    // Refused at submission: counted by reason.
    let refused = client
        .execute_task(task_request("no_such_type", text("x")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
}

/// Every query of the shipped dashboard, with Grafana's variables replaced
/// as deploy/check.py replaces them, and the template variables' own
/// `label_values(metric, label)` queries as PromQL.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = workspace_root().join("deploy/grafana/dashboards/grym.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    let mut i = 0;
    while i < panels.len() {
        if let Some(inner) = panels[i]["panels"].as_array() {
            panels.extend(inner);
        }
        i += 1;
    }
    let substitute = |expr: &str| {
        [
            ("$__rate_interval", "1m"),
            ("$__interval", "1m"),
            ("$__range", "1h"),
            ("$model", ".*"),
            ("$task_type", ".*"),
        ]
        .into_iter()
        .fold(expr.to_owned(), |expr, (variable, value)| {
            expr.replace(variable, value)
        })
    };
    let mut queries = Vec::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let expr = substitute(expr);
            assert!(!expr.contains('$'), "an unknown variable in `{expr}`");
            queries.push((format!("panel `{}`", panel["title"]), expr));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let definition = variable["definition"].as_str().unwrap();
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {definition}: not label_values(metric, label)"));
        let (metric, label) = inner.split_once(',').unwrap();
        queries.push((
            format!("variable `{}`", variable["name"]),
            format!("count by ({}) ({})", label.trim(), metric.trim()),
        ));
    }
    assert!(
        queries.len() > 20,
        "the dashboard has {} queries",
        queries.len()
    );
    queries
}

fn finite(samples: &[Sample]) -> bool {
    samples.iter().any(|sample| sample.value.is_finite())
}

/// grymd with `[metrics] listen` on a free port beside `config`; its
/// metrics address.
async fn grymd_with_metrics(config: &str) -> (Grymd, SocketAddr) {
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let grymd = Grymd::start(&format!("{config}[metrics]\nlisten = \"{address}\"\n")).await;
    (grymd, address)
}

#[tokio::test]
async fn prometheus_scrapes_grymd_and_every_dashboard_query_returns_data() {
    let models = models().await;
    let (grymd, metrics) = grymd_with_metrics(&models.config).await;
    let prometheus = Prometheus::scraping("grymd", metrics).await;
    // Prometheus parses what it scrapes: `up` is 1 only for a good scrape.
    let (up, scraped) = prometheus
        .wait_for(r#"up{job="grymd"}"#, WAIT, |samples| {
            samples.iter().any(|s| s.value == 1.0)
        })
        .await;
    assert!(scraped, "the target never came up: {up:?}");

    // Twice, with a scrape between, so that every counter and histogram
    // has grown across samples and rates are above zero.
    let mut client = grymd.client().await;
    workload(&mut client).await;
    // The round's last two records, a failed task and a refused one: a
    // scrape in the middle of the round would leave the later series to
    // appear only in the second round, flat, with a rate of zero.
    let (_, seen) = prometheus
        .wait_for(
            r#"count(grym_task_duration_seconds_count{task_type="translation"}) + count(grym_task_rejected_total)"#,
            WAIT,
            |s| !s.is_empty(),
        )
        .await;
    assert!(seen, "the first round was never scraped whole");
    workload(&mut client).await;
    let (_, risen) = prometheus
        .wait_for(
            "sum(rate(grym_task_duration_seconds_count[1m]))",
            WAIT,
            finite,
        )
        .await;
    assert!(risen, "rates never rose");
    // The slow model is a bottleneck now, and stays one while it is slow.
    let (active, found) = prometheus
        .wait_for("grym_bottleneck_active == 1", WAIT, |s| !s.is_empty())
        .await;
    assert!(found, "no active bottleneck: {active:?}");

    let mut empty = Vec::new();
    for (place, expr) in dashboard_queries() {
        // A query may trail the scrapes by a second: give it a few.
        let (samples, answered) = prometheus
            .wait_for(&expr, Duration::from_secs(10), finite)
            .await;
        if !answered {
            empty.push(format!("{place}: `{expr}` -> {samples:?}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );

    // The exposition itself: its content type, and a few names exactly.
    let response = http_get(&format!("http://{metrics}/metrics"))
        .await
        .unwrap();
    assert!(response.status.is_success(), "{response:?}");
    assert_eq!(
        response.headers["content-type"],
        grym_telemetry::PROMETHEUS_CONTENT_TYPE
    );
    for line in [
        "# TYPE grym_task_duration_seconds histogram",
        "# TYPE grym_selection_count_total counter",
        "# TYPE grym_fallback_count_total counter",
        "# TYPE grym_context_cache_bytes gauge",
        "# TYPE grym_model_in_flight gauge",
        "# TYPE target_info gauge",
    ] {
        assert!(
            response.body.lines().any(|l| l == line),
            "no `{line}` in:\n{}",
            response.body
        );
    }
    for prefix in [
        r#"grym_task_duration_seconds_bucket{priority="normal",status="failed",task_type="translation","#,
        r#"grym_fallback_count_total{from_model="gama",reason="UNAVAILABLE",to_model="wav2vec2","#,
        r#"target_info{service_instance_id="#,
    ] {
        assert!(
            response.body.lines().any(|l| l.starts_with(prefix)),
            "no series `{prefix}...` in:\n{}",
            response.body
        );
    }
    let targets = prometheus.query("target_info").await.unwrap();
    assert_eq!(
        targets[0].labels.get("service_name").map(String::as_str),
        Some("grymd"),
        "{targets:?}"
    );
    let index = http_get(&format!("http://{metrics}/")).await.unwrap();
    assert!(index.body.contains("/metrics"), "{index:?}");
}

#[tokio::test]
async fn the_standard_variables_serve_the_endpoint_without_the_table() {
    let port = free_port();
    let grymd = Grymd::start_with_env(
        "",
        &[
            ("OTEL_METRICS_EXPORTER", "prometheus".to_owned()),
            ("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1".to_owned()),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", port.to_string()),
        ],
    )
    .await;
    let status = grymd
        .client()
        .await
        .execute_task(task_request(
            "audio_features",
            audio(sine_wav(440.0, 8_000, 0.5), "audio/wav"),
        ))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
        .status();
    assert_eq!(status, api::TaskStatus::Succeeded);
    let response = http_get(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert!(response.status.is_success(), "{response:?}");
    assert!(
        response.body.lines().any(|l| l
            .starts_with(r#"grym_task_duration_seconds_count{priority="normal",status="succeeded",task_type="audio_features""#)),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn a_bad_or_taken_metrics_address_stops_grymd_at_start() {
    let (status, stderr) = grymd_refusing("[metrics]\nlisten = \"nowhere\"\n").await;
    assert!(!status.success());
    assert!(stderr.contains("metrics.listen"), "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let (status, stderr) = grymd_refusing(&format!("[metrics]\nlisten = \"{address}\"\n")).await;
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("cannot listen for metrics on {address}")),
        "{stderr}"
    );
}
