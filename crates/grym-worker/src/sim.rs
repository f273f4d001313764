//! The `sim` reference worker: a simulated model for tests, load and chaos
//! runs.
//!
//! It waits its configured latency (mean ± uniform jitter), fails a
//! configured share of calls with a real `UNAVAILABLE` status, and otherwise
//! answers with an echo: its text output is the input text (or a line naming
//! the model), and its structured output holds the model id, task, input
//! (audio as its MIME type and size, not its bytes), parameters and context
//! it received, merged with the configured `output` object.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use grym_proto::json::{json_to_value, struct_to_json, value_to_json};
use grym_proto::worker::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tonic::Status;

use crate::sdk::{self, Model};

/// A task type with a confidence, as `TYPE[:CONFIDENCE]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CapabilitySpec {
    /// The task type.
    pub task_type: String,
    /// The confidence, in [0, 1]; 0.8 when not given.
    pub confidence: f64,
}

impl FromStr for CapabilitySpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (task_type, confidence) = match spec.split_once(':') {
            Some((task_type, confidence)) => {
                let confidence: f64 = confidence
                    .parse()
                    .map_err(|_| format!("confidence `{confidence}` is not a number"))?;
                (task_type, confidence)
            }
            None => (spec, 0.8),
        };
        if task_type.is_empty() {
            return Err("the task type is empty".to_owned());
        }
        if !(0.0..=1.0).contains(&confidence) {
            return Err(format!("confidence {confidence} is outside [0, 1]"));
        }
        Ok(Self {
            task_type: task_type.to_owned(),
            confidence,
        })
    }
}

/// How the simulated model behaves.
#[derive(Debug, Clone)]
pub struct SimSettings {
    /// The model id it reports.
    pub model_id: String,
    /// The kind it reports.
    pub kind: String,
    /// The task types it serves.
    pub capabilities: Vec<CapabilitySpec>,
    /// Mean time per call.
    pub latency: Duration,
    /// Each call's time is the mean ± up to this much, uniformly.
    pub jitter: Duration,
    /// Share of calls that fail, in [0, 1].
    pub fail_rate: f64,
    /// Calls it takes at once, reported in its capabilities.
    pub max_concurrency: Option<u32>,
    /// The inputs it declares it takes, for every type; empty for any.
    pub inputs: Vec<pb::InputKind>,
    /// Merged into every structured output.
    pub output: Map<String, Value>,
    /// Seeds latency jitter and failures, for repeatable runs.
    pub seed: Option<u64>,
}

/// The simulated model.
#[derive(Debug)]
pub struct Sim {
    settings: SimSettings,
    description: pb::DescribeResponse,
    rng: Mutex<StdRng>,
}

impl Sim {
    /// A simulated model with these settings.
    pub fn new(settings: SimSettings) -> Self {
        let description = pb::DescribeResponse {
            model_id: settings.model_id.clone(),
            kind: settings.kind.clone(),
            capabilities: settings
                .capabilities
                .iter()
                .map(|c| {
                    sdk::accepting(
                        sdk::capability(
                            &c.task_type,
                            c.confidence,
                            settings.latency,
                            settings.max_concurrency.unwrap_or(0),
                        ),
                        &settings.inputs,
                    )
                })
                .collect(),
        };
        let rng = settings
            .seed
            .map_or_else(StdRng::from_os_rng, StdRng::seed_from_u64);
        Self {
            settings,
            description,
            rng: Mutex::new(rng),
        }
    }

    /// The delay and fate of one call.
    fn draw(&self) -> (Duration, bool) {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let jitter = self.settings.jitter.as_secs_f64();
        let offset = if jitter > 0.0 {
            rng.random_range(-jitter..=jitter)
        } else {
            0.0
        };
        let delay =
            Duration::from_secs_f64((self.settings.latency.as_secs_f64() + offset).max(0.0));
        let fail = rng.random_bool(self.settings.fail_rate.clamp(0.0, 1.0));
        (delay, fail)
    }
}

impl Model for Sim {
    fn describe(&self) -> pb::DescribeResponse {
        self.description.clone()
    }

