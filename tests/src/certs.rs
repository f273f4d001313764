//! Certificates for the TLS tests, made fresh with rcgen into a temporary
//! directory, and a worker that serves TLS with them.
//!
//! [`Certs::new`] makes a CA and two certificates it signs: a server one for
//! `localhost` and `worker.grym.test` (no IP address, so a worker reached by
//! IP needs a `domain` override), and a client one for `grymd`. Two calls
//! make two unrelated CAs, which is how a test gets a wrong one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::{Process, READY_TIMEOUT, worker_binary};

/// The names in the server certificate.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "worker.grym.test"];

/// A CA and the server and client certificates it signed, as PEM files.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// A new CA with a server and a client certificate.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        // A name of its own, as two real CAs have: another CA's certificate
        // is then of an unknown issuer, not one with a bad signature.
        let unique = dir.path().file_name().unwrap().to_string_lossy();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("grym test CA {unique}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let certs = Self { dir };
        std::fs::write(certs.ca(), ca.pem()).unwrap();
        for (name, names, purpose) in [
            (
                "server",
                SERVER_NAMES.map(str::to_owned).to_vec(),
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            (
                "client",
                vec!["grymd".to_owned()],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![purpose];
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(certs.file(&format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(certs.file(&format!("{name}-key.pem")), key.serialize_pem()).unwrap();
        }
        certs
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }

    /// The server certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.file("server.pem")
    }

    /// The server certificate's key.
    pub fn server_key(&self) -> PathBuf {
        self.file("server-key.pem")
    }

    /// The client certificate.
    pub fn client_cert(&self) -> PathBuf {
        self.file("client.pem")
    }

    /// The client certificate's key.
    pub fn client_key(&self) -> PathBuf {
        self.file("client-key.pem")
    }

    /// A client's TLS settings trusting this CA and presenting the client
    /// certificate.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca())))
            .identity(Identity::from_pem(
                read(&self.client_cert()),
                read(&self.client_key()),
            ))
            .domain_name(SERVER_NAMES[0])
    }
}

impl Default for Certs {
    fn default() -> Self {
        Self::new()
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// A path as a TOML string (quoted, escaped).
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// `https://localhost:PORT` of a process, the name its certificate carries.
pub fn https_endpoint(process: &Process) -> String {
    format!("https://localhost:{}", process.address().port())
}

/// Starts `grym-worker` with these arguments serving TLS with `certs`'
/// server certificate (add `--client-ca` to require client certificates),
/// on a free port, and waits until it serves.
pub async fn tls_worker(certs: &Certs, args: &[&str]) -> Process {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.extend([
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--tls-cert".to_owned(),
        certs.server_cert().display().to_string(),
        "--tls-key".to_owned(),
        certs.server_key().display().to_string(),
    ]);
    let process = Process::start(&args[0], worker_binary(), &args, &[])
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    wait_serving_tls(&https_endpoint(&process), certs.client_tls()).await;
    process
}

/// Polls `grpc.health.v1` over TLS until the server reports serving.
async fn wait_serving_tls(endpoint: &str, tls: ClientTlsConfig) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let endpoint = Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let poll = async {
        loop {
            if let Ok(channel) = endpoint.connect().await {
                let mut client = HealthClient::new(channel);
                if let Ok(response) = client.check(HealthCheckRequest::default()).await
                    && response.get_ref().status() == ServingStatus::Serving
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, poll)
        .await
        .unwrap_or_else(|_| panic!("{} did not serve over TLS in time", endpoint.uri()));
}
