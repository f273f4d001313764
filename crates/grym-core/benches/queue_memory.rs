//! Memory held per queued task, measured through the orchestrator itself:
//! 100 thousand tasks are submitted to a model that takes one call at a
//! time and never answers, and the growth of resident memory is divided by
//! their number. It counts everything a waiting task holds: its record, its
//! result snapshot, its place in the model's queue and its own future.
//!
//! `cargo bench -p grym-core --bench queue_memory`

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use grym_core::{
    Capability, Description, Health, InferCall, ModelClient, ModelEntry, ModelId, Orchestrator,
    OrchestratorSettings, Output, Registry, SchedulerSettings, Task, TaskId, TaskInput, TaskType,
    WorkerError,
};

const TASKS: usize = 100_000;

/// A model that never answers.
struct Silent;

impl ModelClient for Silent {
    fn infer(&self, _call: InferCall) -> BoxFuture<'static, Result<Output, WorkerError>> {
        futures::future::pending().boxed()
    }
    fn describe(&self) -> BoxFuture<'static, Result<Description, WorkerError>> {
        futures::future::pending().boxed()
    }
    fn check_health(&self) -> BoxFuture<'static, Health> {
        futures::future::ready(Health::Serving).boxed()
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let task_type = TaskType::new("transcription").unwrap_or_else(|e| panic!("{e}"));
        let entry = ModelEntry::single(
            ModelId::new("silent").unwrap_or_else(|e| panic!("{e}")),
            "memory",
            Arc::new(Silent),
        )
        .with_kind("simulated".into())
        .with_capabilities(vec![Capability {
            task_type: task_type.clone(),
            confidence: 0.9,
            estimated_latency: Duration::from_millis(10),
            max_concurrency: Some(1),
        }]);
        entry.replicas()[0].set_health(Health::Serving);
        let orchestrator = Arc::new(Orchestrator::new(
            Arc::new(Registry::new([entry]).unwrap_or_else(|e| panic!("{e}"))),
            OrchestratorSettings {
                scheduler: SchedulerSettings {
                    max_queue: TASKS + 1,
                    ..SchedulerSettings::default()
                },
                ..OrchestratorSettings::default()
            },
        ));
        let before = resident_bytes();
        let mut handles = Vec::with_capacity(TASKS);
        for i in 0..TASKS {
            let task = Task::new(
                TaskId::new(format!("task-{i:06}")).unwrap_or_else(|e| panic!("{e}")),
                task_type.clone(),
                TaskInput::Text("a short prompt of a few dozen bytes".to_owned()),
            );
            handles.push(orchestrator.submit(task, None, None).unwrap_or_else(|e| panic!("{e}")));
        }
        // Let every task reach the model's queue.
        while orchestrator.queued() > TASKS - 1 || handles.len() < TASKS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = resident_bytes();
        let per_task = after.saturating_sub(before) as f64 / TASKS as f64;
        println!(
            "{TASKS} tasks queued: resident memory grew {:.1} MiB, {per_task:.0} bytes per queued task",
            after.saturating_sub(before) as f64 / (1024.0 * 1024.0)
        );
        drop(handles);
        orchestrator.shutdown().await;
    });
}
