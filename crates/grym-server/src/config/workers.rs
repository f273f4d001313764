//! The `[[workers]]` list: each model, the endpoints of its replicas, and
//! what the configuration fixes of its kind and capabilities.

use std::time::Duration;

use grym_core::{Capability, ModelId, ModelKind, TaskType};
use serde::Deserialize;

use super::invalid;
use crate::error::Error;

/// One `[[workers]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    /// The model's id.
    pub id: String,
    /// The worker's address, `http://host:port`.
    pub endpoint: Option<String>,
    /// The addresses of the model's replicas, instead of `endpoint`.
    pub endpoints: Option<Vec<String>>,
    /// Overrides the kind the worker reports.
    pub kind: Option<String>,
    /// Overrides the capabilities the worker reports.
    pub capabilities: Option<Vec<RawCapability>>,
}

/// One capability override as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapability {
    /// The task type.
    pub task_type: String,
    /// Declared confidence, in [0, 1].
    pub confidence: f64,
    /// Expected time of one call, for example `"800ms"`.
    #[serde(default, with = "humantime_serde")]
    pub estimated_latency: Option<Duration>,
    /// Calls the model takes at once; 0 or absent when unlimited.
    #[serde(default)]
    pub max_concurrency: u32,
}

/// One model and the workers serving it.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The model's id.
    pub id: ModelId,
    /// The addresses of its replicas.
    pub endpoints: Vec<String>,
    /// The kind, when the configuration fixes it.
    pub kind: Option<ModelKind>,
    /// The capabilities, when the configuration fixes them.
    pub capabilities: Option<Vec<Capability>>,
}

/// Checks every worker; a model listed twice is refused by its second
/// entry.
pub(super) fn validate(raw: Vec<RawWorker>) -> Result<Vec<WorkerConfig>, Error> {
    let mut workers: Vec<WorkerConfig> = Vec::with_capacity(raw.len());
    for (i, worker) in raw.into_iter().enumerate() {
        let worker = worker.validate(i)?;
        if workers.iter().any(|w| w.id == worker.id) {
            return Err(invalid(
                format!("workers[{i}].id"),
                format!("model `{}` is listed twice", worker.id),
            ));
        }
        workers.push(worker);
    }
    Ok(workers)
}

impl RawWorker {
    fn validate(self, i: usize) -> Result<WorkerConfig, Error> {
        let id = ModelId::new(self.id)
            .map_err(|e| invalid(format!("workers[{i}].id"), e.to_string()))?;
        let endpoints = match (self.endpoint, self.endpoints) {
            (Some(one), None) => vec![one],
            (None, Some(many)) if !many.is_empty() => many,
            _ => {
                return Err(invalid(
                    format!("workers[{i}]"),
                    "give exactly one of `endpoint` or a non-empty `endpoints`",
                ));
            }
        };
        for (j, endpoint) in endpoints.iter().enumerate() {
            check_endpoint(endpoint).map_err(|reason| {
                let key = if endpoints.len() == 1 {
                    format!("workers[{i}].endpoint")
                } else {
                    format!("workers[{i}].endpoints[{j}]")
                };
                invalid(key, reason)
            })?;
        }
        let capabilities = self
            .capabilities
            .map(|list| {
                list.into_iter()
                    .enumerate()
                    .map(|(j, c)| c.validate(&format!("workers[{i}].capabilities[{j}]")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(WorkerConfig {
            id,
            endpoints,
            kind: self.kind.map(ModelKind::new),
            capabilities,
        })
    }
}

impl RawCapability {
    fn validate(self, key: &str) -> Result<Capability, Error> {
        let capability = Capability {
            task_type: TaskType::new(self.task_type)
                .map_err(|e| invalid(format!("{key}.task_type"), e.to_string()))?,
            confidence: self.confidence,
            estimated_latency: self.estimated_latency.unwrap_or_default(),
            max_concurrency: (self.max_concurrency > 0).then_some(self.max_concurrency),
        };
        capability.validate().map_err(|e| {
            let e = e.within(key);
            invalid(e.key, e.reason)
        })?;
        Ok(capability)
    }
}

/// Checks an endpoint looks like `http://host:port`.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: tonic::transport::Uri = endpoint
        .parse()
        .map_err(|_| format!("`{endpoint}` is not a URI"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(_)) => Ok(()),
        (Some("https"), Some(_)) => Err(format!(
            "`{endpoint}`: TLS to workers is not supported; use http:// on a trusted network"
        )),
        _ => Err(format!("`{endpoint}` must look like http://host:port")),
    }
}
