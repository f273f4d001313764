//! What the benchmarks share: a model that never answers, and a reading of
//! resident memory. Each benchmark includes this module and uses part of it.

#![allow(dead_code, reason = "each benchmark uses only part of this module")]

use futures::FutureExt;
use futures::future::BoxFuture;
use grym_core::{Description, Health, InferCall, ModelClient, Output, WorkerError};

/// A serving model whose calls never answer: benchmarks that record
/// outcomes themselves, or only queue calls, never reach it.
pub(crate) struct Silent;

impl ModelClient for Silent {
    fn infer(&self, _call: InferCall) -> BoxFuture<'static, Result<Output, WorkerError>> {
        futures::future::pending().boxed()
    }
    fn describe(&self) -> BoxFuture<'static, Result<Description, WorkerError>> {
        futures::future::pending().boxed()
    }
    fn check_health(&self) -> BoxFuture<'static, Health> {
        futures::future::ready(Health::Serving).boxed()
    }
}

/// This process's resident memory, in bytes (Linux).
pub(crate) fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}
