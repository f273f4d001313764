//! One caller's connection as tonic serves it: plain TCP or TLS, its
//! [`ConnInfo`] (put by tonic into every request's extensions), its slot
//! of `max_connections`, and its idle timeout.
//!
//! The idle timeout lives in the read side: when the connection has had no
//! call in flight for `idle_timeout`, reading ends (EOF) and the HTTP/2
//! server closes the connection. Before its first call a connection has
//! only `handshake_timeout`, from its opening, so callers that open
//! connections and send nothing cannot hold `max_connections` for long. Only calls count as activity (the
//! [`activity`](super::activity) layer records them), so HTTP/2 pings and
//! window updates do not keep an unused connection open.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use super::activity::Activity;

/// What every request learns of its connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// The caller's address.
    pub(crate) remote: SocketAddr,
    /// The address the caller reached.
    pub(crate) local: Option<SocketAddr>,
    /// The identity of the caller's verified client certificate, when
    /// grymd reads one (`tls.tenant_from_certificate`).
    pub(crate) identity: Option<Arc<str>>,
    /// When calls are in flight.
    pub(crate) activity: Arc<Activity>,
}

/// What the accept loop knows of a connection it hands on.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The caller's address.
    pub(crate) remote: SocketAddr,
    /// The address the caller reached.
    pub(crate) local: Option<SocketAddr>,
    /// How long it may go without a call in flight.
    pub(crate) idle_timeout: Duration,
    /// How long it may go from its opening to its first call.
    pub(crate) first_call_timeout: Duration,
    /// Its activity, begun when it was accepted (so the time to the first
    /// call counts the TLS handshake too).
    pub(crate) activity: Arc<Activity>,
    /// Its slot of `max_connections`.
    pub(crate) slot: OwnedSemaphorePermit,
}

/// The byte stream under a connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A caller's connection, closed when idle too long.
pub(crate) struct Conn {
    stream: Stream,
    info: ConnInfo,
    idle_timeout: Duration,
    /// How long the connection may go from its opening to its first call.
    first_call_timeout: Duration,
    /// Fires when the connection may have become idle too long; checked
    /// again (and reset) when it does.
    idle: Pin<Box<Sleep>>,
    /// Set once reading has ended for idleness; reading stays ended.
    closed: bool,
    /// Held for the connection's life, given back on drop.
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    /// A plain TCP connection.
    pub(crate) fn plain(stream: TcpStream, accepted: Accepted) -> Self {
        Self::new(Stream::Plain(stream), None, accepted)
    }

    /// A TLS connection whose handshake is done, with the identity of its
    /// client certificate when grymd reads one.
    pub(crate) fn tls(
        stream: TlsStream<TcpStream>,
        identity: Option<Arc<str>>,
        accepted: Accepted,
    ) -> Self {
        Self::new(Stream::Tls(Box::new(stream)), identity, accepted)
    }

    fn new(stream: Stream, identity: Option<Arc<str>>, accepted: Accepted) -> Self {
        let Accepted {
            remote,
            local,
            idle_timeout,
            first_call_timeout,
            activity,
            slot,
        } = accepted;
        Self {
            stream,
            info: ConnInfo {
                remote,
                local,
                identity,
                activity,
            },
            idle_timeout,
            first_call_timeout,
            idle: Box::pin(tokio::time::sleep(first_call_timeout.min(idle_timeout))),
            closed: false,
            _slot: slot,
        }
    }

    /// Whether the connection has been idle for `idle_timeout`; when not,
    /// re-arms the timer for the next moment it could be.
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let timeout = if self.info.activity.called() {
                self.idle_timeout
            } else {
                self.first_call_timeout.min(self.idle_timeout)
            };
            match self.info.activity.idle_since() {
                Some(since) if now >= since + timeout => return true,
                Some(since) => self.idle.as_mut().reset(since + timeout),
                // Busy: look again a whole timeout later, as the earliest
                // it could be idle long enough is that far away.
                None => self.idle.as_mut().reset(now + self.idle_timeout),
            }
        }
        false
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        let read = match &mut this.stream {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        };
        if read.is_pending() && this.idle_too_long(cx) {
            tracing::debug!(remote = %this.info.remote, timeout = ?this.idle_timeout, "closing an idle connection");
            this.closed = true;
            return Poll::Ready(Ok(()));
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(stream) => stream.is_write_vectored(),
            Stream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}
