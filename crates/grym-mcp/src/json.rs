//! Protobuf's JSON mapping of the grym contract, driven by the descriptor
//! set compiled into `grym-proto`: the JSON grpcurl takes and prints (field
//! names as in the `.proto`, enums by name, bytes as base64, durations as
//! `"1.5s"`), so task files, `grym --output json` and the MCP tools speak
//! one form. [`schema`] derives a JSON Schema from the same messages, with
//! the `.proto` comments as descriptions.

use std::sync::LazyLock;

use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    SerializeOptions,
};
use serde_json::{Map, Value, json};

use crate::Error;
use grym_proto::orchestrator::v1 as api;

/// The contract's messages, each with its protobuf name.
pub trait Message: prost::Message + Default {
    /// The message's fully qualified name, for example
    /// `grym.orchestrator.v1.Task`.
    const NAME: &'static str;
}

macro_rules! named {
    ($($message:ident),* $(,)?) => {
        $(impl Message for api::$message {
            const NAME: &'static str = concat!("grym.orchestrator.v1.", stringify!($message));
        })*
    };
}

named!(
    Task,
    TaskResult,
    ExecuteTaskRequest,
    ExecuteTaskResponse,
    SubmitTaskRequest,
    SubmitTaskResponse,
    GetTaskRequest,
    GetTaskResponse,
    CancelTaskRequest,
    CancelTaskResponse,
    PlanTaskRequest,
    PlanTaskResponse,
    ListModelsRequest,
    ListModelsResponse,
    GetBottlenecksResponse,
    PutSessionContextResponse,
    GetSessionContextResponse,
    StreamTaskResponse,
    Session,
);

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(grym_proto::FILE_DESCRIPTOR_SET).map_err(|error| error.to_string())
});

/// The descriptor of the message named `name`.
pub fn descriptor(name: &str) -> Result<MessageDescriptor, Error> {
    let pool = POOL
        .as_ref()
        .map_err(|error| Error::Descriptor(error.clone()))?;
    pool.get_message_by_name(name)
        .ok_or_else(|| Error::Descriptor(format!("no message {name} in the contract")))
}

/// `message` in protobuf's JSON mapping; default values left out.
pub fn to_json<M: Message>(message: &M) -> Result<Value, Error> {
    let dynamic = DynamicMessage::decode(descriptor(M::NAME)?, message.encode_to_vec().as_slice())
        .map_err(|error| Error::Descriptor(error.to_string()))?;
    let options = SerializeOptions::new().use_proto_field_name(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|error| Error::Descriptor(error.to_string()))
}

/// Reads a message from protobuf's JSON mapping (field names as in the
/// `.proto` or in lowerCamelCase); an unknown field is an error naming it.
pub fn from_json<M: Message>(json: Value) -> Result<M, Error> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let dynamic = DynamicMessage::deserialize_with_options(descriptor(M::NAME)?, json, &options)
        .map_err(|error| Error::Json {
            message: M::NAME,
            reason: error.to_string(),
        })?;
    dynamic.transcode_to().map_err(|error| Error::Json {
        message: M::NAME,
        reason: error.to_string(),
    })
}

/// A JSON Schema (draft 2020-12) of message `name` in protobuf's JSON
/// mapping, the messages it uses under `$defs`.
pub fn schema(name: &str) -> Result<Map<String, Value>, Error> {
    let root = descriptor(name)?;
    let mut defs = Map::new();
    let mut pending = vec![root.clone()];
    while let Some(message) = pending.pop() {
        if defs.contains_key(message.full_name()) {
            continue;
        }
        let (schema, used) = message_schema(&message);
        defs.insert(message.full_name().to_owned(), schema);
        pending.extend(used);
    }
    let Some(Value::Object(mut top)) = defs.remove(root.full_name()) else {
        return Err(Error::Descriptor(format!("no schema for {name}")));
    };
    if !defs.is_empty() {
        top.insert("$defs".to_owned(), Value::Object(defs));
    }
    Ok(top)
}

