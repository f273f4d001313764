//! The durable record of accepted work: the [`Store`] trait the core writes
//! through, and what it writes.
//!
//! The core knows no database. An outer crate implements [`Store`] (SQLite
//! for one process, PostgreSQL for several replicas); without one, tasks and
//! sessions live in memory alone, as they always have.
//!
//! What the core promises, given a store:
//! - a task is written before its caller hears it was accepted
//!   ([`Store::accept`]), and every change of where it stands after
//!   ([`Store::update`]), up to its one final result ([`Store::finish`]:
//!   the first final result written wins, later ones are refused);
//! - every unfinished task is held by one replica under a lease that replica
//!   renews ([`Store::renew`]); tasks whose holder stopped renewing (or, at
//!   start, whose holder is gone) are claimed by another ([`Store::claim`])
//!   and run again, as a new numbered attempt;
//! - a cancellation asked through any replica reaches the one that holds the
//!   task at its next renewal;
//! - the outcome of every worker call is published, so every replica folds
//!   the others' into its own statistics ([`Store::others_outcomes`]).

use std::fmt;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::SettingError;
use crate::ids::{ModelId, ModelKind, SessionId, TaskId, TaskType, Tenant};
use crate::registry::stats::CallOutcome;
use crate::task::{Task, TaskResult};

/// What a store's operations return.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// It could not be reached, or refused the write (a full disk, a
    /// database going down): the operation may succeed later.
    #[error("the task store is unavailable: {0}")]
    Unavailable(String),
    /// What it holds could not be read back: a schema or a record this
    /// build does not understand.
    #[error("the task store holds a record this build cannot read: {0}")]
    Corrupt(String),
}

/// A task's id within its tenant: how the store names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    /// Who submitted it.
    pub tenant: Tenant,
    /// Its id.
    pub id: TaskId,
}

impl TaskKey {
    /// The key of `id` in `tenant`.
    pub fn new(tenant: &Tenant, id: &TaskId) -> Self {
        Self {
            tenant: tenant.clone(),
            id: id.clone(),
        }
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tenant.as_str().is_empty() {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{}/{}", self.tenant.as_str(), self.id)
        }
    }
}

/// An unfinished task as the store holds it: enough to run it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task as accepted, validated.
    pub task: Task,
    /// When it must have ended, on the wall clock (the earlier of the
    /// caller's deadline and the task's timeout), if bounded.
    pub deadline: Option<SystemTime>,
    /// Where it stood when last written: its status, routing, attempts
    /// made, and for a composite the steps that had ended.
    pub snapshot: TaskResult,
    /// How many times it has been started, on any replica.
    pub runs: u32,
}

impl TaskRecord {
    /// The task's key.
    pub fn key(&self) -> TaskKey {
        TaskKey::new(&self.task.tenant, &self.task.id)
    }
}

/// A session as the store holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredSession {
    /// The context the agent put.
    pub context: Map<String, Value>,
    /// The task outputs it accumulated, oldest first, with the kind of the
    /// model that produced each.
    pub entries: Vec<(ModelKind, Map<String, Value>)>,
}

/// How one worker call ended, as the replicas share it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The model called.
    pub model: ModelId,
    /// The task type it was called for.
    pub task_type: TaskType,
    /// How the call ended.
    pub outcome: CallOutcome,
    /// How long it took.
    pub latency: Duration,
}

