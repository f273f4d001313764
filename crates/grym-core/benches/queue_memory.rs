//! Memory held per queued task, measured through the orchestrator itself:
//! 100 thousand tasks are submitted to a model that takes one call at a
//! time and never answers, and the growth of resident memory is divided by
//! their number. It counts everything a waiting task holds: its record, its
//! result snapshot, its place in the model's queue and its own future.
//!
//! `cargo bench -p grym-core --bench queue_memory`

mod common;

use std::sync::Arc;
use std::time::Duration;

use grym_core::{
    Capability, Deadline, Health, ModelEntry, ModelId, ModelKind, Orchestrator,
    OrchestratorSettings, Registry, SchedulerSettings, Task, TaskId, TaskInput, TaskType,
};

const TASKS: usize = 100_000;

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
            Arc::new(common::Silent),
        )
        .with_kind(ModelKind::new("simulated"))
        .with_capabilities(vec![Capability {
            task_type: task_type.clone(),
            confidence: 0.9,
            estimated_latency: Duration::from_millis(10),
            max_concurrency: Some(1),
            inputs: Vec::new(),
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
        let before = common::resident_bytes();
        let mut handles = Vec::with_capacity(TASKS);
        for i in 0..TASKS {
            let task = Task::new(
                TaskId::new(format!("task-{i:06}")).unwrap_or_else(|e| panic!("{e}")),
                task_type.clone(),
                TaskInput::Text("a short prompt of a few dozen bytes".to_owned()),
            );
            handles.push(orchestrator.submit(task, Deadline::NONE, None).await.unwrap_or_else(|e| panic!("{e}")));
        }
        // Let every task reach the model's queue.
        while orchestrator.queued() > TASKS - 1 || handles.len() < TASKS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = common::resident_bytes();
        let per_task = after.saturating_sub(before) as f64 / TASKS as f64;
        println!(
            "{TASKS} tasks queued: resident memory grew {:.1} MiB, {per_task:.0} bytes per queued task",
            after.saturating_sub(before) as f64 / (1024.0 * 1024.0)
        );
        drop(handles);
        orchestrator.shutdown().await;
    });
}
