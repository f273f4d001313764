//! Applying an edited worker list without a restart.
//!
//! On SIGHUP grymd reads its configuration file again. The `[[workers]]`
//! list takes effect as soon as its workers have been probed: models that
//! did not change keep their entry, with its health and statistics (a model
//! whose endpoints changed starts afresh; a `dns://` pool that is kept
//! keeps its replicas as discovery left them); calls in flight finish on
//! the entries they started with. The `[worker_tls]` files are read again with
//! the file and take effect with the list: every `https://` channel, kept
//! models' too, reconnects with them at its next call. Other settings are
//! read at start-up only; a change to them is reported and left for the
//! next restart. A file that does not load (a certificate that cannot be
//! read or does not parse among them) is reported and changes nothing.

use std::sync::Arc;

use grym_core::Orchestrator;
use grym_core::probe;
use tokio_util::sync::CancellationToken;

use super::client::ChannelSettings;
use super::model_entries;
use crate::config::{Config, WorkerConfig};
use crate::hangup::Hangups;

/// Reloads the worker list on every SIGHUP until `cancel` fires.
pub(crate) async fn on_hangup(
    initial: Config,
    builtin: Vec<WorkerConfig>,
    settings: ChannelSettings,
    orchestrator: Arc<Orchestrator>,
    cancel: CancellationToken,
) {
    let mut hangups = Hangups::listen("the worker list", cancel);
    while hangups.next().await {
        reload(&initial, &builtin, &settings, &orchestrator).await;
    }
}

async fn reload(
    initial: &Config,
    builtin: &[WorkerConfig],
    settings: &ChannelSettings,
    orchestrator: &Orchestrator,
) {
    let Some(path) = initial.source.as_deref() else {
        tracing::info!("SIGHUP: grymd was started without a configuration file; nothing to reload");
        return;
    };
    let mut next = match Config::load(Some(path)) {
        Ok(next) => next,
        Err(error) => {
            tracing::error!(file = %path.display(), %error, "SIGHUP: the configuration does not load; keeping the current workers and certificates");
            return;
        }
    };
    // Whether metrics are recorded is the telemetry's, not the file's.
    next.orchestrator.metrics = initial.orchestrator.metrics;
    let unapplied = initial.changed_at_restart(&next);
    if !unapplied.is_empty() {
        tracing::warn!(
            changed = ?unapplied,
            "SIGHUP: only [[workers]] and [worker_tls] reload; these changed settings apply at the next restart"
        );
    }
    // New channels are built with the new TLS settings, so an endpoint
    // they do not fit is refused with the list. Refused, the old settings
    // return, and a channel that rebuilt with the new ones meanwhile
    // rebuilds again at its next call.
    let previous_tls = settings.tls.current();
    settings.tls.replace(Arc::clone(&next.worker_tls));
    let registry = model_entries(next.workers.iter().chain(builtin), settings)
        .await
        .map_err(|error| error.to_string())
        .and_then(|entries| {
            orchestrator
                .registry()
                .succeed_with(entries)
                .map_err(|error| error.to_string())
        });
    match registry {
        Ok(registry) => {
            // Probe before the swap, so new models serve from the moment
            // they appear.
            probe::probe_all(&registry, initial.probe.timeout).await;
            orchestrator.replace_registry(registry);
            let registry = orchestrator.registry();
            let models: Vec<&str> = registry.models().map(|m| m.id().as_str()).collect();
            tracing::info!(?models, worker_tls = ?next.worker_tls, "SIGHUP: worker list reloaded");
        }
        Err(error) => {
            settings.tls.replace(previous_tls);
            tracing::error!(%error, "SIGHUP: the new worker list was refused; keeping the current one");
        }
    }
}
