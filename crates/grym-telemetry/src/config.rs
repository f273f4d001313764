//! What telemetry does, as one explicit [`TelemetryConfig`], and how the
//! standard environment variables fill it in ([`TelemetryConfig::from_env`]).
//!
//! Read here: `RUST_LOG`, `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`,
//! `OTEL_TRACES_EXPORTER` (`otlp` or `none`), `OTEL_METRICS_EXPORTER`
//! (`otlp`, `prometheus`, both as `otlp,prometheus`, or `none`),
//! `OTEL_EXPORTER_PROMETHEUS_HOST` and `OTEL_EXPORTER_PROMETHEUS_PORT`,
//! `OTEL_EXPORTER_OTLP{,_TRACES,_METRICS}_PROTOCOL` (`grpc`, the default,
//! `http/protobuf` or `http/json`), `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` and
//! `OTEL_METRIC_EXPORT_INTERVAL`. The OpenTelemetry crates read the rest
//! themselves: `OTEL_EXPORTER_OTLP{,_TRACES,_METRICS}_{HEADERS,TIMEOUT,
//! COMPRESSION,INSECURE}`, `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`,
//! `OTEL_BSP_*` (the batch span processor) and `OTEL_SPAN_*_COUNT_LIMIT`.
//!
//! A value this crate reads and cannot use is an error naming the variable,
//! so a typo stops the binary at start instead of silently exporting nothing.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::Sampler;

use crate::Error;
use crate::endpoint::{self, OtlpProtocol, Signal};
use crate::prometheus::PrometheusEndpoint;

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(Error::LogFormat(text.to_owned())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Everything [`init_with`](crate::init_with) needs; nothing is read from
/// the environment after it is built.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Further resource attributes (`service.name` among them is overridden
    /// by [`service_name`](Self::service_name)).
    pub resource_attributes: Vec<KeyValue>,
    /// How log lines look.
    pub log_format: LogFormat,
    /// Which events and spans are kept, as `RUST_LOG` directives.
    pub log_filter: String,
    /// The version reported as `service.version` (unless
    /// `OTEL_RESOURCE_ATTRIBUTES` names one).
    pub service_version: String,
    /// Where spans go over OTLP (for HTTP, the whole URL, `/v1/traces`
    /// included); `None` exports no trace and installs no tracer at all.
    pub traces_endpoint: Option<String>,
    /// How spans are sent.
    pub traces_protocol: OtlpProtocol,
    /// Where metrics go over OTLP (for HTTP, the whole URL); `None` leaves
    /// the global meter provider a no-op.
    pub metrics_endpoint: Option<String>,
    /// How metrics are sent.
    pub metrics_protocol: OtlpProtocol,
    /// How long one OTLP/HTTP request may take (`OTEL_EXPORTER_OTLP_TIMEOUT`,
    /// 10 s by default); retries of a failed export stop at the same bound.
    pub export_timeout: Duration,
    /// Where a Prometheus scrape endpoint is to be served
    /// (`OTEL_METRICS_EXPORTER=prometheus`); when set, metrics are kept for
    /// a scrape ([`prometheus`](crate::prometheus())) whether or not they
    /// are also pushed.
    pub prometheus: Option<PrometheusEndpoint>,
    /// Which traces are recorded.
    pub sampler: Sampler,
    /// Time between two metric exports.
    pub metric_export_interval: Duration,
}

/// The log filter when `RUST_LOG` is unset: `info`, but only warnings and
/// errors from the OpenTelemetry SDK itself (such as a failed export).
pub const DEFAULT_LOG_FILTER: &str = "info,opentelemetry=warn";

/// The default time between two metric exports, as the specification sets
/// it.
pub const DEFAULT_METRIC_EXPORT_INTERVAL: Duration = Duration::from_secs(60);

/// The default bound of one export, as the specification sets it.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

impl TelemetryConfig {
    /// Logs in `log_format` with [`DEFAULT_LOG_FILTER`], exporting nothing.
    pub fn new(service_name: impl Into<String>, log_format: LogFormat) -> Self {
        Self {
            service_name: service_name.into(),
            resource_attributes: Vec::new(),
            // Every crate of the workspace, binaries included, shares this
            // version.
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
            log_format,
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            traces_endpoint: None,
            traces_protocol: OtlpProtocol::Grpc,
            metrics_endpoint: None,
            metrics_protocol: OtlpProtocol::Grpc,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
            prometheus: None,
            sampler: Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            metric_export_interval: DEFAULT_METRIC_EXPORT_INTERVAL,
        }
    }

    /// Exports traces and metrics to one OTLP/gRPC endpoint, such as
    /// `http://127.0.0.1:4317`.
    pub fn with_otlp_endpoint(self, endpoint: impl Into<String>) -> Self {
        self.with_otlp(OtlpProtocol::Grpc, endpoint)
    }

