//! Accepted work on the [`Store`]: what is written when, the loop that
//! tends the store (leases, cancellations asked through other replicas,
//! tasks to take over, shared outcomes, pruning), and tasks taken up again.
//!
//! A durable task is written before its caller hears it was accepted
//! ([`accept`](super::accept)), when it starts (counting its runs), after
//! each step of a composite, and at its end. The end is written before the
//! local history lets waiters go; a store that cannot take it is tried
//! again every second while this replica runs, and if it stops first, the
//! task was never finished in the store and runs again elsewhere. Exactly
//! one final result stands: the store keeps the first written.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

mod tend;

use super::Orchestrator;
use super::job::Job;
use super::lifecycle::Accepted;
use crate::deadline::Deadline;
use crate::error::Error;
use crate::history::LiveTask;
use crate::ids::{TaskId, Tenant};
use crate::store::{Store, StoreError, TaskKey, TaskRecord};
use crate::task::{Task, TaskResult, TaskStatus};

/// How often a final result the store could not take is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How often a replica looks whether a task cancelled through it, and run
/// by another, has ended; and how often a watched task is looked at.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// How long a cancellation asked through the store is waited for: a
/// replica that runs the task hears of it within a renewal, one queued on no
/// replica when one claims it.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

impl Orchestrator {
    /// The store a task is written to: a submitted task's, when there is a
    /// store; an executed or streamed one's only with `durable_execute`.
    pub(super) fn store_for(&self, submitted: bool) -> Option<Arc<dyn Store>> {
        // Not cloned for a task that is not written: ExecuteTask's way.
        self.store
            .as_ref()
            .filter(|_| submitted || self.durability.durable_execute)
            .cloned()
    }

    /// Whether the store answered its last operation (true without one):
    /// while it does not, new submissions are refused.
    pub fn store_serving(&self) -> bool {
        self.store_serving.load(Ordering::Acquire)
    }

    /// Where the store is, if there is one.
    pub fn store_location(&self) -> Option<String> {
        self.store.as_ref().map(|store| store.location())
    }

    /// Notes whether the store answered, logging when that changes.
    pub(super) fn store_answered<T>(&self, answer: Result<T, StoreError>) -> Result<T, StoreError> {
        let serving = answer.is_ok();
        if self.store_serving.swap(serving, Ordering::AcqRel) != serving {
            match &answer {
                Ok(_) => tracing::info!("the task store answers again"),
                Err(error) => tracing::error!(%error, "the task store stopped answering"),
            }
        }
        answer
    }

    /// Writes a task just accepted, before its caller hears so.
    pub(super) async fn write_accepted(
        &self,
        store: &dyn Store,
        accepted: &mut Accepted,
    ) -> Result<(), Error> {
        let task = accepted
            .record
            .take()
            .unwrap_or_else(|| accepted.task.clone());
        let record = TaskRecord {
            task,
            deadline: wall_clock(accepted.deadline),
            snapshot: accepted.live.snapshot(),
            runs: 0,
        };
        match self.store_answered(store.accept(&record).await) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::AlreadyExists {
                id: accepted.task.id.clone(),
            }),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Marks a task running: one more run counted, and written for a
    /// durable task. A store that cannot take it does not hold the task
    /// back: its end is written later, or it runs again.
    pub(super) async fn start(&self, job: Job<'_>) {
        job.live.start_run();
        job.started();
        if let Some(store) = self.store.as_ref().filter(|_| job.live.durable) {
            let key = TaskKey::new(&job.task.tenant, &job.task.id);
            let written = store
                .update(&key, &job.live.snapshot(), job.live.runs())
                .await;
            if let Err(error) = self.store_answered(written) {
                tracing::warn!(task.id = %job.task.id, %error, "the task's start was not written");
            }
        }
    }

    /// Writes where a composite stands after one of its steps ended, before
    /// the composite goes on: its writes stay in order, the last one being
    /// its final result.
    pub(super) async fn checkpoint(&self, job: Job<'_>) {
        let Some(store) = self.store.as_ref().filter(|_| job.live.durable) else {
            return;
        };
        let key = TaskKey::new(&job.task.tenant, &job.task.id);
        let written = store
            .update(&key, &job.live.snapshot(), job.live.runs())
            .await;
        if let Err(error) = self.store_answered(written) {
            tracing::warn!(task.id = %key.id, %error, "a composite's progress was not written");
        }
    }

