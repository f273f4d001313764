//! The `[[workers]]` list: each model, the endpoints of its replicas (or
//! the DNS names whose addresses are its replicas), and what the
//! configuration fixes of its kind and capabilities; and the
//! `[discovery]` table, how those names are resolved.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// The worker's address: `http://host:port`, `https://host:port` for
    /// TLS (see `[worker_tls]`), or `dns://host:port` (`dns+https://` for
    /// TLS) for a pool whose replicas are every address the name resolves
    /// to, followed as it changes (see `[discovery]`).
    pub endpoint: Option<String>,
    /// The addresses of the model's replicas, instead of `endpoint`.
    pub endpoints: Option<Vec<String>>,
    /// Overrides the kind the worker reports.
    pub kind: Option<String>,
    /// Overrides the capabilities the worker reports.
    pub capabilities: Option<Vec<Capability>>,
}

/// Where one or more replicas of a model are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEndpoint {
    /// One replica, at `http://host:port` or `https://host:port`.
    Fixed(String),
    /// A replica at every address a DNS name resolves to.
    Pool(DnsPool),
}

impl WorkerEndpoint {
    /// Reads an endpoint as configured; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: tonic::transport::Uri =
            text.parse().map_err(|_| format!("`{text}` is not a URI"))?;
        let tls = match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => {
                return Ok(Self::Fixed(text.to_owned()));
            }
            Some("dns") => false,
            Some("dns+https") => true,
            _ => {
                return Err(format!(
                    "`{text}` must look like http://host:port, https://host:port, dns://host:port or dns+https://host:port"
                ));
            }
        };
        let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
            return Err(format!(
                "`{text}` needs a host and a port, as in dns://host:port: DNS gives addresses only"
            ));
        };
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") || text.ends_with('/') {
            return Err(format!(
                "`{text}` must be only dns://host:port, with no path"
            ));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(format!("`{text}` needs a host and a port other than 0"));
        }
        Ok(Self::Pool(DnsPool {
            host: host.to_ascii_lowercase(),
            port,
            tls,
        }))
    }
}

impl fmt::Display for WorkerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(endpoint) => f.write_str(endpoint),
            Self::Pool(pool) => pool.fmt(f),
        }
    }
}

/// A DNS name whose A and AAAA records are the replicas of a model, all
/// listening on one port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsPool {
    /// The name, lower case.
    pub host: String,
    /// The port every replica listens on.
    pub port: u16,
    /// Whether replicas are reached over TLS, their certificates checked
    /// against the name (unless `[worker_tls] domain` says another).
    pub tls: bool,
}

impl DnsPool {
    /// The endpoint of the replica at `address`.
    pub fn endpoint(&self, address: IpAddr) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        match address {
            IpAddr::V4(v4) => format!("{scheme}://{v4}:{}", self.port),
            IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{}", self.port),
        }
    }
}

impl fmt::Display for DnsPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "dns+https" } else { "dns" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// One model and the workers serving it.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The model's id.
    pub id: ModelId,
    /// Where its replicas are.
    pub endpoints: Vec<WorkerEndpoint>,
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
        let (written, single) = match (self.endpoint, self.endpoints) {
            (Some(one), None) => (vec![one], true),
            (None, Some(many)) if !many.is_empty() => (many, false),
            _ => {
                return Err(invalid(
                    format!("workers[{i}]"),
                    "give exactly one of `endpoint` or a non-empty `endpoints`",
                ));
            }
        };
        let mut endpoints = Vec::with_capacity(written.len());
        for (j, endpoint) in written.iter().enumerate() {
            let key = if single {
                format!("workers[{i}].endpoint")
            } else {
                format!("workers[{i}].endpoints[{j}]")
            };
            let endpoint =
                WorkerEndpoint::parse(endpoint).map_err(|reason| invalid(&key, reason))?;
            if endpoints.contains(&endpoint) {
                return Err(invalid(key, format!("`{endpoint}` is listed twice")));
            }
            endpoints.push(endpoint);
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

/// The `[discovery]` table as written: how `dns://` endpoints are
/// followed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDiscovery {
    /// Time between two resolutions of each name.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A file in `/etc/hosts` format read at every resolution, whose lines
    /// naming a pool's host are its addresses, before the system resolver
    /// is asked: for tests, and for clusters without DNS. Default: none.
    pub hosts_file: Option<PathBuf>,
}

/// The default `[discovery] interval`.
const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// The shortest `[discovery] interval`: quicker only loads the resolver.
const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_millis(50);

impl Default for RawDiscovery {
    fn default() -> Self {
        Self {
            interval: DEFAULT_DISCOVERY_INTERVAL,
            hosts_file: None,
        }
    }
}

/// How `dns://` endpoints are followed, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// Time between two resolutions of each name.
    pub interval: Duration,
    /// The hosts file read before the system resolver, if any.
    pub hosts_file: Option<PathBuf>,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            interval: DEFAULT_DISCOVERY_INTERVAL,
            hosts_file: None,
        }
    }
}

