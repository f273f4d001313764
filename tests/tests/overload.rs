//! Overload end to end: a real grymd in front of a real sim worker offered
//! several times what the worker can take. Calls succeed or are refused at
//! once with a retry hint; none waits in the queue until its deadline;
//! grymd stays healthy; and the model's statistics blame it for nothing it
//! did not do. Bounds on time are generous guards against hangs, not
//! speed targets (those are in BENCHMARKS.md, "Overload").

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::time::Duration;

use grym_e2e::{Grymd, OrchestratorClient, task_request, text, worker};
use grym_proto::orchestrator::v1 as api;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

/// A guard against hangs, not a performance target.
const NO_HANG: Duration = Duration::from_secs(60);

/// Every call's deadline.
const DEADLINE: Duration = Duration::from_secs(2);

/// Calls a second offered: five times the worker's 4 slots x 50 ms.
const RATE: u32 = 400;

/// How long the load lasts.
const LOAD: Duration = Duration::from_secs(2);

/// How one call ended.
#[derive(Debug)]
enum End {
    Succeeded,
    /// Refused with RESOURCE_EXHAUSTED, with its retry pushback, if any.
    Refused {
        pushback_ms: Option<u64>,
        message: String,
    },
    /// Anything else: a status or a task result that did not succeed.
    Other(#[expect(dead_code, reason = "read through Debug, in failure messages")] String),
}

async fn call(mut client: OrchestratorClient<Channel>) -> (End, Duration) {
    let mut request = tonic::Request::new(task_request("text_generation", text("load")));
    request.set_timeout(DEADLINE);
    let sent = Instant::now();
    let end = match client.execute_task(request).await {
        Ok(response) => {
            let result = response.into_inner().result.unwrap();
            if result.status() == api::TaskStatus::Succeeded {
                End::Succeeded
            } else {
                End::Other(format!("{:?}: {:?}", result.status(), result.error))
            }
        }
        Err(status) if status.code() == Code::ResourceExhausted => End::Refused {
            pushback_ms: status
                .metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok()),
            message: status.message().to_owned(),
        },
        Err(status) => End::Other(format!("{:?}: {}", status.code(), status.message())),
    };
    (end, sent.elapsed())
}

async fn text_generation_stats(client: &mut OrchestratorClient<Channel>) -> api::PerformanceStats {
    let models = client
        .list_models(api::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    let sim = models.iter().find(|model| model.id == "sim").unwrap();
    let capability = sim
        .capabilities
        .iter()
        .find(|capability| capability.task_type == "text_generation")
        .unwrap();
    capability.stats.unwrap()
}

#[tokio::test]
async fn at_five_times_capacity_calls_succeed_or_are_refused_at_once() {
    let sim = worker(&[
        "sim",
        "--model-id",
        "sim",
        "--capability",
        "text_generation",
        "--max-concurrency",
        "4",
        "--latency-ms",
        "50",
    ])
    .await;
    let grymd = Grymd::start(&format!(
        "builtin_workers = false\n[selection]\nroutes = []\n[[workers]]\nid = \"sim\"\nendpoint = \"{}\"\n",
        sim.endpoint()
    ))
    .await;
    let mut client = grymd.client().await;
    // The first call waits for the worker to be described.
    let warm = async {
        while !matches!(call(client.clone()).await.0, End::Succeeded) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(NO_HANG, warm).await.unwrap();

    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(grymd.client().await);
    }
    let load = async {
        let mut calls = tokio::task::JoinSet::new();
        let mut pace = tokio::time::interval(Duration::from_secs(1) / RATE);
        let total = RATE * u32::try_from(LOAD.as_secs()).unwrap();
        for i in 0..total {
            pace.tick().await;
            let client = clients[i as usize % clients.len()].clone();
            calls.spawn(call(client));
        }
        calls.join_all().await
    };
    let ends = tokio::time::timeout(NO_HANG, load).await.unwrap();

    let total = ends.len();
    let succeeded = ends
        .iter()
        .filter(|(end, _)| matches!(end, End::Succeeded))
        .count();
    let refused: Vec<_> = ends
        .iter()
        .filter_map(|(end, took)| match end {
            End::Refused {
                pushback_ms,
                message,
            } => Some((pushback_ms, message, took)),
            _ => None,
        })
        .collect();
    let others: Vec<_> = ends
        .iter()
        .filter(|(end, _)| matches!(end, End::Other(_)))
        .collect();
    assert!(succeeded > 0, "nothing succeeded: {others:?}");
    assert!(!refused.is_empty(), "nothing was refused at 5x capacity");
    // Most calls either succeed or are refused; the few others are calls
    // whose estimate was off, ended unsent.
    assert!(
        others.len() * 20 <= total,
        "{} of {total} neither succeeded nor were refused: {:?}",
        others.len(),
        &others[..others.len().min(5)]
    );
    for (pushback_ms, message, took) in &refused {
        assert!(
            pushback_ms.is_some(),
            "a refusal without grpc-retry-pushback-ms: {message}"
        );
        assert!(
            message.contains("model `sim`"),
            "the refusal says which model and why: {message}"
        );
        assert!(
            **took < DEADLINE / 2,
            "a refusal came after {took:?}, not at once: {message}"
        );
    }
    // Nothing waits in the queue until its deadline to fail, but for the
    // few admitted on an estimate that proved a little short.
    let late: Vec<_> = ends
        .iter()
        .filter(|(end, took)| !matches!(end, End::Succeeded) && *took >= DEADLINE * 9 / 10)
        .collect();
    assert!(
        late.len() * 20 <= total,
        "{} of {total} failed at their deadline: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );

    // grymd is healthy and serves as before.
    let after = tokio::time::timeout(NO_HANG, call(client.clone()))
        .await
        .unwrap();
    assert!(matches!(after.0, End::Succeeded), "{after:?}");
    let stats = text_generation_stats(&mut client).await;
    assert!(stats.successes > 0.0, "{stats:?}");
    // Refusals and calls left unsent say nothing of the model.
    assert!(
        stats.failures + stats.timeouts < 0.5,
        "refusals were counted against the model: {stats:?}"
    );
}
