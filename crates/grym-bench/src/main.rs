//! `grym-bench`: the load generator of grym orchestrator.
//!
//! - `grym-bench load` drives one target (a worker, or grymd) at a fixed
//!   arrival rate (open loop, latency from each request's intended send
//!   time) or at a fixed concurrency (closed loop, for maximum throughput),
//!   for a bounded time, and prints a summary or JSON.
//! - `grym-bench compare` starts a `grym-worker sim`, a grymd and an nginx
//!   `grpc_pass` in front of the worker, measures the three paths side by
//!   side, writes the results as JSON and rewrites the comparison section
//!   of BENCHMARKS.md.
//! - `grym-bench overload` offers a sim worker's grymd several times the
//!   worker's capacity and reports goodput, refusal latency and memory,
//!   for this build and optionally a baseline grymd side by side.
//! - `grym-bench durable` measures `SubmitTask` and `ExecuteTask` on each
//!   store (memory, SQLite, PostgreSQL) side by side, and the time a
//!   restart takes to take up queued tasks.
//! - `grym-bench chaos` kills, fails and hangs workers behind grymd under
//!   open-loop load and counts what callers see: calls failed by code,
//!   unanswered, retries used, where first attempts went.
//! - `grym-bench sink` takes OTLP traces and metrics and discards them, to
//!   measure grymd with export on against off.
//!
//! Load only ever goes to loopback addresses. Progress goes to standard
//! error; results to standard output.

mod chaos;
mod compare;
mod durable;
mod load;
mod overload;
mod procs;
mod report;
mod schedule;
mod sink;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::load::{Mode, Payload, Protocol, RunSpec, Target};

#[derive(Parser)]
#[command(
    version,
    about = "Load generator and side-by-side benchmark of grym orchestrator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load one target at a fixed rate or concurrency.
    Load(LoadArgs),
    /// Measure direct calls, grymd and nginx grpc_pass side by side, and
    /// rewrite the comparison in BENCHMARKS.md.
    Compare(CompareArgs),
    /// Offer grymd several times a sim worker's capacity and report
    /// goodput, refusal latency and memory, beside a baseline grymd.
    Overload(OverloadArgs),
    /// Measure SubmitTask and ExecuteTask on each store side by side, and
    /// the recovery of queued tasks after a kill.
    Durable(DurableArgs),
    /// Kill, fail and hang workers behind grymd under open-loop load, and
    /// count what callers see.
    Chaos(ChaosArgs),
    /// Take OTLP/gRPC traces and metrics and discard them, counting them.
    Sink {
        /// Address to listen on; loopback.
        #[arg(long, default_value = "127.0.0.1:4317")]
        listen: std::net::SocketAddr,
        /// How often to print what arrived.
        #[arg(long, default_value = "5s", value_parser = duration)]
        every: Duration,
    },
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("`{text}`: {error}"))
}

#[derive(Args)]
struct LoadArgs {
    /// What the target is: a worker (or a proxy in front of one) is called
    /// with ModelWorker/Infer, grymd with Orchestrator/ExecuteTask.
    #[arg(long, value_enum)]
    target: Protocol,
    /// The target's HOST:PORT; loopback only.
    #[arg(long)]
    addr: String,
    /// Open loop: requests per second, latency measured from each one's
    /// intended send time.
    #[arg(
        long,
        conflicts_with = "concurrency",
        required_unless_present = "concurrency"
    )]
    rate: Option<f64>,
    /// Closed loop: requests in flight, each sent when the previous answers.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
    /// Unmeasured time first.
    #[arg(long, default_value = "2s", value_parser = duration)]
    warmup: Duration,
    /// HTTP/2 connections, each multiplexing many calls.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
    /// The task type asked for; one the worker serves.
    #[arg(long, default_value = compare::TASK_TYPE)]
    task_type: String,
    /// Bytes of the text input.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// The longest a request may take before it counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = duration)]
    timeout: Duration,
    /// Open loop: at most this many requests in flight; requests due
    /// beyond are not sent and count as failures.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    /// Print the result as JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DurableArgs {
    /// Repetitions of every measurement, the stores alternating.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    repeats: u32,
    /// Measured time of each run.
    #[arg(long, default_value = "5s", value_parser = duration)]
    duration: Duration,
    /// Unmeasured time at the start of each run.
    #[arg(long, default_value = "1s", value_parser = duration)]
    warmup: Duration,
    /// Calls in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// HTTP/2 connections to grymd.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
    /// A PostgreSQL database to measure beside memory and SQLite, for
    /// example `postgres://grym@127.0.0.1:5432/grym`.
    #[arg(long)]
    postgres: Option<String>,
    /// Leave this many queued tasks in SQLite, kill grymd, and time the
    /// restart that takes them up.
    #[arg(long)]
    recover: Option<usize>,
}

