//! The OTLP pipelines: a tracer provider that batches spans to an OTLP
//! endpoint (gRPC or HTTP), and a meter provider whose periodic reader
//! pushes metrics to one, and keeps them for a Prometheus scrape too when
//! asked (`prometheus`). Each exists only when its endpoint is configured;
//! without one no exporter is built and nothing connects anywhere.
//!
//! Both export from their own background threads (the SDK's batch span
//! processor and periodic reader), so recording a span or a measurement
//! never waits on the network: a full span queue drops spans instead. Their
//! gRPC channels and HTTP client are driven by the Tokio runtime that was
//! current when they were built, which must outlive them.
//!
//! A failed export is retried with backoff when the failure may pass: the
//! exporters retry the answers the OTLP specification calls retryable
//! (HTTP 429, 502, 503, 504 and no answer at all; gRPC `UNAVAILABLE`,
//! `CANCELLED`, `DEADLINE_EXCEEDED`, ...), and [`crate::retry`] adds the
//! gRPC transport errors that tonic reports as `UNKNOWN`.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{
    MetricExporter, Protocol, SpanExporter, WithExportConfig as _, WithHttpConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, InstrumentKind, PeriodicReader, SdkMeterProvider, Stream,
};
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::http_client::TokioHttpClient;
use crate::prometheus::PrometheusMetrics;
use crate::retry::RetryTransport;
use crate::{Error, OtlpProtocol, TelemetryConfig};

/// The instrumentation scope of grym's spans and metrics.
pub const SCOPE: &str = "grym";

/// The providers that export, when configured.
#[derive(Debug, Default)]
pub(crate) struct Providers {
    pub(crate) tracer: Option<SdkTracerProvider>,
    pub(crate) meter: Option<SdkMeterProvider>,
    pub(crate) prometheus: Option<PrometheusMetrics>,
}

impl Providers {
    /// Builds the configured pipelines, with no global effect.
    pub(crate) fn build(config: &TelemetryConfig) -> Result<Self, Error> {
        if config.traces_endpoint.is_none()
            && config.metrics_endpoint.is_none()
            && config.prometheus.is_none()
        {
            return Ok(Self::default());
        }
        // The exporters' lazily connected channels and the HTTP client
        // spawn onto the current runtime.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(Error::NoRuntime);
        };
        let http = || TokioHttpClient::new(runtime.clone(), config.export_timeout);
        let resource = resource(config);
        let tracer = config
            .traces_endpoint
            .as_deref()
            .map(|endpoint| tracer_provider(endpoint, config, &resource, &http))
            .transpose()?;
        let (scraped, prometheus) = match config.prometheus {
            Some(_) => {
                let (reader, metrics) = PrometheusMetrics::reader()?;
                (Some(reader), Some(metrics))
            }
            None => (None, None),
        };
        let meter = meter_provider(
            config.metrics_endpoint.as_deref(),
            scraped,
            config,
            &resource,
            &http,
        )?;
        Ok(Self {
            tracer,
            meter,
            prometheus,
        })
    }

    /// The tracer the `tracing` bridge records into, when traces are
    /// exported.
    pub(crate) fn tracer(&self) -> Option<SdkTracer> {
        self.tracer.as_ref().map(|provider| provider.tracer(SCOPE))
    }
}

/// The OTLP/HTTP client of one exporter.
type MakeHttpClient<'a> = &'a dyn Fn() -> Result<TokioHttpClient, rustls::Error>;

/// The body format of an HTTP protocol; `None` for gRPC.
fn http_format(protocol: OtlpProtocol) -> Option<Protocol> {
    match protocol {
        OtlpProtocol::Grpc => None,
        OtlpProtocol::HttpProtobuf => Some(Protocol::HttpBinary),
        OtlpProtocol::HttpJson => Some(Protocol::HttpJson),
    }
}

