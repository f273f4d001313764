//! The `[connections]` and `[tls]` tables: how many connections grymd
//! holds, how long each may be slow or idle, what HTTP/2 advertises, and
//! the certificates it serves to callers.
//!
//! The defaults suit a public endpoint: every connection, handshake and
//! request body is bounded in number, size or time.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::invalid;
use crate::error::Error;

/// The `[connections]` table: bounds on callers' connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionSettings {
    /// The most connections open at once (default 1000), counting those
    /// still in their TLS handshake; a connection beyond it is closed as
    /// soon as it is accepted, with a warning in the log. Keep it below
    /// the process's open-file limit (`ulimit -n`) less a hundred or so for
    /// grymd's own files and worker connections; beyond that limit accepting
    /// fails, which grymd logs and waits out (100 ms) without spinning.
    pub max_connections: usize,
    /// The longest a new connection may take to make its first call,
    /// TLS handshake and HTTP/2 preface included (default 10 s), so that
    /// connections that send nothing cannot hold `max_connections`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How long a connection with no call in flight stays open (default
    /// 5 min); HTTP/2 pings do not count as calls. It also bounds a call's
    /// headers that stop arriving halfway.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The longest a request's body may take to arrive in full, from its
    /// headers on (default 30 s); a request still incomplete then ends
    /// `DEADLINE_EXCEEDED` and its memory is released.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// The most calls one connection may have open at once, advertised as
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` (default 256).
    pub max_concurrent_streams: u32,
    /// The largest request header list, in bytes, advertised as
    /// `SETTINGS_MAX_HEADER_LIST_SIZE` (default 16 KiB).
    pub max_header_list_bytes: u32,
    /// How often an HTTP/2 ping checks a quiet connection (default 60 s).
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed
    /// (default 20 s).
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// How many bytes of one call's request a caller may send ahead of what
    /// grymd has read, the HTTP/2 stream window (default 1 MiB).
    pub stream_window_bytes: u32,
    /// The same for all calls of one connection together, the HTTP/2
    /// connection window (default 2 MiB).
    pub connection_window_bytes: u32,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5 * 60),
            body_timeout: Duration::from_secs(30),
            max_concurrent_streams: 256,
            max_header_list_bytes: 16 * 1024,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            stream_window_bytes: 1024 * 1024,
            connection_window_bytes: 2 * 1024 * 1024,
        }
    }
}

/// The smallest HTTP/2 flow-control window (RFC 9113, section 6.9.2).
const MIN_WINDOW: u32 = 65_535;
/// The largest HTTP/2 flow-control window (RFC 9113, section 6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;

impl ConnectionSettings {
    /// Checks every value; errors name the key within `[connections]`.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for (key, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_timeout", self.body_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(
                    format!("connections.{key}"),
                    "must be longer than zero",
                ));
            }
        }
        if self.max_connections == 0 {
            return Err(invalid("connections.max_connections", "must be at least 1"));
        }
        if self.max_concurrent_streams == 0 {
            return Err(invalid(
                "connections.max_concurrent_streams",
                "must be at least 1",
            ));
        }
        if self.max_header_list_bytes < 1024 {
            return Err(invalid(
                "connections.max_header_list_bytes",
                "must be at least 1024",
            ));
        }
        for (key, value) in [
            ("stream_window_bytes", self.stream_window_bytes),
            ("connection_window_bytes", self.connection_window_bytes),
        ] {
            if !(MIN_WINDOW..=MAX_WINDOW).contains(&value) {
                return Err(invalid(
                    format!("connections.{key}"),
                    format!("must be between {MIN_WINDOW} and {MAX_WINDOW}"),
                ));
            }
        }
        Ok(())
    }
}

/// The `[tls]` table as written: with `cert` and `key`, callers connect
/// over TLS.
///
/// ```toml
/// [tls]
/// cert = "/etc/grym/tls/server.pem"      # certificate chain, leaf first
/// key = "/etc/grym/tls/server-key.pem"   # its private key (PKCS#8, PKCS#1 or SEC1)
/// client_ca = "/etc/grym/tls/callers-ca.pem"  # optional: mTLS
/// tenant_from_certificate = true         # optional, needs client_ca
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: Option<PathBuf>,
    /// The certificate's private key, PEM.
    pub key: Option<PathBuf>,
    /// CA certificates, PEM; when given, every caller must present a
    /// client certificate they signed (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Whether the client certificate's identity (its first DNS or URI
    /// subject alternative name, else its subject common name) is the
    /// caller's tenant (default false; needs `client_ca`).
    pub tenant_from_certificate: bool,
}