#[derive(Args)]
struct ChaosArgs {
    /// The cases to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [chaos::Case::Kill, chaos::Case::Flaky, chaos::Case::Hung])]
    cases: Vec<chaos::Case>,
    /// Calls per second of the kill case, one run each.
    #[arg(long, value_delimiter = ',', default_values_t = [500.0, 1000.0])]
    kill_rates: Vec<f64>,
    /// Calls per second of the flaky case.
    #[arg(long, default_value_t = 500.0)]
    flaky_rate: f64,
    /// Calls per second of the hung case.
    #[arg(long, default_value_t = 10.0)]
    hung_rate: f64,
    /// Length of each run.
    #[arg(long, default_value = "20s", value_parser = duration)]
    duration: Duration,
    /// Every call's deadline (`grpc-timeout`) in the kill and flaky cases.
    #[arg(long, default_value = "5s", value_parser = duration)]
    deadline: Duration,
    /// Every call's deadline in the hung case.
    #[arg(long, default_value = "1s", value_parser = duration)]
    hung_deadline: Duration,
    /// How long past its deadline a call is waited for before it counts as
    /// unanswered.
    #[arg(long, default_value = "2s", value_parser = duration)]
    grace: Duration,
    /// The healthy sims' latency per call.
    #[arg(long, default_value = "5ms", value_parser = duration)]
    latency: Duration,
    /// HTTP/2 connections to grymd.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
}

#[derive(Args)]
struct CompareArgs {
    /// A short run (about a minute) to check the set-up: 2 repetitions of
    /// 2 s runs. BENCHMARKS.md is left as it is.
    #[arg(long)]
    quick: bool,
    /// Repetitions of every measurement [default: 5, quick 2].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    repeats: Option<u32>,
    /// Measured time of each run [default: 5s, quick 2s].
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Unmeasured time at the start of each run [default: 1s, quick 500ms].
    #[arg(long, value_parser = duration)]
    warmup: Option<Duration>,
    /// Calls in flight when measuring saturation throughput.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open-loop rates per second; those above 90% of the direct path's
    /// saturation throughput are left out.
    #[arg(long, value_delimiter = ',', default_values_t = [1000.0, 5000.0, 10000.0])]
    rates: Vec<f64>,
    /// HTTP/2 connections per path.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
    /// Bytes of the text input.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Where to write the JSON [default: the target directory's
    /// grym-bench/compare.json].
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// The BENCHMARKS.md to update [default: the workspace's].
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Leave BENCHMARKS.md as it is.
    #[arg(long)]
    no_markdown: bool,
}

#[derive(Args)]
struct OverloadArgs {
    /// Another grymd binary to measure beside this build's, for example
    /// one built from an earlier commit.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// The sim worker's slots.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    slots: u32,
    /// The sim worker's latency per call.
    #[arg(long, default_value = "50ms", value_parser = duration)]
    latency: Duration,
    /// Offered rates, as multiples of the worker's capacity.
    #[arg(long, value_delimiter = ',', default_values_t = [2.0, 5.0, 10.0])]
    multiples: Vec<f64>,
    /// Measured time of each run.
    #[arg(long, default_value = "20s", value_parser = duration)]
    duration: Duration,
    /// Unmeasured time at the start of each run.
    #[arg(long, default_value = "2s", value_parser = duration)]
    warmup: Duration,
    /// Every call's deadline (`grpc-timeout`).
    #[arg(long, default_value = "5s", value_parser = duration)]
    deadline: Duration,
    /// HTTP/2 connections of the load generator.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
    /// Where to write the JSON [default: the target directory's
    /// grym-bench/overload.json].
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // On Ctrl-C or SIGTERM the work future is dropped, which ends every
    // process it started before this one exits.
    tokio::select! {
        result = dispatch(cli.command) => result,
        signal = interrupted() => {
            signal?;
            bail!("interrupted; the processes it started are stopped")
        }
    }
}

