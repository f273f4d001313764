//! One selection, as a task pays for it: every registered model serving the
//! task type is scored from its live statistics and the candidates are
//! ranked, for 10 and for 100 such models, under each policy.
//!
//! `cargo bench -p grym-core --bench selection`
//!
//! Each model has a full history of calls (a mix of successes, failures
//! and latencies), so scoring reads decayed statistics as it does in service,
//! and time advances a millisecond per selection, so the decay is computed
//! afresh each time. No route applies: every candidate is scored.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use grym_core::CallOutcome;
use grym_core::Policy;
use grym_core::internals::Selector;
use grym_core::{
    Capability, Health, ModelEntry, ModelId, ModelKind, Registry, SelectionSettings, TaskType,
};
use tokio::time::Instant;

const HALF_LIFE: Duration = Duration::from_secs(10);

/// `count` described, serving models of `task_type`, each with 300 calls
/// behind it: more than the 256 recent latencies a model keeps, as in
/// steady service.
fn registry(count: usize, task_type: &TaskType, now: Instant) -> Registry {
    // Outcomes are recorded through a selector, which owns the half-life.
    let recorder = Selector::new(SelectionSettings {
        half_life: HALF_LIFE,
        ..SelectionSettings::default()
    });
    let entries = (0..count).map(|i| {
        let id = ModelId::new(format!("model-{i:03}")).unwrap_or_else(|e| panic!("{e}"));
        let entry = ModelEntry::single(id, "simulated", Arc::new(common::Silent))
            .with_kind(ModelKind::new("simulated"))
            .with_capabilities(vec![Capability {
                task_type: task_type.clone(),
                confidence: 0.5 + (i % 10) as f64 / 25.0,
                estimated_latency: Duration::from_millis(50 + 10 * (i as u64 % 7)),
                max_concurrency: i.is_multiple_of(2).then_some(8),
                inputs: Vec::new(),
            }]);
        entry.replicas()[0].set_health(Health::Serving);
        for call in 0..300_u64 {
            let outcome = if (call + i as u64).is_multiple_of(9) {
                CallOutcome::Failure
            } else {
                CallOutcome::Success
            };
            let latency = Duration::from_millis(40 + (call * 7 + i as u64) % 60);
            recorder.record(
                &entry,
                task_type,
                now + Duration::from_millis(call * 20),
                outcome,
                latency,
            );
        }
        entry
    });
    Registry::new(entries).unwrap_or_else(|e| panic!("{e}"))
}

fn selection(c: &mut Criterion) {
    let task_type = TaskType::new("transcription").unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let mut group = c.benchmark_group("selection");
    for count in [10, 100] {
        let registry = registry(count, &task_type, start);
        for (name, policy) in [("scored", Policy::Scored), ("thompson", Policy::Thompson)] {
            let selector = Selector::new(SelectionSettings {
                policy,
                half_life: HALF_LIFE,
                seed: Some(7),
                routes: Vec::new(),
                ..SelectionSettings::default()
            });
            let mut now = start + Duration::from_secs(10);
            group.bench_function(BenchmarkId::new(name, format!("{count} models")), |b| {
                b.iter(|| {
                    now += Duration::from_millis(1);
                    let plan = selector
                        .plan(black_box(&task_type), &registry, now)
                        .unwrap_or_else(|e| panic!("{e}"));
                    black_box(plan.candidates.len())
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
