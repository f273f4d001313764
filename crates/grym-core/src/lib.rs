//! The domain of grym orchestrator, free of any transport.
//!
//! A task travels through [`analysis`] (validate, recognise the input),
//! [`selection`] (rank the models that serve its type) and [`Orchestrator`]
//! (call the chosen model and build the result). Models live in the
//! [`Registry`], which [`probe`] keeps described and health-checked. Workers
//! are reached only through the [`ModelClient`] trait, which the server
//! implements over gRPC and tests implement with fakes.

pub mod analysis;
pub mod client;
pub mod error;
pub mod model;
pub mod orchestrator;
pub mod probe;
pub mod registry;
pub mod selection;
pub mod task;
#[cfg(test)]
mod testing;

pub use client::{InferCall, ModelClient, WorkerError, WorkerErrorKind};
pub use error::{Error, ErrorKind};
pub use model::{Capability, CapabilitySource, Description, Health, ModelId, ModelKind};
pub use orchestrator::{Orchestrator, OrchestratorSettings};
pub use registry::{ModelEntry, Registry};
pub use task::{
    Attempt, AttemptOutcome, Audio, Metrics, Output, Task, TaskError, TaskId, TaskInput,
    TaskResult, TaskStatus, TaskType,
};
