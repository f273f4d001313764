//! What every call passes through around its handler, composed where the
//! stack is built (`lib.rs`):
//! - [`http`]: before any service, at the HTTP level: only gRPC requests
//!   pass, and their bodies must arrive in time;
//! - [`framing`]: a request tonic could not read is the caller's mistake,
//!   and no status message is unbounded (every service);
//! - [`deadline`] (a request interceptor of the orchestrator service): when
//!   the caller needs the answer;
//! - [`tenant`] (another): who is calling (a client certificate, a bearer
//!   token, or the declared tenant).

pub(crate) mod deadline;
pub(crate) mod framing;
pub(crate) mod http;
pub(crate) mod tenant;