async fn interrupted() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Load(args) => load(args).await,
        Command::Compare(args) => compare(args).await,
        Command::Overload(args) => overload(args).await,
        Command::Durable(args) => durable(args).await,
        Command::Chaos(args) => chaos(args).await,
        Command::Sink { listen, every } => {
            if !listen.ip().is_loopback() {
                bail!("the sink listens on loopback only, not {listen}");
            }
            sink::run(listen, every).await
        }
    }
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let address = load::loopback_address(&args.addr).await?;
    let mode = match (args.rate, args.concurrency) {
        (Some(rate), _) if rate.is_finite() && rate > 0.0 => Mode::Open { rate },
        (Some(rate), _) => bail!("--rate must be positive, not {rate}"),
        (None, Some(concurrency)) if concurrency > 0 => Mode::Closed { concurrency },
        _ => bail!("give --rate N (open loop) or --concurrency N (closed loop), N > 0"),
    };
    let payload = Payload::text(&args.task_type, args.payload_bytes);
    let connections = usize::try_from(args.connections)?;
    let target = Arc::new(Target::connect(args.target, address, connections, &payload).await?);
    let spec = RunSpec {
        mode,
        warmup: args.warmup,
        duration: args.duration,
        timeout: args.timeout,
        max_in_flight: args.max_in_flight,
    };
    let label = match args.target {
        Protocol::Worker => "worker",
        Protocol::Grymd => "grymd",
        Protocol::Submit => "submit",
    };
    let result = load::run(&target, label, &spec).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", report::run_summary(&result));
    }
    Ok(())
}

async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let (repeats, duration, warmup) = if args.quick {
        (2, Duration::from_secs(2), Duration::from_millis(500))
    } else {
        (5, Duration::from_secs(5), Duration::from_secs(1))
    };
    let settings = compare::Settings {
        repeats: args.repeats.map_or(Ok(repeats), usize::try_from)?,
        warmup: args.warmup.unwrap_or(warmup),
        duration: args.duration.unwrap_or(duration),
        concurrency: args.concurrency.max(1),
        rates: args.rates,
        connections: usize::try_from(args.connections)?,
        payload_bytes: args.payload_bytes,
        timeout: Duration::from_secs(5),
    };
    let target_dir = std::env::current_exe()?
        .parent()
        .and_then(|release| release.parent())
        .map(PathBuf::from)
        .context("cannot find the target directory")?;
    let json_out = args
        .json_out
        .unwrap_or_else(|| target_dir.join("grym-bench/compare.json"));
    let markdown = if args.no_markdown || args.quick {
        None
    } else {
        Some(args.markdown.unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../BENCHMARKS.md"))
        }))
    };
    let command = measured_command(std::env::args().skip(1));
    compare::run(compare::Plan {
        settings,
        command,
        json_out,
        markdown,
    })
    .await?;
    Ok(())
}

