//! `grym-bench overload`: what grymd does with more work than its worker
//! can take, for one or two grymd builds side by side.
//!
//! Each run starts fresh processes: a `grym-worker sim` with a few slots
//! and a fixed latency (4 x 50 ms by default, so a capacity of 80 calls a
//! second) and a grymd with default settings in front of it. The open loop
//! then offers a multiple of that capacity, every call with the same
//! deadline (`grpc-timeout`), and records what came back: goodput, how fast
//! refusals were answered, the admitted calls' latency against their
//! deadline, and grymd's resident memory before, at its peak during the run
//! and a few seconds after. Builds alternate within each multiple, so both
//! see the machine in the same state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::compare::TASK_TYPE;
use crate::load::{self, LoadResult, Mode, Payload, Protocol, RunSpec, Target};
use crate::procs::{self, Binaries};

/// The failure name of a call grymd refused at admission.
const REFUSED: &str = "ResourceExhausted";

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The worker's slots.
    pub(crate) slots: u32,
    /// The worker's latency per call.
    pub(crate) latency: Duration,
    /// Offered rates, as multiples of the worker's capacity.
    pub(crate) multiples: Vec<f64>,
    /// Unmeasured time first.
    pub(crate) warmup: Duration,
    /// Measured time.
    pub(crate) duration: Duration,
    /// Every call's deadline.
    pub(crate) deadline: Duration,
    /// How long after the load to read grymd's memory again.
    pub(crate) settle: Duration,
    /// HTTP/2 connections of the load generator.
    pub(crate) connections: usize,
}

impl Settings {
    /// Calls a second the worker can finish.
    pub(crate) fn capacity(&self) -> f64 {
        f64::from(self.slots) / self.latency.as_secs_f64().max(1e-6)
    }
}

/// One grymd build under test.
#[derive(Debug, Clone)]
pub(crate) struct Build {
    /// How the table names it.
    pub(crate) label: String,
    /// Its grymd binary.
    pub(crate) grymd: PathBuf,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) build: String,
    pub(crate) multiple: f64,
    pub(crate) rate: f64,
    pub(crate) capacity: f64,
    pub(crate) deadline_ms: f64,
    /// Resident memory of grymd, MiB: before the load, its peak during,
    /// and `settle` after.
    pub(crate) rss_before_mib: f64,
    pub(crate) rss_peak_mib: f64,
    pub(crate) rss_after_mib: f64,
    pub(crate) result: LoadResult,
}

impl Row {
    fn offered(&self) -> u64 {
        self.result.successes + self.result.failed()
    }

    fn refused(&self) -> u64 {
        self.result.failures.get(REFUSED).copied().unwrap_or(0)
    }

    /// Failures other than refusals: calls that were admitted and did not
    /// succeed, or that the load generator gave up on.
    fn failed_late(&self) -> u64 {
        self.result.failed() - self.refused()
    }
}

/// Runs every build at every multiple and returns the rows, builds
/// alternating within each multiple.
pub(crate) async fn run(
    settings: &Settings,
    builds: &[Build],
    worker: &Path,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (round, &multiple) in settings.multiples.iter().enumerate() {
        let mut order: Vec<&Build> = builds.iter().collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for build in order {
            eprintln!("overload: {} at {multiple}x", build.label);
            rows.push(one(settings, build, worker, multiple).await?);
        }
    }
    Ok(rows)
}

