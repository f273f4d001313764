//! A composite as the caller wrote it, before planning checks it and
//! resolves its steps' waits, and the recipe that stood in for a task type.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::ids::{StepId, TaskType};
use crate::task::TaskInput;

/// The most steps a composite may have.
pub(crate) const MAX_STEPS: usize = 64;

/// How steps that name no `after` are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    /// Each step waits for the one before it.
    Sequential,
    /// Steps run at once.
    Parallel,
    /// The first step runs, then the others as branches on it; at least one
    /// branch with a condition must match.
    Conditional,
}

/// What a failed step does to the rest of the composite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FailurePolicy {
    /// The first failure cancels the steps running and those not started.
    #[default]
    FailFast,
    /// Steps that do not wait for the failed one go on.
    Continue,
}

/// What one step asks of its model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepTask {
    /// Its task type.
    pub task_type: TaskType,
    /// Its own input; without one it takes `input_from`'s output, or the
    /// composite's input.
    pub input: Option<TaskInput>,
    /// A step it waits for whose output (text, else JSON) is its input.
    pub input_from: Option<StepId>,
    /// Parameters, over the composite's.
    pub parameters: Map<String, Value>,
    /// Context, over the composite's.
    pub context: Map<String, Value>,
    /// Its own bound, within its share of the composite's deadline.
    pub timeout: Option<Duration>,
}

impl StepTask {
    /// A step of `task_type` that takes what it is given.
    pub fn of(task_type: TaskType) -> Self {
        Self {
            task_type,
            input: None,
            input_from: None,
            parameters: Map::new(),
            context: Map::new(),
            timeout: None,
        }
    }
}

/// One step as the caller wrote it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepSpec {
    /// Its id.
    pub id: StepId,
    /// What it asks.
    pub task: StepTask,
    /// The steps it waits for; the strategy decides when empty.
    pub after: Vec<StepId>,
    /// A CEL condition; the step runs only when it holds.
    pub when: Option<String>,
}

/// A composite as the caller wrote it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CompositeSpec {
    /// How steps that name no `after` are ordered.
    pub strategy: Strategy,
    /// The steps, in list order.
    pub steps: Vec<StepSpec>,
    /// What a failed step does to the others.
    pub failure_policy: FailurePolicy,
    /// The step whose output is the composite's.
    pub output_step: Option<StepId>,
}

/// Why and how a recipe stood in for a task type.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecipeUse {
    /// The task type it stands in for.
    pub task_type: TaskType,
    /// Its chain.
    pub chain: Vec<TaskType>,
    /// Why it was used.
    pub reason: String,
    /// For a fan-out, the type that merged the others (the last of
    /// `chain`); `None` for a chain.
    #[serde(default)]
    pub then: Option<TaskType>,
}

impl RecipeUse {
    /// The recipe as a reader would write it: `a -> b` for a chain,
    /// `a + b -> merge` for a fan-out.
    pub fn shape(&self) -> String {
        fn names(types: &[TaskType]) -> Vec<&str> {
            types.iter().map(TaskType::as_str).collect()
        }
        match &self.then {
            Some(then) => {
                let parallel = self.chain.split_last().map_or(&[][..], |(_, rest)| rest);
                format!("{} -> {then}", names(parallel).join(" + "))
            }
            None => names(&self.chain).join(" -> "),
        }
    }
}
