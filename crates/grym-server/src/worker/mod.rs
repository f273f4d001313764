//! How grymd reaches its workers:
//! - [`client`]: the core's `ModelClient` over gRPC, one channel a replica;
//! - [`convert`]: the worker contract's messages to and from the core's
//!   types, and a worker's gRPC code turned into a `FailureKind`;
//! - [`builtin`]: the reference workers grymd runs in its own process;
//! - [`reload`]: the worker list applied again on SIGHUP;
//! - [`tls`]: the `[worker_tls]` settings channels follow, and TLS failures
//!   told and logged as such.
//!
//! [`model_entries`] builds the registry's entries from the configured
//! workers, for start-up and reload alike.

pub(crate) mod builtin;
pub(crate) mod client;
pub(crate) mod convert;
pub(crate) mod reload;
pub(crate) mod tls;

use std::sync::Arc;

use grym_core::{ModelEntry, Replica};

use self::client::{ChannelSettings, GrpcModelClient};
use crate::config::WorkerConfig;
use crate::error::Error;

/// Registry entries for configured workers, each replica reached through its
/// own lazily connected gRPC client.
pub(crate) fn model_entries<'a>(
    workers: impl IntoIterator<Item = &'a WorkerConfig>,
    settings: &ChannelSettings,
) -> Result<Vec<ModelEntry>, Error> {
    workers
        .into_iter()
        .map(|worker| {
            let replicas = worker
                .endpoints
                .iter()
                .map(|endpoint| {
                    let client = GrpcModelClient::new(worker.id.clone(), endpoint, settings)
                        .map_err(|source| Error::Endpoint {
                            model: worker.id.to_string(),
                            source,
                        })?;
                    Ok(Replica::new(endpoint.clone(), Arc::new(client)))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let mut entry =
                ModelEntry::new(worker.id.clone(), replicas).map_err(Error::Registry)?;
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
