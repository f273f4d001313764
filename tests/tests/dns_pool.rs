//! A worker pool found by DNS, with real processes: three `grym-worker sim`
//! processes listen on 127.0.0.2, 127.0.0.3 and 127.0.0.4 (one port, as
//! behind a headless Service), and grymd follows `dns://pool.test:PORT`
//! through a hosts file the test edits. Under steady load the pool grows
//! from one replica to three (all three take calls within seconds) and
//! shrinks back to one (the name first, then the workers stopped with
//! SIGTERM), and no call fails throughout.
//!
//! The test prints what it measured (`cargo test -- --nocapture`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grym_e2e::{Grymd, OrchestratorClient, Process, task_request, text, worker};
use grym_proto::orchestrator::v1 as api;
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// The addresses of the pool's workers.
const ADDRESSES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];

/// The bound on every wait: a guard against hangs, not a target.
const PATIENCE: Duration = Duration::from_secs(30);

/// A port free on every address of the pool a moment ago.
fn port_free_on_all() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind(SocketAddr::from((ADDRESSES[0], 0))).unwrap();
        let port = first.local_addr().unwrap().port();
        let others: Result<Vec<_>, _> = ADDRESSES[1..]
            .iter()
            .map(|address| TcpListener::bind(SocketAddr::from((*address, port))))
            .collect();
        if others.is_ok() {
            return port;
        }
    }
    panic!("no port is free on all of {ADDRESSES:?}");
}

async fn sim(address: Ipv4Addr, port: u16) -> Process {
    let listen = SocketAddr::from((address, port)).to_string();
    worker(&[
        "sim",
        "--model-id",
        "pooled",
        "--capability",
        "transcription",
        "--latency-ms",
        "20",
        "--jitter-ms",
        "10",
        "--listen",
        &listen,
    ])
    .await
}

/// Makes `addresses` what `pool.test` resolves to.
fn name_pool(hosts: &std::path::Path, addresses: &[Ipv4Addr]) {
    let lines: String = addresses
        .iter()
        .map(|address| format!("{address} pool.test\n"))
        .collect();
    // Written beside, then renamed: a resolution never reads half a file.
    let staged = hosts.with_extension("new");
    std::fs::write(&staged, format!("# the pool\n{lines}")).unwrap();
    std::fs::rename(&staged, hosts).unwrap();
}

/// What the load saw: calls answered per endpoint, every failure, and how
/// many calls each caller has seen end.
#[derive(Default)]
struct Seen {
    by_endpoint: BTreeMap<String, usize>,
    failures: Vec<String>,
    ended_by_caller: BTreeMap<usize, usize>,
}

impl Seen {
    fn calls_to(&self, address: Ipv4Addr) -> usize {
        self.by_endpoint
            .iter()
            .filter(|(endpoint, _)| endpoint.contains(&format!("//{address}:")))
            .map(|(_, calls)| calls)
            .sum()
    }

    fn total(&self) -> usize {
        self.by_endpoint.values().sum::<usize>() + self.failures.len()
    }
}

/// Steady load: `loops` callers, each sending ExecuteTask as soon as its
/// last call answered, until `stop`.
fn load(
    client: &OrchestratorClient<Channel>,
    loops: usize,
    seen: &Arc<Mutex<Seen>>,
    stop: &Arc<AtomicBool>,
) -> JoinSet<()> {
    let mut callers = JoinSet::new();
    for caller in 0..loops {
        let mut client = client.clone();
        let seen = Arc::clone(seen);
        let stop = Arc::clone(stop);
        callers.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut request = tonic::Request::new(task_request(
                    "transcription",
                    text(&format!("caller {caller} call {n}")),
                ));
                request.set_timeout(Duration::from_secs(10));
                let answer = client.execute_task(request).await;
                let mut seen = seen.lock().unwrap();
                *seen.ended_by_caller.entry(caller).or_default() += 1;
                match answer.map(|response| response.into_inner().result) {
                    Ok(Some(result)) if result.status() == api::TaskStatus::Succeeded => {
                        let endpoint = result
                            .metrics
                            .as_ref()
                            .and_then(|metrics| metrics.attempts.last())
                            .map(|attempt| attempt.endpoint.clone())
                            .unwrap_or_default();
                        *seen.by_endpoint.entry(endpoint).or_default() += 1;
                    }
                    Ok(other) => seen.failures.push(format!("{other:?}")),
                    Err(status) => seen.failures.push(format!("{status:?}")),
                }
            }
        });
    }
    callers
}

