//! The transform cache under ten times its capacity: what it holds stays
//! within its bound, by its own weigher and by resident memory.
//!
//! `cargo bench -p grym-core --bench context_memory`

mod common;

use std::time::Duration;

use grym_core::context::cache::TransformCache;
use grym_core::context::canonical::{ContentHash, weight};
use serde_json::{Map, Value, json};

const CAPACITY: u64 = 16 * 1024 * 1024;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let cache = TransformCache::new(CAPACITY, Duration::from_secs(1800));
        let before = common::resident_bytes();
        let mut inserted = 0_u64;
        let mut n = 0_u64;
        while inserted < 10 * CAPACITY {
            n += 1;
            let context: Map<String, Value> =
                Map::from_iter([("n".to_owned(), json!(n)), ("text".to_owned(), json!("x".repeat(4096)))]);
            inserted += weight(&context) as u64;
            let key = ContentHash::of(&context).key("tenant", "a", "b");
            cache.get_or_compute(key, || Some(context)).await;
            if n.is_multiple_of(1000) {
                cache.maintain().await;
            }
        }
        cache.maintain().await;
        let stats = cache.stats();
        let grown = common::resident_bytes().saturating_sub(before);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!(
            "inserted {:.0} MiB into a {:.0} MiB cache: it holds {:.1} MiB by its weigher ({} entries, {} evicted); resident memory grew {:.1} MiB",
            mib(inserted),
            mib(CAPACITY),
            mib(stats.bytes),
            stats.entries,
            stats.evictions,
            mib(grown)
        );
        assert!(stats.bytes <= CAPACITY, "over the bound");
    });
}
