//! Calls and answers of the worker contract (`grym.worker.v1`), turned from
//! and into the core's types: the only place that touches its fields.

use grym_core::{
    Capability, CapabilitySource, Description, FailureKind, InferCall, Modality, ModelId,
    ModelKind, Output, OutputChunk, TaskInput, TaskType, WorkerError,
};
use grym_proto::json::{json_ref_to_struct, json_to_struct, json_to_value, value_to_json};
use grym_proto::status::code_name;
use grym_proto::worker::v1 as wire;
use tonic::{Code, Status};

use crate::layers::framing::bounded;

fn from_duration(d: Option<prost_types::Duration>) -> std::time::Duration {
    d.and_then(|d| std::time::Duration::try_from(d).ok())
        .unwrap_or_default()
}

/// The Infer request for one call.
pub(crate) fn infer_request(call: InferCall) -> wire::InferRequest {
    let kind = match call.input {
        TaskInput::Text(text) => wire::input::Kind::Text(text),
        TaskInput::Audio(audio) => wire::input::Kind::Audio(wire::Audio {
            data: audio.data,
            mime_type: audio.mime_type,
        }),
        TaskInput::Json(value) => wire::input::Kind::Json(json_to_value(value)),
    };
    wire::InferRequest {
        task_id: call.task_id.to_string(),
        task_type: call.task_type.to_string(),
        input: Some(wire::Input { kind: Some(kind) }),
        parameters: Some(json_to_struct(call.parameters)),
        // Shared with the transform cache, the context is read in place.
        context: Some(match std::sync::Arc::try_unwrap(call.context) {
            Ok(context) => json_to_struct(context),
            Err(shared) => json_ref_to_struct(&shared),
        }),
        attempt: call.attempt,
        tenant: call.tenant.as_str().to_owned(),
    }
}

/// A worker's output.
pub(crate) fn output_from_worker(output: Option<wire::Output>) -> Output {
    let output = output.unwrap_or_default();
    Output {
        text: output.text,
        json: output.json.map(value_to_json),
        data: output.data,
        data_mime_type: output.data_mime_type,
    }
}

/// A chunk a worker streamed.
pub(crate) fn chunk_from_worker(chunk: wire::OutputChunk) -> OutputChunk {
    OutputChunk {
        text: chunk.text,
        json: chunk.json.map(value_to_json),
    }
}

/// What a worker said of itself; a malformed capability fails the whole
/// answer, naming the field.
pub(crate) fn description_from_worker(
    response: wire::DescribeResponse,
) -> Result<Description, WorkerError> {
    let capabilities = response
        .capabilities
        .into_iter()
        .map(|c| {
            let inputs = inputs_from_worker(c.inputs());
            let capability = Capability {
                task_type: TaskType::new(c.task_type).map_err(|error| {
                    malformed(format!("invalid capabilities.task_type: {error}"))
                })?,
                confidence: c.confidence,
                estimated_latency: from_duration(c.estimated_latency),
                max_concurrency: (c.max_concurrency > 0).then_some(c.max_concurrency),
                inputs,
            };
            capability
                .validate()
                .map_err(|error| malformed(error.within("capabilities")))?;
            Ok(capability)
        })
        .collect::<Result<_, WorkerError>>()?;
    Ok(Description {
        kind: ModelKind::new(response.kind),
        capabilities,
        source: CapabilitySource::Worker,
    })
}

/// The inputs a capability declares; unknown or unset kinds are skipped,
/// so a newer worker's kinds do not refuse it.
fn inputs_from_worker(kinds: impl Iterator<Item = wire::InputKind>) -> Vec<Modality> {
    let mut inputs: Vec<Modality> = kinds
        .filter_map(|kind| match kind {
            wire::InputKind::Text => Some(Modality::Text),
            wire::InputKind::Audio => Some(Modality::Audio),
            wire::InputKind::Json => Some(Modality::Json),
            wire::InputKind::Unspecified => None,
        })
        .collect();
    inputs.dedup();
    inputs
}

fn malformed(error: impl std::fmt::Display) -> WorkerError {
    WorkerError::new(
        FailureKind::Internal,
        format!("malformed Describe answer: {error}"),
    )
}

/// A failed worker call, named in the core's words: the one place a
/// worker's gRPC code becomes a [`FailureKind`].
pub(crate) fn worker_error(model: &ModelId, status: &Status) -> WorkerError {
    // A connection refused or broken mid-call (the worker died) comes as
    // a status whose source is the channel's error: it is unavailability.
    let broken_connection = super::channel::is_connection_failure(status);
    if broken_connection {
        // The transport's own account (addresses, OS error codes, nested
        // connector types) is for the log and the span; the caller reads a
        // sentence.
        tracing::info!(grym.model = %model, error = ?status, "a worker call failed on its connection");
        return WorkerError::new(FailureKind::Unavailable, connection_failure(model, status));
    }
    if exceeds_a_size_limit(status) {
        return WorkerError::new(
            FailureKind::InvalidInput,
            bounded(format!(
                "the call to `{model}` exceeds a message size limit (max_message_bytes here, or \
                 the worker's own): {}",
                status.message()
            )),
        );
    }
    let kind = match status.code() {
        Code::InvalidArgument => FailureKind::InvalidInput,
        Code::OutOfRange => FailureKind::OutOfRange,
        Code::NotFound => FailureKind::NotFound,
        Code::AlreadyExists => FailureKind::Conflict,
        Code::FailedPrecondition => FailureKind::Precondition,
        Code::PermissionDenied => FailureKind::Denied,
        Code::Unauthenticated => FailureKind::Unauthenticated,
        Code::Unimplemented => FailureKind::Unsupported,
        Code::Unavailable => FailureKind::Unavailable,
        Code::Aborted => FailureKind::Aborted,
        Code::ResourceExhausted => FailureKind::Exhausted,
        Code::DeadlineExceeded => FailureKind::DeadlineExceeded,
        Code::Cancelled => FailureKind::Cancelled,
        Code::DataLoss => FailureKind::DataLoss,
        Code::Unknown => FailureKind::Unknown,
        // A worker that fails with OK says nothing of what went wrong.
        Code::Ok | Code::Internal => FailureKind::Internal,
    };
    let message = if status.message().is_empty() {
        format!("worker of `{model}` answered {}", code_name(status.code()))
    } else {
        bounded(status.message().to_owned())
    };
    WorkerError::new(kind, message)
}

