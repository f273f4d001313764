//! Transformers: context reshaped for the kind of model that will read it.
//!
//! A transformer is registered per (source kind, target kind). The source
//! of a context is the kind of model that produced it (`agent` for context
//! the agent gave); the target is the kind of the model about to run.
//! Built in:
//! - same kind: unchanged;
//! - `audio-language` or `audio-features` -> `text-generation`: the
//!   analysis as prompt context (`prompt_context`, and the structured
//!   `audio_analysis`);
//! - `speech-recognition` -> `text-generation`: the `transcript`;
//! - `text-generation` -> `audio-language`: the text as the `question` to
//!   ask of the audio.
//!
//! Configured transformers are minijinja templates (the Jinja dialect of
//! prompt tooling), checked when grymd starts; they see the source context
//! as their variables and their rendering is put under a key (default
//! `prompt_context`). A pair with no transformer passes context unchanged.

#![cfg_attr(
    not(feature = "bench-internals"),
    expect(
        unreachable_pub,
        reason = "public to the benchmarks, through `internals`"
    )
)]

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::error::SettingError;

/// The kind of context given by the agent itself.
pub(crate) const AGENT: &str = "agent";

/// The most instructions one template rendering may run.
const TEMPLATE_FUEL: u64 = 100_000;

type Builtin = fn(&Map<String, Value>) -> Map<String, Value>;

enum Transformer {
    Builtin(Builtin),
    Template {
        env: Arc<minijinja::Environment<'static>>,
        name: String,
        key: String,
    },
}

/// The transformers, by (source kind, target kind).
pub struct Transformers {
    pairs: HashMap<(String, String), Transformer>,
}

impl std::fmt::Debug for Transformers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformers")
            .field("pairs", &self.pairs.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One configured template transformer: a `[[context.transformers]]`
/// entry.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// The kind of model whose context it reads (`agent` for the agent's).
    pub source: String,
    /// The kind of model it writes for.
    pub target: String,
    /// A minijinja template over the source context.
    pub template: String,
    /// The key its rendering is put under.
    #[serde(default = "default_template_key")]
    pub key: String,
}

fn default_template_key() -> String {
    "prompt_context".to_owned()
}