    /// Exports traces and metrics over `protocol` to `base`, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` would: OTLP/HTTP appends `/v1/traces`
    /// and `/v1/metrics` to it.
    pub fn with_otlp(mut self, protocol: OtlpProtocol, base: impl Into<String>) -> Self {
        let base = base.into();
        self.traces_protocol = protocol;
        self.metrics_protocol = protocol;
        self.traces_endpoint = Some(endpoint::resolve(
            Signal::Traces,
            protocol,
            None,
            Some(base.clone()),
        ));
        self.metrics_endpoint = Some(endpoint::resolve(
            Signal::Metrics,
            protocol,
            None,
            Some(base),
        ));
        self
    }

    /// The configuration the process environment describes; `service_name`
    /// applies unless `OTEL_SERVICE_NAME` (or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`) names another.
    pub fn from_env(service_name: &str, log_format: LogFormat) -> Result<Self, Error> {
        Self::from_lookup(service_name, log_format, |key| std::env::var(key).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    pub(crate) fn from_lookup(
        service_name: &str,
        log_format: LogFormat,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        // Unset and empty are the same, as the specification asks.
        let var = |key: &str| lookup(key).filter(|value| !value.trim().is_empty());
        let mut config = Self::new(service_name, log_format);
        if let Some(filter) = var("RUST_LOG") {
            config.log_filter = filter;
        }

        config.resource_attributes = match var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(text) => parse_resource_attributes(&text)?,
            None => Vec::new(),
        };
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            config.service_name = name;
        } else if let Some(name) = config
            .resource_attributes
            .iter()
            .find(|kv| kv.key.as_str() == "service.name")
        {
            config.service_name = name.value.to_string();
        }

        let protocol = |key: &'static str| var(key).map(|value| OtlpProtocol::parse(key, &value));
        let shared_protocol = protocol("OTEL_EXPORTER_OTLP_PROTOCOL").transpose()?;
        config.traces_protocol = protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .transpose()?
            .or(shared_protocol)
            .unwrap_or_default();
        config.metrics_protocol = protocol("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
            .transpose()?
            .or(shared_protocol)
            .unwrap_or_default();
        if let Some(millis) = var("OTEL_EXPORTER_OTLP_TIMEOUT") {
            config.export_timeout = parse_millis("OTEL_EXPORTER_OTLP_TIMEOUT", &millis)?;
        }

        let disabled = match var("OTEL_SDK_DISABLED") {
            None => false,
            Some(value) => parse_bool("OTEL_SDK_DISABLED", &value)?,
        };
        // A signal is exported when an endpoint is set, or when its
        // exporter is named (`otlp`), to the protocol's default endpoint
        // then; with neither, nothing is.
        let endpoint = |exporter_key: &'static str,
                        endpoint_key: &str,
                        signal: Signal,
                        protocol: OtlpProtocol| {
            let named = match var(exporter_key).as_deref().map(str::trim) {
                None => false,
                Some("otlp") => true,
                Some("none") => return Ok(None),
                // A list, Prometheus among it: pushed only when `otlp` is
                // listed too.
                Some(list) if exporter_key == "OTEL_METRICS_EXPORTER" => {
                    if !crate::prometheus::otlp_listed(list)? {
                        return Ok(None);
                    }
                    true
                }
                Some(other) => {
                    return Err(invalid(exporter_key, other, "expected `otlp` or `none`"));
                }
            };
            let own = var(endpoint_key);
            let base = var("OTEL_EXPORTER_OTLP_ENDPOINT");
            Ok((!disabled && (named || own.is_some() || base.is_some()))
                .then(|| endpoint::resolve(signal, protocol, own, base)))
        };
        config.traces_endpoint = endpoint(
            "OTEL_TRACES_EXPORTER",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            Signal::Traces,
            config.traces_protocol,
        )?;
        config.metrics_endpoint = endpoint(
            "OTEL_METRICS_EXPORTER",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            Signal::Metrics,
            config.metrics_protocol,
        )?;

        if !disabled {
            config.prometheus = crate::prometheus::endpoint_from(&var)?;
        }

        if let Some(name) = var("OTEL_TRACES_SAMPLER") {
            config.sampler = parse_sampler(&name, var("OTEL_TRACES_SAMPLER_ARG").as_deref())?;
        }
        if let Some(millis) = var("OTEL_METRIC_EXPORT_INTERVAL") {
            config.metric_export_interval = parse_millis("OTEL_METRIC_EXPORT_INTERVAL", &millis)?;
        }
        Ok(config)
    }
}

/// A positive number of milliseconds.
fn parse_millis(key: &'static str, millis: &str) -> Result<Duration, Error> {
    millis
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&millis| millis > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| invalid(key, millis, "expected a positive number of milliseconds"))
}

