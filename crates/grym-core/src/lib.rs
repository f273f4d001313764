//! The domain of grym orchestrator, free of any transport.
//!
//! The [`Orchestrator`] takes a task along its way, one room each:
//!
//! | step | where |
//! | --- | --- |
//! | 1. analyse: validate and recognise the input | `plan::analysis` |
//! | 2. plan: score, rank, explain; composites and recipes | `plan` |
//! | 3. schedule: admission, dependencies, each model's queue | `schedule` |
//! | 4. prepare context: sessions, transformers, the cache | `context` |
//! | 5. execute: the fallback loop and each worker call | `exec::attempt` |
//! | 6. record: live tasks and kept results | `history` |
//! | 7. feedback: the statistics the next selection reads | `registry::stats` |
//! | 8. watch: bottlenecks and metrics | `watch` |
//!
//! The names everything uses live in a leaf module (`ids`); the data a
//! result carries in `task`; the core's words for failures in [`Error`]
//! and [`FailureKind`]. Everything another crate uses is re-exported here,
//! and only here. Models live in the [`Registry`], which the
//! [`probe`] keeps described and health-checked. Workers are
//! reached only through the [`ModelClient`] trait, which the server
//! implements over gRPC and tests implement with fakes.
//!
//! The modules' own `use crate::` arrows point one way, down this list:
//! `exec` -> `watch` -> `history` -> `store` -> `schedule` -> `plan` -> `context` ->
//! `registry` -> `client` -> `task` -> `model` -> `limits` -> `deadline` ->
//! `error` -> `ids`.

mod client;
mod context;
mod deadline;
mod error;
mod exec;
mod history;
mod ids;
mod limits;
mod model;
mod plan;
mod registry;
mod schedule;
mod store;
mod task;
#[cfg(test)]
mod testing;
mod watch;

pub use client::{ChunkSink, InferCall, ModelClient, WorkerError};
pub use context::{CacheStats, ContextSettings, SessionEntry, SessionSnapshot, TemplateSpec};
pub use deadline::Deadline;
pub use error::{Error, ErrorKind, FailureKind, SettingError, Shed};
pub use exec::{
    CapabilityView, HedgingSettings, ModelView, Orchestrator, OrchestratorSettings, ReplicaView,
    TaskHandle,
};
pub use ids::{
    Modality, ModelId, ModelKind, NameError, Priority, SessionId, StepId, TaskId, TaskType, Tenant,
};
pub use limits::Limits;
pub use model::{Capability, CapabilitySource, Description, Health};
pub use plan::analysis::Requirements;
pub use plan::recipe::{FanOutSpec, RecipeSpec, Recipes};
pub use plan::selection::{Route, SelectionSettings};
pub use plan::view::{CompositePlan, StepPlan};
pub use registry::{
    BudgetUse, CallOutcome, Chosen, EjectionSettings, ModelEntry, Registry, Replica,
    ReplicaChanges, Replicas, RetrySettings, StatsSnapshot, probe,
};
pub use schedule::SchedulerSettings;
pub use store::{
    DurabilitySettings, Outcome, Store, StoreError, StoreFuture, StoredSession, TaskKey, TaskRecord,
};
pub use task::{
    Attempt, AttemptOutcome, Audio, CandidateScore, CompositeSpec, Exclusion, FailurePolicy,
    Metrics, Output, OutputChunk, Policy, Reason, RecipeUse, Routing, ScoreBreakdown, StepResult,
    StepSpec, StepTask, Strategy, Task, TaskError, TaskEvent, TaskInput, TaskResult, TaskStatus,
};
pub use watch::detector::{BottleneckSettings, Finding};

/// The internals the benchmarks measure (the queue, a model's slots, the
/// context cache, selection), public for them alone: the benchmarks turn the
/// `bench-internals` feature on; nothing else should.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::context::cache::TransformCache;
    pub use crate::context::canonical::{ContentHash, weight};
    pub use crate::context::transform::Transformers;
    pub use crate::plan::scoring::ScoringSettings;
    pub use crate::plan::selection::{Candidate, Plan, Selector};
    pub use crate::schedule::queue::{PriorityQueue, QueueKey};
    pub use crate::schedule::slots::ModelSlots;
}
