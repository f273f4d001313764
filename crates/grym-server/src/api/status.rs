//! The one place where the core's words for failures become gRPC's: a
//! request the core refused becomes a status, and the kind of a task's
//! failure becomes the code name its result carries.

use grym_core::{Error, ErrorKind, FailureKind};
use tonic::{Code, Status};

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

/// The gRPC code of a failure's kind.
pub(crate) fn failure_status(kind: FailureKind) -> Code {
    match kind {
        FailureKind::InvalidInput => Code::InvalidArgument,
        FailureKind::OutOfRange => Code::OutOfRange,
        FailureKind::NotFound => Code::NotFound,
        FailureKind::Conflict => Code::AlreadyExists,
        FailureKind::Precondition => Code::FailedPrecondition,
        FailureKind::Denied => Code::PermissionDenied,
        FailureKind::Unauthenticated => Code::Unauthenticated,
        FailureKind::Unsupported => Code::Unimplemented,
        FailureKind::Unavailable => Code::Unavailable,
        FailureKind::Aborted => Code::Aborted,
        FailureKind::Exhausted => Code::ResourceExhausted,
        FailureKind::DeadlineExceeded => Code::DeadlineExceeded,
        FailureKind::Cancelled => Code::Cancelled,
        FailureKind::DataLoss => Code::DataLoss,
        FailureKind::Internal => Code::Internal,
        FailureKind::Unknown => Code::Unknown,
    }
}

/// The code name a task's result carries for a failure of `kind`, for
/// example `UNAVAILABLE`.
pub(crate) fn failure_code(kind: FailureKind) -> &'static str {
    code_name(failure_status(kind))
}

/// The canonical name of a gRPC status code.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workers_code_reads_back_as_itself() {
        // Every code a worker may answer becomes a kind (worker/convert.rs)
        // whose code is the one it answered, except OK, which is no
        // failure at all.
        let model = grym_core::ModelId::new("m").unwrap();
        for code in (1..=16).map(Code::from_i32) {
            let error = crate::worker::convert::worker_error(&model, &Status::new(code, "x"));
            assert_eq!(failure_status(error.kind), code, "{code:?}");
        }
        assert_eq!(failure_code(FailureKind::Unavailable), "UNAVAILABLE");
        assert_eq!(failure_code(FailureKind::InvalidInput), "INVALID_ARGUMENT");
    }
}
