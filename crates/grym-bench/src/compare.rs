//! The side-by-side comparison: one `grym-worker sim --latency-ms 0`,
//! called (a) directly, (b) through grymd and (c) through nginx's
//! `grpc_pass`, on this machine.
//!
//! Each repetition runs the three paths back to back, in an order that
//! rotates from one repetition to the next, so that drift on a noisy
//! machine touches every path alike. First the saturation throughput
//! (closed loop), then the latency at each fixed open-loop rate that the
//! direct path sustains. Figures are medians over the repetitions with
//! their range; the added latency of a path is the median of its
//! per-repetition differences from the direct run beside it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::load::{self, LoadResult, Mode, Payload, Protocol, RunSpec, Target};
use crate::procs::{self, Binaries};
use crate::report::{self, Machine};
use crate::stats::Spread;

/// The task type the sim worker serves and every request asks for.
pub(crate) const TASK_TYPE: &str = "text_generation";

/// A rate is measured only when the direct path's saturation throughput is
/// at least this many times the rate: beyond, even the direct path queues.
const SUSTAINABLE_SHARE: f64 = 0.9;

/// The three paths, in the order they are labelled.
pub(crate) const PATHS: [&str; 3] = ["direct", "grymd", "nginx"];

/// How a comparison runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    /// Repetitions of every measurement.
    pub(crate) repeats: usize,
    /// Unmeasured seconds at the start of every run.
    pub(crate) warmup: Duration,
    /// Measured seconds of every run.
    pub(crate) duration: Duration,
    /// Calls in flight in the closed-loop runs.
    pub(crate) concurrency: usize,
    /// Open-loop rates to try, per second.
    pub(crate) rates: Vec<f64>,
    /// HTTP/2 connections per path.
    pub(crate) connections: usize,
    /// Bytes of text input per request.
    pub(crate) payload_bytes: usize,
    /// The longest one request may take.
    pub(crate) timeout: Duration,
}

/// One run of a comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Run {
    /// Which repetition it belongs to.
    pub(crate) repetition: usize,
    /// What it measured.
    #[serde(flatten)]
    pub(crate) result: LoadResult,
}

/// A path's saturation throughput over the repetitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Throughput {
    pub(crate) path: String,
    /// Requests per second.
    pub(crate) throughput: Spread,
    /// Median latency at saturation, in microseconds.
    pub(crate) p50_us: Spread,
    /// Runs with failures.
    pub(crate) failed_runs: usize,
}

/// Four quantiles' spreads, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Quantiles {
    pub(crate) p50: Spread,
    pub(crate) p90: Spread,
    pub(crate) p99: Spread,
    pub(crate) p999: Spread,
}

impl Quantiles {
    fn cells(&self, format: fn(f64) -> String) -> [String; 4] {
        [&self.p50, &self.p90, &self.p99, &self.p999].map(|s| report::spread(s, format))
    }
}

/// A path's latency at one rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PathLatency {
    pub(crate) path: String,
    /// The quantiles over the repetitions.
    pub(crate) latency_us: Quantiles,
    /// Over the direct path, paired by repetition; absent for the direct
    /// path itself.
    pub(crate) added_us: Option<Quantiles>,
    /// Runs that did not keep up (failures, or under 95% of the rate).
    pub(crate) unsustained_runs: usize,
}

/// Every path's latency at one rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RateLatency {
    pub(crate) rate: f64,
    pub(crate) paths: Vec<PathLatency>,
    /// The load generator's median send lag at this rate, in microseconds.
    pub(crate) send_lag_p50_us: Option<f64>,
}

/// A whole comparison, as written to JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Comparison {
    pub(crate) machine: Machine,
    pub(crate) command: String,
    pub(crate) measured_at: String,
    pub(crate) nginx_version: String,
    pub(crate) settings: Settings,
    pub(crate) saturation: Vec<Throughput>,
    pub(crate) rates: Vec<RateLatency>,
    /// Rates left out because the direct path would not sustain them.
    pub(crate) skipped_rates: Vec<f64>,
    pub(crate) runs: Vec<Run>,
}

