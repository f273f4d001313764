//! Push and pop of the scheduler's priority queue with 100 thousand tasks
//! queued: the cost each waiting call adds.
//!
//! `cargo bench -p grym-core --bench queue`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use grym_core::Priority;
use grym_core::scheduler::queue::{PriorityQueue, QueueKey};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const QUEUED: usize = 100_000;

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
    let now = Instant::now();
    let mut rng = SmallRng::seed_from_u64(1);
    let mut queue = PriorityQueue::new(QUEUED + 1, Duration::from_secs(5));
    for seq in 0..QUEUED as u64 {
        let _ = queue.push(key(&mut rng, seq, now), seq, now);
    }
    let mut seq = QUEUED as u64;
    c.bench_function("queue push + pop, 100k queued", |b| {
        b.iter(|| {
            seq += 1;
            let _ = queue.push(key(&mut rng, seq, now), seq, now);
            black_box(queue.pop(now))
        });
    });
}

criterion_group!(benches, push_pop);
criterion_main!(benches);
