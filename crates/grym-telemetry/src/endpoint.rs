//! The OTLP protocols and where each signal is sent, by the rules of the
//! OpenTelemetry exporter specification: a per-signal endpoint
//! (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is the URL itself; the shared
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is a base, to which OTLP/HTTP appends the
//! signal's path (`v1/traces`, `v1/metrics`) and which gRPC uses as it is.

use std::fmt;

use crate::Error;

/// How OTLP is carried: `OTEL_EXPORTER_OTLP_PROTOCOL` and its per-signal
/// variants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc`: OTLP/gRPC, by default on port 4317 (grym's default, as
    /// before the other protocols were known).
    #[default]
    Grpc,
    /// `http/protobuf`: protobuf bodies POSTed over HTTP, by default on
    /// port 4318.
    HttpProtobuf,
    /// `http/json`: the JSON mapping of the same messages over HTTP.
    HttpJson,
}

/// The values the protocol variables take.
const PROTOCOLS: &str = "`grpc`, `http/protobuf` or `http/json`";

impl OtlpProtocol {
    /// The protocol a variable `key` names.
    pub(crate) fn parse(key: &'static str, value: &str) -> Result<Self, Error> {
        match value.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Ok(Self::HttpJson),
            _ => Err(Error::InvalidVariable {
                key,
                value: value.to_owned(),
                reason: format!("expected {PROTOCOLS}"),
            }),
        }
    }

    /// The name the variables give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
            Self::HttpJson => "http/json",
        }
    }

    /// Whether it is one of the HTTP protocols.
    pub fn is_http(self) -> bool {
        !matches!(self, Self::Grpc)
    }

    /// Where a collector listens for it on this host, when no endpoint is
    /// given.
    fn default_base(self) -> &'static str {
        match self {
            Self::Grpc => "http://localhost:4317",
            Self::HttpProtobuf | Self::HttpJson => "http://localhost:4318",
        }
    }
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One kind of telemetry, with the path OTLP/HTTP sends it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn http_path(self) -> &'static str {
        match self {
            Self::Traces => "v1/traces",
            Self::Metrics => "v1/metrics",
        }
    }
}

/// The URL `signal` is sent to: the per-signal endpoint as it is, else the
/// shared base (with the signal's path for HTTP), else the protocol's
/// default base treated the same way.
pub(crate) fn resolve(
    signal: Signal,
    protocol: OtlpProtocol,
    signal_endpoint: Option<String>,
    base: Option<String>,
) -> String {
    if let Some(endpoint) = signal_endpoint {
        return endpoint.trim().to_owned();
    }
    let base = base.unwrap_or_else(|| protocol.default_base().to_owned());
    let base = base.trim();
    if !protocol.is_http() {
        return base.to_owned();
    }
    format!(
        "{}/{}",
        base.strip_suffix('/').unwrap_or(base),
        signal.http_path()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_by_their_specification_names() {
        for protocol in [
            OtlpProtocol::Grpc,
            OtlpProtocol::HttpProtobuf,
            OtlpProtocol::HttpJson,
        ] {
            let parsed = OtlpProtocol::parse("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.as_str());
            assert_eq!(parsed.unwrap(), protocol);
        }
        let error = OtlpProtocol::parse("OTEL_EXPORTER_OTLP_PROTOCOL", "http").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid `OTEL_EXPORTER_OTLP_PROTOCOL`=\"http\": \
             expected `grpc`, `http/protobuf` or `http/json`"
        );
    }

    #[test]
    fn http_appends_the_signal_path_to_the_base_only() {
        let http = OtlpProtocol::HttpProtobuf;
        let base = || Some("http://collector:4318".to_owned());
        assert_eq!(
            resolve(Signal::Traces, http, None, base()),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            resolve(
                Signal::Metrics,
                http,
                None,
                Some("http://collector:4318/otlp/".to_owned())
            ),
            "http://collector:4318/otlp/v1/metrics"
        );
        assert_eq!(
            resolve(
                Signal::Metrics,
                http,
                Some("http://m:9090/api/v1/otlp/v1/metrics".to_owned()),
                base()
            ),
            "http://m:9090/api/v1/otlp/v1/metrics"
        );
        assert_eq!(
            resolve(Signal::Traces, OtlpProtocol::HttpJson, None, None),
            "http://localhost:4318/v1/traces"
        );
    }

    #[test]
    fn grpc_uses_the_base_as_it_is() {
        let grpc = OtlpProtocol::Grpc;
        assert_eq!(
            resolve(
                Signal::Traces,
                grpc,
                None,
                Some("http://collector:4317".to_owned())
            ),
            "http://collector:4317"
        );
        assert_eq!(
            resolve(Signal::Metrics, grpc, None, None),
            "http://localhost:4317"
        );
    }
}