    async fn infer(&self, request: pb::InferRequest) -> Result<pb::Output, Status> {
        sdk::check_task_type(&self.description, &request)?;
        let (delay, fail) = self.draw();
        // A zero delay must not wait for the timer's next tick (~1 ms).
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if fail {
            return Err(Status::unavailable(format!(
                "model `{}` failed (simulated; fail rate {})",
                self.settings.model_id, self.settings.fail_rate
            )));
        }

        let (text, input) = match request.input.and_then(|input| input.kind) {
            Some(pb::input::Kind::Text(text)) => (text.clone(), json!({ "text": text })),
            Some(pb::input::Kind::Audio(audio)) => (
                format!(
                    "model {} handled {}",
                    self.settings.model_id, request.task_type
                ),
                json!({ "audio": { "mime_type": audio.mime_type, "bytes": audio.data.len() } }),
            ),
            Some(pb::input::Kind::Json(value)) => (
                format!(
                    "model {} handled {}",
                    self.settings.model_id, request.task_type
                ),
                json!({ "json": value_to_json(value) }),
            ),
            None => (
                format!(
                    "model {} handled {}",
                    self.settings.model_id, request.task_type
                ),
                Value::Null,
            ),
        };
        let mut output = Map::new();
        output.insert("model_id".into(), self.settings.model_id.clone().into());
        output.insert("task_id".into(), request.task_id.into());
        output.insert("task_type".into(), request.task_type.into());
        output.insert("input".into(), input);
        output.insert(
            "parameters".into(),
            Value::Object(request.parameters.map(struct_to_json).unwrap_or_default()),
        );
        output.insert(
            "context".into(),
            Value::Object(request.context.map(struct_to_json).unwrap_or_default()),
        );
        output.extend(self.settings.output.clone());
        Ok(pb::Output {
            text: Some(text),
            json: Some(json_to_value(Value::Object(output))),
            ..pb::Output::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SimSettings {
        SimSettings {
            model_id: "gama".into(),
            kind: "audio-language".into(),
            capabilities: vec!["audio_analysis:0.95".parse().unwrap()],
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            fail_rate: 0.0,
            max_concurrency: None,
            inputs: Vec::new(),
            output: Map::from_iter([("confidence".to_owned(), json!(0.5))]),
            seed: Some(7),
        }
    }

    fn request(task_type: &str, text: &str) -> pb::InferRequest {
        pb::InferRequest {
            task_id: "t1".into(),
            task_type: task_type.into(),
            input: Some(pb::Input {
                kind: Some(pb::input::Kind::Text(text.into())),
            }),
            parameters: None,
            attempt: 1,
            tenant: String::new(),
            context: Some(grym_proto::json::json_to_struct(Map::from_iter([(
                "topic".to_owned(),
                json!("birdsong"),
            )]))),
        }
    }

    #[test]
    fn capability_specs_parse_with_and_without_confidence() {
        let spec: CapabilitySpec = "transcription:0.7".parse().unwrap();
        assert_eq!(spec.task_type, "transcription");
        assert_eq!(spec.confidence, 0.7);
        assert_eq!("x".parse::<CapabilitySpec>().unwrap().confidence, 0.8);
        assert!("x:1.5".parse::<CapabilitySpec>().is_err());
        assert!(":0.5".parse::<CapabilitySpec>().is_err());
    }

    #[tokio::test]
    async fn it_echoes_input_and_context_and_merges_its_output() {
        let output = Sim::new(settings())
            .infer(request("audio_analysis", "what bird is this?"))
            .await
            .unwrap();
        assert_eq!(output.text.as_deref(), Some("what bird is this?"));
        let json = value_to_json(output.json.unwrap());
        assert_eq!(json["model_id"], "gama");
        assert_eq!(json["input"]["text"], "what bird is this?");
        assert_eq!(json["context"]["topic"], "birdsong");
        assert_eq!(json["confidence"], 0.5);
    }

    #[tokio::test]
    async fn a_fail_rate_of_one_fails_every_call_as_unavailable() {
        let sim = Sim::new(SimSettings {
            fail_rate: 1.0,
            ..settings()
        });
        let status = sim.infer(request("audio_analysis", "x")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn a_task_type_it_does_not_serve_is_refused() {
        let status = Sim::new(settings())
            .infer(request("transcription", "x"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