/// A durable record of tasks, sessions and call outcomes, shared by every
/// replica that opens the same one.
///
/// Each implementation holds the identity of the replica it serves and the
/// lease it grants that replica. Every write is committed when its future
/// resolves; concurrent writes may share one commit.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Where the store is, for logs (a file path, a database without its
    /// password).
    fn location(&self) -> String;

    /// Whether other replicas may share it (and so learn from this one's
    /// outcomes): false for a store one process holds alone.
    fn shared(&self) -> bool {
        true
    }

    /// Records an accepted task, held by this replica. `Ok(false)` when its
    /// tenant has an unfinished task of that id (on any replica); a
    /// finished one of that id is replaced.
    fn accept<'a>(&'a self, record: &'a TaskRecord) -> StoreFuture<'a, bool>;

    /// Records where an unfinished task this replica holds stands now
    /// (running, a step ended) and how many times it has been started; a
    /// task another replica took over is left as that one has it.
    fn update<'a>(
        &'a self,
        key: &'a TaskKey,
        snapshot: &'a TaskResult,
        runs: u32,
    ) -> StoreFuture<'a, ()>;

    /// Records a task's final result. `Ok(false)` when it had one already:
    /// the first final result stands.
    fn finish<'a>(&'a self, key: &'a TaskKey, result: &'a TaskResult) -> StoreFuture<'a, bool>;

    /// Where a task stands: its last snapshot, or its final result.
    fn get<'a>(&'a self, key: &'a TaskKey) -> StoreFuture<'a, Option<TaskResult>>;

    /// Asks the replica that holds an unfinished task to cancel it. `Ok(false)`
    /// when there is no unfinished task of that key.
    fn request_cancel<'a>(&'a self, key: &'a TaskKey) -> StoreFuture<'a, bool>;

    /// Claims at most `limit` unfinished tasks that no live replica holds
    /// (their replica's lease ran out, or they were released), chosen by
    /// priority, then deadline, then arrival, and returned in the order
    /// they were accepted; holds them for this replica.
    fn claim(&self, limit: usize) -> StoreFuture<'_, Vec<TaskRecord>>;

    /// Renews this replica's lease, under which it holds its unfinished
    /// tasks. The keys of those tasks whose cancellation was asked.
    fn renew(&self) -> StoreFuture<'_, Vec<TaskKey>>;

    /// Every unfinished task this replica holds, for it to let go of those
    /// it no longer runs.
    fn held(&self) -> StoreFuture<'_, Vec<TaskKey>>;

    /// How many replicas renewed their presence within a lease, this one
    /// included: they share each model's concurrency limit.
    fn replicas(&self) -> StoreFuture<'_, u32> {
        Box::pin(async { Ok(1) })
    }

    /// Lets go of unfinished tasks this replica will not finish (it is
    /// shutting down), so another replica, or the next start, claims them
    /// at once.
    fn release<'a>(&'a self, keys: &'a [TaskKey]) -> StoreFuture<'a, ()>;

    /// Deletes final results that ended before `before`, and outcomes older
    /// than it. How many results went.
    fn prune(&self, before: SystemTime) -> StoreFuture<'_, u64>;

    /// Deletes sessions last put or added to before `before`, with their
    /// outputs. How many went.
    fn prune_sessions(&self, before: SystemTime) -> StoreFuture<'_, u64>;

    /// Replaces a session's context, keeping its outputs.
    fn put_session<'a>(
        &'a self,
        tenant: &'a Tenant,
        id: &'a SessionId,
        context: &'a Map<String, Value>,
    ) -> StoreFuture<'a, ()>;

    /// Adds a task's output to a session, keeping at most `keep` outputs.
    fn append_session<'a>(
        &'a self,
        tenant: &'a Tenant,
        id: &'a SessionId,
        kind: &'a ModelKind,
        entry: &'a Map<String, Value>,
        keep: usize,
    ) -> StoreFuture<'a, ()>;

    /// A session, if it exists.
    fn session<'a>(
        &'a self,
        tenant: &'a Tenant,
        id: &'a SessionId,
    ) -> StoreFuture<'a, Option<StoredSession>>;

    /// Deletes a session. `Ok(false)` when there was none.
    fn delete_session<'a>(&'a self, tenant: &'a Tenant, id: &'a SessionId)
    -> StoreFuture<'a, bool>;

    /// Publishes this replica's call outcomes to the others.
    fn publish<'a>(&'a self, outcomes: &'a [Outcome]) -> StoreFuture<'a, ()>;

    /// Other replicas' outcomes published after `cursor` (0 at first), and
    /// the cursor to ask from next time. At first, only the cursor: a new
    /// replica starts from now.
    fn others_outcomes(&self, cursor: u64) -> StoreFuture<'_, (Vec<Outcome>, u64)>;

    /// Checks that the store answers.
    fn ping(&self) -> StoreFuture<'_, ()>;
}

/// How accepted work is kept: the `[store]` settings the core reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DurabilitySettings {
    /// Whether `ExecuteTask` and `StreamTask` tasks are written too. Their
    /// callers are connected and see a failure if grymd dies, so by default
    /// only submitted tasks are.
    pub durable_execute: bool,
    /// How many times a task is started in all, across restarts and
    /// replicas, before it ends failed.
    pub max_attempts: u32,
    /// How long a replica holds a task without renewing its lease before
    /// another may take it over.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
}

impl Default for DurabilitySettings {
    fn default() -> Self {
        Self {
            durable_execute: false,
            max_attempts: 3,
            lease_ttl: Duration::from_secs(10),
        }
    }
}

impl DurabilitySettings {
    /// Checks the settings' ranges.
    pub fn validate(&self) -> Result<(), SettingError> {
        if self.max_attempts == 0 {
            return Err(SettingError::new(
                "store.max_attempts",
                "must be at least 1",
            ));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(SettingError::new("store.lease_ttl", "must be at least 1s"));
        }
        Ok(())
    }

    /// How often a replica renews its leases and hears of cancellations:
    /// a third of the lease, at most every second.
    pub fn renew_every(&self) -> Duration {
        (self.lease_ttl / 3).min(Duration::from_secs(1))
    }
}
