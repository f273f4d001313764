//! The reference workers grymd starts inside its own process when
//! `builtin_workers` is on, so that a fresh install answers real tasks. They
//! listen on free loopback ports and are reached over gRPC like any other
//! worker: the out-of-the-box service takes the same path as a deployment.

use grym_core::ModelId;
use grym_worker::Worker;
use grym_worker::audio_features::{self, AudioFeatures};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{WorkerConfig, WorkerEndpoint};

/// Starts the built-in workers; they stop when `cancel` fires.
pub(crate) async fn start(
    tasks: &TaskTracker,
    cancel: &CancellationToken,
    max_message_bytes: usize,
) -> std::io::Result<Vec<WorkerConfig>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    // Analysis is CPU-bound and holds a decoded copy of the clip: running
    // more than one per core only adds memory.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let worker = Worker::new(AudioFeatures::default())
        .max_concurrency(cores)
        .max_message_bytes(max_message_bytes);
    let stop = cancel.clone();
    tasks.spawn(async move {
        if let Err(error) = worker.serve(listener, stop.cancelled_owned()).await {
            tracing::error!(error = %error_chain(&error), "built-in audio-features worker stopped");
        }
    });
    tracing::info!(%address, "started built-in worker `{}`", audio_features::DEFAULT_MODEL_ID);
    Ok(vec![WorkerConfig {
        id: ModelId::new(audio_features::DEFAULT_MODEL_ID)
            .map_err(|e| std::io::Error::other(e.to_string()))?,
        endpoints: vec![WorkerEndpoint::Fixed(format!("http://{address}"))],
        kind: None,
        capabilities: None,
    }])
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
