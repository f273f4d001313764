//! `grymd [--config FILE] [--listen ADDR]`: the grym orchestrator server.
//!
//! Prints `listening on ADDR` on standard output once the port is bound
//! (port 0 picks a free one); logs go to standard error, filtered by
//! `RUST_LOG` (default `info`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use grym_server::Config;
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref()).context("invalid configuration")?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    println!("listening on {local}");
    tracing::info!(%local, workers = config.workers.len(), builtin = config.builtin_workers, "grymd starting");
    grym_server::serve(config, listener, grym_worker::sdk::shutdown_signal()).await?;
    Ok(())
}