async fn one(
    settings: &Settings,
    build: &Build,
    worker: &Path,
    multiple: f64,
) -> anyhow::Result<Row> {
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let latency_ms = settings.latency.as_millis().to_string();
    let slots = settings.slots.to_string();
    let (_worker, worker_address) = procs::start_worker_with(
        worker,
        TASK_TYPE,
        &["--latency-ms", &latency_ms, "--max-concurrency", &slots],
        scratch.path(),
    )
    .await?;
    let (grymd, address) =
        procs::start_grymd(&build.grymd, worker_address, TASK_TYPE, scratch.path()).await?;
    let pid = grymd.pid().context("grymd has no process id")?;
    // The memory of a grymd that has served its first task, idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_mib(pid)?;

    let peak = Arc::new(AtomicU64::new(before.to_bits()));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                if let Ok(now) = rss_mib(pid) {
                    let _ = peak.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                        (now > f64::from_bits(old)).then_some(now.to_bits())
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let rate = multiple * settings.capacity();
    let payload = Payload::text(TASK_TYPE, 64);
    let target =
        Arc::new(Target::connect(Protocol::Grymd, address, settings.connections, &payload).await?);
    let spec = RunSpec {
        mode: Mode::Open { rate },
        warmup: settings.warmup,
        duration: settings.duration,
        timeout: settings.deadline,
        max_in_flight: 100_000,
    };
    let result = load::run(&target, &build.label, &spec).await;
    sampler.abort();
    drop(target);
    let result = result?;
    tokio::time::sleep(settings.settle).await;
    let after = rss_mib(pid)?;
    Ok(Row {
        build: build.label.clone(),
        multiple,
        rate,
        capacity: settings.capacity(),
        deadline_ms: settings.deadline.as_secs_f64() * 1000.0,
        rss_before_mib: before,
        rss_peak_mib: f64::from_bits(peak.load(Ordering::Acquire)),
        rss_after_mib: after,
        result,
    })
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no VmRSS line")?;
    Ok(kib / 1024.0)
}

/// The table BENCHMARKS.md shows.
pub(crate) fn table(rows: &[Row]) -> String {
    let ms = |micros: f64| format!("{:.1}", micros / 1000.0);
    let mut out = String::from(
        "| offered | build | goodput/s (of capacity) | refused | refusal p50 / p99, ms | \
         admitted, not succeeded | success p50 / p99, ms (deadline) | grymd RSS before / peak / after, MiB |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows {
        let refusal = row.result.failure_latency_us.get(REFUSED).map_or_else(
            || "–".to_owned(),
            |p| format!("{} / {}", ms(p.p50), ms(p.p99)),
        );
        let late = late_kinds(&row.result.failures);
        out.push_str(&format!(
            "| {:.0}x ({:.0}/s) | {} | {:.1} ({:.0}%) | {} of {} | {} | {}{} | {} / {} ({:.0}) | {:.1} / {:.1} / {:.1} |\n",
            row.multiple,
            row.rate,
            row.build,
            row.result.throughput,
            100.0 * row.result.throughput / row.capacity,
            row.refused(),
            row.offered(),
            refusal,
            row.failed_late(),
            late,
            ms(row.result.latency_us.p50),
            ms(row.result.latency_us.p99),
            row.deadline_ms,
            row.rss_before_mib,
            row.rss_peak_mib,
            row.rss_after_mib,
        ));
    }
    out
}

/// The failures other than refusals, by kind, in brackets; empty when none.
fn late_kinds(failures: &BTreeMap<String, u64>) -> String {
    let kinds: Vec<String> = failures
        .iter()
        .filter(|(kind, _)| kind.as_str() != REFUSED)
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect();
    if kinds.is_empty() {
        String::new()
    } else {
        format!(" ({})", kinds.join(", "))
    }
}

/// The builds to run: this one's grymd, and a baseline if given.
pub(crate) fn builds(binaries: &Binaries, baseline: Option<PathBuf>) -> Vec<Build> {
    let mut builds = vec![Build {
        label: "new".to_owned(),
        grymd: binaries.grymd.clone(),
    }];
    if let Some(grymd) = baseline {
        builds.push(Build {
            label: "old".to_owned(),
            grymd,
        });
    }
    builds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Percentiles;

    #[test]
    fn four_slots_of_fifty_milliseconds_take_eighty_calls_a_second() {
        let settings = Settings {
            slots: 4,
            latency: Duration::from_millis(50),
            multiples: vec![5.0],
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            deadline: Duration::from_secs(5),
            settle: Duration::ZERO,
            connections: 1,
        };
        assert!((settings.capacity() - 80.0).abs() < 1e-9);
    }

    #[test]
    fn the_table_separates_refusals_from_late_failures() {
        let result = LoadResult {
            label: "new".into(),
            protocol: Protocol::Grymd,
            address: "127.0.0.1:1".into(),
            mode: Mode::Open { rate: 400.0 },
            connections: 4,
            warmup_s: 0.0,
            duration_s: 20.0,
            successes: 1_500,
            failures: BTreeMap::from([
                (REFUSED.to_owned(), 6_400),
                ("TASK_STATUS_DEADLINE_EXCEEDED".to_owned(), 100),
            ]),
            throughput: 75.0,
            latency_us: Percentiles {
                p50: 1_000_000.0,
                p99: 2_000_000.0,
                ..Percentiles::default()
            },
            failure_latency_us: BTreeMap::from([(
                REFUSED.to_owned(),
                Percentiles {
                    p50: 400.0,
                    p99: 1_500.0,
                    ..Percentiles::default()
                },
            )]),
            send_lag_us: None,
        };
        let row = Row {
            build: "new".into(),
            multiple: 5.0,
            rate: 400.0,
            capacity: 80.0,
            deadline_ms: 5000.0,
            rss_before_mib: 12.0,
            rss_peak_mib: 20.0,
            rss_after_mib: 14.0,
            result,
        };
        let table = table(&[row]);
        assert!(
            table.contains(
                "| 5x (400/s) | new | 75.0 (94%) | 6400 of 8000 | 0.4 / 1.5 | 100 (100 TASK_STATUS_DEADLINE_EXCEEDED) | 1000.0 / 2000.0 (5000) | 12.0 / 20.0 / 14.0 |"
            ),
            "{table}"
        );
    }
}
