//! The one place where the core's words for failures become gRPC's: a
//! request the core refused becomes a status, and the kind of a task's
//! failure becomes the code name its result carries.
//!
//! A refusal that says when to retry (a task shed under overload) carries
//! it twice in its trailers: `grpc-retry-pushback-ms`, which gRPC clients
//! with a retry policy obey (gRFC A6), and a `google.rpc.RetryInfo` in
//! `grpc-status-details-bin`, for clients that read rich error details.

use std::time::Duration;

use grym_core::{Error, ErrorKind, FailureKind};
use grym_proto::status::code_name;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The trailer of gRFC A6 that tells a client when to retry.
pub(crate) const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The status for a request the core could not accept. Messages are safe
/// for the caller: they name the field or task type, nothing internal.
pub(crate) fn from_core(error: Error) -> Status {
    let message = error.to_string();
    let code = match error.kind() {
        ErrorKind::InvalidRequest => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::CapacityExhausted => Code::ResourceExhausted,
    };
    match error.retry_after() {
        Some(after) => with_retry_hint(code, message, after),
        None => Status::new(code, message),
    }
}

/// A status that tells the client to retry after `after`.
fn with_retry_hint(code: Code, message: String, after: Duration) -> Status {
    let mut trailers = MetadataMap::new();
    let millis = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    trailers.insert(RETRY_PUSHBACK, MetadataValue::from(millis));
    Status::with_error_details_and_metadata(
        code,
        message,
        ErrorDetails::with_retry_info(Some(after)),
        trailers,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shed_task_is_resource_exhausted_with_a_retry_hint_in_both_forms() {
        let error = Error::Overloaded(Box::new(grym_core::Shed {
            model: grym_core::ModelId::new("sim").unwrap(),
            queued_ahead: Duration::from_millis(1_250),
            service: Duration::from_millis(50),
            left: Some(Duration::from_millis(900)),
            max_queue_wait: Duration::from_secs(2),
        }));
        let status = from_core(error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status
                .message()
                .contains("model `sim` cannot start this task before its deadline"),
            "{}",
            status.message()
        );
        assert_eq!(
            status
                .metadata()
                .get(RETRY_PUSHBACK)
                .unwrap()
                .to_str()
                .unwrap(),
            "1250"
        );
        let details = status.get_error_details();
        let retry = details.retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(1_250)));
    }

    #[test]
    fn other_refusals_carry_no_retry_hint() {
        let status = from_core(Error::QueueFull { max_queue: 3 });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.metadata().get(RETRY_PUSHBACK).is_none());
    }

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