/// Spans, batched to `endpoint`.
fn tracer_provider(
    endpoint: &str,
    config: &TelemetryConfig,
    resource: &Resource,
    http: MakeHttpClient<'_>,
) -> Result<SdkTracerProvider, Error> {
    let built = match http_format(config.traces_protocol) {
        None => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build(),
        Some(format) => SpanExporter::builder()
            .with_http()
            .with_protocol(format)
            .with_http_client(http().map_err(Error::HttpTls)?)
            .with_endpoint(endpoint)
            .build(),
    };
    let exporter = built.map_err(|source| Error::Exporter {
        signal: "traces",
        source,
    })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(RetryTransport::new(exporter))
        .with_sampler(config.sampler.clone())
        .with_resource(resource.clone())
        .build())
}

/// Metrics, pushed to `endpoint` every export interval, and collected by
/// the `scraped` reader at each scrape; none without either.
fn meter_provider(
    endpoint: Option<&str>,
    scraped: Option<opentelemetry_prometheus::PrometheusExporter>,
    config: &TelemetryConfig,
    resource: &Resource,
    http: MakeHttpClient<'_>,
) -> Result<Option<SdkMeterProvider>, Error> {
    if endpoint.is_none() && scraped.is_none() {
        return Ok(None);
    }
    let mut builder = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_view(seconds_buckets);
    if let Some(endpoint) = endpoint {
        builder = builder.with_reader(otlp_metric_reader(endpoint, config, http)?);
    }
    if let Some(reader) = scraped {
        builder = builder.with_reader(reader);
    }
    Ok(Some(builder.build()))
}

/// The reader that pushes metrics to `endpoint` every export interval.
fn otlp_metric_reader(
    endpoint: &str,
    config: &TelemetryConfig,
    http: MakeHttpClient<'_>,
) -> Result<PeriodicReader<RetryTransport<MetricExporter>>, Error> {
    let built = match http_format(config.metrics_protocol) {
        None => MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build(),
        Some(format) => MetricExporter::builder()
            .with_http()
            .with_protocol(format)
            .with_http_client(http().map_err(Error::HttpTls)?)
            .with_endpoint(endpoint)
            .build(),
    };
    let exporter = built.map_err(|source| Error::Exporter {
        signal: "metrics",
        source,
    })?;
    Ok(PeriodicReader::builder(RetryTransport::new(exporter))
        .with_interval(config.metric_export_interval)
        .build())
}

/// Gives every histogram in seconds the bucket boundaries of
/// [`DURATION_BUCKETS_SECONDS`](crate::DURATION_BUCKETS_SECONDS): the SDK's
/// defaults suit milliseconds and would put every call under five seconds
/// into one bucket. Other instruments keep the default view.
fn seconds_buckets(instrument: &Instrument) -> Option<Stream> {
    if instrument.kind() != InstrumentKind::Histogram || instrument.unit() != "s" {
        return None;
    }
    Stream::builder()
        .with_aggregation(Aggregation::ExplicitBucketHistogram {
            boundaries: crate::DURATION_BUCKETS_SECONDS.to_vec(),
            record_min_max: true,
        })
        .build()
        .ok()
}

/// The resource every span and metric is reported under. It names the
/// process (`service.instance.id`, unless `OTEL_RESOURCE_ATTRIBUTES` does),
/// so two replicas' series never overwrite each other, and its version
/// (`service.version`).
fn resource(config: &TelemetryConfig) -> Resource {
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attribute(KeyValue::new("service.instance.id", instance_id()))
        .with_attribute(KeyValue::new(
            "service.version",
            config.service_version.clone(),
        ))
        .with_attributes(config.resource_attributes.iter().cloned())
        .with_attribute(KeyValue::new("service.name", config.service_name.clone()))
        .build()
}

/// This process on this host: `host:pid`.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Keeps the pipelines running; flushes and stops them when shut down or
/// dropped.
///
/// Prefer `guard.shutdown().await` at the end of `main`: it flushes off the
/// runtime's threads. Dropping the guard flushes too, blocking the thread,
/// which needs a multi-threaded runtime to make progress meanwhile.
#[derive(Debug)]
#[must_use = "dropping the guard stops exporting"]
pub struct TelemetryGuard {
    providers: Providers,
}

impl TelemetryGuard {
    pub(crate) fn new(providers: Providers) -> Self {
        Self { providers }
    }

