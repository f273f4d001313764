//! Recipes: task types that stand in together for a task type no healthy
//! model serves, for example `audio_question_answering` as `transcription`
//! then `text_generation` while GAMA is down.
//!
//! A recipe is used only when planning the task type directly fails (no
//! model serves it, or every one that does is down) and every type of it
//! can be planned. A chain runs as a sequential composite: the first step
//! takes the task's input, each next one the previous output
//! (`input_from`), and every step the task's parameters and context, with
//! the previous output reshaped for its model under `steps.<step id>`. A
//! fan-out runs its `parallel` types at once on the task's input, then its
//! `then` type on the same input with every parallel step's output under
//! `steps.<step id>`: the `then` step merges them, and its output is the
//! task's.
//!
//! Recipes are frozen into a plan when a task is submitted (or planned by
//! `PlanTask`): a task that waited for dependencies is planned again
//! without them, and a composite's own steps never use one.

use std::collections::{HashMap, HashSet};

use crate::error::SettingError;
use crate::ids::{NameError, StepId, TaskType};
use crate::task::{CompositeSpec, FailurePolicy, MAX_STEPS, StepSpec, StepTask, Strategy};

/// A recipe as configuration writes it: a list of task types (a chain),
/// or `{ parallel = [...], then = "..." }` (a fan-out).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum RecipeSpec {
    /// Task types run one after another, each on the previous output; an
    /// empty list removes a built-in recipe.
    Chain(Vec<String>),
    /// Task types run at once, then one that merges their outputs.
    FanOut(FanOutSpec),
}

/// A fan-out recipe as configuration writes it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOutSpec {
    /// The task types run at once on the task's input.
    pub parallel: Vec<String>,
    /// The task type that receives their outputs and answers.
    pub then: String,
}

/// What stands in for a task type, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Recipe {
    /// One after another.
    Chain(Vec<TaskType>),
    /// At once, then a merge.
    FanOut {
        parallel: Vec<TaskType>,
        then: TaskType,
    },
}

impl Recipe {
    /// Every task type of the recipe, the merging one last.
    pub(crate) fn types(&self) -> Vec<TaskType> {
        match self {
            Self::Chain(chain) => chain.clone(),
            Self::FanOut { parallel, then } => parallel.iter().chain([then]).cloned().collect(),
        }
    }

    /// The task type that merges a fan-out.
    pub(crate) fn then(&self) -> Option<&TaskType> {
        match self {
            Self::Chain(_) => None,
            Self::FanOut { then, .. } => Some(then),
        }
    }
}

/// Recipes by the task type they stand in for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recipes {
    chains: HashMap<TaskType, Recipe>,
}

impl Recipes {
    /// The built-in recipe: `audio_question_answering` as a transcript then
    /// a text model.
    pub fn with_defaults() -> Self {
        Self::default().with(
            TaskType::literal("audio_question_answering"),
            Some(Recipe::Chain(vec![
                TaskType::literal("transcription"),
                TaskType::literal("text_generation"),
            ])),
        )
    }

