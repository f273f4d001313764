//! Configuration, in two stages: [`RawConfig`] is what the TOML file and the
//! `GRYM_*` environment say (unknown keys refused, defaults filled in);
//! [`RawConfig::validate`] turns it into a validated [`Config`] whose
//! errors name the key at fault.
//!
//! The tables of the core's settings (`[selection]`, `[scheduler]`,
//! `[context]`, `[bottlenecks]`, `[ejection]`, `[retries]`, `[hedging]`)
//! are read straight into the core's own
//! settings types, whose defaults and checks live beside them; this module
//! holds only what is grymd's: the listener, the workers, the tokens.
//!
//! Sources, later ones winning: defaults, the TOML file, `GRYM_*` variables
//! (`GRYM_LISTEN`, `GRYM_WORKER_TIMEOUT`, `GRYM_STORE_URL`, ...), then
//! command-line flags.

mod connections;
mod metrics;
mod store;
mod worker_tls;
mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use grym_core::probe::ProbeSettings;
use grym_core::{
    BottleneckSettings, ContextSettings, EjectionSettings, HedgingSettings, Limits,
    OrchestratorSettings, RecipeSpec, Recipes, RetrySettings, SchedulerSettings, SelectionSettings,
    SettingError, Tenant,
};
use serde::Deserialize;

pub use self::connections::{ConnectionSettings, RawTls, TlsSettings};
pub use self::metrics::{MetricsSettings, RawMetrics};
pub use self::store::{RawStore, StoreConfig, default_url};
pub use self::worker_tls::{RawWorkerTls, WorkerTls};
pub use self::workers::{
    DiscoverySettings, DnsPool, RawDiscovery, RawWorker, WorkerConfig, WorkerEndpoint,
};
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
    "reflection",
    "shutdown_grace",
];

/// The default `shutdown_grace`: room for most calls in flight to end (a
/// pod's `terminationGracePeriodSeconds` should exceed it by a few seconds).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A core setting's error, its key within `table`.
fn setting(table: &str) -> impl FnOnce(SettingError) -> Error {
    move |error| {
        let error = error.within(table);
        invalid(error.key, error.reason)
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
    /// Whether server reflection is served (health always is).
    pub reflection: bool,
    /// How long running and queued tasks may take to end after SIGTERM or
    /// SIGINT, before what is left is ended.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// What one request may carry.
    pub limits: Limits,
    /// How models are chosen.
    pub selection: SelectionSettings,
    /// How tasks are queued.
    pub scheduler: SchedulerSettings,
    /// How context is shaped and kept.
    pub context: ContextSettings,
    /// Who may call.
    pub auth: RawAuth,
    /// Bounds on callers' connections.
    pub connections: ConnectionSettings,
    /// TLS for callers.
    pub tls: RawTls,
    /// Chains of task types that stand in for a type no healthy model
    /// serves, over the built-in ones; an empty chain removes one.
    pub recipes: HashMap<String, RecipeSpec>,
    /// When a finding is a bottleneck.
    pub bottlenecks: BottleneckSettings,
    /// The model workers to use.
    pub workers: Vec<RawWorker>,
    /// TLS to `https://` workers.
    pub worker_tls: RawWorkerTls,
    /// How `dns://` workers are followed.
    pub discovery: RawDiscovery,
    /// Where accepted work is kept.
    pub store: RawStore,
    /// When a replica whose calls fail is taken out of rotation.
    pub ejection: EjectionSettings,
    /// How failed calls are retried, within a budget.
    pub retries: RetrySettings,
    /// Which task types hedge slow calls.
    pub hedging: HedgingSettings,
    /// MCP for agents over Streamable HTTP.
    pub mcp: RawMcp,
    /// The Prometheus scrape endpoint.
    pub metrics: RawMetrics,
}

impl Default for RawConfig {
    fn default() -> Self {
        let probe = ProbeSettings::default();
        Self {
            listen: "127.0.0.1:50051".to_owned(),
            builtin_workers: true,
            worker_timeout: OrchestratorSettings::default().worker_timeout,
            health_interval: probe.interval,
            health_timeout: probe.timeout,
            connect_timeout: Duration::from_secs(1),
            max_message_bytes: grym_worker::sdk::DEFAULT_MAX_MESSAGE_BYTES,
            reflection: true,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            limits: Limits::default(),
            selection: SelectionSettings::default(),
            scheduler: SchedulerSettings::default(),
            context: ContextSettings::default(),
            auth: RawAuth::default(),
            connections: ConnectionSettings::default(),
            tls: RawTls::default(),
            recipes: HashMap::new(),
            bottlenecks: BottleneckSettings::default(),
            workers: Vec::new(),
            worker_tls: RawWorkerTls::default(),
            discovery: RawDiscovery::default(),
            store: RawStore::default(),
            ejection: EjectionSettings::default(),
            retries: RetrySettings::default(),
            hedging: HedgingSettings::default(),
            mcp: RawMcp::default(),
            metrics: RawMetrics::default(),
        }
    }
}

/// The `[mcp]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMcp {
    /// Where MCP's Streamable HTTP is served (at `/mcp`), for example
    /// `127.0.0.1:50052`; off when absent. Plain HTTP: keep it on loopback.
    pub listen: Option<String>,
    /// The `Host` header values accepted (DNS rebinding protection); empty
    /// accepts the loopback names only (`localhost`, `127.0.0.1`, `::1`).
    pub allowed_hosts: Vec<String>,
}