/// The order of the paths in repetition `repetition`: rotated by one each
/// time.
pub(crate) fn rotation(repetition: usize) -> [usize; 3] {
    [0, 1, 2].map(|i| (i + repetition) % 3)
}

/// The rates the direct path sustains, given its saturation throughput,
/// and those it does not.
pub(crate) fn split_rates(rates: &[f64], direct_saturation: f64) -> (Vec<f64>, Vec<f64>) {
    rates
        .iter()
        .partition(|&&rate| rate <= SUSTAINABLE_SHARE * direct_saturation)
}

fn runs_of<'a>(runs: &'a [Run], path: &'a str, mode: Mode) -> Vec<&'a Run> {
    let mut selected: Vec<&Run> = runs
        .iter()
        .filter(|run| run.result.label == path && run.result.mode == mode)
        .collect();
    selected.sort_by_key(|run| run.repetition);
    selected
}

fn quantiles(runs: &[&Run]) -> Option<Quantiles> {
    let of = |pick: fn(&Run) -> f64| Spread::of(&runs.iter().map(|r| pick(r)).collect::<Vec<_>>());
    Some(Quantiles {
        p50: of(|r| r.result.latency_us.p50)?,
        p90: of(|r| r.result.latency_us.p90)?,
        p99: of(|r| r.result.latency_us.p99)?,
        p999: of(|r| r.result.latency_us.p999)?,
    })
}

/// The added latency of `runs` over `direct`, paired by repetition.
fn added(runs: &[&Run], direct: &[&Run]) -> Option<Quantiles> {
    let paired: Vec<(&Run, &Run)> = runs
        .iter()
        .filter_map(|run| {
            direct
                .iter()
                .find(|d| d.repetition == run.repetition)
                .map(|d| (*run, *d))
        })
        .collect();
    let of = |pick: fn(&Run) -> f64| {
        let through: Vec<f64> = paired.iter().map(|(r, _)| pick(r)).collect();
        let direct: Vec<f64> = paired.iter().map(|(_, d)| pick(d)).collect();
        Spread::of_differences(&through, &direct)
    };
    Some(Quantiles {
        p50: of(|r| r.result.latency_us.p50)?,
        p90: of(|r| r.result.latency_us.p90)?,
        p99: of(|r| r.result.latency_us.p99)?,
        p999: of(|r| r.result.latency_us.p999)?,
    })
}

/// The saturation figures of every path.
pub(crate) fn summarize_saturation(runs: &[Run], concurrency: usize) -> Vec<Throughput> {
    PATHS
        .iter()
        .filter_map(|path| {
            let selected = runs_of(runs, path, Mode::Closed { concurrency });
            let throughput: Vec<f64> = selected.iter().map(|r| r.result.throughput).collect();
            let p50: Vec<f64> = selected.iter().map(|r| r.result.latency_us.p50).collect();
            Some(Throughput {
                path: (*path).to_owned(),
                throughput: Spread::of(&throughput)?,
                p50_us: Spread::of(&p50)?,
                failed_runs: selected.iter().filter(|r| r.result.failed() > 0).count(),
            })
        })
        .collect()
}

/// The latency figures of every path at `rate`.
pub(crate) fn summarize_rate(runs: &[Run], rate: f64) -> RateLatency {
    let mode = Mode::Open { rate };
    let direct = runs_of(runs, PATHS[0], mode);
    let paths = PATHS
        .iter()
        .filter_map(|path| {
            let selected = runs_of(runs, path, mode);
            Some(PathLatency {
                path: (*path).to_owned(),
                latency_us: quantiles(&selected)?,
                added_us: if *path == PATHS[0] {
                    None
                } else {
                    added(&selected, &direct)
                },
                unsustained_runs: selected.iter().filter(|r| !r.result.sustained()).count(),
            })
        })
        .collect();
    let lags: Vec<f64> = runs
        .iter()
        .filter(|r| r.result.mode == mode)
        .filter_map(|r| r.result.send_lag_us.map(|lag| lag.p50))
        .collect();
    RateLatency {
        rate,
        paths,
        send_lag_p50_us: Spread::of(&lags).map(|s| s.median),
    }
}

