//! `grym-bench durable`: what keeping accepted work costs, store by store.
//!
//! For each store (`memory`, the SQLite default, and PostgreSQL when a URL
//! is given), a fresh grymd in front of one sim worker that answers at once,
//! the stores alternating within each repetition:
//! - `SubmitTask` at a fixed concurrency (closed loop): submissions per
//!   second and their latency, each answered once its task is committed;
//! - `ExecuteTask` at the same concurrency, which is not written
//!   (`durable_execute = false`).
//!
//! With `--recover N`, the time a restarted grymd takes to take up N queued
//! tasks that a killed one left in its SQLite file, against its start on an
//! empty store.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::compare::TASK_TYPE;
use crate::load::{self, LoadResult, Mode, Payload, Protocol, RunSpec, Target};
use crate::procs::{self, Binaries};

/// What to measure.
pub(crate) struct Settings {
    /// Repetitions of every measurement.
    pub(crate) repeats: u32,
    /// Unmeasured time at the start of each run.
    pub(crate) warmup: Duration,
    /// Measured time of each run.
    pub(crate) duration: Duration,
    /// Calls in flight.
    pub(crate) concurrency: usize,
    /// HTTP/2 connections to grymd.
    pub(crate) connections: usize,
    /// A PostgreSQL database to measure too.
    pub(crate) postgres: Option<String>,
    /// Queued tasks to recover after a kill, if any.
    pub(crate) recover: Option<usize>,
}

/// One run against one store.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// `memory`, `sqlite` or `postgres`.
    pub(crate) store: String,
    /// What was measured.
    pub(crate) result: LoadResult,
}

/// How long a restart took, with and without work to take up.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Recovery {
    /// Queued tasks left by the killed grymd.
    pub(crate) tasks: usize,
    /// Submitting them took this long.
    pub(crate) submit_s: f64,
    /// From spawn to serving, on an empty store.
    pub(crate) empty_start_s: f64,
    /// From spawn to serving, taking the tasks up first.
    pub(crate) recovering_start_s: f64,
}

/// The stores to measure, each with its `[store]` table for a run in
/// `scratch`.
fn stores(settings: &Settings, scratch: &Path, run: usize) -> Vec<(&'static str, String)> {
    let mut stores = vec![
        ("memory", "url = \"memory\"".to_owned()),
        (
            "sqlite",
            format!(
                "url = \"sqlite://{}\"",
                scratch.join(format!("run-{run}.db")).display()
            ),
        ),
    ];
    if let Some(url) = &settings.postgres {
        stores.push(("postgres", format!("url = \"{url}\"")));
    }
    stores
}

/// Every run, alternating stores within each repetition.
pub(crate) async fn run(
    settings: &Settings,
    binaries: &Binaries,
) -> anyhow::Result<(Vec<Row>, Option<Recovery>)> {
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let (_worker, worker) =
        procs::start_worker(&binaries.worker, TASK_TYPE, scratch.path()).await?;
    let payload = Payload::text(TASK_TYPE, 64);
    let mut rows = Vec::new();
    let mut run = 0;
    for repeat in 0..settings.repeats {
        for protocol in [Protocol::Submit, Protocol::Grymd] {
            let mut order = stores(settings, scratch.path(), run);
            if repeat % 2 == 1 {
                order.reverse();
            }
            for (label, store) in order {
                run += 1;
                eprintln!("durable: {label}, {protocol:?}, repetition {}", repeat + 1);
                let extra = format!(
                    "[store]\n{store}\n\n[scheduler]\nmax_queue = 1000000\nmax_queue_wait = \"1h\"\n"
                );
                let (grymd, address) = procs::start_grymd_with(
                    &binaries.grymd,
                    worker,
                    TASK_TYPE,
                    scratch.path(),
                    &extra,
                )
                .await?;
                let target = Arc::new(
                    Target::connect(protocol, address, settings.connections, &payload).await?,
                );
                let spec = RunSpec {
                    mode: Mode::Closed {
                        concurrency: settings.concurrency,
                    },
                    warmup: settings.warmup,
                    duration: settings.duration,
                    timeout: Duration::from_secs(10),
                    max_in_flight: settings.concurrency,
                };
                let result = load::run(&target, label, &spec).await?;
                drop(target);
                drop(grymd);
                rows.push(Row {
                    store: label.to_owned(),
                    result,
                });
            }
        }
    }
    let recovery = match settings.recover {
        Some(tasks) => Some(recovery(binaries, tasks, settings.connections).await?),
        None => None,
    };
    Ok((rows, recovery))
}

