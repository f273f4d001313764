//! The HTTP/2 connection to one worker replica, shared by its calls and
//! its health checks: hyper's `SendRequest`, cloned into each call.
//!
//! tonic's `Channel` puts a tower `Buffer` in front of the connection:
//! every call is handed to a background task over one channel and its
//! answer comes back over another, a hop and a handful of allocations per
//! call. hyper's HTTP/2 sender needs none of that: its clones all feed the
//! one connection, which multiplexes them and holds back new streams while
//! the worker's `MAX_CONCURRENT_STREAMS` are in use (the core's per-model
//! slots bound them well before). The channel only keeps a connection
//! open: made at the first call, and made again at the first call after it
//! closed (the worker restarted, drained, or stopped answering its
//! keep-alive pings), one caller connecting while the others wait for it.
//!
//! Every failure below the gRPC status, connecting or on the connection,
//! is a [`ChannelError`]: [`super::convert`] reads it as the replica's
//! unavailability and [`super::tls`] looks in it for a TLS failure.

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt as _;
use http_body_util::combinators::MapErr;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::body::Body;

/// HTTP/2 keep-alive: a ping every interval, even with no call open, so
/// that a dead worker is noticed between calls ...
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ... and the connection dropped when a ping goes unanswered this long.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What grymd calls itself in the `user-agent` of its calls.
const USER_AGENT: &str = concat!("grymd/", env!("CARGO_PKG_VERSION"));

/// The body of a worker's answer: hyper's, its errors the channel's.
pub(crate) type ResponseBody = MapErr<Incoming, fn(hyper::Error) -> ChannelError>;

/// A lazily connected HTTP/2 channel to one worker replica; clones share
/// its connection.
#[derive(Clone)]
pub(crate) struct WorkerChannel {
    shared: Arc<Shared>,
}

/// How to reach the worker, and the connection while it is open.
struct Shared {
    /// `http` or `https`, and `host:port`: every request's origin.
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    /// The TLS connector and the name the worker's certificate is checked
    /// against; `None` for plaintext.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Bounds connecting, and the TLS handshake after it.
    connect_timeout: Duration,
    /// The open connection's sender; `None` before the first call.
    sender: Mutex<Option<http2::SendRequest<Body>>>,
    /// Held while connecting, so that one caller connects at a time.
    connecting: tokio::sync::Mutex<()>,
}

/// How a [`WorkerChannel`] connects.
pub(crate) struct Target<'a> {
    pub(crate) https: bool,
    pub(crate) authority: Authority,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    /// The TLS settings and the name to verify, for `https`.
    pub(crate) tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    pub(crate) connect_timeout: Duration,
}

impl WorkerChannel {
    /// A channel to `target`; nothing connects until the first call.
    pub(crate) fn lazy(target: Target<'_>) -> Self {
        Self {
            shared: Arc::new(Shared {
                scheme: if target.https {
                    Scheme::HTTPS
                } else {
                    Scheme::HTTP
                },
                authority: target.authority,
                host: target.host.to_owned(),
                port: target.port,
                tls: target
                    .tls
                    .map(|(config, name)| (TlsConnector::from(config), name)),
                connect_timeout: target.connect_timeout,
                sender: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

impl Shared {
    /// A sender on the open connection, connecting first when there is
    /// none or it has closed.
    async fn sender(&self) -> Result<http2::SendRequest<Body>, ChannelError> {
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let _connecting = self.connecting.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let sender = self.connect().await?;
        *self.sender.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok(sender)
    }

    /// A clone of the sender, while its connection is open.
    fn open(&self) -> Option<http2::SendRequest<Body>> {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|sender| !sender.is_closed())
            .cloned()
    }

    /// A new connection: TCP (no Nagle: a small answer must not wait for
    /// a delayed ACK), TLS when asked, then the HTTP/2 handshake; its task
    /// runs until the connection closes.
    async fn connect(&self) -> Result<http2::SendRequest<Body>, ChannelError> {
        let tcp = self
            .within_timeout(TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(ChannelError::connect)?;
        tcp.set_nodelay(true).map_err(ChannelError::connect)?;
        match &self.tls {
            None => self.handshake(tcp).await,
            Some((connector, name)) => {
                let tls = self
                    .within_timeout(connector.connect(name.clone(), tcp))
                    .await
                    .map_err(ChannelError::connect)?;
                self.handshake(tls).await
            }
        }
    }

    async fn within_timeout<T>(
        &self,
        step: impl Future<Output = std::io::Result<T>>,
    ) -> std::io::Result<T> {
        tokio::time::timeout(self.connect_timeout, step)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting took over {:?}", self.connect_timeout),
                ))
            })
    }

    async fn handshake<T>(&self, io: T) -> Result<http2::SendRequest<Body>, ChannelError>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(io))
            .await
            .map_err(ChannelError::connection)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a worker connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// `request` as sent: the worker's scheme and authority (tonic's
    /// clients give a path only) and grymd's user agent.
    fn addressed(&self, request: Request<Body>) -> Request<Body> {
        let (mut head, body) = request.into_parts();
        let mut uri = http::uri::Parts::from(head.uri);
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        // Scheme, authority and a path: always a valid URI.
        head.uri = Uri::from_parts(uri).unwrap_or_default();
        head.headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        Request::from_parts(head, body)
    }
}

impl tower::Service<Request<Body>> for WorkerChannel {
    type Response = Response<ResponseBody>;
    type Error = ChannelError;
    type Future = BoxFuture<'static, Result<Self::Response, ChannelError>>;

    /// Always ready: the connection, not the channel, holds calls back.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let request = shared.addressed(request);
            let mut sender = shared.sender().await?;
            let response = sender
                .send_request(request)
                .await
                .map_err(ChannelError::connection)?;
            Ok(response.map(|body| body.map_err(ChannelError::connection as fn(_) -> _)))
        })
    }
}

impl fmt::Debug for WorkerChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerChannel")
            .field("scheme", &self.shared.scheme)
            .field("authority", &self.shared.authority)
            .finish_non_exhaustive()
    }
}

/// A call that failed below gRPC: the worker could not be reached, or its
/// connection broke.
#[derive(Debug)]
pub(crate) struct ChannelError {
    connecting: bool,
    source: Box<dyn StdError + Send + Sync>,
}

impl ChannelError {
    fn connect(source: std::io::Error) -> Self {
        Self {
            connecting: true,
            source: source.into(),
        }
    }

    fn connection(source: hyper::Error) -> Self {
        Self {
            connecting: false,
            source: source.into(),
        }
    }
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.connecting {
            write!(f, "connecting to the worker failed: {}", self.source)
        } else {
            write!(f, "the connection to the worker failed: {}", self.source)
        }
    }
}

impl StdError for ChannelError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Whether `status` is a failure of the channel rather than an answer of
/// the worker's: tonic makes a status of a [`ChannelError`] with the error
/// as its source.
pub(crate) fn is_connection_failure(status: &tonic::Status) -> bool {
    StdError::source(status).is_some_and(|source| source.is::<ChannelError>())
}