/// MCP over Streamable HTTP, validated.
#[derive(Debug, Clone)]
pub struct McpSettings {
    /// Where it is served.
    pub listen: SocketAddr,
    /// The `Host` values accepted; empty for the loopback names.
    pub allowed_hosts: Vec<String>,
}

impl RawMcp {
    fn validate(self) -> Result<Option<McpSettings>, Error> {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        let listen = listen.parse().map_err(|_| {
            invalid(
                "mcp.listen",
                format!("`{listen}` is not a host:port address"),
            )
        })?;
        Ok(Some(McpSettings {
            listen,
            allowed_hosts: self.allowed_hosts,
        }))
    }
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
    /// Whether server reflection is served (health always is).
    pub reflection: bool,
    /// How long running and queued tasks may take to end after SIGTERM or
    /// SIGINT (zero: they are ended at once).
    pub shutdown_grace: Duration,
    /// The model workers to use.
    pub workers: Vec<WorkerConfig>,
    /// TLS to `https://` workers, its files read; read again on SIGHUP.
    pub worker_tls: Arc<WorkerTls>,
    /// How `dns://` workers are followed.
    pub discovery: DiscoverySettings,
    /// The file this was read from, read again on SIGHUP.
    pub source: Option<PathBuf>,
    /// Bearer token -> tenant; empty when calls need no token.
    pub auth_tokens: HashMap<String, Tenant>,
    /// Bounds on callers' connections.
    pub connections: ConnectionSettings,
    /// TLS for callers; `None` serves plain HTTP/2.
    pub tls: Option<TlsSettings>,
    /// Where accepted work is kept.
    pub store: StoreConfig,
    /// The `--listen` flag, which stands over the file's `listen` at start
    /// and on every reload.
    pub listen_flag: Option<SocketAddr>,
    /// MCP over Streamable HTTP; `None` when off.
    pub mcp: Option<McpSettings>,
    /// The Prometheus scrape endpoint; `None` when off.
    pub metrics: Option<MetricsSettings>,
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
            .merge(
                Env::prefixed("GRYM_STORE_")
                    .only(&["url", "durable_execute"])
                    .map(|key| format!("store.{key}").into()),
            )
            .extract()
            .map_err(Box::new)?;
        let mut config = raw.validate()?;
        config.source = file.map(Path::to_path_buf);
        Ok(config)
    }
}

impl Config {
    /// Listens on `listen` whatever the file says (the `--listen` flag).
    pub fn override_listen(&mut self, listen: SocketAddr) {
        self.listen = listen;
        self.listen_flag = Some(listen);
    }