fn text_of(context: &Map<String, Value>) -> String {
    context
        .get("text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_default()
}

fn analysis_to_prompt(context: &Map<String, Value>) -> Map<String, Value> {
    let model = context
        .get("model_id")
        .and_then(Value::as_str)
        .unwrap_or("a model");
    let mut out = Map::new();
    out.insert(
        "prompt_context".into(),
        json!(format!("Audio analysis by {model}: {}", text_of(context))),
    );
    if let Some(structured) = context.get("json") {
        out.insert("audio_analysis".into(), structured.clone());
    }
    out
}

fn transcript_to_text(context: &Map<String, Value>) -> Map<String, Value> {
    Map::from_iter([("transcript".to_owned(), json!(text_of(context)))])
}

fn instructions_to_question(context: &Map<String, Value>) -> Map<String, Value> {
    Map::from_iter([("question".to_owned(), json!(text_of(context)))])
}

/// What is wrong with a template, and on which line.
fn template_error(error: &minijinja::Error, otherwise: &str) -> String {
    format!(
        "{}{}",
        error.detail().unwrap_or(otherwise),
        error
            .line()
            .map(|line| format!(" at line {line}"))
            .unwrap_or_default()
    )
}

impl Transformers {
    /// The built-in transformers.
    pub fn with_defaults() -> Self {
        let mut pairs = HashMap::new();
        let builtins: [(&str, &str, Builtin); 4] = [
            ("audio-language", "text-generation", analysis_to_prompt),
            ("audio-features", "text-generation", analysis_to_prompt),
            ("speech-recognition", "text-generation", transcript_to_text),
            (
                "text-generation",
                "audio-language",
                instructions_to_question,
            ),
        ];
        for (source, target, f) in builtins {
            pairs.insert(
                (source.to_owned(), target.to_owned()),
                Transformer::Builtin(f),
            );
        }
        Self { pairs }
    }

    /// Adds configured templates over the defaults; an error's key names
    /// the template (`transformers[0] (agent -> text-generation)`), its
    /// reason the line.
    pub(crate) fn with_templates(mut self, specs: &[TemplateSpec]) -> Result<Self, SettingError> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        // A bound on the work of one rendering: no template loops forever.
        env.set_fuel(Some(TEMPLATE_FUEL));
        let mut names = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let name = format!("transformers[{i}] ({} -> {})", spec.source, spec.target);
            let invalid = |reason: String| SettingError::new(name.as_str(), reason);
            if spec.source == spec.target {
                return Err(invalid(
                    "context passes unchanged between models of one kind".to_owned(),
                ));
            }
            if specs[..i]
                .iter()
                .any(|earlier| earlier.source == spec.source && earlier.target == spec.target)
            {
                return Err(invalid("the pair has a template already".to_owned()));
            }
            env.add_template_owned(name.clone(), spec.template.clone())
                .map_err(|error| invalid(template_error(&error, "invalid template")))?;
            // Rendered once on empty context, so an unknown filter, test or
            // function stops start-up rather than every request.
            let rendered = env
                .get_template(&name)
                .and_then(|template| template.render(()));
            if let Err(error) = rendered {
                use minijinja::ErrorKind::{UnknownFilter, UnknownFunction, UnknownTest};
                if matches!(error.kind(), UnknownFilter | UnknownTest | UnknownFunction) {
                    return Err(invalid(template_error(&error, "unknown name")));
                }
            }
            names.push(name);
        }
        let env = Arc::new(env);
        for (spec, name) in specs.iter().zip(names) {
            self.pairs.insert(
                (spec.source.clone(), spec.target.clone()),
                Transformer::Template {
                    env: Arc::clone(&env),
                    name,
                    key: spec.key.clone(),
                },
            );
        }
        Ok(self)
    }

    /// Whether the pair changes anything: same kinds, or no transformer,
    /// pass context unchanged.
    pub(crate) fn changes(&self, source: &str, target: &str) -> bool {
        source != target
            && self
                .pairs
                .contains_key(&(source.to_owned(), target.to_owned()))
    }

    /// `context` reshaped from `source` kind for `target` kind; `None` when
    /// a template fails on it (the caller passes the context unchanged and
    /// keeps nothing of the failure).
    pub fn transform(
        &self,
        source: &str,
        target: &str,
        context: &Map<String, Value>,
    ) -> Option<Map<String, Value>> {
        if source == target {
            return Some(context.clone());
        }
        match self.pairs.get(&(source.to_owned(), target.to_owned())) {
            None => Some(context.clone()),
            Some(Transformer::Builtin(f)) => Some(f(context)),
            Some(Transformer::Template { env, name, key }) => {
                let rendered = env.get_template(name).and_then(|template| {
                    template.render(minijinja::Value::from(minijinja::value::Serde(context)))
                });
                match rendered {
                    Ok(text) => Some(Map::from_iter([(key.clone(), Value::String(text))])),
                    Err(error) => {
                        tracing::warn!(template = %name, %error, "context template failed; passing context unchanged");
                        None
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::object;

    #[test]
    fn an_analysis_becomes_prompt_context_for_a_text_model() {
        let analysis = object(json!({
            "model_id": "gama",
            "text": "a blackbird singing over light rain",
            "json": {"species": "blackbird"}
        }));
        let out = Transformers::with_defaults()
            .transform("audio-language", "text-generation", &analysis)
            .unwrap();
        assert_eq!(
            out["prompt_context"],
            "Audio analysis by gama: a blackbird singing over light rain"
        );
        assert_eq!(out["audio_analysis"]["species"], "blackbird");
    }

    #[test]
    fn same_kinds_and_unknown_pairs_pass_context_unchanged() {
        let transformers = Transformers::with_defaults();
        let context = object(json!({"anything": [1, 2]}));
        assert_eq!(
            transformers.transform("text-generation", "text-generation", &context),
            Some(context.clone())
        );
        assert_eq!(
            transformers.transform("embedding", "synthesis", &context),
            Some(context.clone())
        );
        assert!(!transformers.changes("embedding", "synthesis"));
        assert!(transformers.changes("speech-recognition", "text-generation"));
    }

    #[test]
    fn a_template_transform_renders_its_worked_example() {
        let spec = TemplateSpec {
            source: "speech-recognition".into(),
            target: "text-generation".into(),
            template: "Transcript ({{ model_id }}): {{ text | upper }}{% if json.language %} [{{ json.language }}]{% endif %}".into(),
            key: "prompt".into(),
        };
        let transformers = Transformers::with_defaults()
            .with_templates(&[spec])
            .unwrap();
        let transcript = object(
            json!({"model_id": "wav2vec2", "text": "hello there", "json": {"language": "en"}}),
        );
        let out = transformers.transform("speech-recognition", "text-generation", &transcript);
        assert_eq!(
            out,
            Some(object(
                json!({"prompt": "Transcript (wav2vec2): HELLO THERE [en]"})
            ))
        );
    }

    fn spec(source: &str, target: &str, template: &str) -> TemplateSpec {
        TemplateSpec {
            source: source.into(),
            target: target.into(),
            template: template.into(),
            key: "prompt".into(),
        }
    }

    #[test]
    fn unknown_filters_same_kind_pairs_and_duplicates_stop_start_up() {
        let check = |specs: &[TemplateSpec]| {
            Transformers::with_defaults()
                .with_templates(specs)
                .unwrap_err()
                .to_string()
        };
        let error = check(&[spec("agent", "text-generation", "{{ text | shout }}")]);
        assert!(
            error.contains("unknown filter") || error.contains("shout"),
            "{error}"
        );
        let error = check(&[spec("text-generation", "text-generation", "x")]);
        assert!(error.contains("one kind"), "{error}");
        let error = check(&[
            spec("agent", "text-generation", "a"),
            spec("agent", "text-generation", "b"),
        ]);
        assert!(error.contains("already"), "{error}");
    }

    #[test]
    fn a_template_that_runs_too_long_fails_instead_of_hanging() {
        let transformers = Transformers::with_defaults()
            .with_templates(&[spec(
                "agent",
                "text-generation",
                "{% for i in range(1000000) %}{{ i }}{% endfor %}",
            )])
            .unwrap();
        assert_eq!(
            transformers.transform("agent", "text-generation", &Map::new()),
            None
        );
    }

    #[test]
    fn an_invalid_template_is_an_error_naming_it_and_its_line() {
        let spec = TemplateSpec {
            source: "agent".into(),
            target: "text-generation".into(),
            template: "fine first line\n{{ unclosed ".into(),
            key: "prompt".into(),
        };
        let error = Transformers::with_defaults()
            .with_templates(&[spec])
            .unwrap_err();
        // The template's name is the key; the configuration adds its table.
        assert_eq!(error.key, "transformers[0] (agent -> text-generation)");
        let error = error.within("context").to_string();
        assert!(
            error.contains("context.transformers[0] (agent -> text-generation)"),
            "{error}"
        );
        assert!(error.contains("line 2"), "{error}");
    }
}
