//! Metrics kept for a Prometheus scrape: a pull reader beside (or instead
//! of) the OTLP push, whose [`PrometheusMetrics::encode`] renders what the
//! meter provider holds in the Prometheus text exposition format.
//!
//! The names are those Prometheus gives the same metrics when they arrive
//! over OTLP (through the Collector's `prometheus` exporter, or
//! Prometheus's own OTLP receiver): dots become underscores, the unit is
//! spelled out as a suffix (`s` -> `_seconds`, `By` -> `_bytes`; `{...}`
//! annotations are dropped), counters end in `_total`, histograms are
//! `_bucket`/`_sum`/`_count`, and the resource is one `target_info` series.
//! So `grym.task.duration` is `grym_task_duration_seconds_bucket`, and one
//! dashboard reads either path.
//!
//! The translation and the text format are opentelemetry-prometheus's and
//! the `prometheus` crate's; this module only wires them in. Nothing is
//! computed between scrapes: each scrape collects the meter provider once
//! (running the observable instruments' callbacks) and renders it.

use std::sync::OnceLock;

use opentelemetry_prometheus::PrometheusExporter;

use crate::Error;

/// The `Content-Type` of [`PrometheusMetrics::encode`]'s text.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The address the specification gives a Prometheus exporter when
/// `OTEL_EXPORTER_PROMETHEUS_HOST` is unset.
pub const DEFAULT_PROMETHEUS_HOST: &str = "localhost";

/// The port the specification gives a Prometheus exporter when
/// `OTEL_EXPORTER_PROMETHEUS_PORT` is unset.
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9464;

/// Where a scrape endpoint is to be served, as
/// `OTEL_EXPORTER_PROMETHEUS_HOST` and `OTEL_EXPORTER_PROMETHEUS_PORT`
/// say. This crate serves nothing: the binary that has an HTTP listener
/// serves [`PrometheusMetrics`] there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusEndpoint {
    /// A host name or an IP address.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl Default for PrometheusEndpoint {
    fn default() -> Self {
        Self {
            host: DEFAULT_PROMETHEUS_HOST.to_owned(),
            port: DEFAULT_PROMETHEUS_PORT,
        }
    }
}

/// Whether an `OTEL_METRICS_EXPORTER` list (such as `otlp,prometheus`)
/// names `otlp`: an error for any name but `otlp` and `prometheus`.
pub(crate) fn otlp_listed(list: &str) -> Result<bool, Error> {
    Ok(listed(list)?.0)
}

/// Where the scrape endpoint goes, when `OTEL_METRICS_EXPORTER` names
/// `prometheus`: `OTEL_EXPORTER_PROMETHEUS_HOST` and `_PORT`, or the
/// specification's defaults.
pub(crate) fn endpoint_from(
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<PrometheusEndpoint>, Error> {
    let Some(list) = var("OTEL_METRICS_EXPORTER") else {
        return Ok(None);
    };
    if list.trim() == "none" || !listed(&list)?.1 {
        return Ok(None);
    }
    let mut endpoint = PrometheusEndpoint::default();
    if let Some(host) = var("OTEL_EXPORTER_PROMETHEUS_HOST") {
        endpoint.host = host.trim().to_owned();
    }
    if let Some(port) = var("OTEL_EXPORTER_PROMETHEUS_PORT") {
        endpoint.port = port.trim().parse().map_err(|_| Error::InvalidVariable {
            key: "OTEL_EXPORTER_PROMETHEUS_PORT",
            value: port.clone(),
            reason: "expected a TCP port, 0 to 65535".to_owned(),
        })?;
    }
    Ok(Some(endpoint))
}

/// The list's (otlp, prometheus); `none` or unknown names are errors here
/// (a lone `none` is read before).
fn listed(list: &str) -> Result<(bool, bool), Error> {
    let (mut otlp, mut prometheus) = (false, false);
    for name in list.split(',').map(str::trim) {
        match name {
            "otlp" => otlp = true,
            "prometheus" => prometheus = true,
            _ => {
                return Err(Error::InvalidVariable {
                    key: "OTEL_METRICS_EXPORTER",
                    value: list.to_owned(),
                    reason: "expected `otlp`, `prometheus`, both (`otlp,prometheus`) or `none`"
                        .to_owned(),
                });
            }
        }
    }
    Ok((otlp, prometheus))
}

/// The metrics of this process, ready to be scraped; cheap to clone.
#[derive(Debug, Clone)]
pub struct PrometheusMetrics {
    registry: prometheus::Registry,
}

impl PrometheusMetrics {
    /// A reader to give the meter provider, and the handle that renders
    /// what it collects.
    pub(crate) fn reader() -> Result<(PrometheusExporter, Self), Error> {
        let registry = prometheus::Registry::new();
        let reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .map_err(Error::Prometheus)?;
        Ok((reader, Self { registry }))
    }

    /// Every metric as it stands now, in the Prometheus text exposition
    /// format (version 0.0.4, [`PROMETHEUS_CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, Error> {
        let mut families = self.registry.gather();
        for family in &mut families {
            if let Some(name) = as_over_otlp(family.name(), family.get_field_type()) {
                family.set_name(name);
            }
        }
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .map_err(Error::PrometheusEncode)
    }
}

