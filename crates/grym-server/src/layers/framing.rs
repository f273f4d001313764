//! The status of a call that ends before any handler runs, told as the
//! caller's mistake when it is one, and every status message bounded.
//!
//! tonic answers a request it cannot read with `INTERNAL` (an undecodable
//! message, a frame cut short, a unary call with no message) and one over
//! the size limit with `OUT_OF_RANGE`. The mistake is the caller's and no
//! retry can mend it, so grymd answers `INVALID_ARGUMENT`, and for a message
//! over the limit `RESOURCE_EXHAUSTED`, as the gRPC status code table says
//! of "larger than configured limit". tonic names these refusals in its
//! messages, which are matched here; `tests/tests/hostile.rs` sends each.
//!
//! These are trailers-only responses: the status is in the headers, so the
//! layer reads headers only and never touches a body.

use http::HeaderMap;
use tonic::{Code, Status};

/// The longest status message sent, in bytes; a longer one is cut at a
/// character boundary and marked.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

/// The tonic messages that mean the request could not be read. A bad
/// compression flag stays `INTERNAL`, as gRPC's compression spec requires.
const UNREADABLE: [&str; 3] = [
    "failed to decode Protobuf message",
    "Unexpected EOF decoding stream",
    "Missing request message",
];

/// The prefix of tonic's message for a message over the size limit.
const TOO_LARGE: &str = "Error, decoded message length too large";

/// Restates the status of a response that carries one in its headers.
pub(crate) fn restate<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let Some(status) = Status::from_header_map(headers) else {
        return response;
    };
    if status.code() == Code::Ok {
        return response;
    }
    if let Some(restated) = restated(&status) {
        // Details describe the status as it was; a new code drops them.
        if restated.code() != status.code() {
            headers.remove("grpc-status-details-bin");
        }
        replace(headers, &restated);
    }
    response
}

/// What the status should have said, when it differs.
fn restated(status: &Status) -> Option<Status> {
    let message = status.message();
    let code = match status.code() {
        Code::Internal if UNREADABLE.iter().any(|m| message.starts_with(m)) => {
            Code::InvalidArgument
        }
        Code::OutOfRange if message.starts_with(TOO_LARGE) => Code::ResourceExhausted,
        code if message.len() > MAX_MESSAGE_BYTES => code,
        _ => return None,
    };
    let message = match code {
        Code::InvalidArgument if message.starts_with("Missing request message") => {
            "the request carries no message".to_owned()
        }
        Code::InvalidArgument => format!("the request cannot be read: {message}"),
        _ => message.to_owned(),
    };
    Some(Status::new(code, bounded(message)))
}

/// `message`, cut to [`MAX_MESSAGE_BYTES`].
pub(crate) fn bounded(mut message: String) -> String {
    const MARK: &str = " ... (cut)";
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES - MARK.len();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(MARK);
    }
    message
}

fn replace(headers: &mut HeaderMap, status: &Status) {
    headers.remove(Status::GRPC_STATUS);
    headers.remove(Status::GRPC_MESSAGE);
    // Writing a status with a bounded, percent-encoded message cannot fail;
    // if it did, the original headers are gone and the caller sees a
    // missing status, which its library reports as an error anyway.
    let _ = status.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: Status) -> http::Response<()> {
        let mut response = http::Response::new(());
        status.add_header(response.headers_mut()).unwrap();
        response
    }

    fn status_of(response: &http::Response<()>) -> Status {
        Status::from_header_map(response.headers()).unwrap()
    }

    #[test]
    fn an_undecodable_message_is_the_callers_mistake() {
        let restated = restate(response(Status::internal(
            "failed to decode Protobuf message: invalid varint",
        )));
        let status = status_of(&restated);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("invalid varint"), "{status:?}");
    }

    #[test]
    fn a_message_over_the_limit_is_resource_exhausted() {
        let restated = restate(response(Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 8 bytes",
        )));
        assert_eq!(status_of(&restated).code(), Code::ResourceExhausted);
    }

    #[test]
    fn other_statuses_are_kept_and_long_messages_are_cut() {
        let kept = restate(response(Status::internal("a store failed")));
        assert_eq!(status_of(&kept).code(), Code::Internal);
        assert_eq!(status_of(&kept).message(), "a store failed");

        let long = restate(response(Status::not_found("é".repeat(5000))));
        let status = status_of(&long);
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(status.message().ends_with("(cut)"));
    }
}
