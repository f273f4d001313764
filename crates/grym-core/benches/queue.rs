//! The scheduler's queues with 100 thousand tasks queued: push and pop on
//! the priority queue with aging running (time advances every iteration),
//! and a whole acquire and release of a model's slot through its queue.
//!
//! `cargo bench -p grym-core --bench queue`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use grym_core::Priority;
use grym_core::internals::{ModelSlots, PriorityQueue, QueueKey};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const QUEUED: usize = 100_000;
const AGING: Duration = Duration::from_secs(5);

fn key(rng: &mut SmallRng, seq: u64, now: Instant) -> QueueKey {
    let priority = match rng.random_range(0..4) {
        0 => Priority::Low,
        1 => Priority::Normal,
        2 => Priority::High,
        _ => Priority::Critical,
    };
    QueueKey {
        priority,
        deadline: rng
            .random_bool(0.5)
            .then(|| now + Duration::from_millis(rng.random_range(0..60_000))),
        seq,
    }
}

fn push_pop(c: &mut Criterion) {
    let start = Instant::now();
    let mut rng = SmallRng::seed_from_u64(1);
    let mut queue = PriorityQueue::new(QUEUED + 1, AGING);
    for seq in 0..QUEUED as u64 {
        let _ = queue.push(key(&mut rng, seq, start), seq, start);
    }
    let mut seq = QUEUED as u64;
    c.bench_function("queue push + pop, 100k queued, aging", |b| {
        b.iter(|| {
            seq += 1;
            // A millisecond per operation: items keep coming due for aging.
            let now = start + Duration::from_millis(seq - QUEUED as u64);
            let _ = queue.push(key(&mut rng, seq, now), seq, now);
            black_box(queue.pop(now))
        });
    });
}

fn slot_acquire_release(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let _guard = runtime.enter();
    // As the orchestrator sizes it: twice the queue.
    let slots = Arc::new(ModelSlots::new(2 * QUEUED, AGING));
    let mut rng = SmallRng::seed_from_u64(2);
    let now = Instant::now();
    // One call runs and 100k wait behind it, each holding its place.
    let running = slots
        .acquire(key(&mut rng, 0, now), 1)
        .now_or_never()
        .and_then(Result::ok);
    let mut waiting: Vec<_> = (1..=QUEUED as u64)
        .map(|seq| Box::pin(slots.acquire(key(&mut rng, seq, now), 1)))
        .collect();
    for waiter in &mut waiting {
        let _ = waiter.as_mut().now_or_never();
    }
    let mut seq = QUEUED as u64;
    c.bench_function("model slot: enqueue and give up, 100k waiting", |b| {
        b.iter(|| {
            seq += 1;
            let mut waiter = Box::pin(slots.acquire(key(&mut rng, seq, now), 1));
            black_box((&mut waiter).now_or_never().is_none());
        });
    });
    drop(waiting);
    drop(running);
}

criterion_group!(benches, push_pop, slot_acquire_release);
criterion_main!(benches);