/// The unit words opentelemetry-prometheus appends (the ones of a unit
/// alone; `_per_` compounds are left as they are).
const UNIT_WORDS: &[&str] = &[
    "days",
    "hours",
    "minutes",
    "seconds",
    "milliseconds",
    "microseconds",
    "nanoseconds",
    "bytes",
    "kibibytes",
    "mebibytes",
    "gibibytes",
    "tibibytes",
    "kilobytes",
    "megabytes",
    "gigabytes",
    "terabytes",
    "meters",
    "volts",
    "amperes",
    "joules",
    "watts",
    "grams",
    "celsius",
    "hertz",
    "ratio",
    "percent",
];

/// `name` as the Collector and Prometheus's OTLP receiver spell it, when
/// opentelemetry-prometheus spells it otherwise: they append the unit only
/// when the name does not hold it already, and `_total` only once
/// (`grym.context.cache.bytes` in `By` is `grym_context_cache_bytes`, not
/// `..._bytes_bytes`). `None` when the name is right as it is.
fn as_over_otlp(name: &str, kind: prometheus::proto::MetricType) -> Option<String> {
    let mut tokens: Vec<&str> = name.split('_').collect();
    let counter = kind == prometheus::proto::MetricType::COUNTER && tokens.last() == Some(&"total");
    if counter {
        tokens.pop();
        while tokens.last() == Some(&"total") {
            tokens.pop();
        }
    }
    if let Some((unit, rest)) = tokens.split_last()
        && UNIT_WORDS.contains(unit)
        && rest.contains(unit)
    {
        tokens.pop();
    }
    if counter {
        tokens.push("total");
    }
    let spelled = tokens.join("_");
    (spelled != name).then_some(spelled)
}

/// The process's scrape handle, once [`init`](crate::init) has made one.
static INSTALLED: OnceLock<PrometheusMetrics> = OnceLock::new();

/// Makes `metrics` what [`prometheus`] answers, unless another already is.
pub(crate) fn install(metrics: PrometheusMetrics) {
    let _ = INSTALLED.set(metrics);
}

/// The metrics the global meter provider keeps for a Prometheus scrape:
/// `Some` once [`init`](crate::init) ran with
/// [`TelemetryConfig::prometheus`](crate::TelemetryConfig::prometheus) set.
pub fn prometheus() -> Option<PrometheusMetrics> {
    INSTALLED.get().cloned()
}

#[cfg(test)]
mod tests {
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    use super::*;

    #[test]
    fn a_unit_already_in_the_name_is_not_appended_again() {
        use prometheus::proto::MetricType::{COUNTER, GAUGE, HISTOGRAM};
        for (name, kind, expected) in [
            (
                "grym_context_cache_bytes_bytes",
                GAUGE,
                Some("grym_context_cache_bytes"),
            ),
            ("grym_bytes_held_bytes", GAUGE, Some("grym_bytes_held")),
            (
                "grym_sent_bytes_bytes_total",
                COUNTER,
                Some("grym_sent_bytes_total"),
            ),
            ("grym_calls_total_total", COUNTER, Some("grym_calls_total")),
            ("grym_task_duration_seconds", HISTOGRAM, None),
            ("grym_selection_count_total", COUNTER, None),
            ("grym_total_seconds", GAUGE, None),
        ] {
            assert_eq!(as_over_otlp(name, kind).as_deref(), expected, "{name}");
        }
    }

    #[test]
    fn names_are_the_ones_prometheus_gives_otlp_metrics() {
        let (reader, metrics) = PrometheusMetrics::reader().unwrap();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(
                Resource::builder_empty()
                    .with_attribute(KeyValue::new("service.name", "grymd"))
                    .build(),
            )
            .build();
        let meter = provider.meter("grym");
        meter
            .f64_histogram("grym.task.duration")
            .with_unit("s")
            .build()
            .record(0.2, &[KeyValue::new("task_type", "transcription")]);
        meter
            .u64_counter("grym.selection.count")
            .with_unit("{selection}")
            .build()
            .add(2, &[KeyValue::new("model", "gama")]);
        let _bytes = meter
            .u64_observable_gauge("grym.context.cache.bytes")
            .with_unit("By")
            .with_callback(|observer| observer.observe(42, &[]))
            .build();

        let text = metrics.encode().unwrap();
        for line in [
            "# TYPE grym_task_duration_seconds histogram",
            r#"grym_task_duration_seconds_count{task_type="transcription",otel_scope_name="grym"} 1"#,
            r#"grym_task_duration_seconds_sum{task_type="transcription",otel_scope_name="grym"} 0.2"#,
            "# TYPE grym_selection_count_total counter",
            r#"grym_selection_count_total{model="gama",otel_scope_name="grym"} 2"#,
            "# TYPE grym_context_cache_bytes gauge",
            r#"grym_context_cache_bytes{otel_scope_name="grym"} 42"#,
            r#"target_info{service_name="grymd"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line `{line}` in:\n{text}"
            );
        }
        assert!(
            text.contains(r#"grym_task_duration_seconds_bucket{task_type="transcription",otel_scope_name="grym",le="+Inf"} 1"#),
            "{text}"
        );
    }
}
