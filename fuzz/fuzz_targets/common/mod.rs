//! What both targets share: models that answer at once, an orchestrator
//! over them, and a runtime whose worker has a tokio worker's stack, so a
//! stack overflow grymd would suffer is one the fuzzer finds.

#![allow(dead_code, reason = "each target uses only part of this module")]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use grym_core::{
    Capability, Description, FailureKind, Health, InferCall, ModelClient, ModelEntry, ModelId,
    Orchestrator, OrchestratorSettings, Output, Registry, TaskType, WorkerError,
};
use serde_json::json;

/// A model that answers every call at once with the same output, or with
/// an error.
struct Instant {
    fails: bool,
}

impl ModelClient for Instant {
    fn infer(&self, _call: InferCall) -> BoxFuture<'static, Result<Output, WorkerError>> {
        let answer = if self.fails {
            Err(WorkerError::new(FailureKind::Unavailable, "down"))
        } else {
            Ok(Output {
                text: Some("rain".to_owned()),
                json: Some(json!({"confidence": 0.55, "labels": ["rain", "snow"]})),
                data: Default::default(),
                data_mime_type: String::new(),
            })
        };
        futures::future::ready(answer).boxed()
    }
    fn describe(&self) -> BoxFuture<'static, Result<Description, WorkerError>> {
        futures::future::ready(Err(WorkerError::new(FailureKind::Unavailable, "down"))).boxed()
    }
    fn check_health(&self) -> BoxFuture<'static, Health> {
        futures::future::ready(Health::Serving).boxed()
    }
}

/// The task types the models serve.
pub const TYPES: [&str; 3] = ["echo", "text_generation", "transcription"];

fn entry(id: &str, fails: bool) -> ModelEntry {
    let capabilities = TYPES
        .iter()
        .map(|name| Capability {
            task_type: TaskType::new(*name).unwrap_or_else(|e| panic!("{e}")),
            confidence: 0.8,
            estimated_latency: Duration::from_millis(5),
            max_concurrency: None,
            inputs: Vec::new(),
        })
        .collect();
    let id = ModelId::new(id).unwrap_or_else(|e| panic!("{e}"));
    let entry =
        ModelEntry::single(id, "fuzz", Arc::new(Instant { fails })).with_capabilities(capabilities);
    entry.replicas()[0].set_health(Health::Serving);
    entry
}

type Shared = (tokio::runtime::Runtime, Arc<Orchestrator>);

/// The runtime and an orchestrator over one model that answers, made once
/// per process.
pub fn answering() -> &'static Shared {
    static ONE: OnceLock<Shared> = OnceLock::new();
    ONE.get_or_init(|| shared(vec![entry("answers", false)]))
}

/// The runtime and an orchestrator over two models whose calls fail, made
/// once per process.
pub fn failing() -> &'static Shared {
    static ONE: OnceLock<Shared> = OnceLock::new();
    ONE.get_or_init(|| shared(vec![entry("first", true), entry("second", true)]))
}

fn shared(models: Vec<ModelEntry>) -> Shared {
    // One worker with tokio's default stack (2 MiB), as in grymd.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let registry = Registry::new(models).unwrap_or_else(|e| panic!("{e}"));
    let orchestrator = {
        let _inside = runtime.enter();
        Arc::new(Orchestrator::new(
            Arc::new(registry),
            OrchestratorSettings::default(),
        ))
    };
    (runtime, orchestrator)
}

/// Runs `work` on the runtime's worker thread, and panics here if it
/// panicked there, so that libFuzzer sees it.
pub fn on_worker<F>(runtime: &tokio::runtime::Runtime, work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let outcome = runtime.block_on(runtime.spawn(work));
    if let Err(error) = outcome
        && error.is_panic()
    {
        std::panic::resume_unwind(error.into_panic());
    }
}
