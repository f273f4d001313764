//! A composite, checked: its steps with their waits resolved.
//!
//! A [`CompositeSpec`] is what the caller asked; [`Graph::build`] checks it
//! once, at submission (ids, waits, cycles, conditions and the steps they
//! read), and resolves every step's waits, so that running it needs no
//! more checks. Steps that name no `after` wait for what the strategy says:
//! the previous step (sequential), nothing (parallel), or the first step
//! (conditional, whose other steps are branches on it).
//!
//! - [`condition`] compiles and evaluates `when` expressions (CEL);
//! - [`budget`] shares the composite's deadline along its critical path.
//!
//! The executor runs a graph (`exec::composite`).

pub(crate) mod budget;
pub(crate) mod condition;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use self::condition::Condition;
use crate::error::Error;
use crate::ids::StepId;
use crate::limits::Limits;
use crate::task::{CompositeSpec, FailurePolicy, StepSpec, Strategy};

/// One step, checked, with its waits resolved.
#[derive(Debug)]
pub(crate) struct Node {
    /// The step as written.
    pub(crate) spec: StepSpec,
    /// The steps it waits for, by index, ascending.
    pub(crate) after: Vec<usize>,
    /// The steps that wait for it, by index, ascending.
    pub(crate) successors: Vec<usize>,
    /// Its compiled condition.
    pub(crate) condition: Option<Condition>,
    /// The step whose output is its input, by index.
    pub(crate) input_from: Option<usize>,
    /// Its depth: 0 for steps that wait for none, else one more than the
    /// deepest step it waits for. Steps of one stage run in parallel.
    pub(crate) stage: u32,
}

impl Node {
    /// Whether it is a branch: a step with a condition that waits for
    /// another (the first step of a conditional composite is not one).
    pub(crate) fn is_branch(&self) -> bool {
        self.condition.is_some() && !self.after.is_empty()
    }
}

/// A composite, checked and ready to run.
#[derive(Debug)]
pub(crate) struct Graph {
    /// Its strategy.
    pub(crate) strategy: Strategy,
    /// Its failure policy.
    pub(crate) failure_policy: FailurePolicy,
    /// The steps, in list order.
    pub(crate) nodes: Vec<Node>,
    /// The named output step, by index.
    pub(crate) output: Option<usize>,
    /// The steps in an order where each comes after those it waits for.
    pub(crate) order: Vec<usize>,
}

fn invalid(field: &'static str, step: &StepId, reason: impl fmt::Display) -> Error {
    Error::invalid(field, format!("step `{step}`: {reason}"))
}

impl Graph {
    /// Checks a composite: every problem is `InvalidRequest` naming the
    /// field and the step.
    pub(crate) fn build(spec: CompositeSpec, limits: &Limits) -> Result<Self, Error> {
        let CompositeSpec {
            strategy,
            steps,
            failure_policy,
            output_step,
        } = spec;
        if steps.is_empty() {
            return Err(Error::invalid(
                "task.composite.steps",
                "a composite needs at least one step",
            ));
        }
        if steps.len() > limits.max_steps {
            return Err(Error::invalid(
                "task.composite.steps",
                format!(
                    "{} steps, over the limit of {}",
                    steps.len(),
                    limits.max_steps
                ),
            ));
        }
        let mut index = HashMap::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            if index.insert(step.id.clone(), i).is_some() {
                return Err(invalid(
                    "task.composite.steps.id",
                    &step.id,
                    "the id is used by another step",
                ));
            }
        }

