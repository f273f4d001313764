//! Tower layers that carry traces across gRPC calls.
//!
//! - [`ServerTraceLayer`] (for `tonic::transport::Server::builder().layer`)
//!   continues the caller's trace: it reads `traceparent`/`tracestate` from
//!   the request and runs the call inside a server span named after the RPC,
//!   with the OpenTelemetry RPC attributes and the final gRPC status.
//! - [`ClientPropagationLayer`] (around a `tonic::transport::Channel`) writes
//!   the current span's context into every outgoing request, so the server
//!   on the other side continues the same trace.
//!
//! Both are plain `tower` layers over `http::Request<B>`, whatever the body,
//! so tests can put them around an in-memory service.

mod client;
mod server;

pub use client::{CallBody, CallFuture, ClientPropagation, ClientPropagationLayer};
pub use server::{ResponseFuture, ServerTrace, ServerTraceLayer, TracedBody};

#[cfg(test)]
mod tests;
