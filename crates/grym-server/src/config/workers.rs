//! The `[[workers]]` list: each model, the endpoints of its replicas, and
//! what the configuration fixes of its kind and capabilities.

use grym_core::{Capability, ModelId, ModelKind};
use serde::Deserialize;

use super::invalid;
use crate::error::Error;

/// One `[[workers]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    /// The model's id.
    pub id: String,
    /// The worker's address, `http://host:port`, or `https://host:port`
    /// for TLS (see `[worker_tls]`).
    pub endpoint: Option<String>,
    /// The addresses of the model's replicas, instead of `endpoint`.
    pub endpoints: Option<Vec<String>>,
    /// Overrides the kind the worker reports.
    pub kind: Option<String>,
    /// Overrides the capabilities the worker reports.
    pub capabilities: Option<Vec<Capability>>,
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
        for (j, capability) in self.capabilities.iter().flatten().enumerate() {
            capability.validate().map_err(|error| {
                let error = error.within(&format!("workers[{i}].capabilities[{j}]"));
                invalid(error.key, error.reason)
            })?;
        }
        Ok(WorkerConfig {
            id,
            endpoints,
            kind: self.kind.map(ModelKind::new),
            capabilities: self.capabilities,
        })
    }
}

/// Checks an endpoint looks like `http://host:port` (plaintext) or
/// `https://host:port` (TLS).
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: tonic::transport::Uri = endpoint
        .parse()
        .map_err(|_| format!("`{endpoint}` is not a URI"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err(format!(
            "`{endpoint}` must look like http://host:port or https://host:port"
        )),
    }
}
