//! W3C Trace Context (`traceparent`, `tracestate`) in HTTP/2 headers, which
//! is where gRPC metadata travels.
//!
//! These functions use the W3C propagator directly rather than the global
//! one, so they behave the same whether or not [`init`](crate::init) ran.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The caller's trace context carried by `headers`; an empty context when
/// they carry none (or a malformed one).
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes the span context of `cx` into `headers`, replacing any there;
/// writes nothing when `cx` holds no valid span context.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator only writes its own lowercase names and valid
        // values; anything else is dropped rather than sent malformed.
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };

    use super::*;

    fn remote_context() -> Context {
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "value")]).unwrap(),
        );
        Context::new().with_remote_span_context(span)
    }

    #[test]
    fn inject_then_extract_yields_the_same_span_context() {
        let cx = remote_context();
        let mut headers = http::HeaderMap::new();
        inject(&cx, &mut headers);
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(headers["tracestate"], "vendor=value");

        let extracted = extract(&headers);
        let extracted = extracted.span().span_context().clone();
        let original = cx.span().span_context().clone();
        assert_eq!(extracted.trace_id(), original.trace_id());
        assert_eq!(extracted.span_id(), original.span_id());
        assert!(extracted.is_sampled());
        assert!(extracted.is_remote());
        assert_eq!(extracted.trace_state().get("vendor"), Some("value"));
    }

    #[test]
    fn headers_without_a_traceparent_give_an_empty_context() {
        let mut headers = http::HeaderMap::new();
        assert!(!extract(&headers).span().span_context().is_valid());
        headers.insert("traceparent", http::HeaderValue::from_static("garbage"));
        assert!(!extract(&headers).span().span_context().is_valid());
    }

    #[test]
    fn an_empty_context_injects_nothing() {
        let mut headers = http::HeaderMap::new();
        inject(&Context::new(), &mut headers);
        assert!(headers.is_empty());
    }
}
