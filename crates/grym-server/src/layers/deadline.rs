//! The caller's deadline, read from the `grpc-timeout` header so handlers
//! find it as a request extension, a core [`Deadline`].
//!
//! The deadline handed on is a little earlier than the caller's: a reserve
//! of a tenth of the timeout, at most [`MAX_RESERVE`], is kept for the
//! answer to travel back. So a task that runs out of time reaches its caller
//! as a result (`TASK_STATUS_DEADLINE_EXCEEDED`, with its metrics) rather
//! than as a bare status, as long as the network's round trip fits in the
//! reserve; this is best effort, not a promise.

use std::time::Duration;

use grym_core::Deadline;
use tokio::time::Instant;
use tonic::{Request, Status};

/// The most time kept back from a caller's deadline for the answer.
const MAX_RESERVE: Duration = Duration::from_millis(50);

/// Records the caller's deadline, if it sent one; a malformed header is
/// `INVALID_ARGUMENT`.
pub(crate) fn interceptor(mut request: Request<()>) -> Result<Request<()>, Status> {
    let header = request.metadata().get("grpc-timeout").map(|value| {
        value
            .to_str()
            .ok()
            .and_then(parse_timeout)
            .ok_or_else(|| Status::invalid_argument("invalid grpc-timeout header"))
    });
    if let Some(timeout) = header.transpose()? {
        let reserve = (timeout / 10).min(MAX_RESERVE);
        request
            .extensions_mut()
            .insert(Deadline::after(Instant::now(), timeout - reserve));
    }
    Ok(request)
}

/// The deadline a request carries: none when the caller set none.
pub(crate) fn of<T>(request: &Request<T>) -> Deadline {
    request
        .extensions()
        .get::<Deadline>()
        .copied()
        .unwrap_or(Deadline::NONE)
}

/// Parses the gRPC wire form: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_timeout(text: &str) -> Option<Duration> {
    let split = text.len().checked_sub(1)?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_units_parse() {
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_timeout("1S"), Some(Duration::from_secs(1)));
    }

    #[test]
    fn malformed_timeouts_are_refused() {
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_interceptor_records_the_deadline() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("grpc-timeout", "500m".parse().unwrap());
        let before = Instant::now();
        let request = interceptor(request).unwrap();
        let after = Instant::now();
        let at = of(&request).instant().unwrap();
        // 500 ms less the 50 ms reserve for the answer.
        assert!(at >= before + Duration::from_millis(450));
        assert!(at <= after + Duration::from_millis(450));

        let mut bad = Request::new(());
        bad.metadata_mut()
            .insert("grpc-timeout", "soon".parse().unwrap());
        assert_eq!(
            interceptor(bad).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
