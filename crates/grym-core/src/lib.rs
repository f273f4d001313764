//! The domain of grym orchestrator, free of any transport.
//!
//! A task travels through [`analysis`] (validate, recognise the input),
//! [`selection`] (score the models that serve its type with [`scoring`],
//! rank them by policy, explain the choice) and [`Orchestrator`] (call the
//! chosen model, fall back on retriable failures, feed every outcome back
//! into [`stats`], build the result). Models live in the [`Registry`], which
//! [`probe`] keeps described and health-checked. Workers are reached only
//! through the [`ModelClient`] trait, which the server implements over gRPC
//! and tests implement with fakes.

pub mod analysis;
pub mod client;
pub mod context;
pub mod error;
pub mod model;
pub mod orchestrator;
pub mod probe;
pub mod registry;
pub mod scheduler;
pub mod scoring;
pub mod selection;
pub mod stats;
pub mod task;
#[cfg(test)]
mod testing;

pub use client::{InferCall, ModelClient, WorkerError, WorkerErrorKind};
pub use error::{Error, ErrorKind};
pub use model::{Capability, CapabilitySource, Description, Health, ModelId, ModelKind};
pub use orchestrator::TaskHandle;
pub use orchestrator::{Orchestrator, OrchestratorSettings};
pub use registry::{ModelEntry, Registry, Replica};
pub use scheduler::SchedulerSettings;
pub use selection::{Policy, Route, SelectionSettings};
pub use task::{
    Attempt, AttemptOutcome, Audio, Metrics, Output, Priority, Task, TaskError, TaskEvent, TaskId,
    TaskInput, TaskResult, TaskStatus, TaskType,
};