/// What a broken or refused connection to a worker was, in a sentence:
/// from the OS error under the transport's, when there is one.
fn connection_failure(model: &ModelId, status: &Status) -> String {
    use std::io::ErrorKind;
    let mut source = std::error::Error::source(status);
    let mut io = None;
    while let Some(error) = source {
        if let Some(found) = error.downcast_ref::<std::io::Error>() {
            io = Some(found.kind());
        }
        source = error.source();
    }
    let never_reached = |why: &str| format!("the worker of `{model}` could not be reached: {why}");
    match io {
        Some(ErrorKind::ConnectionRefused) => {
            never_reached("connection refused (nothing listens at its endpoint)")
        }
        Some(ErrorKind::TimedOut) => never_reached("connecting timed out"),
        Some(
            ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::AddrNotAvailable
            | ErrorKind::NetworkDown,
        ) => never_reached("its address is unreachable from grymd"),
        Some(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof) => {
            format!("the connection to the worker of `{model}` was closed during the call")
        }
        _ => format!("the connection to the worker of `{model}` failed"),
    }
}

/// Whether a call failed on a message size limit: tonic's own (on either
/// side: grymd sending or receiving, or a tonic worker receiving) or
/// grpcio's. The size is the request's doing, or a limit of grymd's own
/// channel: never the model's failure, so never held against it.
fn exceeds_a_size_limit(status: &Status) -> bool {
    const SIZE_LIMITS: [(Code, &str); 3] = [
        (Code::OutOfRange, "Error, encoded message length too large"),
        (Code::OutOfRange, "Error, decoded message length too large"),
        (Code::ResourceExhausted, "Received message larger than max"),
    ];
    SIZE_LIMITS
        .iter()
        .any(|&(code, prefix)| status.code() == code && status.message().starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_statuses_are_classified_for_fallback() {
        let model = ModelId::new("gama").unwrap();
        let unavailable = worker_error(&model, &Status::unavailable("down"));
        assert_eq!(unavailable.kind, FailureKind::Unavailable);
        assert_eq!(
            crate::api::status::failure_code(unavailable.kind),
            "UNAVAILABLE"
        );
        assert!(!unavailable.kind.blames_request());
        let rejected = worker_error(&model, &Status::invalid_argument("bad wav"));
        assert_eq!(rejected.kind, FailureKind::InvalidInput);
        assert!(rejected.kind.blames_request());
        assert_eq!(rejected.message, "bad wav");

        // A message over a size limit is the request's, wherever it was met.
        for status in [
            Status::out_of_range(
                "Error, decoded message length too large: found 9 bytes, the limit is: 8 bytes",
            ),
            Status::resource_exhausted("Received message larger than max (9 vs. 8)"),
        ] {
            let error = worker_error(&model, &status);
            assert_eq!(error.kind, FailureKind::InvalidInput, "{status:?}");
            assert!(error.kind.blames_request());
        }
        // A worker's long message is cut.
        let long = worker_error(&model, &Status::internal("x".repeat(100_000)));
        assert!(long.message.len() <= crate::layers::framing::MAX_MESSAGE_BYTES);
    }

    #[test]
    fn a_refused_connection_is_a_sentence_without_the_transport_dump() {
        let model = ModelId::new("llm").unwrap();
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let status = Status::from_error(Box::new(refused));
        // Only a transport error in the chain marks a broken connection;
        // the sentence itself reads the OS error wherever it sits.
        let message = connection_failure(&model, &status);
        assert_eq!(
            message,
            "the worker of `llm` could not be reached: connection refused (nothing listens at \
             its endpoint)"
        );
        assert!(!message.contains("Os {"), "{message}");
    }

    #[test]
    fn a_describe_answer_with_a_bad_confidence_is_refused() {
        let err = description_from_worker(wire::DescribeResponse {
            model_id: "gama".into(),
            kind: "audio-language".into(),
            capabilities: vec![wire::Capability {
                task_type: "audio_analysis".into(),
                confidence: 2.0,
                estimated_latency: None,
                max_concurrency: 0,
                inputs: Vec::new(),
            }],
        })
        .unwrap_err();
        assert!(err.message.contains("confidence"), "{}", err.message);
    }
}
