//! Configuration, in two stages: [`RawConfig`] is what the TOML file and the
//! `GRYM_*` environment say (unknown keys refused, defaults filled in);
//! [`Config::load`] turns it into a validated [`Config`] whose errors name
//! the key at fault.
//!
//! Sources, later ones winning: defaults, the TOML file, `GRYM_*` variables
//! (`GRYM_LISTEN`, `GRYM_WORKER_TIMEOUT`, ...), then command-line flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use grym_core::bottleneck::BottleneckSettings;
use grym_core::composite::MAX_STEPS;
use grym_core::composite::recipe::{self, Recipes};
use grym_core::context::ContextSettings;
use grym_core::context::session::SessionLimits;
use grym_core::context::transform::TemplateSpec;
use grym_core::probe::ProbeSettings;
use grym_core::{
    Capability, ModelId, ModelKind, OrchestratorSettings, Policy, Route, SchedulerSettings,
    SelectionSettings, TaskType,
};
use serde::Deserialize;

use crate::error::Error;

/// The keys `GRYM_*` variables may set; other `GRYM_*` variables belong to
/// someone else and are ignored.
const ENV_KEYS: &[&str] = &[
    "listen",
    "builtin_workers",
    "worker_timeout",
    "health_interval",
    "health_timeout",
    "connect_timeout",
    "max_message_bytes",
];

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// The address grymd listens on.
    pub listen: String,
    /// Whether grymd starts its built-in reference workers.
    pub builtin_workers: bool,
    /// The longest one worker call may take.
    #[serde(with = "humantime_serde")]
    pub worker_timeout: Duration,
    /// Time between two health checks of a worker.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// The longest a health check or Describe may take.
    #[serde(with = "humantime_serde")]
    pub health_timeout: Duration,
    /// The longest connecting to a worker may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// How models are chosen.
    pub selection: RawSelection,
    /// How tasks are queued.
    pub scheduler: RawScheduler,
    /// How context is shaped and kept.
    pub context: RawContext,
    /// Who may call.
    pub auth: RawAuth,
    /// Chains of task types that stand in for a type no healthy model
    /// serves, over the built-in ones; an empty chain removes one.
    pub recipes: HashMap<String, Vec<String>>,
    /// When a finding is a bottleneck.
    pub bottlenecks: RawBottlenecks,
    /// The model workers to use.
    pub workers: Vec<RawWorker>,
}

/// The `[auth]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// Bearer tokens and the tenant each names; when any are given, every
    /// call must carry one.
    pub tokens: Vec<RawToken>,
}

/// One `[[auth.tokens]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// The secret a caller sends as `authorization: Bearer TOKEN`.
    pub token: String,
    /// The tenant it names.
    pub tenant: String,
}

/// The `[context]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawContext {
    /// The transform cache's bound, in bytes.
    pub cache_max_bytes: u64,
    /// How long a transformed context is kept.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How often expired and evicted cache entries are cleared out.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// The largest context a task or a session put may carry, in bytes.
    pub max_context_bytes: usize,
    /// Sessions kept at once.
    pub max_sessions: u64,
    /// Time without use after which a session expires.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Bytes one session holds at most.
    pub session_max_bytes: usize,
    /// Task outputs one session keeps at most.
    pub session_max_entries: usize,
    /// Bytes all sessions hold at most.
    pub sessions_max_total_bytes: usize,
    /// Template transformers, over the built-in ones.
    pub transformers: Vec<RawTransformer>,
}

/// One `[[context.transformers]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransformer {
    /// The kind of model whose context it reads (`agent` for the agent's).
    pub source: String,
    /// The kind of model it writes for.
    pub target: String,
    /// A minijinja template over the source context.
    pub template: String,
    /// The key its rendering is put under.
    #[serde(default = "default_transformer_key")]
    pub key: String,
}

fn default_transformer_key() -> String {
    "prompt_context".to_owned()
}

impl Default for RawContext {
    fn default() -> Self {
        let defaults = ContextSettings::default();
        Self {
            cache_max_bytes: defaults.cache_max_bytes,
            cache_ttl: defaults.cache_ttl,
            maintenance_interval: defaults.maintenance_interval,
            max_context_bytes: defaults.max_context_bytes,
            max_sessions: defaults.sessions.max_sessions,
            session_ttl: defaults.sessions.ttl,
            session_max_bytes: defaults.sessions.max_bytes,
            session_max_entries: defaults.sessions.max_entries,
            sessions_max_total_bytes: defaults.sessions.max_total_bytes,
            transformers: Vec::new(),
        }
    }
}