/// The schema of one message, and the messages its fields refer to.
fn message_schema(message: &MessageDescriptor) -> (Value, Vec<MessageDescriptor>) {
    let mut used = Vec::new();
    let mut properties = Map::new();
    for field in message.fields() {
        let mut schema = field_schema(&field, &mut used);
        let doc = leading_comment(message.parent_file_descriptor_proto(), field.path());
        if let (Value::Object(object), Some(doc)) = (&mut schema, doc) {
            object.insert("description".to_owned(), Value::String(doc));
        }
        properties.insert(field.name().to_owned(), schema);
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if let (Value::Object(object), Some(doc)) = (&mut schema, message_comment(message)) {
        object.insert("description".to_owned(), Value::String(doc));
    }
    (schema, used)
}

fn field_schema(field: &FieldDescriptor, used: &mut Vec<MessageDescriptor>) -> Value {
    if let (true, Kind::Message(entry)) = (field.is_map(), field.kind()) {
        let value = entry.map_entry_value_field();
        return json!({ "type": "object", "additionalProperties": kind_schema(&value.kind(), used) });
    }
    let item = kind_schema(&field.kind(), used);
    if field.is_list() {
        json!({ "type": "array", "items": item })
    } else {
        item
    }
}

fn kind_schema(kind: &Kind, used: &mut Vec<MessageDescriptor>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({ "type": "number" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({ "type": "integer" }),
        Kind::Uint32 | Kind::Fixed32 => json!({ "type": "integer", "minimum": 0 }),
        // 64-bit integers are strings in protobuf's JSON, numbers accepted.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            json!({ "type": ["integer", "string"] })
        }
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
        Kind::Enum(enumeration) => {
            let names: Vec<String> = enumeration.values().map(|v| v.name().to_owned()).collect();
            json!({ "type": "string", "enum": names })
        }
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Struct" => json!({ "type": "object" }),
            "google.protobuf.Value" => json!({}),
            "google.protobuf.ListValue" => json!({ "type": "array" }),
            "google.protobuf.Duration" => json!({
                "type": "string",
                "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
                "description": "A duration in seconds with an `s`, for example \"1.5s\"."
            }),
            "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
            name => {
                used.push(message.clone());
                json!({ "$ref": format!("#/$defs/{name}") })
            }
        },
    }
}

fn message_comment(message: &MessageDescriptor) -> Option<String> {
    leading_comment(message.parent_file_descriptor_proto(), message.path())
}

/// The `.proto` comment above the element at `path` of `file`, on one line.
fn leading_comment(file: &prost_types::FileDescriptorProto, path: &[i32]) -> Option<String> {
    let info = file.source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref()?;
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_task_reads_from_the_json_grpcurl_takes() {
        let task: api::Task = from_json(json!({
            "type": "audio_analysis",
            "priority": "PRIORITY_HIGH",
            "timeout": "2.5s",
            "input": { "audio": { "data": "UklGRg==", "mime_type": "audio/wav" } },
        }))
        .unwrap();
        assert_eq!(task.r#type, "audio_analysis");
        assert_eq!(task.priority(), api::Priority::High);
        assert_eq!(task.timeout.unwrap().nanos, 500_000_000);
        let Some(api::task_input::Kind::Audio(audio)) = task.input.unwrap().kind else {
            panic!("audio input expected");
        };
        assert_eq!(&audio.data[..], b"RIFF");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let error = from_json::<api::Task>(json!({ "type": "x", "prio": 1 })).unwrap_err();
        assert!(error.to_string().contains("prio"), "{error}");
    }

    #[test]
    fn a_result_writes_proto_field_names_and_enum_names() {
        let result = api::TaskResult {
            task_id: "t-1".to_owned(),
            status: api::TaskStatus::Succeeded.into(),
            ..Default::default()
        };
        assert_eq!(
            to_json(&result).unwrap(),
            json!({ "task_id": "t-1", "status": "TASK_STATUS_SUCCEEDED" })
        );
    }

    #[test]
    fn the_schema_of_a_task_carries_the_proto_comments() {
        let schema = schema("grym.orchestrator.v1.ExecuteTaskRequest").unwrap();
        let defs = schema["$defs"].as_object().unwrap();
        let task = &defs["grym.orchestrator.v1.Task"];
        assert_eq!(task["properties"]["type"]["type"], "string");
        assert!(
            task["properties"]["type"]["description"]
                .as_str()
                .unwrap()
                .contains("audio_analysis")
        );
        let priority = &task["properties"]["priority"]["enum"];
        assert!(
            priority
                .as_array()
                .unwrap()
                .contains(&json!("PRIORITY_HIGH"))
        );
        assert!(defs.contains_key("grym.orchestrator.v1.Composite"));
    }
}
