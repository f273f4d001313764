//! When a connection has calls in flight: an [`Activity`] record per
//! connection, and the [`ActivityLayer`] that counts each call from its
//! request's arrival until its response body is done or dropped.
//!
//! The layer also puts tonic's [`TcpConnectInfo`] on each request, so
//! `Request::remote_addr()` keeps working behind grymd's own connections.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http_body::{Frame, SizeHint};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

use super::conn::ConnInfo;

/// The calls in flight on one connection, and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    /// The connection's start; `last_end` counts from it.
    start: Instant,
    in_flight: AtomicUsize,
    /// Whether a call has ever begun.
    called: AtomicBool,
    /// Milliseconds from `start` to the end of the latest call.
    last_end: AtomicU64,
}

impl Activity {
    /// A connection with no call yet, idle from now.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            called: AtomicBool::new(false),
            last_end: AtomicU64::new(0),
        }
    }

    /// Whether a call has ever begun on the connection.
    pub(crate) fn called(&self) -> bool {
        self.called.load(Ordering::Acquire)
    }

    /// Since when the connection has had no call in flight; `None` while
    /// one is.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let millis = self.last_end.load(Ordering::Acquire);
        Some(self.start + std::time::Duration::from_millis(millis))
    }

    /// Counts a call in flight until the guard is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.called.store(true, Ordering::Release);
        InFlight(Arc::clone(self))
    }
}

/// One call in flight; its drop ends it.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let millis = u64::try_from(activity.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Stored before the count falls, so a reader that sees no call in
        // flight sees this end too.
        activity.last_end.fetch_max(millis, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts every call as activity of its connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ActivityLayer;

impl<S> Layer<S> for ActivityLayer {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked { inner }
    }
}

/// The service of [`ActivityLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Tracked<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for Tracked<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let counted = request.extensions().get::<ConnInfo>().map(|info| {
            let tcp = TcpConnectInfo {
                local_addr: info.local,
                remote_addr: Some(info.remote),
            };
            (tcp, info.activity.begin())
        });
        let in_flight = counted.map(|(tcp, in_flight)| {
            request.extensions_mut().insert(tcp);
            in_flight
        });
        TrackedFuture {
            inner: self.inner.call(request),
            in_flight,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a counted call, whose body keeps the call counted.
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let Some(in_flight) = this.in_flight.take() else {
            return Poll::Ready(Ok(response));
        };
        Poll::Ready(Ok(response.map(|body| {
            Body::new(CountedBody {
                inner: body,
                _in_flight: in_flight,
            })
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call in flight until it is dropped.
    struct CountedBody {
        #[pin]
        inner: Body,
        _in_flight: InFlight,
    }
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_call_in_flight() {
        let activity = Arc::new(Activity::new());
        let opened = Instant::now();
        assert_eq!(activity.idle_since(), Some(opened));
        let first = activity.begin();
        let second = activity.begin();
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        drop(first);
        assert_eq!(activity.idle_since(), None);
        drop(second);
        let since = activity.idle_since().unwrap();
        assert_eq!(since - opened, std::time::Duration::from_secs(3));
    }
}
