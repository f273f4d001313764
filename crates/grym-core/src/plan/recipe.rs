//! Recipes: chains of task types that stand in for a task type no healthy
//! model serves, for example `audio_question_answering` as `transcription`
//! then `text_generation` while GAMA is down.
//!
//! A recipe is used only when planning the task type directly fails (no
//! model serves it, or every one that does is down) and every type of its
//! chain can be planned. The chain runs as a sequential composite: the
//! first step takes the task's input, each next one the previous output,
//! (`input_from`), and every step the task's parameters and context, with
//! the previous output reshaped for its model under `steps.<step id>`.
//!
//! Recipes are frozen into a plan when a task is submitted (or planned by
//! `PlanTask`): a task that waited for dependencies is planned again
//! without them, and a composite's own steps never use one.

use std::collections::{HashMap, HashSet};

use crate::error::SettingError;
use crate::ids::{NameError, StepId, TaskType};
use crate::task::{CompositeSpec, FailurePolicy, MAX_STEPS, StepSpec, StepTask, Strategy};

/// Recipes by the task type they stand in for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recipes {
    chains: HashMap<TaskType, Vec<TaskType>>,
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

    /// The built-in recipes with the configured ones over them: a table of
    /// task type -> chain, where an empty chain removes a built-in recipe.
    /// Errors name the task type (`loop`, for `recipes.loop`).
    pub fn configured(table: HashMap<String, Vec<String>>) -> Result<Self, SettingError> {
        let mut entries: Vec<_> = table.into_iter().collect();
        entries.sort();
        let mut recipes = Self::with_defaults();
        for (task_type, chain) in entries {
            let invalid = |reason: String| SettingError::new(task_type.as_str(), reason);
            let name = TaskType::new(task_type.as_str()).map_err(|_| {
                invalid("the task type must be a non-empty name without spaces".to_owned())
            })?;
            let chain = chain
                .into_iter()
                .map(|step| {
                    TaskType::new(step.as_str())
                        .map_err(|_| invalid(format!("`{step}` is not a task type")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if chain.contains(&name) {
                return Err(invalid(
                    "a recipe cannot contain the type it stands in for".to_owned(),
                ));
            }
            if chain.len() > MAX_STEPS {
                return Err(invalid(format!("more than {MAX_STEPS} steps")));
            }
            // The chain's steps must make a composite (ids within bounds).
            composite(&chain).map_err(|error| invalid(format!("invalid step id: {error}")))?;
            recipes = recipes.with(name, chain);
        }
        Ok(recipes)
    }

    /// Adds (or with an empty chain, removes) the recipe for `task_type`.
    pub(crate) fn with(mut self, task_type: TaskType, chain: Vec<TaskType>) -> Self {
        if chain.is_empty() {
            self.chains.remove(&task_type);
        } else {
            self.chains.insert(task_type, chain);
        }
        self
    }

    /// The chain for `task_type`, if there is one.
    pub(crate) fn get(&self, task_type: &TaskType) -> Option<&[TaskType]> {
        self.chains.get(task_type).map(Vec::as_slice)
    }
}

/// The sequential composite of a chain: one step per type, named after it
/// (`text_generation`, then `text_generation_2` if a type comes again, or
/// `_3`... until the id is free). Refused only for a type so long that
/// its suffixed id is over the limit of a step id.
pub(crate) fn composite(chain: &[TaskType]) -> Result<CompositeSpec, NameError> {
    let mut taken: HashSet<String> = HashSet::new();
    let mut previous: Option<StepId> = None;
    let mut steps = Vec::with_capacity(chain.len());
    for task_type in chain {
        let mut id = task_type.as_str().to_owned();
        let mut n = 1;
        while taken.contains(&id) {
            n += 1;
            id = format!("{task_type}_{n}");
        }
        taken.insert(id.clone());
        let id = StepId::new(id)?;
        let task = StepTask {
            input_from: previous.replace(id.clone()),
            ..StepTask::of(task_type.clone())
        };
        steps.push(StepSpec {
            id,
            task,
            after: Vec::new(),
            when: None,
        });
    }
    Ok(CompositeSpec {
        strategy: Strategy::Sequential,
        steps,
        failure_policy: FailurePolicy::FailFast,
        output_step: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TaskType {
        TaskType::new(name).unwrap()
    }

    #[test]
    fn a_chain_becomes_a_sequence_with_unique_step_ids() {
        let spec = composite(&[t("transcription"), t("summarize"), t("summarize")]).unwrap();
        let ids: Vec<&str> = spec.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["transcription", "summarize", "summarize_2"]);
        let clash = composite(&[t("a"), t("a_2"), t("a")]).unwrap();
        let ids: Vec<&str> = clash.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "a_2", "a_3"]);
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

    #[test]
    fn configured_recipes_extend_the_built_in_ones_and_an_empty_chain_removes_one() {
        let table = |entries: &[(&str, &[&str])]| -> HashMap<String, Vec<String>> {
            entries
                .iter()
                .map(|(name, chain)| {
                    let chain = chain.iter().map(|step| (*step).to_owned()).collect();
                    ((*name).to_owned(), chain)
                })
                .collect()
        };
        let recipes = Recipes::configured(table(&[
            ("audio_summary", &["transcription", "summarization"]),
            ("audio_question_answering", &[]),
        ]))
        .unwrap();
        let chain: Vec<&str> = recipes
            .get(&t("audio_summary"))
            .unwrap()
            .iter()
            .map(TaskType::as_str)
            .collect();
        assert_eq!(chain, ["transcription", "summarization"]);
        assert!(recipes.get(&t("audio_question_answering")).is_none());
        let defaults = Recipes::configured(HashMap::new()).unwrap();
        assert!(defaults.get(&t("audio_question_answering")).is_some());
        let error = Recipes::configured(table(&[("loop", &["loop"])])).unwrap_err();
        assert_eq!(error.key, "loop");
        let error = Recipes::configured(table(&[("bad", &["has space"])])).unwrap_err();
        assert!(error.reason.contains("has space"), "{error}");
    }
}
