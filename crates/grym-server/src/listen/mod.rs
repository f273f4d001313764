//! Accepting callers' connections: grymd's own accept loop, whose
//! connections tonic serves.
//!
//! One task owns the listener. It never waits on a caller: each accepted
//! connection takes a slot of `max_connections` at once (a connection
//! beyond them is closed as soon as it is accepted, with a warning), and a
//! TLS handshake runs in a task of its own, bounded by
//! `handshake_timeout` (which also bounds the time to the connection's
//! first call, see [`conn`]). When accepting fails for want of descriptors or
//! memory, the loop logs and pauses briefly instead of spinning. A slot is
//! given back when the connection is dropped, whatever ended it.
//!
//! - [`conn`]: the connection as tonic sees it, with its idle timeout;
//! - [`activity`]: the layer that tells a connection when calls are in
//!   flight, so that only a connection with none is idle.

pub(crate) mod activity;
pub(crate) mod conn;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::activity::Activity;
use self::conn::Accepted;
pub(crate) use self::conn::Conn;
use crate::config::ConnectionSettings;
use crate::tls;

/// How long the loop pauses after an accept error that is not about one
/// connection (too many open files, no memory), as hyper's `AddrIncoming`
/// did: long enough not to spin, short enough to recover at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The least time between two warnings of one kind.
const WARN_EVERY: Duration = Duration::from_secs(5);
/// The TCP keep-alive probes' idle time, as before grymd had its own loop.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The connections tonic serves, ready (handshake done) and each holding a
/// slot. The channel needs no bound of its own: every item holds one of
/// `max_connections` slots.
pub(crate) type Incoming = UnboundedReceiverStream<Result<Conn, Infallible>>;

/// Starts accepting on `listener` in a task of `tasks`, until `cancel`.
pub(crate) fn incoming(
    listener: TcpListener,
    settings: &ConnectionSettings,
    tls: Option<tls::Acceptor>,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> Incoming {
    let (ready, incoming) = mpsc::unbounded_channel();
    let acceptor = Accept {
        listener,
        slots: Arc::new(Semaphore::new(settings.max_connections)),
        max_connections: settings.max_connections,
        handshake_timeout: settings.handshake_timeout,
        idle_timeout: settings.idle_timeout,
        tls,
        ready,
        tasks: tasks.clone(),
        cancel,
    };
    tasks.spawn(acceptor.run());
    UnboundedReceiverStream::new(incoming)
}

/// The accept loop's state.
struct Accept {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max_connections: usize,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    tls: Option<tls::Acceptor>,
    ready: mpsc::UnboundedSender<Result<Conn, Infallible>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Accept {
    async fn run(self) {
        let mut refused = Throttled::default();
        let mut failed = Throttled::default();
        loop {
            let accepted = tokio::select! {
                () = self.cancel.cancelled() => return,
                // The server stopped serving: close the listener at once,
                // so new callers are refused rather than left waiting.
                () = self.ready.closed() => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, remote)) => {
                    let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                        // Closed at once: the caller sees its connection
                        // end rather than hang, and no descriptor is kept.
                        drop(stream);
                        if let Some(count) = refused.hit() {
                            tracing::warn!(
                                refused = count,
                                max_connections = self.max_connections,
                                %remote,
                                "connection refused: connections.max_connections are open"
                            );
                        }
                        continue;
                    };
                    self.start(stream, remote, slot);
                }
                // The connection went away before it was accepted; the
                // next one may be fine.
                Err(error) if is_about_one_connection(&error) => {}
                Err(error) => {
                    if let Some(count) = failed.hit() {
                        tracing::warn!(%error, failures = count, "accepting connections failed; pausing");
                    }
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            }
        }
    }

    /// Hands on a connection, after its handshake when it is TLS.
    fn start(&self, stream: TcpStream, remote: SocketAddr, slot: OwnedSemaphorePermit) {
        configure(&stream);
        let accepted = Accepted {
            remote,
            local: stream.local_addr().ok(),
            idle_timeout: self.idle_timeout,
            first_call_timeout: self.handshake_timeout,
            activity: Arc::new(Activity::new()),
            slot,
        };
        let Some(tls) = self.tls.clone() else {
            let conn = Conn::plain(stream, accepted);
            // Err only when the server stopped serving; the drop closes it.
            self.ready.send(Ok(conn)).ok();
            return;
        };
        let ready = self.ready.clone();
        let cancel = self.cancel.clone();
        let timeout = self.handshake_timeout;
        self.tasks.spawn(async move {
            let handshake = tokio::time::timeout(timeout, tls.accept(stream));
            let done = tokio::select! {
                () = cancel.cancelled() => return,
                done = handshake => done,
            };
            match done {
                Ok(Ok((stream, identity))) => {
                    let conn = Conn::tls(stream, identity, accepted);
                    ready.send(Ok(conn)).ok();
                }
                // A caller that cannot complete a handshake is the
                // caller's problem, worth a line at debug level only.
                Ok(Err(error)) => tracing::debug!(%remote, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%remote, ?timeout, "TLS handshake timed out"),
            }
        });
    }
}

/// `TCP_NODELAY`, since Nagle's algorithm with delayed ACKs would hold
/// small responses ~40 ms, and keep-alive probes, which find peers that
/// vanished.
fn configure(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "cannot set TCP keep-alive");
    }
}

/// Whether an accept error concerns only the connection being accepted.
fn is_about_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Counts events of one kind and says when to log them: at the first,
/// then at most once every [`WARN_EVERY`], with how many there were.
#[derive(Debug, Default)]
struct Throttled {
    last: Option<Instant>,
    count: u64,
}

impl Throttled {
    /// Records one event; `Some(events since the last line)` when a line
    /// is due.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + WARN_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn warnings_are_throttled_and_count_what_they_skipped() {
        let mut throttled = Throttled::default();
        assert_eq!(throttled.hit(), Some(1));
        assert_eq!(throttled.hit(), None);
        assert_eq!(throttled.hit(), None);
        tokio::time::advance(WARN_EVERY).await;
        assert_eq!(throttled.hit(), Some(3));
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_and_slots_come_back() {
        use tokio::io::AsyncReadExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let settings = ConnectionSettings {
            max_connections: 1,
            ..ConnectionSettings::default()
        };
        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        let mut incoming = incoming(listener, &settings, None, &tasks, cancel.clone());
        use tokio_stream::StreamExt as _;

        let _first = TcpStream::connect(address).await.unwrap();
        let held = incoming.next().await.unwrap().unwrap();
        let mut second = TcpStream::connect(address).await.unwrap();
        let mut byte = [0_u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut byte)).await;
        assert_eq!(read.unwrap().unwrap(), 0, "the second connection is closed");

        drop(held);
        let _third = TcpStream::connect(address).await.unwrap();
        let third = tokio::time::timeout(Duration::from_secs(5), incoming.next()).await;
        assert!(
            third.unwrap().is_some(),
            "a freed slot takes a new connection"
        );
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
    }
}
