//! TLS for callers, with rustls on the ring provider: the server's
//! certificate, optionally verified client certificates (mTLS), and the
//! identity a client certificate names.
//!
//! The rustls configuration sits in an [`ArcSwap`]; each handshake takes
//! the current one, so on SIGHUP [`Acceptor::reload_on_hangup`] reads the
//! configured files again and the next connection is served the new
//! certificates while open connections keep theirs. A reload that fails
//! (a missing file, a key that does not fit) is logged and changes nothing.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::TlsSettings;
use crate::error::Error;
use crate::hangup::Hangups;

/// Takes callers' TLS handshakes with the current certificates.
#[derive(Clone)]
pub(crate) struct Acceptor {
    config: Arc<ArcSwap<ServerConfig>>,
    /// Whether to read the identity of a client certificate.
    identities: bool,
}

impl Acceptor {
    /// An acceptor of `settings`' certificates, read now; errors name the
    /// key whose file is at fault.
    pub(crate) fn new(settings: &TlsSettings) -> Result<Self, Error> {
        Ok(Self {
            config: Arc::new(ArcSwap::new(load(settings)?)),
            identities: settings.tenant_from_certificate,
        })
    }

    /// Completes the handshake of `stream`; with the identity of its client
    /// certificate when grymd reads it and the certificate names one.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<(TlsStream<TcpStream>, Option<Arc<str>>)> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.load_full());
        let stream = acceptor.accept(stream).await?;
        let identity = if self.identities {
            let (_, session) = stream.get_ref();
            session
                .peer_certificates()
                .and_then(<[_]>::first)
                .and_then(identity)
                .map(Arc::from)
        } else {
            None
        };
        Ok((stream, identity))
    }

    /// Reads the certificates again on every SIGHUP until `cancel`; a
    /// file that does not load is logged and leaves the current ones.
    pub(crate) async fn reload_on_hangup(self, settings: TlsSettings, cancel: CancellationToken) {
        let mut hangups = Hangups::listen("TLS certificates", cancel);
        while hangups.next().await {
            match load(&settings) {
                Ok(config) => {
                    self.config.store(config);
                    tracing::info!(cert = %settings.cert.display(), "SIGHUP: TLS certificates reloaded");
                }
                Err(error) => {
                    tracing::error!(%error, "SIGHUP: TLS certificates do not load; keeping the current ones");
                }
            }
        }
    }
}

/// The rustls configuration of `settings`: HTTP/2 only (ALPN `h2`), with
/// client certificates required and verified when `client_ca` is set.
fn load(settings: &TlsSettings) -> Result<Arc<ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("tls.cert", &settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|error| file_error("tls.key", &settings.key, error))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|error| invalid("tls", error.to_string()))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("tls.client_ca", path)? {
                roots.add(cert).map_err(|error| {
                    invalid("tls.client_ca", format!("{}: {error}", path.display()))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| {
                    invalid("tls.client_ca", format!("{}: {error}", path.display()))
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|error| {
        invalid(
            "tls.key",
            format!(
                "{} does not fit the certificate of tls.cert: {error}",
                settings.key.display()
            ),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file, at least one.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| file_error(key, path, error))?;
    if chain.is_empty() {
        return Err(invalid(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(chain)
}

fn file_error(key: &str, path: &Path, error: rustls::pki_types::pem::Error) -> Error {
    let reason = match error {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "holds no PEM item of the right kind".to_owned()
        }
        other => other.to_string(),
    };
    invalid(key, format!("{}: {reason}", path.display()))
}

fn invalid(key: &str, reason: String) -> Error {
    Error::Config {
        key: key.to_owned(),
        reason,
    }
}

/// The identity a certificate names: its first DNS or URI subject
/// alternative name, else its subject's common name.
fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    if let Ok(Some(names)) = cert.subject_alternative_name() {
        let first = names
            .value
            .general_names
            .iter()
            .find_map(|name| match name {
                GeneralName::DNSName(name) | GeneralName::URI(name) => Some((*name).to_owned()),
                _ => None,
            });
        if first.is_some() {
            return first;
        }
    }
    let common_name = cert.subject().iter_common_name().next()?;
    common_name.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(params: rcgen::CertificateParams) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_identity_is_the_first_dns_or_uri_name_else_the_common_name() {
        let mut named = rcgen::CertificateParams::new(vec!["agent.example".to_owned()]).unwrap();
        named
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ignored");
        assert_eq!(
            identity(&certificate(named)).as_deref(),
            Some("agent.example")
        );

        let mut uri = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        uri.subject_alt_names = vec![
            rcgen::SanType::IpAddress([127, 0, 0, 1].into()),
            rcgen::SanType::URI("spiffe://grym/agent".try_into().unwrap()),
        ];
        assert_eq!(
            identity(&certificate(uri)).as_deref(),
            Some("spiffe://grym/agent")
        );

        let mut common = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        common
            .distinguished_name
            .push(rcgen::DnType::CommonName, "agent-7");
        assert_eq!(identity(&certificate(common)).as_deref(), Some("agent-7"));
    }
}
