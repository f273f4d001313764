//! Scheduling: which task runs when.
//!
//! - [`queue`]: the priority queue with aging, a plain data structure.
//! - [`slots`]: each model's concurrency limit and its own queue of waiting
//!   calls.
//! - [`deps`]: the checks of a task's dependencies at submission.
//! - [`store`]: live tasks, and finished results kept for a while.
//!
//! The [`Orchestrator`](crate::Orchestrator) drives them: it admits a task
//! (bounded by `max_queue`, refused at once when full), lets it wait for its
//! dependencies, queues it for its model's slot, and runs it; a deadline
//! that passes while the task waits ends it without a worker ever seeing
//! it.

use std::time::Duration;

pub mod deps;
pub mod queue;
pub mod slots;
pub mod store;

/// Settings of scheduling.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerSettings {
    /// The most tasks waiting (for dependencies or a model) at once.
    pub max_queue: usize,
    /// How long a waiting task takes to rise one priority level.
    pub aging_interval: Duration,
    /// Calls a model takes at once when it declares no limit.
    pub default_model_concurrency: u32,
    /// How many finished results are kept for `GetTask`.
    pub max_results: u64,
    /// How long a finished result is kept.
    pub result_retention: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            max_queue: 10_000,
            aging_interval: Duration::from_secs(5),
            default_model_concurrency: 64,
            max_results: 10_000,
            result_retention: Duration::from_secs(600),
        }
    }
}
