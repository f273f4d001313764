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

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Orchestrator;
use super::job::Job;
use super::lifecycle::Accepted;
use crate::deadline::Deadline;
use crate::error::{Error, FailureKind};
use crate::history::LiveTask;
use crate::ids::{ModelId, TaskId, TaskType, Tenant};
use crate::registry::stats::CallOutcome;
use crate::store::{Outcome, Store, StoreError, TaskKey, TaskRecord};
use crate::task::{Task, TaskError, TaskResult, TaskStatus};

/// The most tasks taken up from the store in one claim.
const CLAIM_BATCH: usize = 512;

/// The most call outcomes one replica publishes per renewal; beyond, the
/// others learn from the first ones.
const MAX_SHARED_OUTCOMES: usize = 1024;

/// How often final results past their retention are deleted from the store.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often a final result the store could not take is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How often a replica looks whether a task cancelled through it, and run
/// by another, has ended; and how often a watched task is looked at.
const CANCEL_POLL: Duration = Duration::from_millis(100);

impl Orchestrator {
    /// The store a task is written to: a submitted task's, when there is a
    /// store; an executed or streamed one's only with `durable_execute`.
    pub(super) fn store_for(&self, submitted: bool) -> Option<Arc<dyn Store>> {
        self.store
            .clone()
            .filter(|_| submitted || self.durability.durable_execute)
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

    /// Writes a durable task's final result; a task this replica let go is
    /// left unfinished in the store, for its next run.
    pub(super) async fn write_final(&self, task: &Task, live: &LiveTask, result: &TaskResult) {
        let key = TaskKey::new(&task.tenant, &task.id);
        if live.is_left() {
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
                let (result, stopping) = (result.clone(), self.stopping.clone());
                self.tasks.spawn(retry_final(store, key, result, stopping));
            }
        }
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
        self.store_answered(store.get(&TaskKey::new(tenant, id)).await)
            .map_err(unavailable)
    }

