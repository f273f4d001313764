//! Recipes: chains of task types that stand in for a task type no healthy
//! model serves, for example `audio_question_answering` as `transcription`
//! then `text_generation` while GAMA is down.
//!
//! A recipe is used only when planning the task type directly fails (no
//! model serves it, or every one that does is down) and every type of its
//! chain can be planned. The chain runs as a sequential composite: the
//! first step takes the task's input, each next one the previous output,
//! (`input_from`), and every step the task's parameters and context, with
//! the previous output reshaped for its model under `steps.<type>`.

use std::collections::HashMap;

use super::{CompositeSpec, FailurePolicy, StepId, StepSpec, StepTask, Strategy};
use crate::task::TaskType;

/// Recipes by the task type they stand in for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recipes {
    chains: HashMap<TaskType, Vec<TaskType>>,
}

/// Why and how a recipe stood in for a task type.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeUse {
    /// The task type it stands in for.
    pub task_type: TaskType,
    /// Its chain.
    pub chain: Vec<TaskType>,
    /// Why it was used.
    pub reason: String,
}

impl Recipes {
    /// The built-in recipe: `audio_question_answering` as a transcript then
    /// a text model.
    pub fn with_defaults() -> Self {
        Self::default().with(
            TaskType::literal("audio_question_answering"),
            vec![
                TaskType::literal("transcription"),
                TaskType::literal("text_generation"),
            ],
        )
    }

    /// Adds (or with an empty chain, removes) the recipe for `task_type`.
    pub fn with(mut self, task_type: TaskType, chain: Vec<TaskType>) -> Self {
        if chain.is_empty() {
            self.chains.remove(&task_type);
        } else {
            self.chains.insert(task_type, chain);
        }
        self
    }

    /// The chain for `task_type`, if there is one.
    pub fn get(&self, task_type: &TaskType) -> Option<&[TaskType]> {
        self.chains.get(task_type).map(Vec::as_slice)
    }

    /// The recipes, sorted by task type.
    pub fn iter(&self) -> impl Iterator<Item = (&TaskType, &[TaskType])> {
        let mut all: Vec<_> = self.chains.iter().map(|(t, c)| (t, c.as_slice())).collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }
}

/// The sequential composite of a chain: one step per type, named after it
/// (`text_generation`, then `text_generation_2` if a type comes again).
pub fn composite(chain: &[TaskType]) -> CompositeSpec {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut previous: Option<StepId> = None;
    let steps = chain
        .iter()
        .map(|task_type| {
            let count = seen.entry(task_type.as_str()).or_insert(0);
            *count += 1;
            let id = if *count == 1 {
                task_type.as_str().to_owned()
            } else {
                format!("{task_type}_{count}")
            };
            // A task type is a valid step id: the same rules, and the suffix
            // adds no space.
            let id = StepId(id);
            let task = StepTask {
                input_from: previous.replace(id.clone()),
                ..StepTask::of(task_type.clone())
            };
            StepSpec {
                id,
                task,
                after: Vec::new(),
                when: None,
            }
        })
        .collect();
    CompositeSpec {
        strategy: Strategy::Sequential,
        steps,
        failure_policy: FailurePolicy::FailFast,
        output_step: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TaskType {
        TaskType::new(name).unwrap()
    }

    #[test]
    fn a_chain_becomes_a_sequence_with_unique_step_ids() {
        let spec = composite(&[t("transcription"), t("summarize"), t("summarize")]);
        let ids: Vec<&str> = spec.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["transcription", "summarize", "summarize_2"]);
        assert_eq!(spec.strategy, Strategy::Sequential);
        assert!(spec.steps.iter().all(|s| s.task.input.is_none()));
        let from: Vec<Option<&str>> = spec
            .steps
            .iter()
            .map(|s| s.task.input_from.as_ref().map(StepId::as_str))
            .collect();
        assert_eq!(from, [None, Some("transcription"), Some("summarize")]);
    }

    #[test]
    fn an_empty_chain_removes_a_default() {
        let recipes = Recipes::with_defaults();
        assert!(recipes.get(&t("audio_question_answering")).is_some());
        let none = recipes.with(t("audio_question_answering"), Vec::new());
        assert!(none.get(&t("audio_question_answering")).is_none());
    }
}
