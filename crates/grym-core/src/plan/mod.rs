//! Step 2 of a task's way: how it will run.
//!
//! - [`analysis`] checks what a task carries and recognises its input;
//! - [`scoring`] scores each candidate model (pure arithmetic);
//! - [`selection`] ranks the candidates by policy and says why;
//! - [`recipe`] holds the chains that stand in for a task type no healthy
//!   model serves (a model that has not described itself counts as absent);
//! - [`graph`] checks a composite and resolves its steps' waits;
//! - [`view`] is the plan of a composite as `PlanTask` shows it.
//!
//! The [`Planner`] puts them together: a single task gets its ranked
//! models, a composite its graph with each step's estimate, and a task
//! type that no healthy model serves its recipe chain, when every step of
//! the chain can be planned. Planning reads the registry and statistics as
//! they are at that moment and changes nothing.

pub(crate) mod analysis;
pub(crate) mod graph;
pub(crate) mod recipe;
pub(crate) mod scoring;
pub(crate) mod selection;
pub(crate) mod view;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use self::graph::{Graph, budget};
use self::recipe::Recipes;
use self::selection::{Plan, Selector};
use crate::error::Error;
use crate::ids::Modality;
use crate::ids::TaskType;
use crate::limits::Limits;
use crate::registry::Registry;
use crate::task::{Reason, RecipeUse, Routing, StepTask, Task};

/// How a task will run.
pub(crate) enum Planned {
    /// On one model, with fallbacks.
    Single(Plan),
    /// As steps.
    Composite(Arc<CompositeRun>),
}

impl Planned {
    /// The routing a task's result shows before it runs.
    pub(crate) fn routing(&self, task_type: &TaskType) -> Routing {
        match self {
            Self::Single(plan) => plan.routing(),
            Self::Composite(run) => run.routing(task_type),
        }
    }
}

/// A composite, checked, with what its steps were estimated to take.
#[derive(Debug)]
pub(crate) struct CompositeRun {
    pub(crate) graph: Graph,
    /// Each step's estimated latency when the composite was planned.
    pub(crate) estimates: Vec<Duration>,
    /// The recipe it stands for, if it is one.
    pub(crate) recipe: Option<RecipeUse>,
    /// The composite's input: what a step without its own input, nor
    /// `input_from`, receives.
    pub(crate) input: Modality,
}

impl CompositeRun {
    /// What step `i` receives, when that is known before it runs: its own
    /// input, else the composite's, unless it reads another step's output.
    pub(crate) fn step_input(&self, i: usize) -> Option<Modality> {
        step_input(&self.graph.nodes[i].spec.task, self.input)
    }
}

/// What a step receives, when that is known before it runs.
fn step_input(step: &StepTask, composite: Modality) -> Option<Modality> {
    match (&step.input, &step.input_from) {
        (Some(input), _) => Some(input.modality()),
        (None, Some(_)) => None,
        (None, None) => Some(composite),
    }
}

impl CompositeRun {
    /// The routing the composite itself shows.
    fn routing(&self, task_type: &TaskType) -> Routing {
        let (_, estimate) = self.graph.critical_path(&self.estimates);
        match &self.recipe {
            Some(recipe) => Routing::composite(
                task_type.clone(),
                Reason::Recipe,
                estimate,
                format!("{}; the recipe {} stands in", recipe.reason, recipe.shape()),
            ),
            None => Routing::composite(
                task_type.clone(),
                Reason::Composite,
                estimate,
                format!(
                    "a {:?} composite of {} step(s), each routed on its own",
                    self.graph.strategy,
                    self.graph.nodes.len()
                )
                .to_lowercase(),
            ),
        }
    }
}

/// Plans tasks over a registry: selection and recipes.
#[derive(Debug)]
pub(crate) struct Planner {
    pub(crate) selector: Selector,
    recipes: Recipes,
    limits: Limits,
}

impl Planner {
    pub(crate) fn new(selector: Selector, recipes: Recipes, limits: Limits) -> Self {
        Self {
            selector,
            recipes,
            limits,
        }
    }

    /// What one request may carry.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How `task` will run: on the models that serve its type, as its
    /// composite's steps, or, when no healthy model serves its type (none
    /// declares it, those that do are down, or those that might have not
    /// described themselves yet), as the type's recipe chain if every step
    /// of it can be planned. A
    /// composite's steps leave the task for the plan.
    pub(crate) fn plan(
        &self,
        task: &mut Task,
        registry: &Registry,
        now: Instant,
    ) -> Result<Planned, Error> {
        let input = task.input.modality();
        if let Some(spec) = task.composite.take() {
            let graph = Graph::build(*spec, &self.limits)?;
            let estimates = self.estimate_steps(&graph, input, registry, now)?;
            return Ok(Planned::Composite(Arc::new(CompositeRun {
                graph,
                estimates,
                recipe: None,
                input,
            })));
        }
        match self
            .selector
            .plan_for(&task.task_type, Some(input), registry, now)
        {
            Ok(plan) => Ok(Planned::Single(plan)),
            // A model that has never described itself may serve the type
            // or not: until it says, the recipe stands in for it.
            Err(
                error @ (Error::NoModelForTaskType { .. }
                | Error::NoHealthyModel { .. }
                | Error::Undescribed { .. }
                | Error::InputNotAccepted { .. }),
            ) => {
                let Some(found) = self.recipes.get(&task.task_type) else {
                    return Err(error);
                };
                let spec = recipe::composite(found)
                    .map_err(|error| Error::invalid_name("task.composite.steps.id", error))?;
                let graph = Graph::build(spec, &self.limits)?;
                // A chain that cannot run either leaves the direct error,
                // which names the task type asked for.
                let Ok(estimates) = self.estimate_steps(&graph, input, registry, now) else {
                    return Err(error);
                };
                Ok(Planned::Composite(Arc::new(CompositeRun {
                    graph,
                    estimates,
                    recipe: Some(RecipeUse {
                        task_type: task.task_type.clone(),
                        chain: found.types(),
                        reason: error.to_string(),
                        then: found.then().cloned(),
                    }),
                    input,
                })))
            }
            Err(error) => Err(error),
        }
    }

    /// Each step's estimated latency, an unknown one counting as the mean
    /// of the others; an error names a step no model can serve (with the
    /// input it receives, when that is known).
    fn estimate_steps(
        &self,
        graph: &Graph,
        input: Modality,
        registry: &Registry,
        now: Instant,
    ) -> Result<Vec<Duration>, Error> {
        let mut estimates = graph
            .nodes
            .iter()
            .map(|node| {
                let task = &node.spec.task;
                self.selector
                    .plan_for(&task.task_type, step_input(task, input), registry, now)
                    .map(|plan| plan.estimated_latency)
                    .map_err(|error| Error::InStep {
                        step: node.spec.id.clone(),
                        error: Box::new(error),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        budget::fill_unknown(&mut estimates);
        Ok(estimates)
    }
}
