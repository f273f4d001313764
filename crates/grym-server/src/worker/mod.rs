//! How grymd reaches its workers:
//! - [`client`]: the core's `ModelClient` over gRPC, one channel a replica;
//! - [`convert`]: the worker contract's messages to and from the core's
//!   types, and a worker's gRPC code turned into a `FailureKind`;
//! - [`builtin`]: the reference workers grymd runs in its own process;
//! - [`reload`]: the worker list applied again on SIGHUP;
//! - [`discovery`]: the replicas of `dns://` pools, followed as the names'
//!   addresses change;
//! - [`tls`]: the `[worker_tls]` settings channels follow, and TLS failures
//!   told and logged as such.
//!
//! [`model_entries`] builds the registry's entries from the configured
//! workers, for start-up and reload alike, resolving their pools' names
//! first.

pub(crate) mod builtin;
mod channel;
pub(crate) mod client;
pub(crate) mod convert;
pub(crate) mod discovery;
pub(crate) mod reload;
pub(crate) mod tls;

use std::sync::Arc;

use grym_core::{ModelEntry, Replica};

use self::client::{ChannelSettings, GrpcModelClient};
use crate::config::WorkerConfig;
use crate::error::Error;

/// Registry entries for configured workers, each replica reached through its
/// own lazily connected gRPC client. The names of pools are resolved first
/// (a name that does not resolve keeps what it last resolved to, or leaves
/// its model without replicas until it does).
pub(crate) async fn model_entries<'a>(
    workers: impl IntoIterator<Item = &'a WorkerConfig>,
    settings: &ChannelSettings,
) -> Result<Vec<ModelEntry>, Error> {
    let workers: Vec<&WorkerConfig> = workers.into_iter().collect();
    let pools = discovery::pools(workers.iter().flat_map(|worker| &worker.endpoints));
    if !pools.is_empty() {
        settings.discovery.refresh(&pools).await;
    }
    workers
        .into_iter()
        .map(|worker| {
            let replicas = settings
                .discovery
                .endpoints(&worker.endpoints)
                .into_iter()
                .map(|(endpoint, tls_name)| {
                    let client = GrpcModelClient::new(
                        worker.id.clone(),
                        &endpoint,
                        tls_name.as_deref(),
                        settings,
                    )
                    .map_err(|reason| Error::Endpoint {
                        model: worker.id.to_string(),
                        reason,
                    })?;
                    Ok(Replica::new(endpoint, Arc::new(client)))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let sources = worker.endpoints.iter().map(ToString::to_string).collect();
            if replicas.is_empty() {
                tracing::warn!(model = %worker.id, ?sources, "the model's pool has no address yet; it serves once its name resolves");
            }
            let mut entry = ModelEntry::discovered(worker.id.clone(), sources, replicas);
            if let Some(kind) = &worker.kind {
                entry = entry.with_kind(kind.clone());
            }
            if let Some(capabilities) = &worker.capabilities {
                entry = entry.with_capabilities(capabilities.clone());
            }
            Ok(entry)
        })
        .collect()
}