fn invalid(key: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidVariable {
        key,
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "expected `true` or `false`")),
    }
}

/// `OTEL_TRACES_SAMPLER` and its argument, as the specification names them.
fn parse_sampler(name: &str, arg: Option<&str>) -> Result<Sampler, Error> {
    let ratio = || -> Result<f64, Error> {
        let Some(arg) = arg else {
            return Ok(1.0);
        };
        arg.trim()
            .parse::<f64>()
            .ok()
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .ok_or_else(|| invalid("OTEL_TRACES_SAMPLER_ARG", arg, "expected a ratio in [0, 1]"))
    };
    let parent_based = |root| Sampler::ParentBased(Box::new(root));
    Ok(match name.trim() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => parent_based(Sampler::AlwaysOn),
        "parentbased_always_off" => parent_based(Sampler::AlwaysOff),
        "parentbased_traceidratio" => parent_based(Sampler::TraceIdRatioBased(ratio()?)),
        other => {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER",
                other,
                "expected always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            ));
        }
    })
}

/// `key1=value1,key2=value2`, values percent-encoded (W3C Baggage octets).
fn parse_resource_attributes(text: &str) -> Result<Vec<KeyValue>, Error> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                invalid(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    text,
                    format!("`{pair}` is not key=value"),
                )
            })?;
            let key = key.trim();
            if key.is_empty() {
                return Err(invalid(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    text,
                    format!("`{pair}` has an empty key"),
                ));
            }
            let value = percent_decode(value.trim()).ok_or_else(|| {
                invalid(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    text,
                    format!("`{pair}` has a malformed percent-encoding"),
                )
            })?;
            Ok(KeyValue::new(key.to_owned(), value))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<TelemetryConfig, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TelemetryConfig::from_lookup("grymd", LogFormat::Text, |key| vars.get(key).cloned())
    }

    #[test]
    fn log_formats_parse_case_insensitively_and_print_back() {
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!(" Json ".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::Json.to_string(), "json");
        assert_eq!(LogFormat::default(), LogFormat::Text);
        let error = "yaml".parse::<LogFormat>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown log format `yaml`: expected `text` or `json`"
        );
    }

    #[test]
    fn no_endpoint_means_nothing_is_exported() {
        let config = from(&[]).unwrap();
        assert_eq!(config.traces_endpoint, None);
        assert_eq!(config.metrics_endpoint, None);
        assert_eq!(config.service_name, "grymd");
        assert_eq!(config.log_filter, DEFAULT_LOG_FILTER);
        assert_eq!(config.metric_export_interval, Duration::from_secs(60));
        // An empty variable counts as unset.
        let config = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]).unwrap();
        assert_eq!(config.traces_endpoint, None);
    }

    #[test]
    fn signal_endpoints_override_the_shared_one() {
        let config = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://metrics:4317"),
        ])
        .unwrap();
        assert_eq!(
            config.traces_endpoint.as_deref(),
            Some("http://collector:4317")
        );
        assert_eq!(
            config.metrics_endpoint.as_deref(),
            Some("http://metrics:4317")
        );
    }

    #[test]
    fn exporters_can_be_switched_off_one_by_one_or_all_at_once() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let config = from(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap();
        assert_eq!(config.traces_endpoint, None);
        assert!(config.metrics_endpoint.is_some());
        let config = from(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).unwrap();
        assert_eq!(
            (config.traces_endpoint, config.metrics_endpoint),
            (None, None)
        );
        let error = from(&[endpoint, ("OTEL_METRICS_EXPORTER", "statsd")]).unwrap_err();
        assert!(
            error.to_string().contains("OTEL_METRICS_EXPORTER"),
            "{error}"
        );
    }

    #[test]
    fn prometheus_is_pulled_beside_or_instead_of_the_otlp_push() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let config = from(&[endpoint, ("OTEL_METRICS_EXPORTER", "prometheus")]).unwrap();
        assert_eq!(config.metrics_endpoint, None);
        assert!(config.traces_endpoint.is_some());
        assert_eq!(config.prometheus, Some(PrometheusEndpoint::default()));
        assert_eq!(
            config.prometheus.map(|p| format!("{}:{}", p.host, p.port)),
            Some("localhost:9464".to_owned())
        );

        let config = from(&[
            endpoint,
            ("OTEL_METRICS_EXPORTER", "otlp, prometheus"),
            ("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0"),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", "9100"),
        ])
        .unwrap();
        assert!(config.metrics_endpoint.is_some());
        let prometheus = config.prometheus.unwrap();
        assert_eq!(
            (prometheus.host.as_str(), prometheus.port),
            ("0.0.0.0", 9100)
        );

        // The host and port alone ask for nothing.
        let config = from(&[("OTEL_EXPORTER_PROMETHEUS_PORT", "9100")]).unwrap();
        assert_eq!(config.prometheus, None);
        let config = from(&[
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_SDK_DISABLED", "true"),
        ])
        .unwrap();
        assert_eq!(config.prometheus, None);

        let error = from(&[
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", "70000"),
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("OTEL_EXPORTER_PROMETHEUS_PORT"),
            "{error}"
        );
        let error = from(&[("OTEL_METRICS_EXPORTER", "prometheus,none")]).unwrap_err();
        assert!(
            error.to_string().contains("OTEL_METRICS_EXPORTER"),
            "{error}"
        );
    }

    #[test]
    fn service_name_comes_from_the_variable_then_the_attributes_then_the_default() {
        let config = from(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=a,team=audio")]).unwrap();
        assert_eq!(config.service_name, "a");
        let config = from(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=a"),
            ("OTEL_SERVICE_NAME", "b"),
        ])
        .unwrap();
        assert_eq!(config.service_name, "b");
    }

    #[test]
    fn resource_attributes_are_percent_decoded() {
        let config = from(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=compose, note=a%2Cb%20c",
        )])
        .unwrap();
        let attributes: Vec<(String, String)> = config
            .resource_attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        assert_eq!(
            attributes,
            [
                ("deployment.environment".to_owned(), "compose".to_owned()),
                ("note".to_owned(), "a,b c".to_owned()),
            ]
        );
        assert!(from(&[("OTEL_RESOURCE_ATTRIBUTES", "novalue")]).is_err());
        assert!(from(&[("OTEL_RESOURCE_ATTRIBUTES", "k=%zz")]).is_err());
    }

    #[test]
    fn samplers_follow_the_specification_names() {
        let config = from(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
        .unwrap();
        assert!(
            matches!(&config.sampler, Sampler::ParentBased(root) if format!("{root:?}") == "TraceIdRatioBased(0.25)"),
            "{:?}",
            config.sampler
        );
        let config = from(&[("OTEL_TRACES_SAMPLER", "always_off")]).unwrap();
        assert!(matches!(config.sampler, Sampler::AlwaysOff));
        let error = from(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("OTEL_TRACES_SAMPLER_ARG"),
            "{error}"
        );
        assert!(from(&[("OTEL_TRACES_SAMPLER", "sometimes")]).is_err());
    }

    #[test]
    fn the_protocol_is_chosen_per_signal_over_the_shared_one() {
        let config = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://collector:4317",
            ),
        ])
        .unwrap();
        assert_eq!(config.traces_protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(
            config.traces_endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(config.metrics_protocol, OtlpProtocol::Grpc);
        assert_eq!(
            config.metrics_endpoint.as_deref(),
            Some("http://collector:4317")
        );
        let config = from(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")]).unwrap();
        assert_eq!(config.traces_protocol, OtlpProtocol::HttpJson);
        // A protocol alone exports nothing.
        assert_eq!(config.traces_endpoint, None);
        let error = from(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp")]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`"),
            "{error}"
        );
    }

    #[test]
    fn a_named_exporter_without_endpoint_sends_to_the_protocol_default() {
        let config = from(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        assert_eq!(
            config.traces_endpoint.as_deref(),
            Some("http://localhost:4317")
        );
        assert_eq!(
            config.metrics_endpoint.as_deref(),
            Some("http://localhost:4318/v1/metrics")
        );
    }

    #[test]
    fn the_export_timeout_is_in_milliseconds() {
        assert_eq!(from(&[]).unwrap().export_timeout, DEFAULT_EXPORT_TIMEOUT);
        let config = from(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")]).unwrap();
        assert_eq!(config.export_timeout, Duration::from_millis(2500));
        assert!(from(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]).is_err());
    }

    #[test]
    fn the_metric_interval_is_in_milliseconds() {
        let config = from(&[("OTEL_METRIC_EXPORT_INTERVAL", "5000")]).unwrap();
        assert_eq!(config.metric_export_interval, Duration::from_secs(5));
        assert!(from(&[("OTEL_METRIC_EXPORT_INTERVAL", "0")]).is_err());
        assert!(from(&[("OTEL_METRIC_EXPORT_INTERVAL", "5s")]).is_err());
    }

    #[test]
    fn rust_log_sets_the_filter() {
        let config = from(&[("RUST_LOG", "debug,h2=info")]).unwrap();
        assert_eq!(config.log_filter, "debug,h2=info");
    }
}
