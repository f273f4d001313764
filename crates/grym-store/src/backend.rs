//! What a SQL backend implements, in rows: the writes the writer task
//! commits in batches, and the reads the store makes directly.
//!
//! Everything here is already encoded (blobs, epoch milliseconds, ranks),
//! so a backend only speaks its own SQL, and encoding happens in the
//! callers' tasks rather than in the one writer task.

use futures::future::BoxFuture;

use crate::error::Fault;

/// A task's key as its columns hold it.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub(crate) tenant: String,
    pub(crate) id: String,
}

impl From<(String, String)> for Key {
    /// A `(tenant, id)` row.
    fn from((tenant, id): (String, String)) -> Self {
        Self { tenant, id }
    }
}

/// A newly accepted task.
#[derive(Debug)]
pub(crate) struct NewTask {
    pub(crate) key: Key,
    pub(crate) state: &'static str,
    pub(crate) status: &'static str,
    pub(crate) priority: i16,
    /// Epoch milliseconds.
    pub(crate) deadline: Option<i64>,
    pub(crate) runs: i64,
    /// The task and its deadline (`codec::AcceptedRef`).
    pub(crate) task: Vec<u8>,
    /// Its first snapshot.
    pub(crate) snapshot: Vec<u8>,
}

/// One write, applied inside a batch's transaction. Each answers whether
/// it changed something; the store reads that where the trait asks.
#[derive(Debug)]
pub(crate) enum Write {
    /// Insert, or replace a final task of that key; false when an
    /// unfinished one holds the key.
    Accept(NewTask),
    /// A new snapshot of an unfinished task.
    Update {
        key: Key,
        state: &'static str,
        status: &'static str,
        snapshot: Vec<u8>,
        runs: i64,
    },
    /// The final result, unless there is one; the task's input goes.
    Finish {
        key: Key,
        status: &'static str,
        result: Vec<u8>,
        /// Epoch milliseconds, for pruning.
        finished_at: i64,
    },
    /// Marks an unfinished task for cancellation.
    RequestCancel { key: Key },
    /// Lets go of this replica's hold on unfinished tasks.
    Release { keys: Vec<Key> },
    /// Creates or replaces a session's context.
    PutSession { key: Key, context: Vec<u8> },
    /// Adds an entry, creating the session if needed, and keeps the newest
    /// `keep`.
    AppendSession {
        key: Key,
        kind: String,
        entry: Vec<u8>,
        keep: i64,
    },
    /// Deletes a session and its entries; false when there was none.
    DeleteSession { key: Key },
    /// Adds call outcomes, as this replica's.
    Publish {
        outcomes: Vec<Vec<u8>>,
        /// Epoch milliseconds, for pruning.
        at: i64,
    },
}

/// An unfinished task a claim took.
#[derive(Debug)]
pub(crate) struct Claimed {
    /// Its arrival order.
    pub(crate) seq: i64,
    pub(crate) task: Vec<u8>,
    pub(crate) snapshot: Vec<u8>,
    pub(crate) runs: i64,
}

/// A session's rows.
#[derive(Debug)]
pub(crate) struct SessionRows {
    pub(crate) context: Vec<u8>,
    /// Kind and entry, oldest first.
    pub(crate) entries: Vec<(String, Vec<u8>)>,
}

/// Other replicas' outcomes after a cursor, and the next cursor.
#[derive(Debug)]
pub(crate) struct OutcomeRows {
    pub(crate) outcomes: Vec<Vec<u8>>,
    pub(crate) cursor: i64,
}

/// A database the store runs on. Each holds the replica's identity and
/// lease; none waits without bound (the store bounds each call as well).
pub(crate) trait Backend: Send + Sync + 'static {
    /// Where it is, without a password.
    fn location(&self) -> String;

    /// Applies `writes` in order in one transaction and commits it: each
    /// one's answer, or the fault that rolled them all back.
    fn commit<'a>(&'a self, writes: &'a [Write]) -> BoxFuture<'a, Result<Vec<bool>, Fault>>;

    /// A task's last snapshot or final result.
    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Vec<u8>>, Fault>>;

    /// Takes at most `limit` unfinished tasks no live replica holds.
    fn claim(&self, limit: i64) -> BoxFuture<'_, Result<Vec<Claimed>, Fault>>;

    /// Extends this replica's leases; the keys whose cancellation was asked.
    fn renew(&self) -> BoxFuture<'_, Result<Vec<Key>, Fault>>;

    /// Every unfinished task this replica holds.
    fn held(&self) -> BoxFuture<'_, Result<Vec<Key>, Fault>>;

    /// Whether other replicas may open it too.
    fn shared(&self) -> bool;

    /// The replicas present: renewed within their lease.
    fn replicas(&self) -> BoxFuture<'_, Result<u32, Fault>> {
        Box::pin(async { Ok(1) })
    }

    /// Deletes final tasks that ended, and outcomes written, before
    /// `before` (epoch ms); how many tasks went.
    fn prune(&self, before: i64) -> BoxFuture<'_, Result<u64, Fault>>;

    /// Deletes sessions last put or added to before `before` (epoch ms),
    /// with their entries; how many went.
    fn prune_sessions(&self, before: i64) -> BoxFuture<'_, Result<u64, Fault>>;

    /// A session's rows, if it exists.
    fn session<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<SessionRows>, Fault>>;

    /// Other replicas' outcomes after `cursor`; at 0, only the cursor.
    fn outcomes(&self, cursor: i64) -> BoxFuture<'_, Result<OutcomeRows, Fault>>;

    /// A round trip to the database.
    fn ping(&self) -> BoxFuture<'_, Result<(), Fault>>;
}