fn path_name(path: &str) -> &'static str {
    match path {
        "direct" => "(a) direct",
        "grymd" => "(b) grymd",
        "nginx" => "(c) nginx",
        _ => "?",
    }
}

fn seconds(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// The Markdown section BENCHMARKS.md carries between its markers.
pub(crate) fn markdown(comparison: &Comparison) -> String {
    let c = comparison;
    let s = &c.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Side by side: direct, through grymd, through nginx\n\n\
         Generated by `grym-bench compare` on {}; do not edit between the markers, rerun:\n\n\
         ```sh\ncargo build --release --bins && {}\n```\n",
        c.measured_at, c.command
    );
    let _ = writeln!(
        out,
        "The machine: {}. nginx {}. The load generator, grymd, nginx and the worker share it.\n",
        c.machine.describe(),
        c.nginx_version
    );
    let _ = writeln!(
        out,
        "One `grym-worker sim --latency-ms 0` echoes a {}-byte text input. (a) direct: \
         `ModelWorker/Infer` to the worker; (b) grymd: `Orchestrator/ExecuteTask` through grymd \
         (default settings, the worker as its only model, no route); (c) nginx: \
         `ModelWorker/Infer` through nginx's `grpc_pass` ([deploy/bench/nginx.conf](deploy/bench/nginx.conf): \
         one process per core, upstream keepalive). Each path gets {} HTTP/2 connections from the \
         load generator. A run is {} of warm-up, then {} measured. The three paths alternate, in \
         an order that rotates, {} times; a figure is the median of those {} runs, with their \
         range (min–max) in brackets.\n",
        s.payload_bytes,
        s.connections,
        seconds(s.warmup),
        seconds(s.duration),
        s.repeats,
        s.repeats,
    );

    let _ = writeln!(
        out,
        "Saturation throughput (closed loop, {} calls in flight):\n\n\
         | path | calls/s | p50 latency, µs | vs direct |\n| --- | ---: | ---: | ---: |",
        s.concurrency
    );
    let direct = c
        .saturation
        .iter()
        .find(|t| t.path == PATHS[0])
        .map(|t| t.throughput.median);
    for t in &c.saturation {
        let share = direct
            .filter(|d| *d > 0.0)
            .map(|d| format!("{:.0}%", 100.0 * t.throughput.median / d))
            .unwrap_or_default();
        let failed = if t.failed_runs > 0 {
            format!(" ({} run(s) with failures)", t.failed_runs)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {}{failed} | {} | {} | {share} |",
            path_name(&t.path),
            report::spread(&t.throughput, report::thousands),
            report::spread(&t.p50_us, report::micros),
        );
    }

    if !c.skipped_rates.is_empty() {
        let skipped: Vec<String> = c
            .skipped_rates
            .iter()
            .map(|r| format!("{}/s", report::thousands(*r)))
            .collect();
        let _ = writeln!(
            out,
            "\nLeft out: {}, above {:.0}% of what the direct path sustains.",
            skipped.join(", "),
            100.0 * SUSTAINABLE_SHARE
        );
    }

    if !c.rates.is_empty() {
        let _ = writeln!(
            out,
            "\nLatency at fixed open-loop rates, µs from each call's intended send time (no \
             coordinated omission):\n\n\
             | rate | path | p50 | p90 | p99 | p99.9 |\n| ---: | --- | ---: | ---: | ---: | ---: |"
        );
        for rate in &c.rates {
            for path in &rate.paths {
                let [p50, p90, p99, p999] = path.latency_us.cells(report::micros);
                let mark = if path.unsustained_runs > 0 {
                    format!(" ({} run(s) did not keep up)", path.unsustained_runs)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "| {}/s | {}{mark} | {p50} | {p90} | {p99} | {p999} |",
                    report::thousands(rate.rate),
                    path_name(&path.path)
                );
            }
        }
        let _ = writeln!(
            out,
            "\nAdded latency over a direct call, µs (median of the per-repetition differences, \
             min–max):\n\n\
             | rate | path | p50 | p90 | p99 | p99.9 |\n| ---: | --- | ---: | ---: | ---: | ---: |"
        );
        for rate in &c.rates {
            for path in &rate.paths {
                if let Some(added) = &path.added_us {
                    let [p50, p90, p99, p999] = added.cells(report::signed_micros);
                    let _ = writeln!(
                        out,
                        "| {}/s | {} | {p50} | {p90} | {p99} | {p999} |",
                        report::thousands(rate.rate),
                        path_name(&path.path)
                    );
                }
            }
        }
        let lags: Vec<String> = c
            .rates
            .iter()
            .filter_map(|r| {
                r.send_lag_p50_us.map(|lag| {
                    format!(
                        "{} µs at {}/s",
                        report::micros(lag),
                        report::thousands(r.rate)
                    )
                })
            })
            .collect();
        if !lags.is_empty() {
            let _ = writeln!(
                out,
                "\nThe load generator sends each call a little after its intended time (median \
                 lag {}); that lag is in every path's latency alike and cancels in the \
                 differences.",
                lags.join(", ")
            );
        }
    }
    let _ = writeln!(
        out,
        "\nEvery run, with max and mean latency and any failures, is in the JSON that the \
         command writes (`target/grym-bench/compare.json` by default)."
    );
    out
}