    /// The built-in recipes with the configured ones over them: a table of
    /// task type -> recipe, where an empty chain removes a built-in recipe.
    /// Errors name the task type (`loop`, for `recipes.loop`).
    pub fn configured(table: HashMap<String, RecipeSpec>) -> Result<Self, SettingError> {
        let mut entries: Vec<_> = table.into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut recipes = Self::with_defaults();
        for (task_type, spec) in entries {
            let invalid = |reason: String| SettingError::new(task_type.as_str(), reason);
            let name = TaskType::new(task_type.as_str()).map_err(|_| {
                invalid("the task type must be a non-empty name without spaces".to_owned())
            })?;
            let types = |names: Vec<String>| {
                names
                    .into_iter()
                    .map(|step| {
                        TaskType::new(step.as_str())
                            .map_err(|_| invalid(format!("`{step}` is not a task type")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let recipe = match spec {
                RecipeSpec::Chain(chain) if chain.is_empty() => None,
                RecipeSpec::Chain(chain) => Some(Recipe::Chain(types(chain)?)),
                RecipeSpec::FanOut(FanOutSpec { parallel, then }) => {
                    if parallel.is_empty() {
                        return Err(invalid("`parallel` names no task type".to_owned()));
                    }
                    let then = types(vec![then])?.remove(0);
                    Some(Recipe::FanOut {
                        parallel: types(parallel)?,
                        then,
                    })
                }
            };
            if let Some(recipe) = &recipe {
                let all = recipe.types();
                if all.contains(&name) {
                    return Err(invalid(
                        "a recipe cannot contain the type it stands in for".to_owned(),
                    ));
                }
                if all.len() > MAX_STEPS {
                    return Err(invalid(format!("more than {MAX_STEPS} steps")));
                }
                // The recipe's steps must make a composite (ids within bounds).
                composite(recipe).map_err(|error| invalid(format!("invalid step id: {error}")))?;
            }
            recipes = recipes.with(name, recipe);
        }
        Ok(recipes)
    }

    /// Adds (or with `None`, removes) the recipe for `task_type`.
    pub(crate) fn with(mut self, task_type: TaskType, recipe: Option<Recipe>) -> Self {
        match recipe {
            Some(recipe) => {
                self.chains.insert(task_type, recipe);
            }
            None => {
                self.chains.remove(&task_type);
            }
        }
        self
    }

    /// The recipe for `task_type`, if there is one.
    pub(crate) fn get(&self, task_type: &TaskType) -> Option<&Recipe> {
        self.chains.get(task_type)
    }
}

/// The composite of a recipe: one step per type, named after it (for a
/// chain, `text_generation`, then `text_generation_2` if a type comes
/// again, or `_3`... until the id is free). Refused only for a type so
/// long that its suffixed id is over the limit of a step id.
pub(crate) fn composite(recipe: &Recipe) -> Result<CompositeSpec, NameError> {
    match recipe {
        Recipe::Chain(chain) => chain_composite(chain),
        Recipe::FanOut { parallel, then } => {
            let mut taken = HashSet::new();
            let mut steps = Vec::with_capacity(parallel.len() + 1);
            for task_type in parallel {
                steps.push(StepSpec {
                    id: free_id(task_type, &mut taken)?,
                    task: StepTask::of(task_type.clone()),
                    after: Vec::new(),
                    when: None,
                });
            }
            let after = steps.iter().map(|step| step.id.clone()).collect();
            let id = free_id(then, &mut taken)?;
            steps.push(StepSpec {
                id: id.clone(),
                task: StepTask::of(then.clone()),
                after,
                when: None,
            });
            Ok(CompositeSpec {
                strategy: Strategy::Parallel,
                steps,
                failure_policy: FailurePolicy::FailFast,
                output_step: Some(id),
            })
        }
    }
}

/// The id of a step of `task_type`: its name, or with the first free
/// suffix.
fn free_id(task_type: &TaskType, taken: &mut HashSet<String>) -> Result<StepId, NameError> {
    let mut id = task_type.as_str().to_owned();
    let mut n = 1;
    while taken.contains(&id) {
        n += 1;
        id = format!("{task_type}_{n}");
    }
    taken.insert(id.clone());
    StepId::new(id)
}

/// The sequential composite of a chain.
fn chain_composite(chain: &[TaskType]) -> Result<CompositeSpec, NameError> {
    let mut taken: HashSet<String> = HashSet::new();
    let mut previous: Option<StepId> = None;
    let mut steps = Vec::with_capacity(chain.len());
    for task_type in chain {
        let id = free_id(task_type, &mut taken)?;
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
        let spec = chain_composite(&[t("transcription"), t("summarize"), t("summarize")]).unwrap();
        let ids: Vec<&str> = spec.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["transcription", "summarize", "summarize_2"]);
        let clash = chain_composite(&[t("a"), t("a_2"), t("a")]).unwrap();
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
        let none = recipes.with(t("audio_question_answering"), None);
        assert!(none.get(&t("audio_question_answering")).is_none());
    }

    #[test]
    fn configured_recipes_extend_the_built_in_ones_and_an_empty_chain_removes_one() {
        let table = |entries: &[(&str, &[&str])]| -> HashMap<String, RecipeSpec> {
            entries
                .iter()
                .map(|(name, chain)| {
                    let chain = chain.iter().map(|step| (*step).to_owned()).collect();
                    ((*name).to_owned(), RecipeSpec::Chain(chain))
                })
                .collect()
        };
        let recipes = Recipes::configured(table(&[
            ("audio_summary", &["transcription", "summarization"]),
            ("audio_question_answering", &[]),
        ]))
        .unwrap();
        let chain: Vec<String> = recipes
            .get(&t("audio_summary"))
            .unwrap()
            .types()
            .iter()
            .map(ToString::to_string)
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

    #[test]
    fn a_fan_out_runs_its_types_at_once_then_the_merge_on_all_their_outputs() {
        let fan_out = |parallel: &[&str], then: &str| {
            RecipeSpec::FanOut(FanOutSpec {
                parallel: parallel.iter().map(|p| (*p).to_owned()).collect(),
                then: then.to_owned(),
            })
        };
        let recipes = Recipes::configured(HashMap::from([(
            "audio_analysis".to_owned(),
            fan_out(
                &["voice_activity", "audio_features", "music_transcription"],
                "analysis_merge",
            ),
        )]))
        .unwrap();
        let recipe = recipes.get(&t("audio_analysis")).unwrap();
        assert_eq!(recipe.then(), Some(&t("analysis_merge")));
        let spec = composite(recipe).unwrap();
        assert_eq!(spec.strategy, Strategy::Parallel);
        assert_eq!(
            spec.output_step.as_ref().map(StepId::as_str),
            Some("analysis_merge")
        );
        let merge = spec.steps.last().unwrap();
        let after: Vec<&str> = merge.after.iter().map(StepId::as_str).collect();
        assert_eq!(
            after,
            ["voice_activity", "audio_features", "music_transcription"]
        );
        assert!(spec.steps.iter().all(|s| s.task.input_from.is_none()));
        assert!(spec.steps[..3].iter().all(|s| s.after.is_empty()));
        // Each part is checked like a chain's.
        let error = Recipes::configured(HashMap::from([("x".to_owned(), fan_out(&[], "merge"))]))
            .unwrap_err();
        assert!(error.reason.contains("parallel"), "{error}");
        let error = Recipes::configured(HashMap::from([("x".to_owned(), fan_out(&["a"], "x"))]))
            .unwrap_err();
        assert!(error.reason.contains("stands in for"), "{error}");
    }
}
