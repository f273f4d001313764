//! The one place where a core error becomes a gRPC status.

use grym_core::{Error, ErrorKind};
use tonic::Status;

/// The status for a request the core could not accept. Messages are safe
/// for the caller: they name the field or task type, nothing internal.
pub(crate) fn from_core(error: Error) -> Status {
    let message = error.to_string();
    match error.kind() {
        ErrorKind::InvalidRequest => Status::invalid_argument(message),
        ErrorKind::FailedPrecondition => Status::failed_precondition(message),
        ErrorKind::Unavailable => Status::unavailable(message),
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::AlreadyExists => Status::already_exists(message),
        ErrorKind::CapacityExhausted => Status::resource_exhausted(message),
    }
}
