//! Tending the store: taking up what it holds at start, keeping this
//! replica's lease, hearing of cancellations asked elsewhere, taking over
//! the tasks of replicas that stopped, letting go of what this replica no
//! longer runs, sharing call outcomes both ways, and pruning old results.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::lock;
use crate::deadline::Deadline;
use crate::error::{Error, FailureKind};
use crate::exec::Orchestrator;
use crate::ids::{ModelId, TaskType};
use crate::registry::stats::CallOutcome;
use crate::store::{Outcome, Store, StoreError, TaskKey, TaskRecord};
use crate::task::{TaskError, TaskResult, TaskStatus};

/// The most tasks taken up from the store in one claim.
const CLAIM_BATCH: usize = 512;

/// The most call outcomes one replica publishes per renewal; beyond, the
/// others learn from the first ones.
const MAX_SHARED_OUTCOMES: usize = 1024;

/// How often final results past their retention are deleted from the store.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often this replica compares the tasks the store says it holds with
/// those it runs, and lets go of the others.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);

impl Orchestrator {
    /// Notes a worker call's outcome for the other replicas' statistics.
    pub(in crate::exec) fn share(
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

    /// Until `cancel` fires, every renewal period: renews this replica's
    /// lease, cancels what was cancelled through other replicas, and counts
    /// the replicas that share the models. Alone in its loop, so nothing
    /// slow holds a renewal back; start it before [`recover`](Self::recover).
    pub async fn keep_lease(self: Arc<Self>, cancel: CancellationToken) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let mut ticker = tokio::time::interval(self.durability.renew_every());
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
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
            }
        }
    }

    /// Until `cancel` fires: takes over the tasks of replicas that stopped,
    /// shares call outcomes both ways, lets go of tasks the store says this
    /// replica holds but it does not run, and prunes old results and
    /// expired sessions.
    pub async fn tend_store(self: Arc<Self>, cancel: CancellationToken) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let mut cursor = None;
        let mut ticker = tokio::time::interval(self.durability.renew_every());
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (mut pruned, mut reconciled) = (Instant::now(), Instant::now());
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if !self.store_serving() {
                continue;
            }
            if store.shared() {
                self.exchange_outcomes(store.as_ref(), &mut cursor).await;
            }
            if !self.closing.load(Ordering::SeqCst) {
                self.take_over(&store).await;
            }
            if reconciled.elapsed() >= RECONCILE_EVERY {
                reconciled = Instant::now();
                self.reconcile(store.as_ref()).await;
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                let retention = self.scheduler.settings().result_retention;
                if let Err(error) = store.prune(SystemTime::now() - retention).await {
                    tracing::warn!(%error, "old results were not pruned");
                }
                let idle = self.context.session_ttl();
                if let Err(error) = store.prune_sessions(SystemTime::now() - idle).await {
                    tracing::warn!(%error, "expired sessions were not pruned");
                }
            }
        }
    }

    /// Lets go of the tasks the store says this replica holds and it does
    /// not run (an accept whose answer was lost after it committed, a claim
    /// cut short): another claim takes them up, so none waits forever.
    async fn reconcile(&self, store: &dyn Store) {
        let held = match store.held().await {
            Ok(held) => held,
            Err(error) => {
                tracing::debug!(%error, "the held tasks were not listed");
                return;
            }
        };
        let finishing = lock(&self.finishing).clone();
        let strays: Vec<TaskKey> = held
            .into_iter()
            .filter(|key| {
                self.history.live(&key.tenant, &key.id).is_none() && !finishing.contains(key)
            })
            .collect();
        if strays.is_empty() {
            return;
        }
        tracing::warn!(
            tasks = strays.len(),
            "the store held tasks this replica does not run; they are released"
        );
        if let Err(error) = store.release(&strays).await {
            tracing::warn!(%error, "stray tasks were not released");
        }
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
            self.retry_final(Arc::clone(store), key.clone(), result.clone());
        }
        self.history.keep(&key.tenant, &key.id, result);
    }

    /// Hands the tasks let go at shutdown back to the store.
    pub(in crate::exec) async fn release_left(&self) {
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
