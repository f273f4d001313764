//! The `[metrics]` table: where the Prometheus scrape endpoint is served.
//!
//! Off by default. `listen` turns it on; so does the standard
//! `OTEL_METRICS_EXPORTER=prometheus` (alone, or beside `otlp`), on
//! `OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT` (default
//! `localhost:9464`) when `listen` is not set: the file wins.

use std::net::SocketAddr;

use grym_telemetry::PrometheusEndpoint;
use serde::Deserialize;

use crate::error::Error;

/// The `[metrics]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Where `/metrics` is served over plain HTTP, for example
    /// `127.0.0.1:9464`; off when absent.
    pub listen: Option<String>,
}

/// Where the scrape endpoint is served, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// The address to bind.
    pub listen: SocketAddr,
    /// What asked for it, for errors: `metrics.listen` or the
    /// `OTEL_EXPORTER_PROMETHEUS_*` variables.
    pub key: &'static str,
}

/// The key of the file's setting.
const LISTEN_KEY: &str = "metrics.listen";

/// The variables' name in errors.
const EXPORTER_KEY: &str = "OTEL_EXPORTER_PROMETHEUS_HOST/PORT";

impl RawMetrics {
    pub(super) fn validate(self) -> Result<Option<MetricsSettings>, Error> {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        let listen = listen.trim().parse().map_err(|_| {
            super::invalid(
                LISTEN_KEY,
                format!("`{listen}` is not a host:port address, such as 127.0.0.1:9464"),
            )
        })?;
        Ok(Some(MetricsSettings {
            listen,
            key: LISTEN_KEY,
        }))
    }
}

impl MetricsSettings {
    /// The file's `[metrics]` when it has one, else the endpoint the
    /// `OTEL_*` variables ask for, its host resolved now (to its first IPv4
    /// address when it has one: `localhost` is `127.0.0.1`).
    pub async fn chosen(
        file: Option<Self>,
        exporter: Option<&PrometheusEndpoint>,
    ) -> Result<Option<Self>, Error> {
        if file.is_some() {
            return Ok(file);
        }
        let Some(endpoint) = exporter else {
            return Ok(None);
        };
        let unresolved = |reason: String| {
            super::invalid(
                "OTEL_EXPORTER_PROMETHEUS_HOST",
                format!("`{}` {reason}", endpoint.host),
            )
        };
        let addresses: Vec<SocketAddr> =
            tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|error| unresolved(format!("does not resolve: {error}")))?
                .collect();
        let listen = addresses
            .iter()
            .find(|address| address.is_ipv4())
            .or(addresses.first())
            .copied()
            .ok_or_else(|| unresolved("resolves to no address".to_owned()))?;
        Ok(Some(Self {
            listen,
            key: EXPORTER_KEY,
        }))
    }

    /// Whether the configuration file asked for it (and a reload may
    /// change it).
    pub fn from_file(&self) -> bool {
        self.key == LISTEN_KEY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(text: &str) -> Result<Option<MetricsSettings>, Error> {
        RawMetrics {
            listen: Some(text.to_owned()),
        }
        .validate()
    }

    #[test]
    fn off_unless_an_address_is_given_and_a_bad_one_names_the_key() {
        assert_eq!(RawMetrics::default().validate().unwrap(), None);
        let settings = listen("0.0.0.0:9464").unwrap().unwrap();
        assert_eq!(settings.listen, "0.0.0.0:9464".parse().unwrap());
        assert!(settings.from_file());
        let error = listen("localhost").unwrap_err().to_string();
        assert!(error.contains("metrics.listen"), "{error}");
        assert!(error.contains("host:port"), "{error}");
    }

    #[tokio::test]
    async fn the_file_wins_over_the_variables_whose_host_is_resolved() {
        let file = listen("127.0.0.1:9100").unwrap();
        let exporter = PrometheusEndpoint::default();
        let chosen = MetricsSettings::chosen(file.clone(), Some(&exporter))
            .await
            .unwrap();
        assert_eq!(chosen, file);

        let chosen = MetricsSettings::chosen(None, Some(&exporter))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(chosen.listen, "127.0.0.1:9464".parse().unwrap());
        assert!(!chosen.from_file());
        assert_eq!(MetricsSettings::chosen(None, None).await.unwrap(), None);
    }
}
