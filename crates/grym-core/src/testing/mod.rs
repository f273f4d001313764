//! Test doubles: a model whose worker answers from memory, an
//! orchestrator over such models, and (in `store`) a [`FakeStore`] that
//! keeps durable work in memory and can be taken down.

mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::client::{ChunkSink, InferCall, ModelClient, WorkerError};
use crate::exec::{Orchestrator, OrchestratorSettings};
use crate::ids::{ModelId, ModelKind, TaskType};
use crate::model::{Capability, CapabilitySource, Description, Health};
use crate::plan::selection::SelectionSettings;
use crate::registry::{ModelEntry, Registry};
use crate::schedule::SchedulerSettings;
use crate::task::{Output, OutputChunk};

pub(crate) use self::store::{FakeStore, Holder, Op};

/// An orchestrator over `models`, described, with repeatable draws and
/// `scheduler`.
pub(crate) fn orchestrator(
    models: &[&FakeModel],
    scheduler: SchedulerSettings,
) -> Arc<Orchestrator> {
    let registry = Registry::new(models.iter().map(|m| m.described_entry())).unwrap();
    Arc::new(Orchestrator::new(
        Arc::new(registry),
        OrchestratorSettings {
            selection: SelectionSettings {
                seed: Some(3),
                ..SelectionSettings::default()
            },
            scheduler,
            ..OrchestratorSettings::default()
        },
    ))
}

/// An orchestrator over `entries` with `settings`, selection's draws made
/// repeatable.
pub(crate) fn orchestrator_of(
    entries: Vec<ModelEntry>,
    settings: OrchestratorSettings,
) -> Arc<Orchestrator> {
    let registry = Registry::new(entries).unwrap();
    Arc::new(Orchestrator::new(
        Arc::new(registry),
        OrchestratorSettings {
            selection: SelectionSettings {
                seed: Some(3),
                ..settings.selection
            },
            ..settings
        },
    ))
}

/// One model served by `replicas` (fakes sharing the first one's id and
/// description), described and serving, at `fake://0`, `fake://1`, ...
pub(crate) fn replicated(replicas: &[&FakeModel]) -> ModelEntry {
    let first = replicas[0];
    let entry = ModelEntry::new(
        first.id.clone(),
        replicas
            .iter()
            .enumerate()
            .map(|(i, fake)| {
                crate::registry::Replica::new(format!("fake://{i}"), Arc::new((*fake).clone()))
            })
            .collect(),
    )
    .unwrap();
    entry.learn_description(first.description());
    for replica in entry.replicas() {
        replica.set_health(Health::Serving);
    }
    entry
}

/// The object of a JSON value; panics on anything else.
pub(crate) fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("object expected, got {other}"),
    }
}

/// What the fake does when called.
#[derive(Clone)]
pub(crate) enum Behaviour {
    /// Answers with the call's task type as text after a delay.
    Answer(Duration),
    /// Fails with this error.
    Fail(WorkerError),
    /// Fails with this error after a delay.
    FailAfter(Duration, WorkerError),
    /// Fails every n-th call (the 1st, the n+1-th, ...) with this error,
    /// answers the others at once.
    FailEvery(usize, WorkerError),
}

struct State {
    description: Description,
    health: Health,
    hang_health: bool,
    behaviour: Behaviour,
    describe_calls: usize,
    calls: Vec<InferCall>,
    /// What a streaming call sends before its answer.
    chunks: Vec<OutputChunk>,
}

/// A fake model; clones share one state.
#[derive(Clone)]
pub(crate) struct FakeModel {
    id: ModelId,
    state: Arc<Mutex<State>>,
}

