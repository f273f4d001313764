//! Telemetry for grym's binaries, in one call: [`init`].
//!
//! - **Logs**: `tracing` events on standard error, human-readable by default
//!   or one JSON object per line ([`LogFormat`]), filtered by `RUST_LOG`
//!   (default [`DEFAULT_LOG_FILTER`]: `info`). A line logged inside a traced span carries its trace
//!   and span ids.
//! - **Traces**: `tracing` spans become OpenTelemetry spans, batched to an
//!   OTLP endpoint (gRPC, or HTTP with protobuf or JSON bodies:
//!   [`OtlpProtocol`]) from a background thread. The bridge adds nothing of
//!   its own: no timings (`busy_ns`, `idle_ns`), thread or source-location
//!   attributes, so a span holds only the attributes grym gives it.
//! - **Metrics**: the global OpenTelemetry meter provider ([`meter`]) pushes
//!   to an OTLP endpoint every `OTEL_METRIC_EXPORT_INTERVAL`, and keeps
//!   them for a Prometheus scrape ([`prometheus()`]) when
//!   `OTEL_METRICS_EXPORTER` names `prometheus` (or the binary asks).
//! - **Propagation**: W3C Trace Context, set as the global propagator, with
//!   [`extract`]/[`inject`] over HTTP headers and tower layers for tonic
//!   servers ([`ServerTraceLayer`]) and clients ([`ClientPropagationLayer`]).
//!
//! Everything is configured by the standard `OTEL_*` variables (see
//! [`TelemetryConfig::from_env`]). With no endpoint set, nothing is exported:
//! no exporter is built, nothing connects, the global meter is a no-op and
//! spans cost no more than `tracing` itself.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let guard = grym_telemetry::init("grymd", grym_telemetry::LogFormat::Text)?;
//! // ... serve ...
//! guard.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod config;
mod endpoint;
mod error;
mod export;
mod grpc;
mod http_client;
mod logs;
mod prometheus;
mod propagation;
mod retry;

use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use crate::prometheus::{
    DEFAULT_PROMETHEUS_HOST, DEFAULT_PROMETHEUS_PORT, PROMETHEUS_CONTENT_TYPE, PrometheusEndpoint,
    PrometheusMetrics, prometheus,
};
pub use config::{
    DEFAULT_EXPORT_TIMEOUT, DEFAULT_LOG_FILTER, DEFAULT_METRIC_EXPORT_INTERVAL, LogFormat,
    TelemetryConfig,
};
pub use endpoint::OtlpProtocol;
pub use error::Error;
pub use export::{SCOPE, TelemetryGuard};
pub use grpc::{
    CallBody, CallFuture, ClientPropagation, ClientPropagationLayer, ResponseFuture, ServerTrace,
    ServerTraceLayer, TracedBody,
};
pub use propagation::{extract, inject};

/// The bucket boundaries of every histogram whose unit is `s`, from 100 µs to
/// a minute: [`init`] installs a view that applies them (the SDK's defaults
/// suit milliseconds), so instrumented code only declares `.with_unit("s")`.
pub const DURATION_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
];

/// Starts logging, and exporting as the `OTEL_*` environment variables say,
/// for the service `service_name` (unless `OTEL_SERVICE_NAME` names another).
///
/// Call it once, early in `main`, inside the Tokio runtime; keep the guard
/// until the end and shut it down there.
pub fn init(service_name: &str, log_format: LogFormat) -> Result<TelemetryGuard, Error> {
    init_with(TelemetryConfig::from_env(service_name, log_format)?)
}

/// [`init`] with an explicit configuration, reading no environment variable
/// of its own.
///
/// It installs the global `tracing` subscriber (an error if one is already
/// installed), the W3C propagator, and, when they export, the global tracer
/// and meter providers.
pub fn init_with(config: TelemetryConfig) -> Result<TelemetryGuard, Error> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse(&config.log_filter)
        .map_err(|source| Error::LogFilter {
            filter: config.log_filter.clone(),
            source,
        })?;
    let providers = export::Providers::build(&config)?;
    // Each layer has its own filter: `RUST_LOG` chooses log lines, and
    // never what a trace holds. grym's fine-grained spans are at debug
    // level, so without an exporter no layer wants them and they cost
    // nothing; with one, traces get them whatever the log level.
    let traces = providers.tracer().map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // The bridge's own attributes follow no convention and are
            // never queried: what a span holds is what grym records.
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            .with_filter(traced())
    });
    tracing_subscriber::registry()
        .with(logs::fmt_layer(config.log_format).with_filter(filter))
        .with(traces)
        .try_init()
        .map_err(Error::AlreadyInitialized)?;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(provider) = &providers.tracer {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    if let Some(provider) = &providers.meter {
        opentelemetry::global::set_meter_provider(provider.clone());
    }
    if let Some(metrics) = &providers.prometheus {
        crate::prometheus::install(metrics.clone());
    }
    let guard = TelemetryGuard::new(providers);
    tracing::debug!(
        service = %config.service_name,
        traces = guard.exports_traces(),
        metrics = guard.exports_metrics(),
        "telemetry started"
    );
    Ok(guard)
}

/// What traces hold: grym's spans down to debug level, others' from info,
/// and none of the transport crates': the exporters use them too, and
/// tracing their own exports would feed back into itself.
fn traced() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("grym_core", LevelFilter::DEBUG)
        .with_target("grym_server", LevelFilter::DEBUG)
        .with_target("grym_worker", LevelFilter::DEBUG)
        .with_target("grym_telemetry", LevelFilter::DEBUG)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
}

/// The meter grym's metrics are recorded with: a no-op until [`init`]
/// exports metrics.
pub fn meter() -> opentelemetry::metrics::Meter {
    opentelemetry::global::meter(SCOPE)
}