impl RawContext {
    fn validate(self) -> Result<ContextSettings, Error> {
        for (key, value) in [
            ("context.cache_ttl", self.cache_ttl),
            ("context.maintenance_interval", self.maintenance_interval),
            ("context.session_ttl", self.session_ttl),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        let templates = self
            .transformers
            .into_iter()
            .map(|t| TemplateSpec {
                source: t.source,
                target: t.target,
                template: t.template,
                key: t.key,
            })
            .collect();
        ContextSettings {
            cache_max_bytes: self.cache_max_bytes,
            cache_ttl: self.cache_ttl,
            maintenance_interval: self.maintenance_interval,
            max_context_bytes: self.max_context_bytes,
            sessions: SessionLimits {
                max_sessions: self.max_sessions,
                ttl: self.session_ttl,
                max_bytes: self.session_max_bytes,
                max_entries: self.session_max_entries,
                max_total_bytes: self.sessions_max_total_bytes,
            },
            ..ContextSettings::default()
        }
        .with_templates(templates)
        .map_err(|error| match error {
            grym_core::Error::InvalidRequest { field, reason } => invalid(field, reason),
            other => invalid("context.transformers", other.to_string()),
        })
    }
}

/// The `[bottlenecks]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBottlenecks {
    /// Time between two analyses.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Calls, waits or runs needed before a rate or mean is judged.
    pub min_samples: f64,
    /// `slow_model`: mean latency over the estimate.
    pub slow_factor: f64,
    /// `error_rate`: the highest acceptable error rate.
    pub max_error_rate: f64,
    /// `queue_wait`: mean wait over mean call time.
    pub queue_wait_ratio: f64,
    /// `cache_hit_rate`: the lowest acceptable hit rate.
    pub min_cache_hit_rate: f64,
    /// `cache_hit_rate`: lookups needed in a period.
    pub min_cache_lookups: u64,
    /// `critical_step`: the largest acceptable share of one step.
    pub max_step_share: f64,
}

impl Default for RawBottlenecks {
    fn default() -> Self {
        let d = BottleneckSettings::default();
        Self {
            interval: d.interval,
            min_samples: d.min_samples,
            slow_factor: d.slow_factor,
            max_error_rate: d.max_error_rate,
            queue_wait_ratio: d.queue_wait_ratio,
            min_cache_hit_rate: d.min_cache_hit_rate,
            min_cache_lookups: d.min_cache_lookups,
            max_step_share: d.max_step_share,
        }
    }
}

impl RawBottlenecks {
    fn validate(self) -> Result<BottleneckSettings, Error> {
        if self.interval < Duration::from_millis(100) {
            return Err(invalid("bottlenecks.interval", "must be at least 100ms"));
        }
        let positive = |key: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(invalid(
                    format!("bottlenecks.{key}"),
                    "must be a number above 0",
                ))
            }
        };
        let share = |key: &str, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(value)
            } else {
                Err(invalid(
                    format!("bottlenecks.{key}"),
                    "must be within [0, 1]",
                ))
            }
        };
        Ok(BottleneckSettings {
            interval: self.interval,
            min_samples: positive("min_samples", self.min_samples)?,
            slow_factor: positive("slow_factor", self.slow_factor)?,
            max_error_rate: share("max_error_rate", self.max_error_rate)?,
            queue_wait_ratio: positive("queue_wait_ratio", self.queue_wait_ratio)?,
            min_cache_hit_rate: share("min_cache_hit_rate", self.min_cache_hit_rate)?,
            min_cache_lookups: self.min_cache_lookups,
            max_step_share: share("max_step_share", self.max_step_share)?,
        })
    }
}

/// The `[scheduler]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawScheduler {
    /// The most tasks waiting at once; more are refused.
    pub max_queue: usize,
    /// How long a waiting task takes to rise one priority level.
    #[serde(with = "humantime_serde")]
    pub aging_interval: Duration,
    /// Calls a model takes at once when it declares no limit.
    pub default_model_concurrency: u32,
    /// How many finished results are kept for GetTask.
    pub max_results: u64,
    /// How long a finished result is kept.
    #[serde(with = "humantime_serde")]
    pub result_retention: Duration,
}

