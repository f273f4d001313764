//! The plan of a composite as `PlanTask` shows it: its stages, critical
//! path and each step's routing now.

use std::time::Duration;

use tokio::time::Instant;

use super::CompositeRun;
use super::selection::Selector;
use crate::ids::{StepId, TaskType};
use crate::registry::Registry;
use crate::task::{FailurePolicy, RecipeUse, Routing, Strategy};

/// How a composite would run, for `PlanTask`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositePlan {
    /// Its strategy.
    pub strategy: Strategy,
    /// Its failure policy.
    pub failure_policy: FailurePolicy,
    /// The steps, in list order.
    pub steps: Vec<StepPlan>,
    /// The steps by stage: those of one stage run in parallel.
    pub stages: Vec<Vec<StepId>>,
    /// The longest estimated path.
    pub critical_path: Vec<StepId>,
    /// The sum of the estimates along it.
    pub estimated_latency: Duration,
    /// The named output step.
    pub output_step: Option<StepId>,
    /// The recipe it stands for, if it is one.
    pub recipe: Option<RecipeUse>,
}

/// How one step would run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    /// The step.
    pub step: StepId,
    /// Its task type.
    pub task_type: TaskType,
    /// The steps it waits for.
    pub after: Vec<StepId>,
    /// Its condition.
    pub when: Option<String>,
    /// Its stage.
    pub stage: u32,
    /// How it would be routed now; absent when no model serves it now.
    pub routing: Option<Routing>,
    /// Whether it is on the critical path.
    pub critical: bool,
}

impl CompositeRun {
    /// The plan of the composite as it would run now.
    pub(crate) fn view(
        &self,
        selector: &Selector,
        registry: &Registry,
        now: Instant,
    ) -> CompositePlan {
        let graph = &self.graph;
        let (critical, estimated_latency) = graph.critical_path(&self.estimates);
        let id = |i: usize| graph.nodes[i].spec.id.clone();
        CompositePlan {
            strategy: graph.strategy,
            failure_policy: graph.failure_policy,
            steps: graph
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| StepPlan {
                    step: node.spec.id.clone(),
                    task_type: node.spec.task.task_type.clone(),
                    after: node.after.iter().map(|&j| id(j)).collect(),
                    when: node.condition.as_ref().map(|c| c.source().to_owned()),
                    stage: node.stage,
                    routing: selector
                        .plan_for(&node.spec.task.task_type, self.step_input(i), registry, now)
                        .ok()
                        .map(|plan| plan.routing()),
                    critical: critical.contains(&i),
                })
                .collect(),
            stages: graph
                .stages()
                .into_iter()
                .map(|stage| stage.into_iter().map(id).collect())
                .collect(),
            critical_path: critical.iter().map(|&i| id(i)).collect(),
            estimated_latency,
            output_step: graph.output.map(id),
            recipe: self.recipe.clone(),
        }
    }
}
