//! A submitted task, to wait for or cancel.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::history::LiveTask;
use crate::ids::TaskId;
use crate::task::TaskResult;

/// A submitted task, to wait for or cancel.
#[derive(Debug)]
pub struct TaskHandle {
    id: TaskId,
    done: watch::Receiver<Option<Arc<TaskResult>>>,
    cancel: CancellationToken,
}

impl TaskHandle {
    /// The handle of the live task `id`.
    pub(crate) fn of(id: TaskId, live: &LiveTask) -> Self {
        Self {
            id,
            done: live.subscribe(),
            cancel: live.cancel.clone(),
        }
    }

    /// The task's id.
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// The token that cancels the task.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the task's final result.
    pub async fn result(mut self) -> Arc<TaskResult> {
        loop {
            if let Some(result) = self.done.borrow_and_update().clone() {
                return result;
            }
            if self.done.changed().await.is_err() {
                // The sender is dropped only after the final result is sent.
                if let Some(result) = self.done.borrow().clone() {
                    return result;
                }
                std::future::pending::<()>().await;
            }
        }
    }
}