impl FakeModel {
    /// A serving model with one capability that answers at once.
    pub(crate) fn serving(id: &str, task_type: &str, confidence: f64) -> Self {
        Self {
            id: ModelId::new(id).unwrap(),
            state: Arc::new(Mutex::new(State {
                description: Description {
                    kind: ModelKind::new("fake"),
                    capabilities: vec![Capability {
                        task_type: TaskType::new(task_type).unwrap(),
                        confidence,
                        estimated_latency: Duration::from_millis(10),
                        max_concurrency: None,
                        inputs: Vec::new(),
                    }],
                    source: CapabilitySource::Worker,
                },
                health: Health::Serving,
                hang_health: false,
                behaviour: Behaviour::Answer(Duration::ZERO),
                describe_calls: 0,
                calls: Vec::new(),
                chunks: Vec::new(),
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Declares that the model takes at most `limit` calls at once.
    pub(crate) fn limit(self, limit: u32) -> Self {
        for capability in &mut self.state().description.capabilities {
            capability.max_concurrency = Some(limit);
        }
        self
    }

    /// Declares the inputs the model takes.
    pub(crate) fn inputs(self, inputs: &[crate::Modality]) -> Self {
        for capability in &mut self.state().description.capabilities {
            capability.inputs = inputs.to_vec();
        }
        self
    }

    /// Declares `latency` as the model's estimated latency.
    pub(crate) fn estimate(self, latency: Duration) -> Self {
        for capability in &mut self.state().description.capabilities {
            capability.estimated_latency = latency;
        }
        self
    }

    /// Declares the model's kind.
    pub(crate) fn kind(self, kind: &str) -> Self {
        self.state().description.kind = ModelKind::new(kind);
        self
    }

    pub(crate) fn set_health(&self, health: Health) {
        self.state().health = health;
    }

    pub(crate) fn hang_health_checks(&self) {
        self.state().hang_health = true;
    }

    pub(crate) fn behave(&self, behaviour: Behaviour) {
        self.state().behaviour = behaviour;
    }

    /// Sends `chunks` before its answer when called to stream.
    pub(crate) fn stream(&self, chunks: Vec<OutputChunk>) {
        self.state().chunks = chunks;
    }

    pub(crate) fn describe_calls(&self) -> usize {
        self.state().describe_calls
    }

    pub(crate) fn calls(&self) -> Vec<InferCall> {
        self.state().calls.clone()
    }

    /// What the model says of itself when described.
    pub(crate) fn description(&self) -> Description {
        self.state().description.clone()
    }

    /// A registry entry that still has to learn its description.
    pub(crate) fn entry(&self) -> ModelEntry {
        ModelEntry::single(self.id.clone(), "fake://", Arc::new(self.clone()))
    }

    /// A registry entry that is described and serving.
    pub(crate) fn described_entry(&self) -> ModelEntry {
        let entry = self.entry();
        entry.learn_description(self.state().description.clone());
        entry.replicas()[0].set_health(Health::Serving);
        entry
    }
}

impl ModelClient for FakeModel {
    fn infer(&self, call: InferCall) -> BoxFuture<'static, Result<Output, WorkerError>> {
        let (behaviour, count) = {
            let mut state = self.state();
            state.calls.push(call.clone());
            (state.behaviour.clone(), state.calls.len())
        };
        async move {
            match behaviour {
                Behaviour::Answer(delay) => {
                    tokio::time::sleep(delay).await;
                    Ok(Output {
                        text: Some(call.task_type.to_string()),
                        ..Output::default()
                    })
                }
                Behaviour::Fail(error) => Err(error),
                Behaviour::FailAfter(delay, error) => {
                    tokio::time::sleep(delay).await;
                    Err(error)
                }
                Behaviour::FailEvery(n, error) if (count - 1) % n.max(1) == 0 => Err(error),
                Behaviour::FailEvery(..) => Ok(Output {
                    text: Some(call.task_type.to_string()),
                    ..Output::default()
                }),
            }
        }
        .boxed()
    }

    fn infer_streaming(
        &self,
        call: InferCall,
        mut chunks: ChunkSink,
    ) -> BoxFuture<'static, Result<Output, WorkerError>> {
        for chunk in self.state().chunks.clone() {
            chunks(chunk);
        }
        self.infer(call)
    }

    fn describe(&self) -> BoxFuture<'static, Result<Description, WorkerError>> {
        let mut state = self.state();
        state.describe_calls += 1;
        futures::future::ready(Ok(state.description.clone())).boxed()
    }

    fn check_health(&self) -> BoxFuture<'static, Health> {
        let state = self.state();
        if state.hang_health {
            futures::future::pending().boxed()
        } else {
            futures::future::ready(state.health).boxed()
        }
    }
}
