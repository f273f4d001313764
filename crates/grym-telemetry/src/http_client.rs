//! The HTTP client OTLP/HTTP exports go through: hyper's pooled client,
//! HTTPS by rustls (ring, Mozilla's roots), driven by a Tokio runtime.
//!
//! The SDK's batch span processor and periodic reader run each export on
//! a thread of their own, outside any runtime, where hyper's I/O cannot be
//! polled. Each request is therefore spawned onto the runtime that was
//! current when the client was built, and the exporter's thread only waits
//! for its answer, as the gRPC exporters' channels do.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

/// The largest response body read: collectors answer with a small
/// `Export*ServiceResponse`, and a misdirected endpoint must not make the
/// exporter buffer a whole page.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// An [`HttpClient`] on hyper, each request bounded by a timeout.
#[derive(Debug, Clone)]
pub(crate) struct TokioHttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl TokioHttpClient {
    /// A client for `http://` and `https://` endpoints, on `runtime`.
    pub(crate) fn new(
        runtime: tokio::runtime::Handle,
        timeout: Duration,
    ) -> Result<Self, rustls::Error> {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime,
            timeout,
        })
    }

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let request = request.map(Full::new);
        let answer = self.runtime.spawn(async move {
            tokio::time::timeout(timeout, async move {
                let response = client.request(request).await?;
                let (parts, body) = response.into_parts();
                let body = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            })
            .await
            .map_err(|_| -> HttpError {
                format!("no answer within {} ms", timeout.as_millis()).into()
            })?
        });
        answer.await?
    }
}

impl HttpClient for TokioHttpClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        Self: 'async_trait,
        'life0: 'async_trait,
    {
        Box::pin(self.send(request))
    }
}
