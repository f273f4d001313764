//! `grymd [--config FILE] [--listen ADDR] [--check-store]`: the grym
//! orchestrator server.
//!
//! Prints `listening on ADDR` on standard output once the port is bound
//! (port 0 picks a free one); logs go to standard error, filtered by
//! `RUST_LOG` (default `info`), as text or JSON (`--log-format`). Traces and
//! metrics go over OTLP when the standard `OTEL_*` variables name an
//! endpoint, and nowhere otherwise; metrics are also served for a
//! Prometheus scrape at `/metrics` on `[metrics] listen` (or where
//! `OTEL_METRICS_EXPORTER=prometheus` asks).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use grym_server::Config;
use grym_server::config::MetricsSettings;
use grym_telemetry::{LogFormat, PrometheusEndpoint, TelemetryConfig};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    version,
    about = "grym orchestrator: routes agents' tasks to model workers over gRPC"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "GRYM_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides `listen` and GRYM_LISTEN.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log lines as `text` or `json`.
    #[arg(long, env = "GRYM_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Opens the configured store, brings its schema up to date, prints
    /// what it found and exits: 0 when the store is usable.
    #[arg(long)]
    check_store: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut telemetry = TelemetryConfig::from_env("grymd", cli.log_format)?;
    let mut config = Config::load(cli.config.as_deref()).context("invalid configuration")?;
    config.metrics = MetricsSettings::chosen(config.metrics.take(), telemetry.prometheus.as_ref())
        .await
        .context("invalid configuration")?;
    if let Some(metrics) = &config.metrics {
        // `[metrics] listen` keeps metrics for the scrape whatever
        // OTEL_METRICS_EXPORTER says.
        telemetry.prometheus = Some(PrometheusEndpoint {
            host: metrics.listen.ip().to_string(),
            port: metrics.listen.port(),
        });
    }
    let telemetry = grym_telemetry::init_with(telemetry)?;
    if cli.check_store {
        let store = config.store.display_url();
        let version = grym_store::check(&config.store.url)
            .await
            .with_context(|| format!("the store {store} is not usable"))?;
        match version {
            Some(version) => println!("store {store}: reachable, schema version {version}"),
            None => println!("store {store}: nothing is kept"),
        }
        return Ok(());
    }
    config.orchestrator.metrics = telemetry.exports_metrics();
    if let Some(listen) = cli.listen {
        config.override_listen(listen);
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    println!("listening on {local}");
    tracing::info!(%local, store = %config.store.display_url(), workers = config.workers.len(), builtin = config.builtin_workers, "grymd starting");
    let served = grym_server::serve(config, listener, grym_worker::sdk::shutdown_signal()).await;
    // Flush what is still batched before the process ends; a collector
    // that is gone does not turn a clean stop into a failure.
    if let Err(error) = telemetry.shutdown().await {
        eprintln!("grymd: flushing telemetry failed: {error}");
    }
    Ok(served?)
}
