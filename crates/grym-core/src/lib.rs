//! The domain of grym orchestrator, free of any transport.
//!
//! The [`Orchestrator`] takes a task along its way: [`analysis`] validates
//! it and recognises its input; [`selection`] scores the models that serve
//! its type with [`scoring`], ranks them by policy and explains the choice;
//! the [`scheduler`] admits it, waits for its dependencies and queues it for
//! its model's slot; [`context`] shapes what the chosen model receives; the
//! model is called, with fallbacks on retriable failures; and every outcome
//! feeds the [`stats`] that the next selection reads. A [`composite`] task
//! runs as steps (in sequence, in parallel, on conditions), each taking
//! that way on its own model; a recipe chain stands in for a task type no
//! healthy model serves. Models live in the
//! [`Registry`], which [`probe`] keeps described and health-checked. Workers
//! are reached only through the [`ModelClient`] trait, which the server
//! implements over gRPC and tests implement with fakes.

pub mod analysis;
pub mod bottleneck;
pub mod client;
pub mod composite;
pub mod context;
pub mod error;
pub mod instruments;
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
    Attempt, AttemptOutcome, Audio, Metrics, Output, Priority, StepResult, Task, TaskError,
    TaskEvent, TaskId, TaskInput, TaskResult, TaskStatus, TaskType,
};
