//! What every call to the orchestrator service passes through before its
//! handler, each a request interceptor composed where the stack is built
//! (`lib.rs`):
//! - [`deadline`]: when the caller needs the answer;
//! - [`tenant`]: who is calling (a bearer token, or the declared tenant).

pub(crate) mod deadline;
pub(crate) mod tenant;
