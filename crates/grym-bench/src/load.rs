//! Load against one target, for a bounded time.
//!
//! A [`Target`] holds a few tonic channels to one address (each channel is
//! one HTTP/2 connection, which multiplexes many calls) and calls either a
//! worker's `ModelWorker/Infer` or grymd's `Orchestrator/ExecuteTask` with
//! the same small text input. [`run`] drives it:
//! - open loop: requests are due at a fixed rate ([`Schedule`]) and sent on
//!   time whether or not earlier ones have answered; latency counts from
//!   each request's intended send time;
//! - closed loop: a fixed number of callers each send their next request as
//!   soon as the previous one answers, which finds the maximum throughput.
//!
//! Both run a warm-up whose requests are not counted, then the measured
//! span. Every request has a timeout, so a run ends at most that long after
//! its span.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use grym_proto::orchestrator::v1 as api;
use grym_proto::worker::v1 as wire;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};

use api::orchestrator_client::OrchestratorClient;
use wire::model_worker_client::ModelWorkerClient;

use crate::schedule::Schedule;
use crate::stats::{Percentiles, Recorder};

/// Which API a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Protocol {
    /// A model worker (or a proxy in front of one): `ModelWorker/Infer`.
    Worker,
    /// grymd: `Orchestrator/ExecuteTask`.
    Grymd,
    /// grymd: `Orchestrator/SubmitTask`, answered once the task is written
    /// to its store; the task runs after.
    Submit,
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Mode {
    /// A fixed arrival rate, in requests per second.
    Open { rate: f64 },
    /// A fixed number of callers, each waiting for its answer.
    Closed { concurrency: usize },
}

/// What each request carries.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    /// The task type, one the worker serves.
    pub(crate) task_type: String,
    /// The text input.
    pub(crate) text: String,
}

impl Payload {
    /// The task grymd is asked to run.
    fn task(&self) -> api::Task {
        api::Task {
            r#type: self.task_type.clone(),
            input: Some(api::TaskInput {
                kind: Some(api::task_input::Kind::Text(self.text.clone())),
            }),
            ..api::Task::default()
        }
    }

