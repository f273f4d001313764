//! The one error type of grym-server: why grymd could not start, or
//! stopped. Errors of a single request are gRPC statuses instead (see
//! `api/status.rs`).

/// Why grymd could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration source could not be read or parsed, or a key is
    /// unknown.
    #[error(transparent)]
    ConfigSource(#[from] Box<figment::Error>),
    /// A configuration value is out of its range or malformed.
    #[error("invalid `{key}`: {reason}")]
    Config {
        /// The key, for example `workers[0].endpoint`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A built-in worker could not bind its port.
    #[error("starting the built-in workers failed")]
    Builtin(#[source] std::io::Error),
    /// A worker endpoint is unusable.
    #[error("worker `{model}` has an unusable endpoint: {reason}")]
    Endpoint {
        /// The model.
        model: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry refused the workers.
    #[error("registering the workers failed")]
    Registry(#[source] grym_core::SettingError),
    /// The reflection service could not be built.
    #[error("building the reflection service failed")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The task store could not be opened (its URL, its schema, or a
    /// database that does not answer).
    #[error("opening the task store failed")]
    Store(#[from] grym_store::Error),
    /// The MCP listener could not bind its address.
    #[error("cannot listen for MCP on {address}")]
    McpListen {
        /// The `[mcp] listen` address.
        address: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics listener could not bind its address.
    #[error("cannot listen for metrics on {address} (`{key}`)")]
    MetricsListen {
        /// The address.
        address: std::net::SocketAddr,
        /// What asked for it: `metrics.listen` or the
        /// `OTEL_EXPORTER_PROMETHEUS_*` variables.
        key: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}
