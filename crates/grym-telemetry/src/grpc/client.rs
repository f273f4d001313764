//! Trace propagation on outgoing calls, and the status of the calls their
//! caller drops.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};
use tracing::Span;

/// Wraps a client service in [`ClientPropagation`].
///
/// ```
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use tower::ServiceBuilder;
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:7001").connect_lazy();
/// let traced = ServiceBuilder::new()
///     .layer(grym_telemetry::ClientPropagationLayer)
///     .service(channel);
/// // Any generated client takes it: `ModelWorkerClient::new(traced)`.
/// # drop(traced);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientPropagationLayer;

impl<S> Layer<S> for ClientPropagationLayer {
    type Service = ClientPropagation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientPropagation { inner }
    }
}

/// Writes the current trace context (`traceparent`, `tracestate`) into the
/// headers of every request it forwards.
///
/// The current context is the one of the `tracing` span being polled when
/// the call starts: the OpenTelemetry layer that [`init`](crate::init)
/// installs makes an entered span's context current. Outside any span, or
/// when traces are not exported, requests go out unchanged.
///
/// A call that its caller drops before its end (a hedge that lost, a
/// caller gone) records `rpc.grpc.status_code = 1` (`CANCELLED`) on that
/// span, when the span has the field: the code the caller's own status
/// handling never gets to write.
#[derive(Debug, Clone)]
pub struct ClientPropagation<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for ClientPropagation<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<CallBody<ResBody>>;
    type Error = S::Error;
    type Future = CallFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        crate::inject(&opentelemetry::Context::current(), request.headers_mut());
        CallFuture {
            inner: self.inner.call(request),
            watch: Some(Unfinished(Some(Span::current()))),
        }
    }
}

/// A call not yet finished; dropped so, it records `CANCELLED` on its
/// span.
#[derive(Debug)]
struct Unfinished(Option<Span>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(span) = self.0.take() {
            span.record("rpc.grpc.status_code", 1_i64);
        }
    }
}

impl Unfinished {
    /// The call ended: its own status stands.
    fn finished(mut self) {
        self.0 = None;
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ClientPropagation`].
    pub struct CallFuture<F> {
        #[pin]
        inner: F,
        watch: Option<Unfinished>,
    }
}

impl<F, B, E> Future for CallFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<CallBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let watch = this.watch.take();
        Poll::Ready(match result {
            Ok(response) => Ok(response.map(|inner| CallBody { inner, watch })),
            // The caller gets the error and records its status.
            Err(error) => {
                if let Some(watch) = watch {
                    watch.finished();
                }
                Err(error)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// The response body of [`ClientPropagation`]: the call ends with its
    /// trailers, its end or its error.
    pub struct CallBody<B> {
        #[pin]
        inner: B,
        watch: Option<Unfinished>,
    }
}

impl<B: Body> Body for CallBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let ended = match &frame {
            Some(Ok(frame)) => frame.is_trailers(),
            Some(Err(_)) | None => true,
        };
        if ended && let Some(watch) = this.watch.take() {
            watch.finished();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
