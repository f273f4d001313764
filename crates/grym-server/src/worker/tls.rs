//! TLS to workers, as channels see it:
//! - [`TlsSource`]: the `[worker_tls]` settings in force, shared by every
//!   worker channel and replaced as a whole when a reload succeeds, so a
//!   model kept across a reload (with its statistics) still reconnects with
//!   the new certificates;
//! - [`failure`]: a failed call told apart as a TLS failure, in words that
//!   say so, for the log and the attempt's error; [`diagnose`] finds the
//!   failure a call lost, when a worker refuses grymd's certificate only
//!   after the handshake (as TLS 1.3 servers do);
//! - [`Reported`]: a replica's TLS failure logged once, not on every call and
//!   health check.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::AlertDescription;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::WorkerTls;

/// The `[worker_tls]` settings every worker channel follows.
#[derive(Debug)]
pub(crate) struct TlsSource(ArcSwap<WorkerTls>);

impl TlsSource {
    /// A source holding `tls`.
    pub(crate) fn new(tls: Arc<WorkerTls>) -> Arc<Self> {
        Arc::new(Self(ArcSwap::new(tls)))
    }

    /// The settings in force.
    pub(crate) fn current(&self) -> Arc<WorkerTls> {
        self.0.load_full()
    }

    /// Puts `tls` in force; channels built with the old settings are
    /// rebuilt at their next call.
    pub(crate) fn replace(&self, tls: Arc<WorkerTls>) {
        self.0.store(tls);
    }
}

/// What went wrong in TLS when `error` (a failed call's status, with its
/// sources) failed because of it; `None` for every other failure.
pub(crate) fn failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        // rustls reports through I/O errors, whose `source` skips the
        // error they carry: look inside.
        let tls = error.downcast_ref::<rustls::Error>().or_else(|| {
            error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return Some(explain(tls));
        }
        next = error.source();
    }
    None
}

/// The HTTP/2 client preface and an empty SETTINGS frame: what a client
/// sends first, to which every HTTP/2 server answers.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Why TLS with the worker at `host:port` (its certificate checked against
/// `name` when given, a pool's name) fails, found by a handshake of
/// grymd's own with the same settings, followed by the start of HTTP/2 so
/// that a refusal sent after the handshake is heard; `None` when TLS
/// works (the failure was something else) or nothing answers within
/// `timeout`.
///
/// A TLS 1.3 worker checks the client's certificate after the client has
/// finished its handshake, so a refusal reaches tonic as a closed
/// connection, its reason lost.
pub(crate) async fn diagnose(
    tls: &crate::config::WorkerTls,
    name: Option<&str>,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Option<String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(tls.domain().or(name).unwrap_or(host).to_owned()).ok()?;
    let connector = TlsConnector::from(tls.rustls());
    let attempt = async {
        let tcp = TcpStream::connect((host, port)).await.ok()?;
        let mut stream = match connector.connect(name, tcp).await {
            Ok(stream) => stream,
            Err(error) => return failure(&error),
        };
        if let Err(error) = stream.write_all(PREFACE).await {
            return failure(&error);
        }
        let mut answer = [0_u8; 64];
        match stream.read(&mut answer).await {
            Ok(_) => None,
            Err(error) => failure(&error),
        }
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

/// Whether a failed call's status comes from the connection rather than
/// from the worker's answer.
pub(crate) fn is_transport(status: &tonic::Status) -> bool {
    super::channel::is_connection_failure(status)
}

/// The TLS error, with what an operator can do about it.
fn explain(error: &rustls::Error) -> String {
    let hint = match error {
        rustls::Error::InvalidCertificate(_) => {
            "; grymd does not trust the worker's certificate for this name: check `[worker_tls] ca` and `domain`"
        }
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::DecryptError
            | AlertDescription::HandshakeFailure,
        ) => {
            "; the worker refused grymd's client certificate or requires one: check `[worker_tls] cert` and `key`"
        }
        _ => "",
    };
    format!("TLS with the worker failed: {error}{hint}")
}

/// The last TLS failure logged for one replica, so that a worker failing
/// the same way on every call and health check is logged once.
#[derive(Debug, Default)]
pub(crate) struct Reported {
    /// Whether a failure is on record: the only thing a healthy call reads.
    failing: AtomicBool,
    last: Mutex<Option<String>>,
}

impl Reported {
    /// The failure on record, if any.
    pub(crate) fn last(&self) -> Option<String> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Logs `reason` unless it is the failure last logged.
    pub(crate) fn failed(&self, model: &str, endpoint: &str, reason: &str) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.as_deref() != Some(reason) {
            tracing::warn!(model, endpoint, reason, "worker unreachable over TLS");
            *last = Some(reason.to_owned());
            self.failing.store(true, Ordering::Release);
        }
    }

    /// Forgets the failure on record, so the next one is logged again.
    pub(crate) fn succeeded(&self, model: &str, endpoint: &str) {
        // A load first: healthy calls only read the flag.
        if self.failing.load(Ordering::Acquire) && self.failing.swap(false, Ordering::AcqRel) {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.take().is_some() {
                tracing::info!(model, endpoint, "worker reachable over TLS again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_error_inside_an_io_error_is_found() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        );
        let status = tonic::Status::from_error(Box::new(io));
        let reason = failure(&status).unwrap();
        assert!(reason.starts_with("TLS with the worker failed"), "{reason}");
        assert!(reason.contains("`[worker_tls] cert` and `key`"), "{reason}");
    }

    #[test]
    fn other_failures_are_not_tls() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(failure(&io).is_none());
        assert!(failure(&tonic::Status::unavailable("down")).is_none());
    }

    #[test]
    fn a_failure_is_logged_once_until_it_ends() {
        let reported = Reported::default();
        reported.failed("m", "https://w:1", "TLS: a");
        reported.failed("m", "https://w:1", "TLS: a");
        assert_eq!(reported.last.lock().unwrap().as_deref(), Some("TLS: a"));
        reported.succeeded("m", "https://w:1");
        assert!(reported.last.lock().unwrap().is_none());
        assert!(!reported.failing.load(Ordering::Acquire));
    }
}