/// Everything a comparison needs on disk and on the command line.
pub(crate) struct Plan {
    pub(crate) settings: Settings,
    pub(crate) command: String,
    pub(crate) json_out: PathBuf,
    pub(crate) markdown: Option<PathBuf>,
}

/// Starts the three servers, measures, and writes the results.
pub(crate) async fn run(plan: Plan) -> anyhow::Result<Comparison> {
    let binaries = Binaries::beside_current_exe()?;
    let nginx = procs::find_nginx()?;
    let nginx_version = procs::nginx_version(&nginx).await;
    let scratch = tempfile::Builder::new()
        .prefix("grym-bench-")
        .tempdir()
        .context("cannot create a scratch directory")?;
    let settings = plan.settings;

    eprintln!(
        "starting grym-worker sim, grymd and nginx under {}",
        scratch.path().display()
    );
    // Dropping these ends the processes, whatever way this function exits.
    let (_worker, worker_addr) =
        procs::start_worker(&binaries.worker, TASK_TYPE, scratch.path()).await?;
    let (_grymd, grymd_addr) =
        procs::start_grymd(&binaries.grymd, worker_addr, TASK_TYPE, scratch.path()).await?;
    let (_nginx, nginx_addr) = procs::start_nginx(&nginx, worker_addr, scratch.path()).await?;
    eprintln!("worker {worker_addr}, grymd {grymd_addr}, nginx {nginx_addr}: all serving");

    let payload = Payload::text(TASK_TYPE, settings.payload_bytes);
    let targets: [(Protocol, SocketAddr); 3] = [
        (Protocol::Worker, worker_addr),
        (Protocol::Grymd, grymd_addr),
        (Protocol::Worker, nginx_addr),
    ];
    let mut connected = Vec::with_capacity(3);
    for (protocol, address) in targets {
        connected.push(Arc::new(
            Target::connect(protocol, address, settings.connections, &payload).await?,
        ));
    }

    let mut runs = Vec::new();
    let closed = Mode::Closed {
        concurrency: settings.concurrency,
    };
    eprintln!(
        "\n== saturation: closed loop, {} in flight",
        settings.concurrency
    );
    measure(&settings, closed, &connected, &mut runs).await?;
    let saturation = summarize_saturation(&runs, settings.concurrency);
    let direct_saturation = saturation
        .iter()
        .find(|t| t.path == PATHS[0])
        .map_or(0.0, |t| t.throughput.median);
    let (rates, skipped_rates) = split_rates(&settings.rates, direct_saturation);
    for &rate in &rates {
        eprintln!("\n== open loop at {}/s", report::thousands(rate));
        measure(&settings, Mode::Open { rate }, &connected, &mut runs).await?;
    }

    let comparison = Comparison {
        machine: Machine::this(),
        command: plan.command,
        measured_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        nginx_version,
        settings,
        saturation,
        rates: rates
            .iter()
            .map(|&rate| summarize_rate(&runs, rate))
            .collect(),
        skipped_rates,
        runs,
    };
    write_outputs(&comparison, &plan.json_out, plan.markdown.as_deref())?;
    Ok(comparison)
}

