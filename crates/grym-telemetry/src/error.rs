//! The one error type of grym-telemetry.

/// Why telemetry could not be configured, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An environment variable holds a value this crate cannot use.
    #[error("invalid `{key}`={value:?}: {reason}")]
    InvalidVariable {
        /// The variable, for example `OTEL_TRACES_SAMPLER`.
        key: &'static str,
        /// What it holds.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A log format that is neither `text` nor `json`.
    #[error("unknown log format `{0}`: expected `text` or `json`")]
    LogFormat(String),
    /// The log filter (`RUST_LOG`) does not parse.
    #[error("invalid log filter `{filter}`")]
    LogFilter {
        /// The filter as given.
        filter: String,
        /// The parser's reason.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// Exporting was asked for outside a Tokio runtime, which the OTLP
    /// exporters' gRPC channels need.
    #[error("OTLP export needs a Tokio runtime: call `init` from inside one")]
    NoRuntime,
    /// An OTLP exporter could not be built (for example, a malformed
    /// endpoint).
    #[error("building the OTLP {signal} exporter failed")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The exporter's reason.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The TLS settings of the OTLP/HTTP client could not be made.
    #[error("building the OTLP/HTTP client's TLS settings failed")]
    HttpTls(#[source] rustls::Error),
    /// The Prometheus reader could not be built.
    #[error("building the Prometheus reader failed")]
    Prometheus(#[source] opentelemetry_sdk::error::OTelSdkError),
    /// Metrics could not be rendered for a Prometheus scrape.
    #[error("rendering metrics for a Prometheus scrape failed")]
    PrometheusEncode(#[source] prometheus::Error),
    /// A global `tracing` subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized(#[source] tracing_subscriber::util::TryInitError),
    /// Flushing or shutting down an exporter failed.
    #[error("shutting down the {signal} pipeline failed")]
    Shutdown {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's reason.
        #[source]
        source: opentelemetry_sdk::error::OTelSdkError,
    },
}
