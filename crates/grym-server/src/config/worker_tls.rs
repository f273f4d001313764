//! The `[worker_tls]` table: how grymd checks the workers it reaches over
//! `https://`, and the certificate it shows them when they require one
//! (mTLS).
//!
//! The files are read and checked when the configuration loads, at start-up
//! and again on every SIGHUP, so a renewed certificate is picked up by a
//! reload and a broken one is refused before it replaces the working one.
//! `http://` endpoints stay plaintext whatever this table says.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::Deserialize;

use super::invalid;
use crate::error::Error;

/// `[worker_tls]` as written. Relative paths are read from grymd's working
/// directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWorkerTls {
    /// A PEM file of the CA certificates that sign the workers'
    /// certificates; when given, only these are trusted. Default: none,
    /// and the WebPKI roots (Mozilla's list, built into grymd) are trusted.
    pub ca: Option<PathBuf>,
    /// A PEM file of the client certificate (chain) grymd presents to
    /// workers that require one. Default: none; needs `key`.
    pub cert: Option<PathBuf>,
    /// The PEM file of `cert`'s private key (PKCS#8, PKCS#1 or SEC1).
    /// Default: none; needs `cert`.
    pub key: Option<PathBuf>,
    /// The name the workers' certificates are checked against, instead of
    /// each endpoint's host: for workers addressed by IP address. Default:
    /// none, the endpoint's host.
    pub domain: Option<String>,
}

/// How grymd speaks TLS to its `https://` workers, with the files read.
#[derive(Clone)]
pub struct WorkerTls {
    /// Whether a `ca` file replaces the WebPKI roots.
    ca: bool,
    /// Whether grymd shows a client certificate.
    client_certificate: bool,
    /// The `domain` override.
    domain: Option<String>,
    /// The settings as rustls takes them: for every worker connection, and
    /// for grymd's own handshakes (see `worker::tls::diagnose`).
    rustls: Arc<ClientConfig>,
}

impl WorkerTls {
    /// The `domain` override.
    pub(crate) fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The settings as a rustls client configuration.
    pub(crate) fn rustls(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.rustls)
    }
}

impl fmt::Debug for WorkerTls {
    // By hand: the private key stays out of every log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerTls")
            .field("ca", &self.ca)
            .field("client_certificate", &self.client_certificate)
            .field("domain", &self.domain)
            .finish()
    }
}

impl RawWorkerTls {
    /// Reads and checks the files: the CA must hold certificates usable as
    /// trust anchors, `cert` and `key` come together and must match, and
    /// `domain` must be a DNS name or an IP address.
    pub(super) fn validate(self) -> Result<Arc<WorkerTls>, Error> {
        let mut roots = RootCertStore::empty();
        let ca = match &self.ca {
            Some(path) => {
                let pem = read("worker_tls.ca", path)?;
                let certs = certificates("worker_tls.ca", path, &pem)?;
                let (_, unusable) = roots.add_parsable_certificates(certs);
                if unusable > 0 {
                    return Err(invalid(
                        "worker_tls.ca",
                        format!(
                            "`{}`: {unusable} certificate(s) cannot be used as a CA",
                            path.display()
                        ),
                    ));
                }
                true
            }
            None => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                false
            }
        };
        let builder = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid("worker_tls", error.to_string()))?
            .with_root_certificates(roots);
        let (client_certificate, mut rustls) = match (&self.cert, &self.key) {
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read("worker_tls.cert", cert_path)?;
                let key_pem = read("worker_tls.key", key_path)?;
                let chain = certificates("worker_tls.cert", cert_path, &cert_pem)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                    invalid(
                        "worker_tls.key",
                        format!(
                            "`{}` holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                            key_path.display()
                        ),
                    )
                })?;
                let rustls = builder.with_client_auth_cert(chain, key).map_err(|error| {
                    invalid(
                        "worker_tls.key",
                        format!(
                            "`{}` is not the key of `worker_tls.cert`: {error}",
                            key_path.display()
                        ),
                    )
                })?;
                (true, rustls)
            }
            (Some(_), None) => {
                return Err(invalid(
                    "worker_tls.cert",
                    "is set without `worker_tls.key`; give both or neither",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "worker_tls.key",
                    "is set without `worker_tls.cert`; give both or neither",
                ));
            }
            (None, None) => (false, builder.with_no_client_auth()),
        };
        rustls.alpn_protocols = vec![b"h2".to_vec()];
        if let Some(domain) = &self.domain
            && ServerName::try_from(domain.as_str()).is_err()
        {
            return Err(invalid(
                "worker_tls.domain",
                format!("`{domain}` is not a DNS name or an IP address"),
            ));
        }
        Ok(Arc::new(WorkerTls {
            ca,
            client_certificate,
            domain: self.domain,
            rustls: Arc::new(rustls),
        }))
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|error| invalid(key, format!("cannot read `{}`: {error}", path.display())))
}

