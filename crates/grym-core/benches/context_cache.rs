//! The transform cache, as a request pays for it: hashing a context once,
//! then a hit (lookup, the reshaped context handed on shared, as the
//! worker's request is made from it in place) or a miss (reshape and
//! insert), for 1 KiB and 64 KiB contexts.
//!
//! `cargo bench -p grym-core --bench context_cache`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use grym_core::internals::{ContentHash, TransformCache, Transformers};
use serde_json::{Map, Value, json};

/// An audio analysis of about `bytes` bytes, as a session keeps it.
fn analysis(bytes: usize, n: u64) -> Map<String, Value> {
    let notes: Vec<Value> = (0..bytes / 64)
        .map(|i| json!({"t": i, "label": "blackbird song phrase"}))
        .collect();
    let mut map = Map::new();
    map.insert("model_id".into(), json!("gama"));
    map.insert("task_type".into(), json!("audio_analysis"));
    map.insert("text".into(), json!(format!("analysis {n}")));
    map.insert("json".into(), json!({"events": notes}));
    map
}

fn cache(c: &mut Criterion) {
    let transformers = Transformers::with_defaults();
    let mut group = c.benchmark_group("context cache");
    for size in [1024, 64 * 1024] {
        let label = format!("{} KiB", size / 1024);
        let cache = TransformCache::new(100 * 1024 * 1024, Duration::from_secs(1800));
        let warm = analysis(size, 0);
        let warm_key = ContentHash::of(&warm).key("tenant", "audio-language", "text-generation");
        futures::executor::block_on(cache.get_or_compute(warm_key, || {
            transformers.transform("audio-language", "text-generation", &warm)
        }));
        // The hit must find it.
        assert!(
            futures::executor::block_on(cache.get_or_compute(warm_key, || None))
                .is_some_and(|(_, hit)| hit)
        );
        group.bench_function(BenchmarkId::new("hit", &label), |b| {
            b.iter(|| {
                let key = ContentHash::of(&warm).key("tenant", "audio-language", "text-generation");
                let found =
                    futures::executor::block_on(cache.get_or_compute(key, || unreachable!()));
                black_box(found)
            });
        });
        // A session entry's hash is computed once, when it is recorded:
        // a request that reads it pays the key, the lookup and the handing on.
        let hash = ContentHash::of(&warm);
        group.bench_function(BenchmarkId::new("hit, hash known", &label), |b| {
            b.iter(|| {
                let key = black_box(hash).key("tenant", "audio-language", "text-generation");
                let found =
                    futures::executor::block_on(cache.get_or_compute(key, || unreachable!()));
                black_box(found)
            });
        });
        let mut n = 0;
        group.bench_function(BenchmarkId::new("miss", &label), |b| {
            b.iter_batched(
                || {
                    n += 1;
                    analysis(size, n)
                },
                |fresh| {
                    let key =
                        ContentHash::of(&fresh).key("tenant", "audio-language", "text-generation");
                    let found = futures::executor::block_on(cache.get_or_compute(key, || {
                        transformers.transform("audio-language", "text-generation", &fresh)
                    }));
                    black_box(found)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
