//! Keeps the registry true: asks each worker to describe itself until it has,
//! and checks its health on a fixed period.
//!
//! A worker that is down at start-up is described as soon as it comes up,
//! and a worker that comes back after being down is described again, since
//! it may have been upgraded. A check that does not answer within its
//! timeout counts as not serving.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::model::Health;
use crate::registry::{ModelEntry, Registry};

/// How often and how patiently workers are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Time between two probes of one worker.
    pub interval: Duration,
    /// The longest a Describe or health check may take.
    pub timeout: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Probes one model once: checks every replica's health, then asks a
/// serving replica to describe the model if that is still needed.
pub async fn probe_model(entry: &ModelEntry, timeout: Duration) {
    let before = entry.health();
    let recovered = join_all(entry.replicas().iter().map(|replica| async move {
        let health = tokio::time::timeout(timeout, replica.client().check_health())
            .await
            .unwrap_or(Health::NotServing);
        let was = replica.health();
        replica.set_health(health);
        was == Health::NotServing && health == Health::Serving
    }))
    .await
    .contains(&true);
    // A worker that comes back may be a new version: hear what it serves.
    if recovered && entry.describes_itself() {
        entry.forget_description();
    }
    if entry.needs_description()
        && let Some(replica) = entry
            .replicas()
            .iter()
            .find(|replica| replica.health() == Health::Serving)
    {
        match tokio::time::timeout(timeout, replica.client().describe()).await {
            Ok(Ok(description)) => {
                tracing::info!(
                    model = %entry.id(),
                    kind = %description.kind,
                    capabilities = description.capabilities.len(),
                    "worker described itself"
                );
                entry.learn_description(description);
            }
            Ok(Err(error)) => {
                tracing::warn!(model = %entry.id(), %error, "worker did not describe itself");
            }
            Err(_) => tracing::warn!(model = %entry.id(), "worker's Describe timed out"),
        }
    }
    let now = entry.health();
    if before != now {
        tracing::info!(model = %entry.id(), ?before, ?now, "model health changed");
    }
}

/// Probes every worker once, all at once.
pub async fn probe_all(registry: &Registry, timeout: Duration) {
    join_all(registry.models().map(|entry| probe_model(entry, timeout))).await;
}

/// Probes every worker of the current registry on the period until `cancel`
/// fires; `registry` is read anew each round, so a reloaded worker list is
/// probed from its next round on.
pub async fn watch(
    registry: impl Fn() -> Arc<Registry>,
    settings: ProbeSettings,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => probe_all(&registry(), settings.timeout).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeModel;

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_comes_up_late_is_described_and_marked_serving() {
        let fake = FakeModel::serving("late", "audio_analysis", 0.9);
        fake.set_health(Health::NotServing);
        let registry = Registry::new([fake.entry()]).unwrap();
        let entry = registry.models().next().unwrap();

        probe_all(&registry, Duration::from_secs(1)).await;
        assert_eq!(entry.health(), Health::NotServing);
        assert!(entry.needs_description());

        fake.set_health(Health::Serving);
        probe_all(&registry, Duration::from_secs(1)).await;
        assert_eq!(entry.health(), Health::Serving);
        assert!(!entry.needs_description());
        assert_eq!(entry.description().capabilities.len(), 1);
        assert_eq!(fake.describe_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_comes_back_is_described_again() {
        let fake = FakeModel::serving("gama", "audio_analysis", 0.9);
        let registry = Registry::new([fake.entry()]).unwrap();
        probe_all(&registry, Duration::from_secs(1)).await;
        assert_eq!(fake.describe_calls(), 1);
        probe_all(&registry, Duration::from_secs(1)).await;
        assert_eq!(
            fake.describe_calls(),
            1,
            "a steady worker is described once"
        );

        fake.set_health(Health::NotServing);
        probe_all(&registry, Duration::from_secs(1)).await;
        fake.set_health(Health::Serving);
        probe_all(&registry, Duration::from_secs(1)).await;
        assert_eq!(fake.describe_calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_health_check_that_hangs_counts_as_not_serving() {
        let fake = FakeModel::serving("stuck", "audio_analysis", 0.9);
        fake.hang_health_checks();
        let registry = Registry::new([fake.entry()]).unwrap();
        probe_all(&registry, Duration::from_millis(500)).await;
        assert_eq!(
            registry.models().next().unwrap().health(),
            Health::NotServing
        );
    }
}