    /// Writes a durable task's final result; a task this replica let go
    /// (`left`: it ended because shutdown let it go, not on its own) is left
    /// unfinished in the store, for its next run.
    pub(super) async fn write_final(
        &self,
        task: &Task,
        live: &LiveTask,
        result: &TaskResult,
        left: bool,
    ) {
        let key = TaskKey::new(&task.tenant, &task.id);
        if left {
            lock(&self.left).push(key);
            return;
        }
        let Some(store) = self.store.clone().filter(|_| live.durable) else {
            return;
        };
        match self.store_answered(store.finish(&key, result).await) {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(task.id = %task.id, "the task had ended elsewhere already; that result stands");
            }
            Err(error) => {
                tracing::warn!(task.id = %task.id, %error, "the task's result was not written; trying again");
                self.retry_final(store, key, result.clone());
            }
        }
    }

    /// Tries a final result again every second until the store takes it,
    /// or until shutdown: the task then stays unfinished in the store and
    /// runs again elsewhere. Meanwhile this replica keeps holding it.
    pub(super) fn retry_final(&self, store: Arc<dyn Store>, key: TaskKey, result: TaskResult) {
        lock(&self.finishing).insert(key.clone());
        let (finishing, stopping) = (Arc::clone(&self.finishing), self.stopping.clone());
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stopping.cancelled() => {
                        tracing::warn!(task.id = %key.id, "shutting down before the task's result was written; it runs again after the restart");
                        break;
                    }
                    () = tokio::time::sleep(RETRY_EVERY) => {}
                }
                match store.finish(&key, &result).await {
                    Ok(_) => {
                        tracing::info!(task.id = %key.id, "the task's result is written");
                        break;
                    }
                    Err(error) => tracing::debug!(task.id = %key.id, %error, "still not written"),
                }
            }
            lock(&finishing).remove(&key);
        });
    }

    /// Reads back from the store the results of the tasks `task` depends on
    /// that ended before they could be kept here (before a restart), so it
    /// may depend on them.
    pub(super) async fn load_dependencies(&self, task: &Task) -> Result<(), Error> {
        let Some(store) = self.store.as_ref().filter(|_| !task.depends_on.is_empty()) else {
            return Ok(());
        };
        for dep in &task.depends_on {
            if self.history.contains(&task.tenant, dep) {
                continue;
            }
            let stored = store
                .get(&TaskKey::new(&task.tenant, dep))
                .await
                .map_err(unavailable)?;
            if let Some(result) = stored.filter(|result| result.status.is_final()) {
                self.history.keep(&task.tenant, dep, result);
            }
        }
        Ok(())
    }

    /// A task as the store has it, when it is not here.
    pub(super) async fn stored(
        &self,
        tenant: &Tenant,
        id: &TaskId,
    ) -> Result<Option<TaskResult>, Error> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        // A read: whether the store serves is judged by its writes.
        store
            .get(&TaskKey::new(tenant, id))
            .await
            .map_err(unavailable)
    }

    /// Cancels a task that another replica runs: asks it through the store,
    /// then waits (at most [`CANCEL_WAIT`]) for its final result there; past
    /// that, where it stands, the cancellation still asked.
    pub(super) async fn cancel_elsewhere(
        &self,
        tenant: &Tenant,
        id: &TaskId,
    ) -> Result<TaskResult, Error> {
        let not_found = || Error::TaskNotFound { id: id.clone() };
        let Some(store) = &self.store else {
            return Err(not_found());
        };
        let key = TaskKey::new(tenant, id);
        let asked = self
            .store_answered(store.request_cancel(&key).await)
            .map_err(unavailable)?;
        let waited = Instant::now();
        loop {
            let stored = store
                .get(&key)
                .await
                .map_err(unavailable)?
                .ok_or_else(not_found)?;
            if !asked || stored.status.is_final() || waited.elapsed() >= CANCEL_WAIT {
                return Ok(stored);
            }
            tokio::time::sleep(CANCEL_POLL).await;
        }
    }

    /// Where a task stands now, then each time that changes (its status, an
    /// attempt, a step), up to its final result; wherever it runs. The
    /// first item is `TaskNotFound` when the task is unknown.
    pub fn watch_task(
        self: &Arc<Self>,
        tenant: Tenant,
        id: TaskId,
    ) -> impl futures::Stream<Item = Result<TaskResult, Error>> + Send + 'static {
        let state = (Arc::clone(self), None::<(TaskStatus, usize, usize)>, false);
        futures::stream::unfold(state, move |(orchestrator, mut seen, ended)| {
            let (tenant, id) = (tenant.clone(), id.clone());
            async move {
                if ended {
                    return None;
                }
                loop {
                    let now = match orchestrator.get(&id, &tenant).await {
                        Ok(now) => now,
                        Err(error) => return Some((Err(error), (orchestrator, seen, true))),
                    };
                    let mark = (now.status, now.metrics.attempts.len(), now.steps.len());
                    if seen.replace(mark) != Some(mark) || now.status.is_final() {
                        let ended = now.status.is_final();
                        return Some((Ok(now), (orchestrator, seen, ended)));
                    }
                    tokio::time::sleep(CANCEL_POLL).await;
                }
            }
        })
    }
}

/// A request refused because the store could not do its part.
pub(super) fn unavailable(error: StoreError) -> Error {
    Error::StoreUnavailable {
        reason: error.to_string(),
    }
}

/// A deadline on the wall clock, as the store keeps it.
fn wall_clock(deadline: Deadline) -> Option<SystemTime> {
    let left = deadline.remaining(Instant::now())?;
    Some(SystemTime::now() + left)
}

pub(super) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