/// Runs `mode` on every path, `repeats` times, alternating the paths.
async fn measure(
    settings: &Settings,
    mode: Mode,
    targets: &[Arc<Target>],
    runs: &mut Vec<Run>,
) -> anyhow::Result<()> {
    let spec = RunSpec {
        mode,
        warmup: settings.warmup,
        duration: settings.duration,
        timeout: settings.timeout,
        max_in_flight: 10_000,
    };
    for repetition in 0..settings.repeats {
        for path in rotation(repetition) {
            let result = load::run(&targets[path], PATHS[path], &spec).await?;
            eprint!(
                "[{}/{}] {}",
                repetition + 1,
                settings.repeats,
                report::run_summary(&result)
            );
            // A breath between runs, so that what the previous run left
            // behind (timers, closing connections, a backlog after an
            // overload) does not weigh on the next one.
            let pause = if result.sustained() { 200 } else { 3000 };
            runs.push(Run { repetition, result });
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
    Ok(())
}

fn write_outputs(
    comparison: &Comparison,
    json_out: &std::path::Path,
    markdown_path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(dir) = json_out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(json_out, serde_json::to_string_pretty(comparison)?)
        .with_context(|| format!("cannot write {}", json_out.display()))?;
    eprintln!("\nwrote {}", json_out.display());
    let section = markdown(comparison);
    println!("\n{section}");
    if let Some(path) = markdown_path {
        let document = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let updated = report::replace_section(&document, &section)
            .with_context(|| format!("cannot update {}", path.display()))?;
        std::fs::write(path, updated)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stats::Percentiles;

    #[test]
    fn each_repetition_rotates_the_order_of_the_paths() {
        assert_eq!(rotation(0), [0, 1, 2]);
        assert_eq!(rotation(1), [1, 2, 0]);
        assert_eq!(rotation(2), [2, 0, 1]);
        assert_eq!(rotation(3), [0, 1, 2]);
    }

    #[test]
    fn only_rates_well_within_the_direct_saturation_are_measured() {
        let (kept, skipped) = split_rates(&[1000.0, 5000.0, 10_000.0], 10_500.0);
        assert_eq!(kept, [1000.0, 5000.0]);
        assert_eq!(skipped, [10_000.0]);
        let (kept, skipped) = split_rates(&[1000.0], 0.0);
        assert!(kept.is_empty());
        assert_eq!(skipped, [1000.0]);
    }

    fn run(path: &str, repetition: usize, mode: Mode, p50: f64, throughput: f64) -> Run {
        Run {
            repetition,
            result: LoadResult {
                label: path.into(),
                protocol: Protocol::Worker,
                address: "127.0.0.1:1".into(),
                mode,
                connections: 4,
                warmup_s: 1.0,
                duration_s: 5.0,
                successes: (throughput * 5.0) as u64,
                failures: BTreeMap::new(),
                throughput,
                latency_us: Percentiles {
                    p50,
                    p90: 2.0 * p50,
                    p99: 4.0 * p50,
                    p999: 8.0 * p50,
                    max: 10.0 * p50,
                    mean: p50,
                },
                failure_latency_us: BTreeMap::new(),
                send_lag_us: match mode {
                    Mode::Open { .. } => Some(Percentiles {
                        p50: 50.0,
                        ..Percentiles::default()
                    }),
                    Mode::Closed { .. } => None,
                },
            },
        }
    }

    fn sample_runs() -> Vec<Run> {
        let open = Mode::Open { rate: 1000.0 };
        let closed = Mode::Closed { concurrency: 64 };
        vec![
            run("direct", 0, closed, 1000.0, 20_000.0),
            run("grymd", 0, closed, 1500.0, 15_000.0),
            run("nginx", 0, closed, 1200.0, 16_000.0),
            run("direct", 1, closed, 1100.0, 22_000.0),
            run("grymd", 1, closed, 1600.0, 14_000.0),
            run("nginx", 1, closed, 1300.0, 18_000.0),
            run("direct", 0, open, 100.0, 1000.0),
            run("grymd", 0, open, 150.0, 1000.0),
            run("nginx", 0, open, 130.0, 1000.0),
            run("direct", 1, open, 200.0, 1000.0),
            run("grymd", 1, open, 230.0, 1000.0),
            run("nginx", 1, open, 190.0, 1000.0),
        ]
    }

    #[test]
    fn saturation_is_the_median_throughput_of_each_path() {
        let saturation = summarize_saturation(&sample_runs(), 64);
        let paths: Vec<&str> = saturation.iter().map(|t| t.path.as_str()).collect();
        assert_eq!(paths, PATHS);
        assert_eq!(saturation[0].throughput.median, 21_000.0);
        assert_eq!(saturation[1].throughput.min, 14_000.0);
        assert_eq!(saturation[2].p50_us.max, 1300.0);
    }

    #[test]
    fn added_latency_pairs_each_path_with_the_direct_run_of_its_repetition() {
        let rate = summarize_rate(&sample_runs(), 1000.0);
        assert!(rate.paths[0].added_us.is_none());
        let grymd = rate.paths[1].added_us.as_ref().unwrap();
        // Differences 50 and 30: median 40, not 150/230 medians minus 150.
        assert_eq!(grymd.p50.median, 40.0);
        assert_eq!((grymd.p50.min, grymd.p50.max), (30.0, 50.0));
        let nginx = rate.paths[2].added_us.as_ref().unwrap();
        assert_eq!((nginx.p50.min, nginx.p50.max), (-10.0, 30.0));
        assert_eq!(rate.send_lag_p50_us, Some(50.0));
        assert_eq!(rate.paths[0].unsustained_runs, 0);
    }

    #[test]
    fn the_markdown_section_has_the_machine_command_and_tables() {
        let runs = sample_runs();
        let comparison = Comparison {
            machine: Machine {
                nproc: 2,
                cpu: "Intel(R) Xeon(R) Processor".into(),
                kernel: "6.1.0".into(),
                memory_gib: 24.0,
            },
            command: "target/release/grym-bench compare".into(),
            measured_at: "2026-01-01T00:00:00Z".into(),
            nginx_version: "1.22.1".into(),
            settings: Settings {
                repeats: 2,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(5),
                concurrency: 64,
                rates: vec![1000.0, 50_000.0],
                connections: 4,
                payload_bytes: 64,
                timeout: Duration::from_secs(5),
            },
            saturation: summarize_saturation(&runs, 64),
            rates: vec![summarize_rate(&runs, 1000.0)],
            skipped_rates: vec![50_000.0],
            runs,
        };
        let md = markdown(&comparison);
        assert!(
            md.contains("2 cores (nproc) of Intel(R) Xeon(R) Processor, 24.0 GiB, Linux 6.1.0")
        );
        assert!(md.contains("cargo build --release --bins && target/release/grym-bench compare"));
        assert!(
            md.contains("| (a) direct | 21,000 (20,000–22,000) | 1,050 (1,000–1,100) | 100% |")
        );
        assert!(
            md.contains("| (b) grymd | 14,500 (14,000–15,000) |"),
            "{md}"
        );
        assert!(
            md.contains("| 1,000/s | (b) grymd | +40.0 (+30.0–+50.0) |"),
            "{md}"
        );
        assert!(md.contains("Left out: 50,000/s"));
        assert!(md.contains("median lag 50.0 µs at 1,000/s"));
    }
}
