//! Model workers for grym orchestrator.
//!
//! [`sdk`] turns any [`Model`] into a gRPC server that speaks
//! `grym.worker.v1.ModelWorker`, with `grpc.health.v1` and reflection. The
//! reference workers are built on it: [`audio_features`] analyses real WAV
//! audio, and [`sim`] simulates a model with configurable latency and
//! failures, for tests, load and chaos runs.

pub mod audio_features;
mod error;
pub mod sdk;
pub mod sim;

pub use error::Error;
pub use sdk::{Model, Worker};
