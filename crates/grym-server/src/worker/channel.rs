//! The HTTP/2 connection to one worker replica, shared by its calls and
//! its health checks: h2's `SendRequest`, cloned into each call, which
//! opens the call's stream from the calling task itself.
//!
//! tonic's `Channel` hands every call to a background task (a tower
//! `Buffer`) and its answer back; hyper's client, under it, hands each
//! request to the connection's task over a channel and spawns a task to
//! await the answer and another to send the body. Here a call opens its
//! stream, writes its one message and reads the answer where it runs, and
//! only the connection itself has a task: h2 multiplexes the streams of
//! every clone over it and holds back new ones while the worker's
//! `MAX_CONCURRENT_STREAMS` are in use (the core's per-model slots bound
//! them well before). What hyper would add is kept: its flow-control
//! windows and limits, and keep-alive pings, so that a worker that stops
//! answering is noticed between calls.
//!
//! The connection is made at the first call, and made again at the first
//! call after it closed (the worker restarted, drained, or missed a ping),
//! one caller connecting while the others wait for it. Every failure below
//! the gRPC status, connecting or on the connection, is a [`ChannelError`]:
//! [`super::convert`] reads it as the replica's unavailability and
//! [`super::tls`] looks in it for a TLS failure.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use h2::client::SendRequest;
use h2::{Ping, PingPong, RecvStream, SendStream};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt as _;
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

/// hyper's client settings, which worker connections had before and keep:
/// the flow-control windows of a stream and of the connection, ...
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// ... the streams opened before the worker's SETTINGS say how many it
/// takes, the most a stream buffers to send, and the largest header list.
const INITIAL_MAX_SEND_STREAMS: usize = 100;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// What grymd calls itself in the `user-agent` of its calls.
const USER_AGENT: &str = concat!("grymd/", env!("CARGO_PKG_VERSION"));

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
    /// The last connection; `None` before the first call.
    connection: Mutex<Option<Connection>>,
    /// Held while connecting, so that one caller connects at a time.
    connecting: tokio::sync::Mutex<()>,
}

/// One connection: its sender, and whether its task has ended.
#[derive(Clone)]
struct Connection {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
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
                connection: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

impl Shared {
    /// A sender on the open connection, connecting first when there is
    /// none or it has closed.
    async fn sender(&self) -> Result<SendRequest<Bytes>, ChannelError> {
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let _connecting = self.connecting.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let connection = self.connect().await?;
        let sender = connection.sender.clone();
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(connection);
        Ok(sender)
    }

    /// A clone of the sender, while its connection is open.
    fn open(&self) -> Option<SendRequest<Bytes>> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|connection| !connection.closed.load(Ordering::Acquire))
            .map(|connection| connection.sender.clone())
    }

    /// A new connection: TCP (no Nagle: a small answer must not wait for
    /// a delayed ACK), TLS when asked, then the HTTP/2 handshake.
    async fn connect(&self) -> Result<Connection, ChannelError> {
        let tcp = self
            .within_timeout(TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(ChannelError::connect)?;
        tcp.set_nodelay(true).map_err(ChannelError::connect)?;
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = self
                    .within_timeout(connector.connect(name.clone(), tcp))
                    .await
                    .map_err(ChannelError::connect)?;
                handshake(tls).await
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

    /// `request`'s head as sent: the worker's scheme and authority (tonic's
    /// clients give a path only) and grymd's user agent.
    fn addressed(&self, head: &mut http::request::Parts) {
        let mut uri = http::uri::Parts::from(std::mem::take(&mut head.uri));
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        // Scheme, authority and a path: always a valid URI.
        head.uri = Uri::from_parts(uri).unwrap_or_default();
        head.headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
    }
}

/// The HTTP/2 handshake on `io`, and the connection's task: it runs the
/// connection until it closes or misses a keep-alive ping, then marks it
/// closed so that the next call connects anew.
async fn handshake<T>(io: T) -> Result<Connection, ChannelError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_header_list_size(MAX_HEADER_LIST)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(ChannelError::connection)?;
    let pings = connection.ping_pong();
    let closed = Arc::new(AtomicBool::new(false));
    let ended = Arc::clone(&closed);
    tokio::spawn(async move {
        tokio::select! {
            result = &mut connection => if let Err(error) = result {
                tracing::debug!(%error, "a worker connection ended with an error");
            },
            () = keep_alive(pings) => {
                tracing::debug!("a worker missed a keep-alive ping; its connection is dropped");
            }
        }
        ended.store(true, Ordering::Release);
    });
    Ok(Connection { sender, closed })
}