    /// A text input of `bytes` ASCII bytes for `task_type`.
    pub(crate) fn text(task_type: &str, bytes: usize) -> Self {
        const WORDS: &str = "what is in this clip? ";
        let text: String = WORDS.chars().cycle().take(bytes).collect();
        Self {
            task_type: task_type.to_owned(),
            text,
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunSpec {
    /// The pacing.
    pub(crate) mode: Mode,
    /// Unmeasured time first.
    pub(crate) warmup: Duration,
    /// The measured span.
    pub(crate) duration: Duration,
    /// The longest one request may take; then it counts as a `timeout`.
    pub(crate) timeout: Duration,
    /// Open loop: requests due while this many are in flight are not sent
    /// and count as failures, so an overwhelmed target cannot exhaust the
    /// load generator.
    pub(crate) max_in_flight: usize,
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LoadResult {
    /// What was measured, for example `direct`, `grymd` or `nginx`.
    pub(crate) label: String,
    /// The API called.
    pub(crate) protocol: Protocol,
    /// The address called.
    pub(crate) address: String,
    /// The pacing.
    pub(crate) mode: Mode,
    /// HTTP/2 connections used.
    pub(crate) connections: usize,
    /// Unmeasured seconds first.
    pub(crate) warmup_s: f64,
    /// Measured seconds.
    pub(crate) duration_s: f64,
    /// Requests measured that succeeded.
    pub(crate) successes: u64,
    /// Requests measured that failed, by kind.
    pub(crate) failures: BTreeMap<String, u64>,
    /// Successes per second of the measured span.
    pub(crate) throughput: f64,
    /// Latency of the successes, in microseconds; from the intended send
    /// time in open loop.
    pub(crate) latency_us: Percentiles,
    /// Latency of the failures, by kind, in microseconds: how long a
    /// refusal took to come back, or a call to give up.
    #[serde(default)]
    pub(crate) failure_latency_us: BTreeMap<String, Percentiles>,
    /// Open loop: how late requests left after their intended time, in
    /// microseconds (the load generator's own lag, included in latency).
    pub(crate) send_lag_us: Option<Percentiles>,
}

impl LoadResult {
    /// Failed requests.
    pub(crate) fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Whether the target kept up: no failure and, in open loop, at least
    /// 95% of the offered rate answered within the span.
    pub(crate) fn sustained(&self) -> bool {
        let kept_pace = match self.mode {
            Mode::Open { rate } => self.throughput >= 0.95 * rate,
            Mode::Closed { .. } => true,
        };
        self.failed() == 0 && self.successes > 0 && kept_pace
    }
}

/// Connections to one address, ready to call.
pub(crate) struct Target {
    protocol: Protocol,
    address: SocketAddr,
    clients: Clients,
}

enum Clients {
    Worker(Vec<ModelWorkerClient<Channel>>, wire::InferRequest),
    Grymd(Vec<OrchestratorClient<Channel>>, api::ExecuteTaskRequest),
    Submit(Vec<OrchestratorClient<Channel>>, api::SubmitTaskRequest),
}

/// One prepared call.
enum Call {
    Worker(ModelWorkerClient<Channel>, wire::InferRequest),
    Grymd(OrchestratorClient<Channel>, api::ExecuteTaskRequest),
    Submit(OrchestratorClient<Channel>, api::SubmitTaskRequest),
}

/// Refuses any address off the loopback: load goes to this machine only.
pub(crate) fn check_loopback(addresses: &[SocketAddr]) -> anyhow::Result<SocketAddr> {
    let Some(first) = addresses.first() else {
        bail!("the address resolves to nothing");
    };
    if let Some(remote) = addresses.iter().find(|a| !a.ip().is_loopback()) {
        bail!("{remote} is not a loopback address: grym-bench only loads this machine");
    }
    Ok(*first)
}

/// Resolves `host:port` and refuses it unless every address is loopback.
pub(crate) async fn loopback_address(address: &str) -> anyhow::Result<SocketAddr> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .with_context(|| format!("cannot resolve `{address}` (expected HOST:PORT)"))?
        .collect();
    check_loopback(&resolved).with_context(|| format!("refusing `{address}`"))
}

/// One HTTP/2 connection to `address`.
pub(crate) async fn connect(address: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {address}"))
}

impl Target {
    /// Opens `connections` connections to `address`.
    pub(crate) async fn connect(
        protocol: Protocol,
        address: SocketAddr,
        connections: usize,
        payload: &Payload,
    ) -> anyhow::Result<Self> {
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            channels.push(connect(address).await?);
        }
        let clients = match protocol {
            Protocol::Worker => Clients::Worker(
                channels.into_iter().map(ModelWorkerClient::new).collect(),
                wire::InferRequest {
                    task_type: payload.task_type.clone(),
                    input: Some(wire::Input {
                        kind: Some(wire::input::Kind::Text(payload.text.clone())),
                    }),
                    ..wire::InferRequest::default()
                },
            ),
            Protocol::Grymd => Clients::Grymd(
                channels.into_iter().map(OrchestratorClient::new).collect(),
                api::ExecuteTaskRequest {
                    task: Some(payload.task()),
                },
            ),
            // Each submission's id is left to grymd, so none collide.
            Protocol::Submit => Clients::Submit(
                channels.into_iter().map(OrchestratorClient::new).collect(),
                api::SubmitTaskRequest {
                    task: Some(payload.task()),
                },
            ),
        };
        Ok(Self {
            protocol,
            address,
            clients,
        })
    }

    /// The number of connections.
    fn connections(&self) -> usize {
        match &self.clients {
            Clients::Worker(clients, _) => clients.len(),
            Clients::Grymd(clients, _) => clients.len(),
            Clients::Submit(clients, _) => clients.len(),
        }
    }

    /// Request `index`, on connection `index mod connections`; its error is
    /// the name of its failure.
    pub(crate) fn call(
        &self,
        index: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let pick = |n: usize| usize::try_from(index % n.max(1) as u64).unwrap_or(0);
        let call = match &self.clients {
            Clients::Worker(clients, request) => {
                Call::Worker(clients[pick(clients.len())].clone(), request.clone())
            }
            Clients::Grymd(clients, request) => {
                Call::Grymd(clients[pick(clients.len())].clone(), request.clone())
            }
            Clients::Submit(clients, request) => {
                Call::Submit(clients[pick(clients.len())].clone(), request.clone())
            }
        };
        async move {
            let code = |status: tonic::Status| format!("{:?}", status.code());
            match call {
                Call::Worker(mut client, request) => {
                    let mut request = tonic::Request::new(request);
                    request.set_timeout(timeout);
                    client.infer(request).await.map(drop).map_err(code)
                }
                Call::Grymd(mut client, request) => {
                    let mut request = tonic::Request::new(request);
                    request.set_timeout(timeout);
                    let response = client.execute_task(request).await.map_err(code)?;
                    let status = response
                        .into_inner()
                        .result
                        .map(|result| result.status())
                        .unwrap_or_default();
                    if status == api::TaskStatus::Succeeded {
                        Ok(())
                    } else {
                        Err(status.as_str_name().to_owned())
                    }
                }
                Call::Submit(mut client, request) => {
                    let mut request = tonic::Request::new(request);
                    request.set_timeout(timeout);
                    client.submit_task(request).await.map(drop).map_err(code)
                }
            }
        }
    }
}

/// Runs `spec` against `target` and reports it under `label`.
pub(crate) async fn run(
    target: &Arc<Target>,
    label: &str,
    spec: &RunSpec,
) -> anyhow::Result<LoadResult> {
    let recorder = match spec.mode {
        Mode::Open { rate } => open_loop(target, rate, spec).await?,
        Mode::Closed { concurrency } => closed_loop(target, concurrency, spec).await?,
    };
    let duration = spec.duration.as_secs_f64();
    Ok(LoadResult {
        label: label.to_owned(),
        protocol: target.protocol,
        address: target.address.to_string(),
        mode: spec.mode,
        connections: target.connections(),
        warmup_s: spec.warmup.as_secs_f64(),
        duration_s: duration,
        successes: recorder.successes(),
        failures: recorder.failures().clone(),
        throughput: if duration > 0.0 {
            recorder.successes() as f64 / duration
        } else {
            0.0
        },
        latency_us: recorder.latency(),
        failure_latency_us: recorder.failure_latencies(),
        send_lag_us: recorder.send_lag_percentiles(),
    })
}

fn lock(recorder: &Mutex<Recorder>) -> std::sync::MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends requests on schedule from a dedicated thread and measures each
/// from its intended time.
async fn open_loop(target: &Arc<Target>, rate: f64, spec: &RunSpec) -> anyhow::Result<Recorder> {
    let schedule = Schedule::new(rate).context("the rate must be positive")?;
    let total = schedule.count_within(spec.warmup + spec.duration);
    let first_measured = schedule.count_within(spec.warmup);
    let recorder = Arc::new(Mutex::new(Recorder::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    // Dropping this run (an interrupted benchmark) stops the pacer too.
    let _stop_on_drop = stop.clone().drop_guard();

    // The pacer is an OS thread, not a tokio timer: tokio's timer wheel has
    // 1 ms resolution, which would release requests in 1 ms bursts and add
    // up to 1 ms to each latency; a thread's sleep wakes within tens of
    // microseconds (the lag is measured and reported).
    let pacer = {
        let target = Arc::clone(target);
        let recorder = Arc::clone(&recorder);
        let tracker = tracker.clone();
        let handle = tokio::runtime::Handle::current();
        let (timeout, max_in_flight) = (spec.timeout, spec.max_in_flight);
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let mut next = 0;
            while next < total && !stop.is_cancelled() {
                let due = schedule.due_by(start.elapsed()).min(total);
                while next < due {
                    let index = next;
                    next += 1;
                    let measured = index >= first_measured;
                    if in_flight.load(Ordering::Relaxed) >= max_in_flight {
                        if measured {
                            lock(&recorder).failure("not sent: in-flight limit");
                        }
                        continue;
                    }
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    let intended = start + schedule.offset(index);
                    let call = target.call(index, timeout);
                    let recorder = Arc::clone(&recorder);
                    let in_flight = Arc::clone(&in_flight);
                    tracker.spawn_on(
                        async move {
                            let sent = Instant::now();
                            let outcome = tokio::time::timeout(timeout, call).await;
                            let latency = intended.elapsed();
                            in_flight.fetch_sub(1, Ordering::Relaxed);
                            if measured {
                                let mut recorder = lock(&recorder);
                                recorder.send_lag(sent.saturating_duration_since(intended));
                                match outcome {
                                    Ok(Ok(())) => recorder.success(latency),
                                    Ok(Err(kind)) => recorder.failure_after(&kind, latency),
                                    Err(_) => recorder.failure_after("timeout", latency),
                                }
                            }
                        },
                        &handle,
                    );
                }
                if next < total {
                    let wake = start + schedule.offset(next);
                    std::thread::sleep(wake.saturating_duration_since(Instant::now()));
                }
            }
        })
    };
    pacer.await.context("the pacer thread failed")?;
    tracker.close();
    // Each request ends within its timeout; the margin covers scheduling.
    if tokio::time::timeout(spec.timeout + Duration::from_secs(2), tracker.wait())
        .await
        .is_err()
    {
        bail!("requests were still in flight after their timeout");
    }
    let recorder = lock(&recorder).clone();
    Ok(recorder)
}

/// `concurrency` callers, each sending its next request when the previous
/// one answers.
async fn closed_loop(
    target: &Arc<Target>,
    concurrency: usize,
    spec: &RunSpec,
) -> anyhow::Result<Recorder> {
    let start = Instant::now();
    let measured_from = start + spec.warmup;
    let end = measured_from + spec.duration;
    let mut callers = JoinSet::new();
    let step = u64::try_from(concurrency.max(1)).unwrap_or(1);
    for caller in 0..step {
        let target = Arc::clone(target);
        let timeout = spec.timeout;
        callers.spawn(async move {
            let mut recorder = Recorder::new();
            let mut index = caller;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let outcome = tokio::time::timeout(timeout, target.call(index, timeout)).await;
                index += step;
                let done = Instant::now();
                // Only requests wholly inside the measured span count.
                if sent < measured_from || done > end {
                    continue;
                }
                match outcome {
                    Ok(Ok(())) => recorder.success(done - sent),
                    Ok(Err(kind)) => recorder.failure_after(&kind, done - sent),
                    Err(_) => recorder.failure_after("timeout", done - sent),
                }
            }
            recorder
        });
    }
    let mut total = Recorder::new();
    while let Some(caller) = callers.join_next().await {
        total.merge(&caller.context("a caller failed")?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        let local: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let local6: SocketAddr = "[::1]:7001".parse().unwrap();
        let remote: SocketAddr = "192.168.1.10:7001".parse().unwrap();
        assert_eq!(check_loopback(&[local, local6]).unwrap(), local);
        let refused = check_loopback(&[local, remote]).unwrap_err().to_string();
        assert!(refused.contains("192.168.1.10"), "{refused}");
        assert!(check_loopback(&[]).is_err());
    }

    #[test]
    fn the_payload_is_text_of_the_asked_size() {
        let payload = Payload::text("echo", 100);
        assert_eq!(payload.text.len(), 100);
        assert!(payload.text.starts_with("what is in this clip?"));
        assert_eq!(payload.task_type, "echo");
    }

    fn result(mode: Mode, successes: u64, throughput: f64, failed: u64) -> LoadResult {
        LoadResult {
            label: "direct".into(),
            protocol: Protocol::Worker,
            address: "127.0.0.1:1".into(),
            mode,
            connections: 4,
            warmup_s: 1.0,
            duration_s: 5.0,
            successes,
            failures: if failed > 0 {
                BTreeMap::from([("timeout".to_owned(), failed)])
            } else {
                BTreeMap::new()
            },
            throughput,
            latency_us: Percentiles::default(),
            failure_latency_us: BTreeMap::new(),
            send_lag_us: None,
        }
    }

    #[test]
    fn an_open_loop_run_is_sustained_when_it_keeps_pace_without_failures() {
        let open = Mode::Open { rate: 1000.0 };
        assert!(result(open, 5000, 1000.0, 0).sustained());
        assert!(result(open, 4800, 960.0, 0).sustained());
        assert!(!result(open, 4000, 800.0, 0).sustained(), "fell behind");
        assert!(!result(open, 5000, 1000.0, 3).sustained(), "failures");
        let closed = Mode::Closed { concurrency: 8 };
        assert!(result(closed, 100, 20.0, 0).sustained());
        assert!(!result(closed, 0, 0.0, 0).sustained());
    }
}