impl Default for RawScheduler {
    fn default() -> Self {
        let defaults = SchedulerSettings::default();
        Self {
            max_queue: defaults.max_queue,
            aging_interval: defaults.aging_interval,
            default_model_concurrency: defaults.default_model_concurrency,
            max_results: defaults.max_results,
            result_retention: defaults.result_retention,
        }
    }
}

impl RawScheduler {
    fn validate(self) -> Result<SchedulerSettings, Error> {
        if self.max_queue == 0 {
            return Err(invalid("scheduler.max_queue", "must be at least 1"));
        }
        if self.default_model_concurrency == 0 {
            return Err(invalid(
                "scheduler.default_model_concurrency",
                "must be at least 1",
            ));
        }
        if self.aging_interval.is_zero() {
            return Err(invalid(
                "scheduler.aging_interval",
                "must be longer than zero",
            ));
        }
        if self.max_results == 0 {
            return Err(invalid("scheduler.max_results", "must be at least 1"));
        }
        if self.result_retention.is_zero() {
            return Err(invalid(
                "scheduler.result_retention",
                "must be longer than zero",
            ));
        }
        Ok(SchedulerSettings {
            max_queue: self.max_queue,
            aging_interval: self.aging_interval,
            default_model_concurrency: self.default_model_concurrency,
            max_results: self.max_results,
            result_retention: self.result_retention,
        })
    }
}

/// The `[selection]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSelection {
    /// `scored` (the default) or `thompson`.
    pub policy: RawPolicy,
    /// Half-life of the performance statistics.
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// How many calls a declared confidence is worth to Thompson sampling.
    pub prior_strength: f64,
    /// Seeds selection's randomness, for repeatable runs.
    pub seed: Option<u64>,
    /// Pinned routes; absent means the default GAMA route, `[]` means none.
    pub routes: Option<Vec<RawRoute>>,
}

impl Default for RawSelection {
    fn default() -> Self {
        let defaults = SelectionSettings::default();
        Self {
            policy: RawPolicy::Scored,
            half_life: defaults.half_life,
            prior_strength: defaults.prior_strength,
            seed: None,
            routes: None,
        }
    }
}

/// A selection policy as written.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawPolicy {
    /// The original formula.
    Scored,
    /// Thompson sampling.
    Thompson,
}

/// One `[[selection.routes]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The task type routed.
    pub task_type: String,
    /// The model it goes to while that model is healthy.
    pub model: String,
    /// The confidence reported for the choice.
    pub confidence: f64,
    /// The latency estimate reported for the choice.
    #[serde(default, with = "humantime_serde")]
    pub estimated_latency: Option<Duration>,
    /// Models tried first when it fails.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".to_owned(),
            builtin_workers: true,
            worker_timeout: Duration::from_secs(30),
            health_interval: Duration::from_secs(5),
            health_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            max_message_bytes: grym_worker::sdk::DEFAULT_MAX_MESSAGE_BYTES,
            selection: RawSelection::default(),
            scheduler: RawScheduler::default(),
            context: RawContext::default(),
            auth: RawAuth::default(),
            recipes: HashMap::new(),
            bottlenecks: RawBottlenecks::default(),
            workers: Vec::new(),
        }
    }
}

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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address grymd listens on.
    pub listen: SocketAddr,
    /// Whether grymd starts its built-in reference workers.
    pub builtin_workers: bool,
    /// Settings of the orchestrator core.
    pub orchestrator: OrchestratorSettings,
    /// How workers are probed.
    pub probe: ProbeSettings,
    /// The longest connecting to a worker may take.
    pub connect_timeout: Duration,
    /// The largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// The model workers to use.
    pub workers: Vec<WorkerConfig>,
    /// The file this was read from, read again on SIGHUP.
    pub source: Option<PathBuf>,
    /// Bearer token -> tenant; empty when calls need no token.
    pub auth_tokens: HashMap<String, String>,
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

impl Config {
    /// Reads defaults, then `file` (which must exist when given), then the
    /// `GRYM_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let raw: RawConfig = figment
            .merge(Env::prefixed("GRYM_").only(ENV_KEYS))
            .extract()
            .map_err(Box::new)?;
        let mut config = raw.validate()?;
        config.source = file.map(Path::to_path_buf);
        Ok(config)
    }
}

