//! `grym-worker`: serves one of the reference model workers.
//!
//! On start it prints `listening on ADDR` on standard output, once the port
//! is bound; logs go to standard error, as text or JSON (`--log-format`),
//! and traces and metrics over OTLP when the `OTEL_*` variables name an
//! endpoint.
//!
//! With `--tls-cert` and `--tls-key` every worker serves TLS only (grymd
//! reaches it at `https://`); `--client-ca` also requires each caller to
//! present a certificate that CA signed (mTLS).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use grym_telemetry::LogFormat;
use grym_worker::audio_features::{self, AudioFeatures};
use grym_worker::sim::{CapabilitySpec, Sim, SimSettings};
use grym_worker::{Model, Worker, sdk};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity};

#[derive(Parser)]
#[command(version, about = "Reference model workers for grym orchestrator")]
struct Cli {
    #[command(subcommand)]
    worker: WorkerCommand,
    /// Log lines as `text` or `json`.
    #[arg(long, global = true, env = "GRYM_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    tls: TlsArgs,
    /// Serve no grpc.health.v1 (tests of workers that lack it).
    #[arg(long, global = true, hide = true)]
    no_health: bool,
}

/// TLS, for whichever worker is served.
#[derive(clap::Args)]
struct TlsArgs {
    /// Serve TLS with this PEM certificate (chain); needs --tls-key.
    #[arg(long, global = true, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, global = true, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Require callers' certificates signed by this PEM CA (mTLS); needs
    /// --tls-cert.
    #[arg(long, global = true, requires = "tls_cert", value_name = "PEM")]
    client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// Applies the TLS settings to `worker`, reading the files.
    fn apply<M: Model>(&self, worker: Worker<M>) -> anyhow::Result<Worker<M>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(worker);
        };
        let identity = Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?);
        let client_ca = match &self.client_ca {
            Some(ca) => Some(Certificate::from_pem(read("--client-ca", ca)?)),
            None => None,
        };
        worker.tls(identity, client_ca).context(
            "--tls-cert, --tls-key and --client-ca must be a PEM certificate, its key and a PEM CA",
        )
    }
}

fn read(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Real analysis of WAV audio: level, silence, zero crossings, spectrum.
    AudioFeatures {
        /// Address to listen on; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:7101")]
        listen: SocketAddr,
        /// The model id to report.
        #[arg(long, default_value = audio_features::DEFAULT_MODEL_ID)]
        model_id: String,
    },
    /// A simulated model with configurable latency and failures.
    Sim {
        /// Address to listen on; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:7201")]
        listen: SocketAddr,
        /// The model id to report.
        #[arg(long)]
        model_id: String,
        /// The model kind to report.
        #[arg(long, default_value = "simulated")]
        kind: String,
        /// A task type served, as TYPE[:CONFIDENCE] (default confidence 0.8).
        #[arg(long = "capability", required = true)]
        capabilities: Vec<CapabilitySpec>,
        /// Mean latency of a call, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Uniform jitter around the mean, in milliseconds.
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        /// Share of calls that fail with UNAVAILABLE, in [0, 1].
        #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
        fail_rate: f64,
        /// Calls taken at once; later ones wait.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_concurrency: Option<u32>,
        /// A kind of input it takes (`text`, `audio`, `json`), for every
        /// type; repeat for several; none declared takes any.
        #[arg(long = "input", value_parser = sdk::parse_input_kind)]
        inputs: Vec<grym_proto::worker::v1::InputKind>,
        /// A JSON object merged into every structured output.
        #[arg(long, value_parser = parse_object)]
        output: Option<Map<String, Value>>,
        /// Seed for jitter and failures, for repeatable runs.
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is outside [0, 1]"))
    }
}

fn parse_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("expected a JSON object".to_owned()),
        Err(error) => Err(format!("invalid JSON: {error}")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = grym_telemetry::init("grym-worker", cli.log_format)?;
    let served = serve(cli.worker, &cli.tls, cli.no_health).await;
    // Flush what is still batched before the process ends; a collector
    // that is gone does not turn a clean stop into a failure.
    if let Err(error) = telemetry.shutdown().await {
        eprintln!("grym-worker: flushing telemetry failed: {error}");
    }
    served
}

async fn serve(worker: WorkerCommand, tls: &TlsArgs, no_health: bool) -> anyhow::Result<()> {
    match worker {
        WorkerCommand::AudioFeatures { listen, model_id } => {
            run(
                tls.apply(Worker::new(AudioFeatures::new(model_id)))?,
                listen,
                no_health,
            )
            .await
        }
        WorkerCommand::Sim {
            listen,
            model_id,
            kind,
            capabilities,
            latency_ms,
            jitter_ms,
            fail_rate,
            max_concurrency,
            inputs,
            output,
            seed,
        } => {
            let sim = Sim::new(SimSettings {
                model_id,
                kind,
                capabilities,
                latency: Duration::from_millis(latency_ms),
                jitter: Duration::from_millis(jitter_ms),
                fail_rate,
                max_concurrency,
                inputs,
                output: output.unwrap_or_default(),
                seed,
            });
            let mut worker = Worker::new(sim);
            if let Some(limit) = max_concurrency {
                worker = worker.max_concurrency(usize::try_from(limit)?);
            }
            run(tls.apply(worker)?, listen, no_health).await
        }
    }
}

async fn run<M: Model>(
    worker: Worker<M>,
    listen: SocketAddr,
    no_health: bool,
) -> anyhow::Result<()> {
    let worker = if no_health {
        worker.without_health()
    } else {
        worker
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    println!("listening on {local}");
    tracing::info!(%local, "worker serving");
    worker.serve(listener, sdk::shutdown_signal()).await?;
    Ok(())
}