        let mut after = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            if step.after.len() > limits.max_depends_on {
                return Err(invalid(
                    "task.composite.steps.after",
                    &step.id,
                    format!(
                        "lists {} steps, over the limit of {}",
                        step.after.len(),
                        limits.max_depends_on
                    ),
                ));
            }
            let mut waits = if step.after.is_empty() {
                match (strategy, i) {
                    (_, 0) | (Strategy::Parallel, _) => Vec::new(),
                    (Strategy::Sequential, _) => vec![i - 1],
                    (Strategy::Conditional, _) => vec![0],
                }
            } else {
                step.after
                    .iter()
                    .map(|id| match index.get(id) {
                        Some(&j) if j == i => Err(invalid(
                            "task.composite.steps.after",
                            &step.id,
                            "a step cannot wait for itself",
                        )),
                        Some(&j) => Ok(j),
                        None => Err(invalid(
                            "task.composite.steps.after",
                            &step.id,
                            format!("waits for unknown step `{id}`"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            };
            waits.sort_unstable();
            waits.dedup();
            after.push(waits);
        }
        let mut successors = vec![Vec::new(); steps.len()];
        for (i, waits) in after.iter().enumerate() {
            for &j in waits {
                successors[j].push(i);
            }
        }

        // Kahn's algorithm, taking ready steps in list order.
        let mut waiting: Vec<usize> = after.iter().map(Vec::len).collect();
        let mut ready: Vec<usize> = (0..steps.len())
            .filter(|&i| waiting[i] == 0)
            .rev()
            .collect();
        let mut order = Vec::with_capacity(steps.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for &next in successors[i].iter().rev() {
                waiting[next] -= 1;
                if waiting[next] == 0 {
                    ready.push(next);
                }
            }
        }
        if order.len() < steps.len() {
            let stuck: Vec<String> = (0..steps.len())
                .filter(|&i| waiting[i] > 0)
                .map(|i| format!("`{}`", steps[i].id))
                .collect();
            return Err(Error::invalid(
                "task.composite.steps.after",
                format!(
                    "steps {} are on a cycle of waits, or wait for one",
                    stuck.join(", ")
                ),
            ));
        }

        // Which steps each one waits for, directly or not (at most 64).
        let mut ancestors = vec![0_u64; steps.len()];
        let mut stages = vec![0_u32; steps.len()];
        for &i in &order {
            for &j in &after[i] {
                ancestors[i] |= ancestors[j] | (1 << j);
                stages[i] = stages[i].max(stages[j] + 1);
            }
        }

        let mut nodes = Vec::with_capacity(steps.len());
        for (i, ((spec, after), successors)) in
            steps.into_iter().zip(after).zip(successors).enumerate()
        {
            let condition = match spec.when.as_deref().filter(|w| !w.trim().is_empty()) {
                None => None,
                Some(source) => {
                    let condition = Condition::compile(source, limits).map_err(|problem| {
                        invalid("task.composite.steps.when", &spec.id, problem)
                    })?;
                    for read in condition.steps() {
                        let waited = StepId::new(read.as_str())
                            .ok()
                            .and_then(|id| index.get(&id))
                            .map(|&j| ancestors[i] & (1 << j) != 0);
                        match waited {
                            Some(true) => {}
                            Some(false) => {
                                return Err(invalid(
                                    "task.composite.steps.when",
                                    &spec.id,
                                    format!(
                                        "reads step `{read}`, which it does not wait for; add it to `after`"
                                    ),
                                ));
                            }
                            None => {
                                return Err(invalid(
                                    "task.composite.steps.when",
                                    &spec.id,
                                    format!("reads unknown step `{read}`"),
                                ));
                            }
                        }
                    }
                    Some(condition)
                }
            };
            let input_from = match &spec.task.input_from {
                None => None,
                Some(from) => match index.get(from) {
                    Some(&j) if ancestors[i] & (1 << j) != 0 => Some(j),
                    Some(_) => {
                        return Err(invalid(
                            "task.composite.steps.task.input_from",
                            &spec.id,
                            format!(
                                "takes its input from step `{from}`, which it does not wait for"
                            ),
                        ));
                    }
                    None => {
                        return Err(invalid(
                            "task.composite.steps.task.input_from",
                            &spec.id,
                            format!("takes its input from unknown step `{from}`"),
                        ));
                    }
                },
            };
            nodes.push(Node {
                spec,
                after,
                successors,
                condition,
                input_from,
                stage: stages[i],
            });
        }
        let output = match output_step {
            None => None,
            Some(id) => Some(*index.get(&id).ok_or_else(|| {
                Error::invalid(
                    "task.composite.output_step",
                    format!("names unknown step `{id}`"),
                )
            })?),
        };
        Ok(Self {
            strategy,
            failure_policy,
            nodes,
            output,
            order,
        })
    }

    /// The steps grouped by stage, each group in list order.
    pub(crate) fn stages(&self) -> Vec<Vec<usize>> {
        let depth = self.nodes.iter().map(|n| n.stage).max().unwrap_or(0);
        let mut stages = vec![Vec::new(); depth as usize + 1];
        for (i, node) in self.nodes.iter().enumerate() {
            stages[node.stage as usize].push(i);
        }
        stages
    }

    /// Whether the composite's branches must match: a conditional one with
    /// at least one branch.
    pub(crate) fn needs_a_match(&self) -> bool {
        self.strategy == Strategy::Conditional && self.nodes.iter().any(Node::is_branch)
    }

    /// For each step, the longest estimated path from it to the end.
    pub(crate) fn paths_ahead(&self, estimates: &[Duration]) -> Vec<Duration> {
        let successors: Vec<Vec<usize>> = self.nodes.iter().map(|n| n.successors.clone()).collect();
        budget::paths_ahead(estimates, &successors, &self.order)
    }

    /// The critical path: from the step with the longest path ahead, each
    /// time to the successor with the longest path ahead.
    pub(crate) fn critical_path(&self, estimates: &[Duration]) -> (Vec<usize>, Duration) {
        let ahead = self.paths_ahead(estimates);
        let longest = |steps: &mut dyn Iterator<Item = usize>| {
            steps.max_by_key(|&i| (ahead[i], std::cmp::Reverse(i)))
        };
        let mut path = Vec::new();
        let mut next =
            longest(&mut (0..self.nodes.len()).filter(|&i| self.nodes[i].after.is_empty()));
        let total = next.map(|i| ahead[i]).unwrap_or_default();
        while let Some(i) = next {
            path.push(i);
            next = longest(&mut self.nodes[i].successors.iter().copied());
        }
        (path, total)
    }
}

#[cfg(test)]
mod tests;