impl RawConfig {
    /// Checks every value and converts it to its typed form.
    pub fn validate(self) -> Result<Config, Error> {
        let listen = self.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("`{}` is not a host:port address", self.listen),
            )
        })?;
        for (key, value) in [
            ("worker_timeout", self.worker_timeout),
            ("health_interval", self.health_interval),
            ("health_timeout", self.health_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        if self.max_message_bytes < 4096 {
            return Err(invalid("max_message_bytes", "must be at least 4096"));
        }
        let mut workers: Vec<WorkerConfig> = Vec::with_capacity(self.workers.len());
        for (i, worker) in self.workers.into_iter().enumerate() {
            let worker = worker.validate(i)?;
            if workers.iter().any(|w| w.id == worker.id) {
                return Err(invalid(
                    format!("workers[{i}].id"),
                    format!("model `{}` is listed twice", worker.id),
                ));
            }
            workers.push(worker);
        }
        Ok(Config {
            listen,
            builtin_workers: self.builtin_workers,
            orchestrator: OrchestratorSettings {
                worker_timeout: self.worker_timeout,
                seed: self.selection.seed,
                selection: self.selection.validate()?,
                scheduler: self.scheduler.validate()?,
                context: self.context.validate()?,
                recipes: recipes(self.recipes)?,
                bottlenecks: self.bottlenecks.validate()?,
                // Set by grymd once telemetry says whether metrics go out.
                metrics: true,
            },
            probe: ProbeSettings {
                interval: self.health_interval,
                timeout: self.health_timeout,
            },
            connect_timeout: self.connect_timeout,
            max_message_bytes: self.max_message_bytes,
            workers,
            source: None,
            auth_tokens: self.auth.validate()?,
        })
    }
}

