//! How the core's values become columns and blobs, and back.
//!
//! Records are MessagePack with field names (`rmp-serde`'s `to_vec_named`):
//! compact, and self-describing, so a field added to a core type later
//! still reads records written before it when the field has a default (an
//! `Option`, or `#[serde(default)]`); any other new field makes older
//! records unreadable, so a change of the core's types needs one. The facts
//! the queries filter and order by are columns beside the blob, written
//! from the same record: they never disagree with it.

use std::time::{Duration, SystemTime};

use grym_core::{Priority, Task, TaskId, TaskStatus, Tenant};
use serde::{Deserialize, Serialize};

use crate::error::Fault;

/// A task as its blob holds it: the task and its wall-clock deadline.
#[derive(Serialize)]
pub(crate) struct AcceptedRef<'a> {
    pub(crate) task: &'a Task,
    pub(crate) deadline: Option<SystemTime>,
}

/// [`AcceptedRef`], read back.
#[derive(Deserialize)]
pub(crate) struct Accepted {
    pub(crate) task: Task,
    pub(crate) deadline: Option<SystemTime>,
}

/// An empty map, encoded: the context of a session that only has entries.
pub(crate) const EMPTY_MAP: &[u8] = &[0x80];

/// Encodes a record. Encoding the core's types cannot fail (their maps'
/// keys are strings); should it, the write is refused as corrupt.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Fault> {
    rmp_serde::to_vec_named(value).map_err(|error| Fault::Corrupt(format!("encoding: {error}")))
}

/// Decodes a record, naming what it was when it cannot.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, Fault> {
    rmp_serde::from_slice(bytes).map_err(|error| Fault::Corrupt(format!("{what}: {error}")))
}

/// Milliseconds since the Unix epoch; 0 for earlier times.
pub(crate) fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A duration in whole milliseconds, as the lease columns count.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A priority as a number that sorts like it: critical highest.
pub(crate) fn priority_rank(priority: Priority) -> i16 {
    match priority {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Critical => 3,
    }
}

/// The `state` column of an unfinished task: `queued` until a model first
/// works on it, then `running`. (`final` is written by finishing alone.)
pub(crate) fn unfinished_state(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Queued => "queued",
        _ => "running",
    }
}

/// A tenant read back from its column (empty for the anonymous one).
pub(crate) fn tenant(name: &str) -> Result<Tenant, Fault> {
    if name.is_empty() {
        Ok(Tenant::anonymous())
    } else {
        Tenant::configured(name).map_err(|error| Fault::Corrupt(format!("tenant {name:?} {error}")))
    }
}

/// A task id read back from its column.
pub(crate) fn task_id(id: &str) -> Result<TaskId, Fault> {
    TaskId::new(id).map_err(|error| Fault::Corrupt(format!("task id {id:?} {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_rank_in_their_order() {
        let ranks: Vec<i16> = [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Critical,
        ]
        .into_iter()
        .map(priority_rank)
        .collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
    }

    #[test]
    fn a_task_with_audio_and_json_survives_its_blob() {
        let mut task = Task::new(
            TaskId::new("t-1").unwrap(),
            grym_core::TaskType::new("audio_analysis").unwrap(),
            grym_core::TaskInput::Audio(grym_core::Audio {
                data: vec![0u8, 1, 2, 255].into(),
                mime_type: "audio/wav".to_owned(),
            }),
        );
        task.parameters
            .insert("temperature".to_owned(), serde_json::json!(0.5));
        task.parameters.insert(
            "labels".to_owned(),
            serde_json::json!(["a", 1, null, {"b": true}]),
        );
        let deadline =
            Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789));
        let blob = encode(&AcceptedRef {
            task: &task,
            deadline,
        })
        .unwrap();
        let back: Accepted = decode("task", &blob).unwrap();
        assert_eq!(back.task, task);
        assert_eq!(back.deadline, deadline);
    }

    #[test]
    fn the_empty_map_constant_is_what_encoding_writes() {
        let empty = serde_json::Map::new();
        assert_eq!(encode(&empty).unwrap(), EMPTY_MAP);
    }

    #[test]
    fn an_unreadable_blob_is_corrupt_and_says_what_it_was() {
        let Err(Fault::Corrupt(message)) = decode::<Accepted>("task t-1", &[0xc1]) else {
            panic!("expected a corrupt record");
        };
        assert!(message.starts_with("task t-1"), "{message}");
    }
}