    /// Whether spans are exported.
    pub fn exports_traces(&self) -> bool {
        self.providers.tracer.is_some()
    }

    /// Whether metrics are recorded: pushed over OTLP, kept for a
    /// Prometheus scrape, or both.
    pub fn exports_metrics(&self) -> bool {
        self.providers.meter.is_some()
    }

    /// The metrics kept for a Prometheus scrape, when they are.
    pub fn prometheus(&self) -> Option<PrometheusMetrics> {
        self.providers.prometheus.clone()
    }

    /// Exports what is pending (spans ended, metrics since the last export)
    /// and stops the pipelines.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let providers = std::mem::take(&mut self.providers);
        // The SDK's shutdown blocks until its exporter threads are done,
        // and those need this runtime to drive their gRPC calls.
        match tokio::task::spawn_blocking(move || shutdown(providers)).await {
            Ok(result) => result,
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // The runtime is shutting down: nothing can be sent anymore.
                Err(_) => Ok(()),
            },
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let providers = std::mem::take(&mut self.providers);
        if let Err(error) = shutdown(providers) {
            // Logging may itself be gone by now.
            eprintln!("telemetry shutdown: {error}");
        }
    }
}

/// Shuts both providers down, reporting the first failure.
fn shutdown(providers: Providers) -> Result<(), Error> {
    let traces = providers
        .tracer
        .map(|provider| provider.shutdown())
        .transpose()
        .map_err(|source| Error::Shutdown {
            signal: "traces",
            source,
        });
    let metrics = providers
        .meter
        .map(|provider| provider.shutdown())
        .transpose()
        .map_err(|source| Error::Shutdown {
            signal: "metrics",
            source,
        });
    traces.and(metrics).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogFormat;

    #[test]
    fn no_endpoint_builds_no_exporter_even_outside_a_runtime() {
        let providers = Providers::build(&TelemetryConfig::new("grymd", LogFormat::Text)).unwrap();
        assert!(providers.tracer.is_none());
        assert!(providers.meter.is_none());
        assert!(providers.tracer().is_none());
        let guard = TelemetryGuard::new(providers);
        assert!(!guard.exports_traces() && !guard.exports_metrics());
    }

    #[test]
    fn exporting_outside_a_runtime_is_refused() {
        let config = TelemetryConfig::new("grymd", LogFormat::Text)
            .with_otlp_endpoint("http://127.0.0.1:4317");
        assert!(matches!(Providers::build(&config), Err(Error::NoRuntime)));
    }

    #[tokio::test]
    async fn one_endpoint_builds_only_its_own_pipeline() {
        let mut config = TelemetryConfig::new("grymd", LogFormat::Text);
        // Nothing listens there: building connects nowhere, and shutting
        // down with nothing recorded has nothing to send.
        config.metrics_endpoint = Some("http://127.0.0.1:9".to_owned());
        let providers = Providers::build(&config).unwrap();
        assert!(providers.tracer.is_none());
        assert!(providers.meter.is_some());
        let guard = TelemetryGuard::new(providers);
        assert!(guard.exports_metrics() && !guard.exports_traces());
        guard.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_malformed_endpoint_is_an_error_naming_the_signal() {
        let mut config = TelemetryConfig::new("grymd", LogFormat::Text);
        config.traces_endpoint = Some("not a uri".to_owned());
        let error = Providers::build(&config).unwrap_err();
        assert!(error.to_string().contains("traces"), "{error}");
    }

    #[test]
    fn the_service_name_wins_over_the_attributes() {
        let mut config = TelemetryConfig::new("grymd", LogFormat::Text);
        config.resource_attributes = vec![
            KeyValue::new("service.name", "other"),
            KeyValue::new("deployment.environment", "test"),
        ];
        let resource = resource(&config);
        assert_eq!(
            resource.get(&"service.name".into()).map(|v| v.to_string()),
            Some("grymd".to_owned())
        );
        assert_eq!(
            resource
                .get(&"deployment.environment".into())
                .map(|v| v.to_string()),
            Some("test".to_owned())
        );
        assert!(resource.get(&"telemetry.sdk.name".into()).is_some());
    }
}
