//! The transform cache: transformed contexts shared by all requests,
//! bounded by weight in bytes and by time, around moka.
//!
//! Concurrent requests for the same key compute the transform once: the
//! first computes, the others wait for its result. Hits, misses, evictions
//! and the bytes held are counted for metrics.

#![cfg_attr(
    not(feature = "bench-internals"),
    expect(
        unreachable_pub,
        reason = "public to the benchmarks, through `internals`"
    )
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};

use super::canonical::{CacheKey, weight};

/// The counters of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that computed the transform.
    pub misses: u64,
    /// Entries removed for size or age.
    pub evictions: u64,
    /// Bytes held, by the weigher's estimate.
    pub bytes: u64,
    /// Entries held.
    pub entries: u64,
}

/// Transformed contexts, shared across requests.
pub struct TransformCache {
    inner: moka::future::Cache<CacheKey, Arc<Map<String, Value>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
}

impl std::fmt::Debug for TransformCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformCache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl TransformCache {
    /// A cache of at most `max_bytes`, each entry kept at most `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&evictions);
        let inner = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key, value: &Arc<Map<String, Value>>| {
                u32::try_from(weight(value) + 64).unwrap_or(u32::MAX)
            })
            .time_to_live(ttl)
            .eviction_listener(move |_key, _value, cause| {
                if cause.was_evicted() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self {
            inner,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions,
        }
    }

    /// The cached transform for `key`, computing it with `transform` when
    /// absent, with `true` when it was a hit; `None` when the transform
    /// failed, which is not kept.
    pub async fn get_or_compute(
        &self,
        key: CacheKey,
        transform: impl FnOnce() -> Option<Map<String, Value>>,
    ) -> Option<(Arc<Map<String, Value>>, bool)> {
        let entry = self
            .inner
            .entry(key)
            .or_optionally_insert_with(async move { transform().map(Arc::new) })
            .await;
        let Some(entry) = entry else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let hit = !entry.is_fresh();
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        Some((entry.into_value(), hit))
    }

    /// Applies pending evictions and expirations now.
    pub async fn maintain(&self) {
        self.inner.run_pending_tasks().await;
    }

    /// The counters as they stand.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: self.inner.weighted_size(),
            entries: self.inner.entry_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::canonical::ContentHash;
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;

    fn context(n: usize) -> Map<String, Value> {
        Map::from_iter([
            ("n".to_owned(), json!(n)),
            ("pad".to_owned(), json!("x".repeat(1000))),
        ])
    }

    #[tokio::test]
    async fn the_second_lookup_is_a_hit() {
        let cache = TransformCache::new(1 << 20, Duration::from_secs(60));
        let key = ContentHash::of(&context(1)).key("t", "a", "b");
        let (_, hit) = cache
            .get_or_compute(key, || Some(context(1)))
            .await
            .unwrap();
        assert!(!hit);
        let (value, hit) = cache
            .get_or_compute(key, || panic!("computed twice"))
            .await
            .unwrap();
        assert!(hit);
        assert_eq!(value["n"], 1);
        assert_eq!((cache.stats().hits, cache.stats().misses), (1, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_lookups_compute_once() {
        let cache = Arc::new(TransformCache::new(1 << 20, Duration::from_secs(60)));
        let key = ContentHash::of(&context(2)).key("t", "a", "b");
        let computed = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(tokio::sync::Barrier::new(16));
        let lookups = (0..16).map(|_| {
            let cache = Arc::clone(&cache);
            let computed = Arc::clone(&computed);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                cache
                    .get_or_compute(key, || {
                        computed.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        Some(context(2))
                    })
                    .await
            })
        });
        for lookup in lookups.collect::<Vec<_>>() {
            lookup.await.unwrap();
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_transform_is_not_kept() {
        let cache = TransformCache::new(1 << 20, Duration::from_secs(60));
        let key = ContentHash::of(&context(3)).key("t", "a", "b");
        assert!(cache.get_or_compute(key, || None).await.is_none());
        let (_, hit) = cache
            .get_or_compute(key, || Some(context(3)))
            .await
            .unwrap();
        assert!(!hit, "the failure was not cached");
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_bound_when_ten_times_its_capacity_is_inserted() {
        let capacity = 100 * 1024;
        let cache = TransformCache::new(capacity, Duration::from_secs(60));
        for n in 0..1000 {
            let value = context(n);
            let key = ContentHash::of(&value).key("t", "a", "b");
            cache.get_or_compute(key, || Some(value)).await;
        }
        cache.maintain().await;
        let stats = cache.stats();
        assert!(stats.bytes <= capacity, "{stats:?}");
        assert!(stats.evictions > 0, "{stats:?}");
    }
}
