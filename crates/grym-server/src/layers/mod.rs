//! What every call passes through around its handler, composed where the
//! stack is built (`lib.rs`):
//! - [`framing`]: a request tonic could not read is the caller's mistake,
//!   and no status message is unbounded (every service);
//! - [`deadline`]: when the caller needs the answer;
//! - [`tenant`]: who is calling (a bearer token, or the declared tenant).

pub(crate) mod deadline;
pub(crate) mod framing;
pub(crate) mod tenant;
