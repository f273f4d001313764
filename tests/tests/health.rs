//! grymd's `grpc.health.v1` with real processes: one name per model
//! (`grym.model/<model_id>`) that a `Watch` hears go down within a probe
//! interval of its worker's death and come back when it returns; `""` and
//! the orchestrator service down while no model serves; names that follow
//! a SIGHUP reload.
//!
//! Each test prints what it measured (`cargo test -- --nocapture`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use grym_e2e::{Grymd, Process, free_port, watch_health, worker};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::HealthCheckResponse;
use tonic_health::pb::health_check_response::ServingStatus;

/// A guard against hangs, not a performance target.
const NO_HANG: Duration = Duration::from_secs(60);

/// The probe interval of these tests.
const INTERVAL: Duration = Duration::from_millis(500);

/// What a health check of a worker that is gone takes, beyond the
/// interval: a refused connection, then the report's next look.
const SLACK: Duration = Duration::from_millis(300);

async fn sim(id: &str, port: u16) -> Process {
    worker(&[
        "sim",
        "--model-id",
        id,
        "--capability",
        "transcription",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .await
}

fn config(models: &[(&str, u16)]) -> String {
    let mut config = "builtin_workers = false\nhealth_interval = \"500ms\"\n".to_owned();
    for (id, port) in models {
        config.push_str(&format!(
            "[[workers]]\nid = \"{id}\"\nendpoint = \"http://127.0.0.1:{port}\"\n"
        ));
    }
    config
}

async fn next_status(stream: &mut tonic::Streaming<HealthCheckResponse>) -> ServingStatus {
    match tokio::time::timeout(NO_HANG, stream.next()).await {
        Ok(Some(Ok(answer))) => answer.status(),
        other => panic!("the Watch stream ended or stalled: {other:?}"),
    }
}

/// Polls a check of `service` until it answers `wanted` (a status, or the
/// code of a refusal).
async fn until_check(grymd: &Grymd, service: &str, wanted: Result<ServingStatus, Code>) {
    let wait = async {
        loop {
            let now = match grymd.health(service).await {
                Ok(status) => Ok(ServingStatus::try_from(status).unwrap()),
                Err(error) => Err(error
                    .downcast_ref::<tonic::Status>()
                    .map_or(Code::Unknown, tonic::Status::code)),
            };
            if now == wanted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(NO_HANG, wait)
        .await
        .unwrap_or_else(|_| panic!("{service:?} never answered {wanted:?}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_on_a_model_hears_it_go_down_within_a_probe_interval_and_come_back() {
    let port = free_port();
    let mut worker = sim("solo", port).await;
    let grymd = Grymd::start(&config(&[("solo", port)])).await;
    let endpoint = grymd.process().endpoint();
    let mut model = watch_health(&endpoint, "grym.model/solo").await;
    assert_eq!(next_status(&mut model).await, ServingStatus::Serving);
    let mut overall = watch_health(&endpoint, "").await;
    assert_eq!(next_status(&mut overall).await, ServingStatus::Serving);

    let killed = Instant::now();
    worker.kill().await;
    assert_eq!(next_status(&mut model).await, ServingStatus::NotServing);
    let down = killed.elapsed();
    // Its only model down, grymd can serve no task type.
    assert_eq!(next_status(&mut overall).await, ServingStatus::NotServing);
    assert!(
        down <= INTERVAL + SLACK,
        "NOT_SERVING came {down:?} after the kill (probe interval {INTERVAL:?})"
    );

    let restarted = Instant::now();
    let _worker = sim("solo", port).await;
    let up_at = Instant::now();
    assert_eq!(next_status(&mut model).await, ServingStatus::Serving);
    let up = up_at.elapsed();
    assert_eq!(next_status(&mut overall).await, ServingStatus::Serving);
    assert!(
        up <= INTERVAL + SLACK,
        "SERVING came {up:?} after the worker served again (probe interval {INTERVAL:?})"
    );
    println!(
        "down reported {down:?} after kill -9, up {up:?} after the worker served again \
         (its start took {:?}); probe interval {INTERVAL:?}",
        up_at.duration_since(restarted)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_models_one_down_leaves_grymd_serving_and_only_its_name_down() {
    let (a, b) = (free_port(), free_port());
    let mut first = sim("first", a).await;
    let _second = sim("second", b).await;
    let grymd = Grymd::start(&config(&[("first", a), ("second", b)])).await;
    first.kill().await;
    until_check(&grymd, "grym.model/first", Ok(ServingStatus::NotServing)).await;
    for service in ["", "grym.orchestrator.v1.Orchestrator", "grym.model/second"] {
        assert_eq!(
            grymd.health(service).await.unwrap(),
            ServingStatus::Serving as i32,
            "{service}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn model_names_follow_the_workers_a_reload_adds_and_removes() {
    let (a, b) = (free_port(), free_port());
    let _first = sim("first", a).await;
    let _second = sim("second", b).await;
    let grymd = Grymd::start(&config(&[("first", a)])).await;
    until_check(&grymd, "grym.model/first", Ok(ServingStatus::Serving)).await;
    until_check(&grymd, "grym.model/second", Err(Code::NotFound)).await;
    let mut later = watch_health(&grymd.process().endpoint(), "grym.model/second").await;
    assert_eq!(next_status(&mut later).await, ServingStatus::ServiceUnknown);

    grymd
        .reconfigure(&config(&[("first", a), ("second", b)]))
        .await;
    assert_eq!(next_status(&mut later).await, ServingStatus::Serving);
    grymd.reconfigure(&config(&[("second", b)])).await;
    until_check(&grymd, "grym.model/first", Err(Code::NotFound)).await;
    assert_eq!(
        grymd.health("grym.model/second").await.unwrap(),
        ServingStatus::Serving as i32
    );
}

/// A worker that serves no `grpc.health.v1` is probed by Describe: it is
/// used while it answers, marked down when it is gone, and grymd says once
/// in its log how it is probed.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_without_grpc_health_is_probed_by_describe() {
    let port = free_port();
    let mut deaf = worker(&[
        "sim",
        "--no-health",
        "--model-id",
        "deaf",
        "--capability",
        "transcription",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .await;
    let grymd = Grymd::start(&config(&[("deaf", port)])).await;
    until_check(&grymd, "grym.model/deaf", Ok(ServingStatus::Serving)).await;

    let result = grymd
        .client()
        .await
        .execute_task(grym_e2e::task_request(
            "transcription",
            grym_e2e::text("hello"),
        ))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(result.model_id, "deaf", "{:?}", result.error);

    // Several probes later, the log still says it once.
    tokio::time::sleep(INTERVAL * 3).await;
    let log = grymd.process().log();
    assert_eq!(log.matches("it is probed by Describe").count(), 1, "{log}");

    deaf.kill().await;
    until_check(&grymd, "grym.model/deaf", Ok(ServingStatus::NotServing)).await;
}
