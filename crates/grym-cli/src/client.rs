//! The connection to grymd (or, for `grym health`, any grym server):
//! address, TLS and the caller's credentials, as every subcommand takes them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use grym_proto::orchestrator::v1::orchestrator_client::OrchestratorClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The largest message accepted or sent (a long clip's result, say).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Where grymd is and how to reach it.
#[derive(Debug, clap::Args)]
pub(crate) struct Connection {
    /// grymd's address: `host:port`, `http://host:port` or
    /// `https://host:port` (TLS).
    #[arg(
        long,
        env = "GRYM_ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    addr: String,
    /// A bearer token, sent as `authorization: Bearer TOKEN` (grymd's
    /// `[auth] tokens`); it names the tenant.
    #[arg(long, env = "GRYM_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The tenant, sent as `grym-tenant` (trusted by grymd only when it
    /// requires neither tokens nor client certificates).
    #[arg(long, env = "GRYM_TENANT", global = true)]
    tenant: Option<String>,
    /// CA certificates (PEM) that sign grymd's certificate; implies TLS.
    /// Without it, `https://` trusts the public web roots.
    #[arg(long, value_name = "FILE", global = true)]
    ca: Option<PathBuf>,
    /// A client certificate (PEM) for mTLS, with `--key`.
    #[arg(long, value_name = "FILE", requires = "key", global = true)]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert", global = true)]
    key: Option<PathBuf>,
    /// The name grymd's certificate must carry, when it is not the host of
    /// `--addr` (an IP address, say).
    #[arg(long, value_name = "NAME", global = true)]
    domain: Option<String>,
    /// The longest connecting may take.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", global = true)]
    connect_timeout: Duration,
}

impl Connection {
    /// Whether the connection uses TLS.
    fn tls(&self) -> bool {
        self.addr.starts_with("https://") || self.ca.is_some() || self.cert.is_some()
    }

    /// The endpoint, its TLS configured.
    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let uri = if self.addr.contains("://") {
            self.addr.clone()
        } else if self.tls() {
            format!("https://{}", self.addr)
        } else {
            format!("http://{}", self.addr)
        };
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .with_context(|| format!("--addr {uri} is not an address"))?
            .connect_timeout(self.connect_timeout);
        if self.tls() {
            let mut tls = ClientTlsConfig::new();
            match &self.ca {
                Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--ca")?)),
                None => tls = tls.with_webpki_roots(),
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "--cert")?,
                    read(key, "--key")?,
                ));
            }
            if let Some(domain) = &self.domain {
                tls = tls.domain_name(domain);
            }
            endpoint = endpoint
                .tls_config(tls)
                .context("the TLS settings are not usable")?;
        }
        Ok(endpoint)
    }

    /// A channel to grymd, connected now.
    pub(crate) async fn channel(&self) -> anyhow::Result<Channel> {
        self.connect("grymd").await
    }

    /// A channel to the server at `--addr`, connected now; `what` names it
    /// in the error.
    pub(crate) async fn connect(&self, what: &str) -> anyhow::Result<Channel> {
        let endpoint = self.endpoint()?;
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach {what} at {}", endpoint.uri()))
    }

    /// A channel to grymd that connects on first use (and again after a
    /// loss), for a long-lived `grym mcp`.
    pub(crate) fn lazy_channel(&self) -> anyhow::Result<Channel> {
        Ok(self.endpoint()?.connect_lazy())
    }

    /// A client of the Orchestrator service.
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        let inner = OrchestratorClient::new(self.channel().await?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Client {
            inner,
            credentials: self.credentials(),
        })
    }

    /// `message` as a request carrying the credentials, for a service
    /// other than the Orchestrator (the health check, say: a grymd that
    /// requires tokens requires them there too).
    pub(crate) fn request<M>(&self, message: M) -> tonic::Request<M> {
        with_credentials(&self.credentials(), message)
    }

    /// The credentials calls carry.
    pub(crate) fn credentials(&self) -> grym_mcp::Credentials {
        grym_mcp::Credentials {
            token: self.token.clone(),
            tenant: self.tenant.clone(),
        }
    }
}

fn read(path: &std::path::Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
}

/// The Orchestrator client and the credentials each request carries.
pub(crate) struct Client {
    pub(crate) inner: OrchestratorClient<Channel>,
    credentials: grym_mcp::Credentials,
}

impl Client {
    /// `message` as a request carrying the credentials.
    pub(crate) fn request<M>(&self, message: M) -> tonic::Request<M> {
        with_credentials(&self.credentials, message)
    }
}

/// `message` as a request carrying `credentials`.
fn with_credentials<M>(credentials: &grym_mcp::Credentials, message: M) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    if let Some(token) = &credentials.token
        && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
    {
        metadata.insert("authorization", value);
    }
    if let Some(tenant) = &credentials.tenant
        && let Ok(value) = MetadataValue::try_from(tenant.as_str())
    {
        metadata.insert("grym-tenant", value);
    }
    request
}