impl RawDiscovery {
    /// Checks the interval's range and that the hosts file can be read.
    pub(super) fn validate(self) -> Result<DiscoverySettings, Error> {
        if self.interval < MIN_DISCOVERY_INTERVAL {
            return Err(invalid(
                "discovery.interval",
                format!("must be at least {}ms", MIN_DISCOVERY_INTERVAL.as_millis()),
            ));
        }
        if let Some(path) = &self.hosts_file
            && let Err(error) = std::fs::read_to_string(path)
        {
            return Err(invalid(
                "discovery.hosts_file",
                format!("cannot read `{}`: {error}", path.display()),
            ));
        }
        Ok(DiscoverySettings {
            interval: self.interval,
            hosts_file: self.hosts_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<super::super::Config, String> {
        let raw: super::super::RawConfig = figment::Figment::new()
            .merge(<figment::providers::Toml as figment::providers::Format>::string(text))
            .extract()
            .map_err(|error| error.to_string())?;
        raw.validate().map_err(|error| error.to_string())
    }

    #[test]
    fn a_dns_endpoint_is_a_pool_of_the_names_addresses() {
        let config = load(
            "[[workers]]\nid = \"gama\"\nendpoints = [\"dns://Model-Gama.ns.svc.cluster.local:7001\", \"dns+https://pool.test:443\", \"http://10.0.0.1:7001\"]\n",
        )
        .unwrap();
        let endpoints = &config.workers[0].endpoints;
        assert_eq!(
            endpoints[0],
            WorkerEndpoint::Pool(DnsPool {
                host: "model-gama.ns.svc.cluster.local".to_owned(),
                port: 7001,
                tls: false,
            })
        );
        assert_eq!(
            endpoints[0].to_string(),
            "dns://model-gama.ns.svc.cluster.local:7001"
        );
        let WorkerEndpoint::Pool(tls) = &endpoints[1] else {
            panic!("a pool")
        };
        assert!(tls.tls);
        assert_eq!(
            tls.endpoint("fd00::5".parse().unwrap()),
            "https://[fd00::5]:443"
        );
        assert_eq!(
            endpoints[2],
            WorkerEndpoint::Fixed("http://10.0.0.1:7001".to_owned())
        );
        assert_eq!(config.discovery, DiscoverySettings::default());
    }

    #[test]
    fn a_bad_dns_endpoint_is_refused_naming_the_key() {
        for (endpoint, says) in [
            ("dns://pool.test", "needs a host and a port"),
            ("dns://:7001", "needs a host"),
            ("dns://pool.test:7001/models", "no path"),
            ("dns+http://pool.test:7001", "must look like"),
            ("srv://pool.test:7001", "must look like"),
        ] {
            let error = load(&format!(
                "[[workers]]\nid = \"gama\"\nendpoint = \"{endpoint}\"\n"
            ))
            .unwrap_err();
            assert!(
                error.contains("workers[0].endpoint") && error.contains(says),
                "{endpoint}: {error}"
            );
        }
        let error = load(
            "[[workers]]\nid = \"gama\"\nendpoints = [\"dns://pool.test:1\", \"dns://POOL.test:1\"]\n",
        )
        .unwrap_err();
        assert!(
            error.contains("workers[0].endpoints[1]") && error.contains("listed twice"),
            "{error}"
        );
    }

    #[test]
    fn the_discovery_table_is_read_and_a_bad_interval_or_file_is_named() {
        let hosts = tempfile::NamedTempFile::new().unwrap();
        let config = load(&format!(
            "[discovery]\ninterval = \"200ms\"\nhosts_file = \"{}\"\n",
            hosts.path().display()
        ))
        .unwrap();
        assert_eq!(config.discovery.interval, Duration::from_millis(200));
        assert_eq!(config.discovery.hosts_file.as_deref(), Some(hosts.path()));

        let error = load("[discovery]\ninterval = \"10ms\"\n").unwrap_err();
        assert!(
            error.contains("discovery.interval") && error.contains("at least 50ms"),
            "{error}"
        );
        let error = load("[discovery]\ninterval = \"soon\"\n").unwrap_err();
        assert!(error.contains("interval"), "{error}");
        let error = load("[discovery]\nhosts_file = \"/no/such/hosts\"\n").unwrap_err();
        assert!(
            error.contains("discovery.hosts_file") && error.contains("/no/such/hosts"),
            "{error}"
        );
        let error = load("[discovery]\nttl = \"1s\"\n").unwrap_err();
        assert!(error.contains("ttl"), "{error}");
    }
}
