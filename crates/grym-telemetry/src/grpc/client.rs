//! Trace propagation on outgoing calls.

use std::task::{Context, Poll};

use tower::{Layer, Service};

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
#[derive(Debug, Clone)]
pub struct ClientPropagation<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for ClientPropagation<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        crate::inject(&opentelemetry::Context::current(), request.headers_mut());
        self.inner.call(request)
    }
}
