//! The transform cache under ten times its capacity, in contexts shaped
//! like analyses (many small objects): what it holds stays within its
//! bound by its own weigher, and resident memory follows.
//!
//! `cargo bench -p grym-core --bench context_memory`

mod common;

use std::time::Duration;

use grym_core::internals::{ContentHash, TransformCache, weight};
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
            // Shaped like an analysis: many small objects, the weigher's
            // hardest case.
            let events: Vec<Value> = (0..64).map(|i| json!({"t": i, "label": "song phrase"})).collect();
            let context: Map<String, Value> =
                Map::from_iter([("n".to_owned(), json!(n)), ("json".to_owned(), json!({"events": events}))]);
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
        assert!(stats.bytes <= CAPACITY, "over the bound by the weigher");
        assert!(grown <= 2 * CAPACITY, "resident memory grew past twice the bound");
    });
}
