//! What the steps of one task's life share: the [`Job`] they work on, the
//! [`Ending`] they come to, and the events they tell.

use std::time::SystemTime;

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::ChunkSink;
use crate::context::{ContentHash, Upstream};
use crate::deadline::Deadline;
use crate::error::FailureKind;
use crate::history::LiveTask;
use crate::ids::{ModelId, StepId};
use crate::task::{Output, Task, TaskError, TaskEvent, TaskStatus};

/// Where a task's events go, if anyone follows it.
pub(crate) type Events = Option<mpsc::UnboundedSender<TaskEvent>>;

/// One task's state, shared by the steps of its life; for a step of a
/// composite, the step's own task, deadline and inputs.
#[derive(Clone, Copy)]
pub(crate) struct Job<'a> {
    pub(crate) task: &'a Task,
    pub(crate) live: &'a LiveTask,
    pub(crate) deadline: Deadline,
    pub(crate) arrived: Instant,
    pub(crate) events: Option<&'a mpsc::UnboundedSender<TaskEvent>>,
    /// The hash of the task's inline context, computed once.
    pub(crate) context_hash: Option<ContentHash>,
    /// The composite step it runs, if it is one.
    pub(crate) step: Option<&'a StepId>,
    /// The outputs of the steps it waits for.
    pub(crate) upstream: &'a [std::sync::Arc<Upstream>],
}

impl Job<'_> {
    /// Sends an event to whoever follows the task, if anyone does.
    pub(crate) fn emit(&self, event: impl FnOnce() -> TaskEvent) {
        emit(self.events, event);
    }

    /// Where a call's output chunks go: to whoever follows the task, as
    /// events of `model` (and of the job's step); `None` when nobody
    /// follows, so the call need not stream.
    pub(crate) fn chunk_sink(&self, model: &ModelId) -> Option<ChunkSink> {
        let events = self.events?.clone();
        let step = self.step.cloned();
        let model = model.clone();
        Some(Box::new(move |chunk| {
            let _ = events.send(TaskEvent::OutputChunk {
                step: step.clone(),
                model: model.clone(),
                chunk,
            });
        }))
    }

    /// Marks the task running, for its snapshot and whoever follows it.
    pub(crate) fn started(&self) {
        let queue_wait = self.arrived.elapsed();
        self.live.update(|snapshot| {
            snapshot.status = TaskStatus::Running;
            snapshot.started_at = Some(SystemTime::now());
            snapshot.metrics.queue_wait = queue_wait;
        });
        self.emit(|| TaskEvent::Started);
    }
}

/// Sends an event to whoever follows the task, if anyone does.
pub(crate) fn emit(
    events: Option<&mpsc::UnboundedSender<TaskEvent>>,
    event: impl FnOnce() -> TaskEvent,
) {
    if let Some(events) = events {
        let _ = events.send(event());
    }
}

/// How a task (or a step) ended, before its result is assembled.
pub(crate) struct Ending {
    pub(crate) status: TaskStatus,
    pub(crate) output: Option<Output>,
    pub(crate) error: Option<TaskError>,
    /// The model to report, when not the last one called.
    pub(crate) model: Option<ModelId>,
}

impl Ending {
    /// An output.
    pub(crate) fn succeeded(output: Option<Output>, model: Option<ModelId>) -> Self {
        Self {
            status: TaskStatus::Succeeded,
            output,
            error: None,
            model,
        }
    }

    /// A failure of `kind`, explained by `message`.
    pub(crate) fn failed(
        status: TaskStatus,
        kind: FailureKind,
        message: impl Into<String>,
    ) -> Self {
        Self::with_error(status, TaskError::new(kind, message))
    }

    /// A failure with its error as it is.
    pub(crate) fn with_error(status: TaskStatus, error: TaskError) -> Self {
        Self {
            status,
            output: None,
            error: Some(error),
            model: None,
        }
    }

    /// The ending of a cancelled task.
    pub(crate) fn cancelled() -> Self {
        Self::failed(
            TaskStatus::Cancelled,
            FailureKind::Cancelled,
            "the task was cancelled",
        )
    }
}

/// What a session keeps of a task's output.
pub(crate) fn session_entry(task: &Task, model: &ModelId, output: &Output) -> Map<String, Value> {
    let mut entry = Map::new();
    entry.insert("task_id".into(), task.id.as_str().into());
    entry.insert("task_type".into(), task.task_type.as_str().into());
    entry.insert("model_id".into(), model.as_str().into());
    if let Some(text) = &output.text {
        entry.insert("text".into(), text.clone().into());
    }
    if let Some(json) = &output.json {
        entry.insert("json".into(), json.clone());
    }
    entry
}
