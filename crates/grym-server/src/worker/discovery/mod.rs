//! Pools of workers found by DNS: a `dns://host:port` endpoint stands for
//! a replica at every address the name resolves to (A and AAAA records),
//! as a headless Kubernetes Service publishes its ready pods.
//!
//! Every `[discovery] interval` the names the current registry's models
//! use are resolved again ([`hosts`]), and each model's replicas are made
//! those addresses with the core's `ModelEntry::set_endpoints`: a replica
//! whose address stays keeps its health, ejection, calls in flight and
//! latency; a new one is health-checked once before it joins, so it takes
//! calls only once it serves; one that left finishes its calls. A name
//! that fails to resolve, or resolves to nothing, keeps its last known
//! addresses: a DNS outage does not empty a pool. Each change of a name's
//! state is logged once, not every interval.
//!
//! [`Discovery`] keeps what each name last resolved to, shared by
//! start-up, every SIGHUP reload and the loop ([`watch`]), so a reload
//! builds its models from the same addresses.

mod hosts;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::join_all;
use grym_core::{Health, ModelEntry, Orchestrator, Registry, Replica};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{ChannelSettings, GrpcModelClient};
use crate::config::{DiscoverySettings, DnsPool, WorkerEndpoint};

/// The longest one resolution may take, whatever the interval.
const MAX_RESOLVE_TIME: Duration = Duration::from_secs(5);

/// What each pool's name last resolved to.
#[derive(Debug)]
pub(crate) struct Discovery {
    settings: DiscoverySettings,
    known: Mutex<HashMap<DnsPool, Known>>,
}

/// One name's last addresses, and the trouble its last resolution had.
#[derive(Debug, Default)]
struct Known {
    addresses: Vec<IpAddr>,
    /// Why the last resolution gave nothing, as logged.
    trouble: Option<String>,
}

impl Discovery {
    /// Nothing resolved yet.
    pub(crate) fn new(settings: DiscoverySettings) -> Self {
        Self {
            settings,
            known: Mutex::new(HashMap::new()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<DnsPool, Known>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves `pools` again, all at once, each within a bounded time;
    /// a name that fails keeps its last addresses. Names no longer used
    /// are forgotten.
    pub(crate) async fn refresh(&self, pools: &BTreeSet<DnsPool>) {
        let limit = self
            .settings
            .interval
            .clamp(Duration::from_secs(1), MAX_RESOLVE_TIME);
        let hosts_file = self.settings.hosts_file.as_deref();
        let answers = join_all(pools.iter().map(|pool| async move {
            let answer =
                tokio::time::timeout(limit, hosts::resolve(&pool.host, pool.port, hosts_file))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("resolving `{}` took over {limit:?}", pool.host))
                    })
                    .and_then(|addresses| {
                        if addresses.is_empty() {
                            Err(format!("`{}` resolves to no address", pool.host))
                        } else {
                            Ok(addresses)
                        }
                    });
            (pool, answer)
        }))
        .await;
        let mut known = self.known();
        known.retain(|pool, _| pools.contains(pool));
        for (pool, answer) in answers {
            let state = known.entry(pool.clone()).or_default();
            match answer {
                Ok(addresses) => {
                    if state.trouble.take().is_some() {
                        tracing::info!(pool = %pool, ?addresses, "the pool's name resolves again");
                    }
                    state.addresses = addresses;
                }
                Err(reason) => {
                    if state.trouble.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(
                            pool = %pool,
                            %reason,
                            kept = ?state.addresses,
                            "the pool's name did not resolve; keeping its last known addresses"
                        );
                        state.trouble = Some(reason);
                    }
                }
            }
        }
    }

    /// The endpoints `sources` stand for now: each fixed one, and one for
    /// every last known address of each pool.
    pub(crate) fn endpoints(&self, sources: &[WorkerEndpoint]) -> Vec<(String, Option<String>)> {
        let known = self.known();
        let mut endpoints = Vec::new();
        for source in sources {
            match source {
                WorkerEndpoint::Fixed(endpoint) => endpoints.push((endpoint.clone(), None)),
                WorkerEndpoint::Pool(pool) => {
                    let addresses = known.get(pool).map(|k| k.addresses.as_slice());
                    for address in addresses.unwrap_or_default() {
                        let tls_name = pool.tls.then(|| pool.host.clone());
                        endpoints.push((pool.endpoint(*address), tls_name));
                    }
                }
            }
        }
        endpoints
    }
}

