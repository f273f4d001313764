//! HTTP-level checks, before any gRPC service runs: a request that is not
//! gRPC is refused as the gRPC-over-HTTP/2 specification says, and a
//! request's body must arrive within `connections.body_timeout`.
//!
//! - a method other than `POST` is HTTP 405 (with `allow: POST`);
//! - a `content-type` other than `application/grpc`, optionally followed
//!   by `+format` or `;parameters` (or none), is HTTP 415, so no other
//!   HTTP client mistakes a gRPC error, which is HTTP 200, for success;
//! - a body still incomplete when the timeout passes ends the call
//!   `DEADLINE_EXCEEDED`; the stream is reset and what had arrived of it
//!   is released.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::TryFutureExt as _;
use futures::future::{Either, MapOk, Ready, ready};
use http::{Method, StatusCode, header};
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

/// Refuses what is not gRPC and bounds the time a request body may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpChecksLayer {
    body_timeout: Duration,
}

impl HttpChecksLayer {
    /// Checks with this body timeout.
    pub(crate) fn new(body_timeout: Duration) -> Self {
        Self { body_timeout }
    }
}

impl<S> Layer<S> for HttpChecksLayer {
    type Service = HttpChecks<S>;

    fn layer(&self, inner: S) -> HttpChecks<S> {
        HttpChecks {
            inner,
            body_timeout: self.body_timeout,
        }
    }
}

/// The service of [`HttpChecksLayer`].
#[derive(Debug, Clone)]
pub(crate) struct HttpChecks<S> {
    inner: S,
    body_timeout: Duration,
}

/// The answer of an inner service, as one body type.
type Answer<F, B> = MapOk<F, fn(http::Response<B>) -> http::Response<Body>>;

impl<S, B> Service<http::Request<Body>> for HttpChecks<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<http::Response<Body>, S::Error>>, Answer<S::Future, B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if let Some(refusal) = refusal(&request) {
            return Either::Left(ready(Ok(refusal)));
        }
        let timeout = self.body_timeout;
        let request = request.map(|body| Body::new(TimedBody::new(body, timeout)));
        let boxed: fn(http::Response<B>) -> http::Response<Body> =
            |response| response.map(Body::new);
        Either::Right(self.inner.call(request).map_ok(boxed))
    }
}

/// Whether a `content-type` is gRPC's: `application/grpc`, alone or with
/// a `+format` or `;parameters` after it (the specification's
/// `"application/grpc" [("+proto" / "+json" / {custom})]`).
fn is_grpc(content_type: &[u8]) -> bool {
    content_type
        .strip_prefix(b"application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";"))
}

/// The HTTP answer to a request that is not gRPC; `None` for gRPC.
fn refusal(request: &http::Request<Body>) -> Option<http::Response<Body>> {
    if request.method() != Method::POST {
        return Some(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "gRPC calls are POST requests\n",
        ));
    }
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| is_grpc(value.as_bytes()));
    if !grpc {
        return Some(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "gRPC calls have content-type application/grpc\n",
        ));
    }
    None
}

fn plain(status: StatusCode, text: &'static str) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(
        bytes::Bytes::from_static(text.as_bytes()),
    )));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, http::HeaderValue::from_static("POST"));
    }
    response
}

pin_project_lite::pin_project! {
    /// A request body that fails once `timeout` has passed before its end.
    struct TimedBody {
        #[pin]
        inner: Body,
        #[pin]
        deadline: Sleep,
        timeout: Duration,
        ended: bool,
    }
}

impl TimedBody {
    fn new(inner: Body, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: tokio::time::sleep(timeout),
            timeout,
            ended: false,
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if frame.is_none() {
                *this.ended = true;
            }
            return Poll::Ready(frame);
        }
        if this.deadline.poll(cx).is_ready() {
            *this.ended = true;
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the request did not arrive in full within {:?} (connections.body_timeout)",
                this.timeout
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, content_type: Option<&'static str>) -> http::Request<Body> {
        let mut request = http::Request::new(Body::empty());
        *request.method_mut() = method;
        if let Some(value) = content_type {
            request
                .headers_mut()
                .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(value));
        }
        request
    }

    #[test]
    fn only_grpc_posts_pass() {
        assert!(refusal(&request(Method::POST, Some("application/grpc"))).is_none());
        assert!(refusal(&request(Method::POST, Some("application/grpc+proto"))).is_none());
        assert!(
            refusal(&request(
                Method::POST,
                Some("application/grpc;charset=utf-8")
            ))
            .is_none()
        );
        for (method, content_type, status) in [
            (Method::GET, Some("application/grpc"), 405),
            (Method::POST, Some("application/json"), 415),
            (Method::POST, Some("application/grpcx"), 415),
            (Method::POST, Some("text/plain"), 415),
            (Method::POST, None, 415),
        ] {
            let refused = refusal(&request(method, content_type)).unwrap();
            assert_eq!(refused.status().as_u16(), status, "{content_type:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_end_in_time_fails() {
        use http_body::Body as _;
        // A body that never ends: a stream with no items that stays open.
        let pending = futures::stream::pending::<Result<Frame<bytes::Bytes>, Status>>();
        let body = Body::new(http_body_util::StreamBody::new(pending));
        let mut timed = std::pin::pin!(TimedBody::new(body, Duration::from_secs(1)));
        let frame = std::future::poll_fn(|cx| timed.as_mut().poll_frame(cx)).await;
        let error = frame.unwrap().unwrap_err();
        assert_eq!(error.code(), tonic::Code::DeadlineExceeded);
    }
}
