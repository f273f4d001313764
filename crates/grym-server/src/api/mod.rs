//! The `grym.orchestrator.v1` face of grymd:
//! - [`service`]: the handlers (convert, call the orchestrator, map the
//!   error; nothing else);
//! - [`convert`]: requests into the core's types, naming a bad field;
//! - [`results`]: the core's results, plans and views into responses;
//! - [`status`]: the one mapping from the core's failures to gRPC.

pub(crate) mod convert;
pub(crate) mod results;
pub(crate) mod service;
pub(crate) mod status;