/// The pools among `sources`.
pub(crate) fn pools<'a>(
    sources: impl IntoIterator<Item = &'a WorkerEndpoint>,
) -> BTreeSet<DnsPool> {
    sources
        .into_iter()
        .filter_map(|source| match source {
            WorkerEndpoint::Pool(pool) => Some(pool.clone()),
            WorkerEndpoint::Fixed(_) => None,
        })
        .collect()
}

/// A model entry's sources, read back: they were validated when the
/// configuration loaded.
fn sources_of(entry: &ModelEntry) -> Vec<WorkerEndpoint> {
    entry
        .sources()
        .iter()
        .filter_map(|source| WorkerEndpoint::parse(source).ok())
        .collect()
}

/// Follows the pools of the current registry's models until `cancel`
/// fires; the registry is read anew each round, so a reloaded worker list
/// is followed from its next round on.
pub(crate) async fn watch(
    orchestrator: Arc<Orchestrator>,
    settings: ChannelSettings,
    probe_timeout: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(settings.discovery.settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now: start-up has just resolved every name.
    ticker.tick().await;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {
                let registry = orchestrator.registry();
                let round = follow(&registry, &settings, probe_timeout);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = round => {}
                }
            }
        }
    }
}

/// One round: the names resolved again, then each pool's model updated.
async fn follow(registry: &Registry, settings: &ChannelSettings, probe_timeout: Duration) {
    let models: Vec<(&Arc<ModelEntry>, Vec<WorkerEndpoint>)> = registry
        .models()
        .map(|entry| (entry, sources_of(entry)))
        .filter(|(_, sources)| sources.iter().any(|s| matches!(s, WorkerEndpoint::Pool(_))))
        .collect();
    if models.is_empty() {
        return;
    }
    let pools = pools(models.iter().flat_map(|(_, sources)| sources));
    settings.discovery.refresh(&pools).await;
    join_all(
        models
            .iter()
            .map(|(entry, sources)| update(entry, sources, settings, probe_timeout)),
    )
    .await;
}

/// Makes the model's replicas the endpoints its sources stand for now; a
/// new replica is health-checked before it joins.
async fn update(
    entry: &ModelEntry,
    sources: &[WorkerEndpoint],
    settings: &ChannelSettings,
    probe_timeout: Duration,
) {
    let wanted = settings.discovery.endpoints(sources);
    let current = entry.replicas();
    let new: Vec<Replica> = wanted
        .iter()
        .filter(|(endpoint, _)| !current.iter().any(|r| r.endpoint() == endpoint))
        .filter_map(|(endpoint, tls_name)| replica(entry, endpoint, tls_name.as_deref(), settings))
        .collect();
    join_all(new.iter().map(|replica| async move {
        let health = tokio::time::timeout(probe_timeout, replica.client().check_health())
            .await
            .unwrap_or(Health::NotServing);
        replica.set_health(health);
    }))
    .await;
    let mut new: HashMap<String, Replica> = new
        .into_iter()
        .map(|replica| (replica.endpoint().to_owned(), replica))
        .collect();
    let endpoints: Vec<String> = wanted.into_iter().map(|(endpoint, _)| endpoint).collect();
    let changes = entry.set_endpoints(&endpoints, |endpoint| new.remove(endpoint), Instant::now());
    if !changes.is_empty() {
        tracing::info!(
            model = %entry.id(),
            added = ?changes.added,
            removed = ?changes.removed,
            replicas = entry.replicas().len(),
            "the model's pool changed"
        );
    }
}

/// A replica at `endpoint`, reached through its own lazily connected
/// client; `None`, logged, when the endpoint is unusable.
fn replica(
    entry: &ModelEntry,
    endpoint: &str,
    tls_name: Option<&str>,
    settings: &ChannelSettings,
) -> Option<Replica> {
    match GrpcModelClient::new(entry.id().clone(), endpoint, tls_name, settings) {
        Ok(client) => Some(Replica::new(endpoint, Arc::new(client))),
        Err(error) => {
            tracing::error!(model = %entry.id(), endpoint, %error, "a pool's address gives no usable endpoint");
            None
        }
    }
}