/// The certificates of a PEM file; at least one.
fn certificates(key: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            invalid(
                key,
                format!("`{}` is not valid PEM: {error}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            format!("`{}` holds no PEM CERTIFICATE", path.display()),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        /// A CA, a certificate it signed and that certificate's key.
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = params.self_signed(&ca_key).unwrap();
            let issuer = rcgen::Issuer::new(params, ca_key);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["grymd".to_owned()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
            std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
            std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
            let other = rcgen::KeyPair::generate().unwrap();
            std::fs::write(dir.path().join("other-key.pem"), other.serialize_pem()).unwrap();
            std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
            Self { dir }
        }

        fn path(&self, name: &str) -> Option<PathBuf> {
            Some(self.dir.path().join(name))
        }
    }

    fn refused(raw: RawWorkerTls) -> (String, String) {
        match raw.validate() {
            Err(Error::Config { key, reason }) => (key, reason),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn a_ca_with_a_client_certificate_and_domain_is_accepted() {
        let files = Files::new();
        let tls = RawWorkerTls {
            ca: files.path("ca.pem"),
            cert: files.path("cert.pem"),
            key: files.path("key.pem"),
            domain: Some("worker.grym.test".to_owned()),
        }
        .validate()
        .unwrap();
        let shown = format!("{tls:?}");
        assert!(shown.contains("client_certificate: true"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert_eq!(tls.rustls().alpn_protocols, [b"h2".to_vec()]);
    }

    #[test]
    fn an_empty_table_trusts_the_webpki_roots() {
        let tls = RawWorkerTls::default().validate().unwrap();
        assert!(format!("{tls:?}").contains("client_certificate: false"));
        assert!(!format!("{tls:?}").contains("ca: true"));
    }

    #[test]
    fn a_missing_ca_file_names_the_key() {
        let files = Files::new();
        let (key, reason) = refused(RawWorkerTls {
            ca: files.path("absent.pem"),
            ..RawWorkerTls::default()
        });
        assert_eq!(key, "worker_tls.ca");
        assert!(reason.contains("cannot read"), "{reason}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let files = Files::new();
        let (key, reason) = refused(RawWorkerTls {
            ca: files.path("junk.pem"),
            ..RawWorkerTls::default()
        });
        assert_eq!(key, "worker_tls.ca");
        assert!(reason.contains("no PEM CERTIFICATE"), "{reason}");
    }

    #[test]
    fn a_cert_without_its_key_is_refused() {
        let files = Files::new();
        let (key, reason) = refused(RawWorkerTls {
            cert: files.path("cert.pem"),
            ..RawWorkerTls::default()
        });
        assert_eq!(key, "worker_tls.cert");
        assert!(reason.contains("without `worker_tls.key`"), "{reason}");
        let (key, _) = refused(RawWorkerTls {
            key: files.path("key.pem"),
            ..RawWorkerTls::default()
        });
        assert_eq!(key, "worker_tls.key");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let files = Files::new();
        let (key, reason) = refused(RawWorkerTls {
            cert: files.path("cert.pem"),
            key: files.path("other-key.pem"),
            ..RawWorkerTls::default()
        });
        assert_eq!(key, "worker_tls.key");
        assert!(reason.contains("is not the key"), "{reason}");
        let (key, _) = refused(RawWorkerTls {
            cert: files.path("cert.pem"),
            key: files.path("cert.pem"),
            ..RawWorkerTls::default()
        });
        assert_eq!(key, "worker_tls.key");
    }

    #[test]
    fn a_domain_that_is_no_name_is_refused() {
        let (key, _) = refused(RawWorkerTls {
            domain: Some("not a name".to_owned()),
            ..RawWorkerTls::default()
        });
        assert_eq!(key, "worker_tls.domain");
    }
}