/// Pings every [`KEEP_ALIVE_INTERVAL`]; returns once a ping goes
/// unanswered for [`KEEP_ALIVE_TIMEOUT`] or cannot be sent.
async fn keep_alive(pings: Option<PingPong>) {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(KEEP_ALIVE_INTERVAL).await;
        match tokio::time::timeout(KEEP_ALIVE_TIMEOUT, pings.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

impl tower::Service<Request<Body>> for WorkerChannel {
    type Response = Response<ResponseBody>;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, tower::BoxError>>;

    /// Always ready: the connection, not the channel, holds calls back.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let (mut head, body) = request.into_parts();
            shared.addressed(&mut head);
            let sender = shared.sender().await?;
            let mut sender = sender.ready().await.map_err(ChannelError::connection)?;
            let (answer, stream) = sender
                .send_request(Request::from_parts(head, ()), false)
                .map_err(ChannelError::connection)?;
            let sent = send_body(body, stream).await;
            // The worker may have answered (and ended the stream) before
            // the whole request was written: its answer says why.
            let answer = match (sent, answer.await) {
                (_, Ok(answer)) => answer,
                (Err(unsent), Err(_)) => return Err(unsent),
                (Ok(()), Err(error)) => return Err(ChannelError::connection(error).into()),
            };
            Ok(answer.map(|stream| ResponseBody {
                stream,
                data_ended: false,
            }))
        })
    }
}

/// Writes `body` on `stream`: h2 queues what the flow-control window does
/// not let out yet (a request is one message, bounded by
/// `max_message_bytes`). An error of the body's own (a message too large to
/// encode) is the call's status, and resets the stream.
async fn send_body(mut body: Body, mut stream: SendStream<Bytes>) -> Result<(), tower::BoxError> {
    loop {
        let Some(frame) = body.frame().await else {
            return Ok(stream
                .send_data(Bytes::new(), true)
                .map_err(ChannelError::connection)?);
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(status) => {
                stream.send_reset(h2::Reason::CANCEL);
                return Err(status.into());
            }
        };
        match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                stream
                    .send_data(data, end)
                    .map_err(ChannelError::connection)?;
                if end {
                    return Ok(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    stream
                        .send_trailers(trailers)
                        .map_err(ChannelError::connection)?;
                }
                return Ok(());
            }
        }
    }
}

/// The body of a worker's answer: the stream's data, each chunk's room
/// given back to the flow-control window as it is read, then its trailers
/// (where gRPC puts the status).
pub(crate) struct ResponseBody {
    stream: RecvStream,
    data_ended: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = ChannelError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ChannelError>>> {
        if !self.data_ended {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Fails only once the stream is closed, which the next
                    // read reports.
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(ChannelError::connection(error)))),
                None => self.data_ended = true,
            }
        }
        Poll::Ready(match ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(error) => Some(Err(ChannelError::connection(error))),
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
/// connection or stream broke.
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

    fn connection(source: h2::Error) -> Self {
        // h2 reports the I/O error under a broken connection as its own.
        let source: Box<dyn StdError + Send + Sync> = if source.is_io() {
            match source.into_io() {
                Some(io) => io.into(),
                None => "the connection failed".into(),
            }
        } else {
            source.into()
        };
        Self {
            connecting: false,
            source,
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