/// Waits (bounded) until `done` holds of what the load saw; what it saw
/// then.
async fn until(seen: &Arc<Mutex<Seen>>, what: &str, done: impl Fn(&Seen) -> bool) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while !done(&seen.lock().unwrap()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let seen = seen.lock().unwrap();
    assert!(
        waited.is_ok(),
        "{what} did not happen within {PATIENCE:?}: {:?}, failures {:?}",
        seen.by_endpoint,
        seen.failures
    );
}

/// The replicas grymd lists for the pool now.
async fn listed(client: &OrchestratorClient<Channel>) -> Vec<String> {
    let models = client
        .clone()
        .list_models(api::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    models
        .iter()
        .flat_map(|model| &model.replicas)
        .map(|replica| replica.endpoint.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_pool_scales_from_one_replica_to_three_and_back_under_load_without_a_failed_call() {
    let port = port_free_on_all();
    let mut workers = Vec::new();
    for address in ADDRESSES {
        workers.push(sim(address, port).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    name_pool(&hosts, &ADDRESSES[..1]);
    let grymd = Grymd::start(&format!(
        "builtin_workers = false\n\
         [discovery]\ninterval = \"200ms\"\nhosts_file = \"{}\"\n\
         [[workers]]\nid = \"pooled\"\nendpoint = \"dns://pool.test:{port}\"\n",
        hosts.display()
    ))
    .await;
    let client = grymd.client().await;
    assert_eq!(listed(&client).await, [format!("http://127.0.0.2:{port}")]);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = load(&client, 4, &seen, &stop);

    // One replica: it takes every call.
    until(&seen, "the first 40 calls", |seen| seen.total() >= 40).await;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.calls_to(ADDRESSES[0]),
            seen.total(),
            "{:?}",
            seen.by_endpoint
        );
    }

    // Three: the two new replicas take calls within seconds.
    let before: Vec<usize> = {
        let seen = seen.lock().unwrap();
        ADDRESSES.iter().map(|a| seen.calls_to(*a)).collect()
    };
    let grown = tokio::time::Instant::now();
    name_pool(&hosts, &ADDRESSES);
    until(&seen, "traffic on every replica of three", |seen| {
        ADDRESSES
            .iter()
            .zip(&before)
            .all(|(address, before)| seen.calls_to(*address) >= before + 20)
    })
    .await;
    println!(
        "all three replicas took 20 calls each within {:?} of the change",
        grown.elapsed()
    );
    assert_eq!(listed(&client).await.len(), 3);

    // Back to one: the name first, then the workers that left are stopped.
    name_pool(&hosts, &ADDRESSES[..1]);
    let shrunk = tokio::time::Instant::now();
    let only_one = tokio::time::timeout(PATIENCE, async {
        while listed(&client).await.len() != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        only_one.is_ok(),
        "grymd still lists {:?}",
        listed(&client).await
    );
    println!(
        "the pool was one replica again {:?} after the change",
        shrunk.elapsed()
    );
    for gone in &workers[1..] {
        gone.sigterm().await;
    }
    for gone in &mut workers[1..] {
        assert!(
            gone.exited_within(PATIENCE).await.is_some(),
            "a removed worker drains and exits"
        );
    }
    // A call the removed workers answered while draining may still be on
    // its way back to its caller: once every caller has seen one more call
    // end, each caller's earlier calls are all counted.
    let ended = seen.lock().unwrap().ended_by_caller.clone();
    until(&seen, "one more call ended for every caller", |seen| {
        ended
            .iter()
            .all(|(caller, ended)| seen.ended_by_caller[caller] > *ended)
    })
    .await;
    let after: Vec<usize> = {
        let seen = seen.lock().unwrap();
        ADDRESSES.iter().map(|a| seen.calls_to(*a)).collect()
    };
    until(&seen, "40 calls after the pool shrank", |seen| {
        seen.calls_to(ADDRESSES[0]) >= after[0] + 40
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    while let Some(caller) = callers.join_next().await {
        caller.unwrap();
    }
    let seen = seen.lock().unwrap();
    println!("calls by endpoint: {:?}", seen.by_endpoint);
    assert!(
        seen.failures.is_empty(),
        "failed calls: {:?}",
        seen.failures
    );
    for (address, after) in ADDRESSES.iter().zip(&after).skip(1) {
        assert_eq!(
            seen.calls_to(*address),
            *after,
            "no call reached {address} once its workers were stopped"
        );
    }
}