    /// Cancels a task that another replica runs: asks it through the store,
    /// then waits for its final result there.
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
        loop {
            let stored = self
                .store_answered(store.get(&key).await)
                .map_err(unavailable)?
                .ok_or_else(not_found)?;
            if !asked || stored.status.is_final() {
                return Ok(stored);
            }
            // Bounded by the caller's deadline: the RPC's future is dropped
            // when it passes.
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

    /// Notes a worker call's outcome for the other replicas' statistics.
    pub(super) fn share(
        &self,
        model: &ModelId,
        task_type: &TaskType,
        outcome: CallOutcome,
        latency: Duration,
    ) {
        if self.store.as_ref().is_some_and(|store| store.shared()) {
            let mut outcomes = lock(&self.outcomes);
            // A sample of the busiest second is enough to learn from.
            if outcomes.len() < MAX_SHARED_OUTCOMES {
                outcomes.push(Outcome {
                    model: model.clone(),
                    task_type: task_type.clone(),
                    outcome,
                    latency,
                });
            }
        }
    }

    /// Takes up every unfinished task the store holds for no live replica
    /// (at start: those the last run of this grymd left), in the order they
    /// were accepted; how many.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        let Some(store) = self.store.clone() else {
            return Ok(0);
        };
        // A task that cannot be planned yet is released and claimed again:
        // each is taken up once here, and again by the tending loop.
        let mut seen = HashSet::new();
        loop {
            let claimed = self.store_answered(store.claim(CLAIM_BATCH).await)?;
            let (fresh, again): (Vec<TaskRecord>, Vec<TaskRecord>) = claimed
                .into_iter()
                .partition(|record| seen.insert(record.key()));
            if !again.is_empty() {
                let keys: Vec<TaskKey> = again.iter().map(TaskRecord::key).collect();
                if let Err(error) = store.release(&keys).await {
                    tracing::warn!(%error, "tasks that wait were not released");
                }
            }
            if fresh.is_empty() {
                return Ok(seen.len());
            }
            for record in fresh {
                self.resume(&store, record).await;
            }
        }
    }

    /// Until `cancel` fires: renews this replica's leases, cancels what was
    /// cancelled through other replicas, counts the replicas that share the
    /// models, takes over the tasks of replicas that stopped, shares call
    /// outcomes both ways and prunes old results.
    pub async fn tend_store(self: Arc<Self>, cancel: CancellationToken) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let mut cursor = None;
        let mut ticker = tokio::time::interval(self.durability.renew_every());
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pruned = Instant::now();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let Ok(cancelled) = self.store_answered(store.renew().await) else {
                continue;
            };
            for key in cancelled {
                if let Some(live) = self.history.live(&key.tenant, &key.id) {
                    live.cancel.cancel();
                }
            }
            if store.shared() {
                match store.replicas().await {
                    Ok(replicas) => self.scheduler.set_replicas(replicas),
                    Err(error) => tracing::debug!(%error, "the replicas were not counted"),
                }
                self.exchange_outcomes(store.as_ref(), &mut cursor).await;
            }
            if !self.closing.load(Ordering::SeqCst) {
                self.take_over(&store).await;
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                let before = SystemTime::now() - self.durability_retention();
                if let Err(error) = store.prune(before).await {
                    tracing::warn!(%error, "old results were not pruned");
                }
            }
        }
    }

    fn durability_retention(&self) -> Duration {
        self.scheduler.settings().result_retention
    }

    /// Claims tasks whose replica stopped renewing its lease, as many as
    /// the queue has room for.
    async fn take_over(self: &Arc<Self>, store: &Arc<dyn Store>) {
        let room = self.scheduler.room().min(CLAIM_BATCH);
        if room == 0 {
            return;
        }
        match self.store_answered(store.claim(room).await) {
            Ok(claimed) => {
                if !claimed.is_empty() {
                    tracing::info!(
                        tasks = claimed.len(),
                        "took over tasks whose replica stopped"
                    );
                }
                for record in claimed {
                    self.resume(store, record).await;
                }
            }
            Err(error) => tracing::warn!(%error, "could not claim tasks"),
        }
    }

    /// Publishes this replica's outcomes and folds the others' into the
    /// statistics selection reads.
    async fn exchange_outcomes(&self, store: &dyn Store, cursor: &mut Option<u64>) {
        let ours = std::mem::take(&mut *lock(&self.outcomes));
        if !ours.is_empty()
            && let Err(error) = store.publish(&ours).await
        {
            tracing::debug!(%error, "outcomes were not shared");
        }
        let (theirs, next) = match store.others_outcomes(cursor.unwrap_or(0)).await {
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(%error, "the other replicas' outcomes were not read");
                return;
            }
        };
        // The first read only finds where now is: a new replica learns
        // from what happens after it started.
        if cursor.replace(next).is_none() {
            return;
        }
        let registry = self.registry.load();
        let now = Instant::now();
        for outcome in theirs {
            if let Some(model) = registry.get(&outcome.model) {
                self.planner.selector.record(
                    model,
                    &outcome.task_type,
                    now,
                    outcome.outcome,
                    outcome.latency,
                );
            }
        }
    }

    /// Takes up one task claimed from the store: ended at once when it ran
    /// out of runs or of time, or can no longer be planned; queued again
    /// otherwise.
    async fn resume(self: &Arc<Self>, store: &Arc<dyn Store>, record: TaskRecord) {
        let key = record.key();
        if self.history.live(&key.tenant, &key.id).is_some() {
            return;
        }
        let TaskRecord {
            task,
            deadline,
            snapshot,
            runs,
        } = record;
        if runs >= self.durability.max_attempts {
            let message = format!(
                "the task was started {runs} times and each time its replica stopped before it \
                 ended (max_attempts {})",
                self.durability.max_attempts
            );
            return self
                .end_unrun(
                    store,
                    &key,
                    snapshot,
                    TaskStatus::Failed,
                    FailureKind::Unavailable,
                    message,
                )
                .await;
        }
        let deadline = match deadline {
            None => Deadline::NONE,
            Some(at) => match at.duration_since(SystemTime::now()) {
                Ok(left) => Deadline::at(Instant::now() + left),
                Err(_) => {
                    return self
                        .end_unrun(
                            store,
                            &key,
                            snapshot,
                            TaskStatus::DeadlineExceeded,
                            FailureKind::DeadlineExceeded,
                            "the deadline passed before the task could run again".into(),
                        )
                        .await;
                }
            },
        };
        if let Some(session) = &task.session_id
            && let Err(error) = self.load_session(&key.tenant, session).await
        {
            tracing::warn!(task.id = %key.id, %error, "the task's session was not read back");
        }
        // The tasks it waits for may have ended before the restart: their
        // results are read back for it. One that has not ended, and is not
        // here, is still to be taken up: this task waits for it.
        for dep in &task.depends_on {
            if self.history.contains(&key.tenant, dep) {
                continue;
            }
            match store.get(&TaskKey::new(&key.tenant, dep)).await {
                Ok(Some(result)) if result.status.is_final() => {
                    self.history.keep(&key.tenant, dep, result);
                }
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => return self.release_one(store.as_ref(), &key).await,
            }
        }
        if let Err(error) = self.take_up(task, deadline, snapshot.clone(), runs) {
            match error {
                Error::AlreadyExists { .. } => return,
                // Not now: its models are down or not described yet, or this
                // replica is stopping. Another claim takes it up later.
                Error::Undescribed { .. } | Error::NoHealthyModel { .. } | Error::ShuttingDown => {
                    tracing::debug!(task.id = %key.id, %error, "a task taken from the store waits");
                    return self.release_one(store.as_ref(), &key).await;
                }
                _ => {}
            }
            let status = match error {
                Error::UnknownDependencies { .. } => TaskStatus::DependencyFailed,
                _ => TaskStatus::Failed,
            };
            let message = format!("the task could not be taken up again: {error}");
            self.end_unrun(
                store,
                &key,
                snapshot,
                status,
                FailureKind::Precondition,
                message,
            )
            .await;
        }
    }

    /// Lets a claimed task go again, for a later claim to take up.
    async fn release_one(&self, store: &dyn Store, key: &TaskKey) {
        if let Err(error) = store.release(std::slice::from_ref(key)).await {
            tracing::warn!(task.id = %key.id, %error, "a task was not released");
        }
    }

    /// Ends a task taken from the store without running it again.
    async fn end_unrun(
        &self,
        store: &Arc<dyn Store>,
        key: &TaskKey,
        mut result: TaskResult,
        status: TaskStatus,
        kind: FailureKind,
        message: String,
    ) {
        tracing::warn!(task.id = %key.id, reason = %message, "a task taken from the store ends without running");
        result.status = status;
        result.error = Some(TaskError::new(kind, message));
        result.output = None;
        result.finished_at = Some(SystemTime::now());
        if let Err(error) = self.store_answered(store.finish(key, &result).await) {
            tracing::warn!(task.id = %key.id, %error, "the task's result was not written; trying again");
            let stopping = self.stopping.clone();
            self.tasks.spawn(retry_final(
                Arc::clone(store),
                key.clone(),
                result.clone(),
                stopping,
            ));
        }
        self.history.keep(&key.tenant, &key.id, result);
    }

    /// Hands the tasks let go at shutdown back to the store.
    pub(super) async fn release_left(&self) {
        let left = std::mem::take(&mut *lock(&self.left));
        let Some(store) = self.store.as_ref().filter(|_| !left.is_empty()) else {
            return;
        };
        match store.release(&left).await {
            Ok(()) => tracing::info!(
                tasks = left.len(),
                "unfinished tasks were handed back to the store"
            ),
            Err(error) => tracing::warn!(
                %error,
                "unfinished tasks were not handed back; they are taken over when their lease runs out"
            ),
        }
    }
}

/// Tries a final result again every second until the store takes it, or
/// until shutdown: the task then stays unfinished in the store and runs
/// again elsewhere.
async fn retry_final(
    store: Arc<dyn Store>,
    key: TaskKey,
    result: TaskResult,
    stopping: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stopping.cancelled() => {
                tracing::warn!(task.id = %key.id, "shutting down before the task's result was written; it runs again after the restart");
                return;
            }
            () = tokio::time::sleep(RETRY_EVERY) => {}
        }
        match store.finish(&key, &result).await {
            Ok(_) => {
                tracing::info!(task.id = %key.id, "the task's result is written");
                return;
            }
            Err(error) => tracing::debug!(task.id = %key.id, %error, "still not written"),
        }
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

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[path = "durable_tests.rs"]
mod tests;