async fn overload(args: OverloadArgs) -> anyhow::Result<()> {
    if args.multiples.iter().any(|m| !m.is_finite() || *m <= 0.0) {
        bail!("--multiples must be positive");
    }
    let binaries = procs::Binaries::beside_current_exe()?;
    let settings = overload::Settings {
        slots: args.slots,
        latency: args.latency,
        multiples: args.multiples,
        warmup: args.warmup,
        duration: args.duration,
        deadline: args.deadline,
        settle: Duration::from_secs(5),
        connections: usize::try_from(args.connections)?,
    };
    let builds = overload::builds(&binaries, args.baseline);
    let rows = overload::run(&settings, &builds, &binaries.worker).await?;
    let json_out = match args.json_out {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .and_then(|release| release.parent())
            .context("cannot find the target directory")?
            .join("grym-bench/overload.json"),
    };
    if let Some(dir) = json_out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json_out, serde_json::to_string_pretty(&rows)?)
        .with_context(|| format!("cannot write {}", json_out.display()))?;
    eprintln!("overload: every run is in {}", json_out.display());
    print!("{}", overload::table(&rows));
    Ok(())
}

async fn durable(args: DurableArgs) -> anyhow::Result<()> {
    let binaries = procs::Binaries::beside_current_exe()?;
    let settings = durable::Settings {
        repeats: args.repeats,
        warmup: args.warmup,
        duration: args.duration,
        concurrency: args.concurrency,
        connections: usize::try_from(args.connections)?,
        postgres: args.postgres,
        recover: args.recover,
    };
    let (rows, recovery) = durable::run(&settings, &binaries).await?;
    let json_out = std::env::current_exe()?
        .parent()
        .and_then(|release| release.parent())
        .context("cannot find the target directory")?
        .join("grym-bench/durable.json");
    if let Some(dir) = json_out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &json_out,
        serde_json::to_string_pretty(&(&rows, &recovery))?,
    )
    .with_context(|| format!("cannot write {}", json_out.display()))?;
    eprintln!("durable: every run is in {}", json_out.display());
    print!("{}", durable::table(&rows, recovery.as_ref()));
    Ok(())
}

async fn chaos(args: ChaosArgs) -> anyhow::Result<()> {
    let rates = args
        .kill_rates
        .iter()
        .chain([&args.flaky_rate, &args.hung_rate]);
    if rates
        .into_iter()
        .any(|rate| !rate.is_finite() || *rate <= 0.0)
    {
        bail!("rates must be positive");
    }
    let binaries = procs::Binaries::beside_current_exe()?;
    let settings = chaos::Settings {
        cases: args.cases,
        kill_rates: args.kill_rates,
        flaky_rate: args.flaky_rate,
        hung_rate: args.hung_rate,
        duration: args.duration,
        deadline: args.deadline,
        hung_deadline: args.hung_deadline,
        grace: args.grace,
        latency: args.latency,
        connections: usize::try_from(args.connections)?,
    };
    let rows = chaos::run(&settings, &binaries).await?;
    let json_out = std::env::current_exe()?
        .parent()
        .and_then(|release| release.parent())
        .context("cannot find the target directory")?
        .join("grym-bench/chaos.json");
    if let Some(dir) = json_out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json_out, serde_json::to_string_pretty(&rows)?)
        .with_context(|| format!("cannot write {}", json_out.display()))?;
    eprintln!("chaos: every run is in {}", json_out.display());
    print!("{}", chaos::table(&rows));
    Ok(())
}

/// The command line that reproduces a comparison's figures: this one,
/// without the options that only say where results are written.
fn measured_command(args: impl IntoIterator<Item = String>) -> String {
    const OUTPUT_OPTIONS: [&str; 2] = ["--markdown", "--json-out"];
    let mut kept = vec!["target/release/grym-bench".to_owned()];
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if OUTPUT_OPTIONS.contains(&arg.as_str()) {
            args.next();
        } else if arg != "--no-markdown"
            && !OUTPUT_OPTIONS
                .iter()
                .any(|option| arg.starts_with(&format!("{option}=")))
        {
            kept.push(arg);
        }
    }
    kept.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_recorded_command_leaves_out_where_results_are_written() {
        assert_eq!(
            measured_command(args(
                "compare --markdown /x/B.md --repeats 3 --json-out=/y.json"
            )),
            "target/release/grym-bench compare --repeats 3"
        );
        assert_eq!(
            measured_command(args("compare --no-markdown --rates 1000,5000")),
            "target/release/grym-bench compare --rates 1000,5000"
        );
    }
}