/// TLS for callers, validated: the files are read when grymd starts and
/// again on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The certificate's private key, PEM.
    pub key: PathBuf,
    /// CA certificates that sign callers' certificates; `None` when
    /// callers need none.
    pub client_ca: Option<PathBuf>,
    /// Whether the client certificate's identity is the caller's tenant.
    pub tenant_from_certificate: bool,
}

impl RawTls {
    /// `None` when TLS is off; errors name the key within `[tls]`.
    pub(crate) fn validate(self, has_tokens: bool) -> Result<Option<TlsSettings>, Error> {
        let (cert, key) = match (self.cert, self.key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) => {
                if self.client_ca.is_some() {
                    return Err(invalid("tls.client_ca", "needs tls.cert and tls.key"));
                }
                if self.tenant_from_certificate {
                    return Err(invalid(
                        "tls.tenant_from_certificate",
                        "needs tls.cert, tls.key and tls.client_ca",
                    ));
                }
                return Ok(None);
            }
            (Some(_), None) => return Err(invalid("tls.key", "is needed with tls.cert")),
            (None, Some(_)) => return Err(invalid("tls.cert", "is needed with tls.key")),
        };
        if self.tenant_from_certificate {
            if self.client_ca.is_none() {
                return Err(invalid(
                    "tls.tenant_from_certificate",
                    "needs tls.client_ca, so that certificates are verified",
                ));
            }
            // Two sources of the tenant would need a precedence that a
            // reader of the file cannot see; one is chosen instead.
            if has_tokens {
                return Err(invalid(
                    "tls.tenant_from_certificate",
                    "cannot be used with auth.tokens: choose one source of the tenant",
                ));
            }
        }
        Ok(Some(TlsSettings {
            cert,
            key,
            client_ca: self.client_ca,
            tenant_from_certificate: self.tenant_from_certificate,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(error: Error) -> String {
        match error {
            Error::Config { key, .. } => key,
            other => panic!("not a setting error: {other}"),
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        ConnectionSettings::default().validate().unwrap();
        assert_eq!(RawTls::default().validate(false).unwrap(), None);
    }

    #[test]
    fn out_of_range_connection_settings_name_their_key() {
        let zero = ConnectionSettings {
            idle_timeout: Duration::ZERO,
            ..ConnectionSettings::default()
        };
        assert_eq!(
            key_of(zero.validate().unwrap_err()),
            "connections.idle_timeout"
        );
        let window = ConnectionSettings {
            stream_window_bytes: 10,
            ..ConnectionSettings::default()
        };
        assert_eq!(
            key_of(window.validate().unwrap_err()),
            "connections.stream_window_bytes"
        );
    }

    #[test]
    fn incomplete_tls_tables_name_what_is_missing() {
        let cert_only = RawTls {
            cert: Some("c.pem".into()),
            ..RawTls::default()
        };
        assert_eq!(key_of(cert_only.validate(false).unwrap_err()), "tls.key");
        let unverified = RawTls {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            tenant_from_certificate: true,
            ..RawTls::default()
        };
        assert_eq!(
            key_of(unverified.clone().validate(false).unwrap_err()),
            "tls.tenant_from_certificate"
        );
        let both = RawTls {
            client_ca: Some("ca.pem".into()),
            ..unverified
        };
        assert!(both.clone().validate(false).unwrap().is_some());
        assert_eq!(
            key_of(both.validate(true).unwrap_err()),
            "tls.tenant_from_certificate"
        );
    }
}