/// The `[recipes]` table over the built-in recipes.
fn recipes(table: HashMap<String, Vec<String>>) -> Result<Recipes, Error> {
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort();
    let mut recipes = Recipes::with_defaults();
    for (task_type, chain) in entries {
        let key = format!("recipes.{task_type}");
        let name = TaskType::new(task_type.as_str()).map_err(|_| {
            invalid(
                &key,
                "the task type must be a non-empty name without spaces",
            )
        })?;
        let chain = chain
            .into_iter()
            .map(|step| {
                TaskType::new(step.as_str())
                    .map_err(|_| invalid(&key, format!("`{step}` is not a task type")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if chain.contains(&name) {
            return Err(invalid(
                &key,
                "a recipe cannot contain the type it stands in for",
            ));
        }
        if chain.len() > MAX_STEPS {
            return Err(invalid(&key, format!("more than {MAX_STEPS} steps")));
        }
        // The chain's steps must be a valid composite (ids within bounds).
        recipe::composite(&chain).map_err(|error| invalid(&key, error.to_string()))?;
        recipes = recipes.with(name, chain);
    }
    Ok(recipes)
}

impl RawAuth {
    fn validate(self) -> Result<HashMap<String, String>, Error> {
        let mut tokens = HashMap::with_capacity(self.tokens.len());
        for (i, entry) in self.tokens.into_iter().enumerate() {
            if entry.token.len() < 16 {
                return Err(invalid(
                    format!("auth.tokens[{i}].token"),
                    "must be at least 16 characters",
                ));
            }
            if entry.tenant.is_empty() || entry.tenant.len() > 128 {
                return Err(invalid(
                    format!("auth.tokens[{i}].tenant"),
                    "must be 1 to 128 characters",
                ));
            }
            if tokens.insert(entry.token, entry.tenant).is_some() {
                return Err(invalid(
                    format!("auth.tokens[{i}].token"),
                    "is listed twice",
                ));
            }
        }
        Ok(tokens)
    }
}

impl RawSelection {
    fn validate(self) -> Result<SelectionSettings, Error> {
        if self.half_life.is_zero() {
            return Err(invalid("selection.half_life", "must be longer than zero"));
        }
        if !(self.prior_strength >= 0.0 && self.prior_strength.is_finite()) {
            return Err(invalid(
                "selection.prior_strength",
                "must be a number of 0 or more",
            ));
        }
        let routes = match self.routes {
            None => SelectionSettings::default().routes,
            Some(routes) => routes
                .into_iter()
                .enumerate()
                .map(|(i, route)| route.validate(i))
                .collect::<Result<_, _>>()?,
        };
        Ok(SelectionSettings {
            policy: match self.policy {
                RawPolicy::Scored => Policy::Scored,
                RawPolicy::Thompson => Policy::Thompson,
            },
            half_life: self.half_life,
            prior_strength: self.prior_strength,
            routes,
            ..SelectionSettings::default()
        })
    }
}

impl RawRoute {
    fn validate(self, i: usize) -> Result<Route, Error> {
        let key = |field: &str| format!("selection.routes[{i}].{field}");
        if !(0.0..=1.0).contains(&self.confidence) {
            return Err(invalid(
                key("confidence"),
                format!("{} is outside [0, 1]", self.confidence),
            ));
        }
        Ok(Route {
            task_type: TaskType::new(self.task_type)
                .map_err(|e| invalid(key("task_type"), reason_of(e)))?,
            model: ModelId::new(self.model).map_err(|e| invalid(key("model"), reason_of(e)))?,
            confidence: self.confidence,
            estimated_latency: self.estimated_latency.unwrap_or_default(),
            fallbacks: self
                .fallbacks
                .into_iter()
                .map(|id| ModelId::new(id).map_err(|e| invalid(key("fallbacks"), reason_of(e))))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl RawWorker {
    fn validate(self, i: usize) -> Result<WorkerConfig, Error> {
        let id =
            ModelId::new(self.id).map_err(|e| invalid(format!("workers[{i}].id"), reason_of(e)))?;
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
            kind: self.kind,
            capabilities,
        })
    }
}

impl RawCapability {
    fn validate(self, key: &str) -> Result<Capability, Error> {
        let capability = Capability {
            task_type: TaskType::new(self.task_type)
                .map_err(|e| invalid(format!("{key}.task_type"), reason_of(e)))?,
            confidence: self.confidence,
            estimated_latency: self.estimated_latency.unwrap_or_default(),
            max_concurrency: (self.max_concurrency > 0).then_some(self.max_concurrency),
        };
        capability
            .validate("confidence")
            .map_err(|e| invalid(format!("{key}.confidence"), reason_of(e)))?;
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

fn reason_of(error: grym_core::Error) -> String {
    match error {
        grym_core::Error::InvalidRequest { reason, .. } => reason,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn from_toml(text: &str) -> Result<Config, Error> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let raw: RawConfig = Figment::new()
            .merge(Toml::file_exact(file.path()))
            .extract()
            .map_err(Box::new)?;
        raw.validate()
    }

    #[test]
    fn no_configuration_means_loopback_and_builtin_workers() {
        let config = RawConfig::default().validate().unwrap();
        assert_eq!(config.listen, "127.0.0.1:50051".parse().unwrap());
        assert!(config.builtin_workers);
        assert!(config.workers.is_empty());
    }

    #[test]
    fn recipes_extend_the_built_in_ones_and_an_empty_chain_removes_one() {
        let config = from_toml(
            r#"
            [recipes]
            audio_summary = ["transcription", "summarization"]
            audio_question_answering = []
            "#,
        )
        .unwrap();
        let recipes = &config.orchestrator.recipes;
        let chain: Vec<&str> = recipes
            .get(&TaskType::new("audio_summary").unwrap())
            .unwrap()
            .iter()
            .map(TaskType::as_str)
            .collect();
        assert_eq!(chain, ["transcription", "summarization"]);
        assert!(
            recipes
                .get(&TaskType::new("audio_question_answering").unwrap())
                .is_none()
        );
        let defaults = RawConfig::default().validate().unwrap();
        assert!(
            defaults
                .orchestrator
                .recipes
                .get(&TaskType::new("audio_question_answering").unwrap())
                .is_some()
        );
        let err = from_toml("[recipes]\nloop = [\"loop\"]\n").unwrap_err();
        assert!(err.to_string().contains("recipes.loop"), "{err}");
    }

    #[test]
    fn workers_and_capability_overrides_are_read() {
        let config = from_toml(
            r#"
            builtin_workers = false
            worker_timeout = "5s"
            [[workers]]
            id = "gama"
            endpoint = "http://127.0.0.1:7001"
            kind = "audio-language"
            capabilities = [{ task_type = "audio_analysis", confidence = 0.95, estimated_latency = "800ms" }]
            [[workers]]
            id = "wav2vec2"
            endpoint = "http://127.0.0.1:7002"
            "#,
        )
        .unwrap();
        assert!(!config.builtin_workers);
        assert_eq!(config.orchestrator.worker_timeout, Duration::from_secs(5));
        let gama = &config.workers[0];
        assert_eq!(gama.kind.as_deref(), Some("audio-language"));
        let capabilities = gama.capabilities.as_ref().unwrap();
        assert_eq!(
            capabilities[0].estimated_latency,
            Duration::from_millis(800)
        );
        assert!(config.workers[1].kind.is_none());
        assert!(config.workers[1].capabilities.is_none());
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = from_toml("builtin_worker = false").unwrap_err().to_string();
        assert!(err.contains("builtin_worker"), "{err}");
    }

    #[test]
    fn errors_name_the_key_at_fault() {
        let err = from_toml(
            r#"
            [[workers]]
            id = "gama"
            endpoint = "127.0.0.1:7001"
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("workers[0].endpoint"), "{err}");

        let err = from_toml(
            r#"
            [[workers]]
            id = "gama"
            endpoint = "http://127.0.0.1:7001"
            capabilities = [{ task_type = "audio_analysis", confidence = 1.5 }]
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("workers[0].capabilities[0].confidence"),
            "{err}"
        );
    }

    #[test]
    fn replicas_and_selection_are_read() {
        let config = from_toml(
            r#"
            [selection]
            policy = "thompson"
            half_life = "30s"
            seed = 7
            routes = [{ task_type = "transcription", model = "whisper", confidence = 0.9, fallbacks = ["wav2vec2"] }]
            [[workers]]
            id = "whisper"
            endpoints = ["http://127.0.0.1:7001", "http://127.0.0.1:7002"]
            "#,
        )
        .unwrap();
        assert_eq!(config.workers[0].endpoints.len(), 2);
        let selection = &config.orchestrator.selection;
        assert_eq!(selection.policy, Policy::Thompson);
        assert_eq!(selection.half_life, Duration::from_secs(30));
        assert_eq!(config.orchestrator.seed, Some(7));
        assert_eq!(selection.routes[0].model.as_str(), "whisper");
    }

    #[test]
    fn without_routes_the_gama_route_applies_and_an_empty_list_removes_it() {
        let config = RawConfig::default().validate().unwrap();
        assert_eq!(config.orchestrator.selection.routes, [Route::gama()]);
        let config = from_toml("[selection]\nroutes = []\n").unwrap();
        assert!(config.orchestrator.selection.routes.is_empty());
    }

    #[test]
    fn a_worker_needs_exactly_one_of_endpoint_and_endpoints() {
        let err = from_toml("[[workers]]\nid = \"gama\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("workers[0]") && err.contains("endpoint"),
            "{err}"
        );
        let err = from_toml("[[workers]]\nid = \"gama\"\nendpoints = [\"http://a:1\", \"b:2\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("workers[0].endpoints[1]"), "{err}");
    }

    #[test]
    fn the_scheduler_table_is_read_and_checked() {
        let config = from_toml("[scheduler]\nmax_queue = 5\naging_interval = \"2s\"\n").unwrap();
        assert_eq!(config.orchestrator.scheduler.max_queue, 5);
        assert_eq!(
            config.orchestrator.scheduler.aging_interval,
            Duration::from_secs(2)
        );
        let err = from_toml("[scheduler]\nmax_queue = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("scheduler.max_queue"), "{err}");
    }

    #[test]
    fn an_invalid_context_template_stops_start_up_naming_it_and_its_line() {
        let err = from_toml(
            "[[context.transformers]]\nsource = \"agent\"\ntarget = \"text-generation\"\ntemplate = \"ok\\n{% if %}\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("context.transformers[0] (agent -> text-generation)"),
            "{err}"
        );
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn an_unknown_policy_is_refused() {
        let err = from_toml("[selection]\npolicy = \"random\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("random") || err.contains("policy"), "{err}");
    }

    #[test]
    fn a_model_listed_twice_is_refused() {
        let err = from_toml(
            r#"
            [[workers]]
            id = "gama"
            endpoint = "http://127.0.0.1:7001"
            [[workers]]
            id = "gama"
            endpoint = "http://127.0.0.1:7002"
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("workers[1].id") && err.contains("gama"),
            "{err}"
        );
    }
}
