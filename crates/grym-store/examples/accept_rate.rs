//! Measures accepts per second on a store: N tasks at once, each accepting
//! new tasks one after the other for a while, every accept durable.
//!
//! ```text
//! cargo run --release -p grym-store --example accept_rate -- URL [CONCURRENCY] [SECONDS]
//! cargo run --release -p grym-store --example accept_rate -- sqlite:///tmp/rate/grym.db 256 10
//! ```
//!
//! Prints the rate, the commits it took, and the latency of one accept.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use grym_core::{
    DurabilitySettings, Metrics, Policy, Reason, Routing, Store, Task, TaskId, TaskInput,
    TaskRecord, TaskResult, TaskStatus, TaskType,
};

fn record(id: TaskId, text: &str) -> anyhow::Result<TaskRecord> {
    let task_type = TaskType::new("echo")?;
    let task = Task::new(
        id.clone(),
        task_type.clone(),
        TaskInput::Text(text.to_owned()),
    );
    let snapshot = TaskResult {
        task_id: id,
        status: TaskStatus::Queued,
        model_id: None,
        output: None,
        error: None,
        metrics: Metrics::default(),
        routing: Routing {
            task_type,
            policy: Policy::Scored,
            reason: Reason::HighestScore,
            estimated_latency: Duration::ZERO,
            candidates: Vec::new(),
            fallbacks_taken: Vec::new(),
            summary: None,
            excluded: Vec::new(),
        },
        queued_at: SystemTime::now(),
        started_at: None,
        finished_at: None,
        tenant: task.tenant.clone(),
        steps: Vec::new(),
        recipe: None,
    };
    Ok(TaskRecord {
        task,
        deadline: Some(SystemTime::now() + Duration::from_secs(60)),
        snapshot,
        runs: 0,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("usage: accept_rate URL [CONCURRENCY] [SECONDS]")?;
    let concurrency: usize = args.next().map_or(Ok(256), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(10), |a| a.parse())?;
    let (store, stats) =
        grym_store::open_counted(&url, "accept-rate", &DurabilitySettings::default())
            .await?
            .context("memory keeps nothing to measure")?;
    println!("store: {}", store.location());
    let text = "x".repeat(512);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let commits = stats.commits();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let store: Arc<dyn Store> = Arc::clone(&store);
            let text = text.clone();
            let run = run.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < until {
                    let id = TaskId::new(format!("{run}-{worker}-{n}"))?;
                    let record = record(id, &text)?;
                    let sent = Instant::now();
                    anyhow::ensure!(store.accept(&record).await?, "a fresh id was refused");
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    let commits = stats.commits() - commits;
    anyhow::ensure!(!latencies.is_empty(), "no accept finished");
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let accepts = latencies.len();
    println!(
        "{accepts} accepts by {concurrency} tasks in {elapsed:.2?}: {:.0}/s, \
         {commits} commits ({:.1} accepts each), latency p50 {:.2?} p99 {:.2?} max {:.2?}",
        accepts as f64 / elapsed.as_secs_f64(),
        accepts as f64 / commits.max(1) as f64,
        at(0.5),
        at(0.99),
        at(1.0),
    );
    Ok(())
}