    /// The settings read only at start-up that `next` changes, by their
    /// names in the file: everything but `[[workers]]` and `[worker_tls]`,
    /// which reload.
    pub fn changed_at_restart(&self, next: &Config) -> Vec<&'static str> {
        let listen = next.listen_flag.or(self.listen_flag).unwrap_or(next.listen);
        [
            ("listen", self.listen != listen),
            (
                "builtin_workers",
                self.builtin_workers != next.builtin_workers,
            ),
            (
                "the orchestrator's settings",
                self.orchestrator != next.orchestrator,
            ),
            ("health_interval/health_timeout", self.probe != next.probe),
            (
                "connect_timeout",
                self.connect_timeout != next.connect_timeout,
            ),
            (
                "max_message_bytes",
                self.max_message_bytes != next.max_message_bytes,
            ),
            ("reflection", self.reflection != next.reflection),
            ("shutdown_grace", self.shutdown_grace != next.shutdown_grace),
            ("[auth]", self.auth_tokens != next.auth_tokens),
            ("[connections]", self.connections != next.connections),
            ("[tls]", self.tls != next.tls),
            ("[store]", self.store != next.store),
            ("[discovery]", self.discovery != next.discovery),
            (
                "[metrics]",
                self.metrics.as_ref().filter(|m| m.from_file()) != next.metrics.as_ref(),
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
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
        let workers = workers::validate(self.workers)?;
        let worker_tls = self.worker_tls.validate()?;
        let discovery = self.discovery.validate()?;
        self.connections.validate()?;
        let tls = self.tls.validate(!self.auth.tokens.is_empty())?;
        let store = self.store.validate()?;
        let mcp = self.mcp.validate()?;
        let metrics = self.metrics.validate()?;
        self.limits.validate().map_err(setting("limits"))?;
        self.selection.validate().map_err(setting("selection"))?;
        self.scheduler.validate().map_err(setting("scheduler"))?;
        self.context.validate().map_err(setting("context"))?;
        let recipes = Recipes::configured(self.recipes).map_err(setting("recipes"))?;
        self.bottlenecks
            .validate()
            .map_err(setting("bottlenecks"))?;
        self.ejection.validate().map_err(setting("ejection"))?;
        self.retries.validate().map_err(setting("retries"))?;
        Ok(Config {
            listen,
            builtin_workers: self.builtin_workers,
            orchestrator: OrchestratorSettings {
                worker_timeout: self.worker_timeout,
                selection: self.selection,
                scheduler: self.scheduler,
                context: self.context,
                recipes,
                bottlenecks: self.bottlenecks,
                limits: self.limits,
                durability: store.durability.clone(),
                ejection: self.ejection,
                retries: self.retries,
                hedging: self.hedging,
                // Set by grymd once telemetry says whether metrics go out.
                metrics: true,
            },
            probe: ProbeSettings {
                interval: self.health_interval,
                timeout: self.health_timeout,
            },
            connect_timeout: self.connect_timeout,
            max_message_bytes: self.max_message_bytes,
            reflection: self.reflection,
            shutdown_grace: self.shutdown_grace,
            workers,
            worker_tls,
            discovery,
            source: None,
            auth_tokens: self.auth.validate()?,
            connections: self.connections,
            tls,
            store,
            listen_flag: None,
            mcp,
            metrics,
        })
    }
}

impl RawAuth {
    fn validate(self) -> Result<HashMap<String, Tenant>, Error> {
        let mut tokens = HashMap::with_capacity(self.tokens.len());
        for (i, entry) in self.tokens.into_iter().enumerate() {
            if entry.token.len() < 16 {
                return Err(invalid(
                    format!("auth.tokens[{i}].token"),
                    "must be at least 16 characters",
                ));
            }
            let tenant = Tenant::configured(entry.tenant).map_err(|_| {
                invalid(
                    format!("auth.tokens[{i}].tenant"),
                    format!("must be 1 to {} characters", Tenant::MAX_LEN),
                )
            })?;
            if tokens.insert(entry.token, tenant).is_some() {
                return Err(invalid(
                    format!("auth.tokens[{i}].token"),
                    "is listed twice",
                ));
            }
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests;