/// Leaves `tasks` queued tasks in an SQLite store, kills grymd, and times
/// the start that takes them up.
async fn recovery(
    binaries: &Binaries,
    tasks: usize,
    connections: usize,
) -> anyhow::Result<Recovery> {
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    // One slot, a minute a call: everything submitted stays queued.
    let (_worker, worker) = procs::start_worker_with(
        &binaries.worker,
        TASK_TYPE,
        &["--latency-ms", "60000", "--max-concurrency", "1"],
        scratch.path(),
    )
    .await?;
    let extra = format!(
        "[store]\nurl = \"sqlite://{}\"\n\n[scheduler]\nmax_queue = {}\nmax_queue_wait = \"1000000h\"\n",
        scratch.path().join("grym.db").display(),
        tasks + 1000
    );
    let config = scratch.path().join("grymd.toml");
    std::fs::write(&config, procs::grymd_config(worker, &extra))?;

    let started = Instant::now();
    let (grymd, address) =
        procs::spawn_grymd(&binaries.grymd, &config, scratch.path(), "info").await?;
    let empty_start_s = started.elapsed().as_secs_f64();

    eprintln!("durable: submitting {tasks} tasks to queue");
    let payload = Payload::text(TASK_TYPE, 64);
    let target = Arc::new(Target::connect(Protocol::Submit, address, connections, &payload).await?);
    let next = Arc::new(AtomicU64::new(0));
    let submitting = Instant::now();
    let mut callers: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    for _ in 0..256 {
        let (target, next) = (Arc::clone(&target), Arc::clone(&next));
        let total = tasks as u64;
        callers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::AcqRel);
                if index >= total {
                    return Ok(());
                }
                target
                    .call(index, Duration::from_secs(30))
                    .await
                    .map_err(|error| anyhow::anyhow!("submission {index} failed: {error}"))?;
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done??;
    }
    let submit_s = submitting.elapsed().as_secs_f64();
    drop(target);
    grymd.kill_now().await?;

    eprintln!("durable: restarting on {tasks} queued tasks");
    let started = Instant::now();
    let (grymd, _) = procs::spawn_grymd(&binaries.grymd, &config, scratch.path(), "info").await?;
    let recovering_start_s = started.elapsed().as_secs_f64();
    let log = grymd.log_tail();
    if !log.contains("took up unfinished tasks") {
        bail!("the restarted grymd took nothing up; its log ends:\n{log}");
    }
    Ok(Recovery {
        tasks,
        submit_s,
        empty_start_s,
        recovering_start_s,
    })
}

/// The table BENCHMARKS.md shows: each store's median over repetitions.
pub(crate) fn table(rows: &[Row], recovery: Option<&Recovery>) -> String {
    let mut out = String::from(
        "| call | store | calls/s (median) | p50, ms | p99, ms | failures |\n\
         | --- | --- | ---: | ---: | ---: | ---: |\n",
    );
    let mut keys: Vec<(Protocol, String)> = Vec::new();
    for row in rows {
        let key = (row.result.protocol, row.store.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for (protocol, store) in keys {
        let mut runs: Vec<&LoadResult> = rows
            .iter()
            .filter(|row| row.result.protocol == protocol && row.store == store)
            .map(|row| &row.result)
            .collect();
        runs.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
        let median = runs[runs.len() / 2];
        let failures: u64 = runs.iter().flat_map(|run| run.failures.values()).sum();
        let call = match protocol {
            Protocol::Submit => "SubmitTask",
            _ => "ExecuteTask",
        };
        out.push_str(&format!(
            "| {call} | {store} | {:.0} | {:.2} | {:.2} | {failures} |\n",
            median.throughput,
            median.latency_us.p50 / 1000.0,
            median.latency_us.p99 / 1000.0,
        ));
    }
    if let Some(recovery) = recovery {
        out.push_str(&format!(
            "\n{} queued tasks (submitted in {:.1} s): a start on an empty store took {:.2} s, \
             the start that took them all up {:.2} s.\n",
            recovery.tasks, recovery.submit_s, recovery.empty_start_s, recovery.recovering_start_s
        ));
    }
    out
}
