//! A [`FakeStore`]: durable work kept in memory, in the order the trait
//! promises, with switches that take it down, fail one operation or hold
//! one unanswered, and a log of every operation.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures::FutureExt;
use serde_json::{Map, Value};

use crate::ids::{ModelKind, SessionId, Tenant};
use crate::store::{Outcome, Store, StoreError, StoreFuture, StoredSession, TaskKey, TaskRecord};
use crate::task::{TaskResult, TaskStatus};

/// Who holds a task in the [`FakeStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// No live replica: its holder stopped renewing, or released it.
    Nobody,
    /// The replica the fake serves.
    Us,
    /// Another replica, alive and renewing.
    Other,
}

/// A task as the [`FakeStore`] holds it.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// The task as accepted, with its last snapshot and runs.
    pub(crate) record: TaskRecord,
    /// Its final result, once written.
    pub(crate) result: Option<TaskResult>,
    pub(crate) holder: Holder,
    pub(crate) cancel_requested: bool,
    /// When it was accepted, in the store's order.
    accepted: u64,
}

/// One operation the [`FakeStore`] was asked to do, in the order done.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// `accept`; `taken` false when refused as a duplicate.
    Accept {
        key: TaskKey,
        status: TaskStatus,
        runs: u32,
        taken: bool,
    },
    /// `update`; `finished` when the task had its final result already (a
    /// write the contract does not expect, which the fake ignores).
    Update {
        key: TaskKey,
        status: TaskStatus,
        runs: u32,
        steps: usize,
        finished: bool,
    },
    /// `finish`; `taken` false when a final result stood already.
    Finish {
        key: TaskKey,
        status: TaskStatus,
        taken: bool,
    },
    Get(TaskKey),
    RequestCancel(TaskKey),
    /// `claim`, with the keys it handed over.
    Claim(Vec<TaskKey>),
    /// `renew`, with the keys whose cancellation was asked.
    Renew(Vec<TaskKey>),
    Release(Vec<TaskKey>),
    Prune,
    PutSession(SessionId),
    AppendSession(SessionId),
    Session(SessionId),
    DeleteSession(SessionId),
    /// `publish`, with how many outcomes.
    Publish(usize),
    OthersOutcomes(u64),
    Ping,
    /// An operation refused `Unavailable`, by name.
    Refused(&'static str),
    /// An operation asked while it hangs, by name: it waits unanswered.
    Hung(&'static str),
}

#[derive(Debug, Default)]
struct StoreState {
    rows: HashMap<TaskKey, Row>,
    accepted: u64,
    sessions: HashMap<(Tenant, SessionId), StoredSession>,
    /// What this replica published.
    ours: Vec<Outcome>,
    /// What the other replicas published, in order: a cursor is an index.
    theirs: Vec<Outcome>,
    ops: Vec<Op>,
    /// Operations refused one by one, by name.
    failing: HashSet<&'static str>,
}

/// A [`Store`] in memory, serving one replica (the `Us` of [`Holder`]),
/// with the trait's semantics: the first final result wins, `accept`
/// refuses an unfinished duplicate, `claim` hands over unheld unfinished
/// tasks in acceptance order, `renew` returns the keys whose cancellation
/// was asked, `release` makes tasks claimable at once. It logs every
/// operation ([`ops`](Self::ops)); [`set_down`](Self::set_down) makes every
/// operation fail `Unavailable`, as in an outage, [`fail_op`](Self::fail_op)
/// one of them, and [`hang_op`](Self::hang_op) holds one unanswered.
///
/// One leniency: `others_outcomes` at cursor 0 returns what the others
/// published before too, so tests see the core itself keep only the
/// cursor of its first read.
#[derive(Debug)]
pub(crate) struct FakeStore {
    down: AtomicBool,
    state: Mutex<StoreState>,
    /// Operations that wait unanswered, by name.
    hanging: tokio::sync::watch::Sender<HashSet<&'static str>>,
}

impl FakeStore {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            down: AtomicBool::new(false),
            state: Mutex::default(),
            hanging: tokio::sync::watch::Sender::new(HashSet::new()),
        })
    }

    /// Takes the store down (every operation fails) or brings it back.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Makes one operation, by its trait name, fail (or succeed again).
    pub(crate) fn fail_op(&self, op: &'static str, failing: bool) {
        let mut state = self.lock();
        if failing {
            state.failing.insert(op);
        } else {
            state.failing.remove(op);
        }
    }

    /// Makes one operation, by its trait name, wait unanswered (or lets
    /// those waiting go on), as a store that stalls: a waiting operation
    /// does nothing until let go, then runs as the store then stands, and
    /// nothing at all if its future is dropped first.
    pub(crate) fn hang_op(&self, op: &'static str, hanging: bool) {
        self.hanging.send_modify(|ops| {
            if hanging {
                ops.insert(op);
            } else {
                ops.remove(op);
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state.lock().unwrap()
    }

    /// Every operation asked so far, in order.
    pub(crate) fn ops(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    /// The writes to one task's row, in order.
    pub(crate) fn ops_on(&self, key: &TaskKey) -> Vec<Op> {
        self.ops()
            .into_iter()
            .filter(|op| match op {
                Op::Accept { key: k, .. }
                | Op::Update { key: k, .. }
                | Op::Finish { key: k, .. } => k == key,
                _ => false,
            })
            .collect()
    }

    /// The final results written for `key` that the store took.
    pub(crate) fn finishes(&self, key: &TaskKey) -> Vec<TaskStatus> {
        self.ops()
            .into_iter()
            .filter_map(|op| match op {
                Op::Finish {
                    key: k,
                    status,
                    taken: true,
                } if &k == key => Some(status),
                _ => None,
            })
            .collect()
    }

    /// A task's row.
    pub(crate) fn row(&self, key: &TaskKey) -> Option<Row> {
        self.lock().rows.get(key).cloned()
    }

    /// Puts an unfinished task in the store, as a replica left it, held
    /// by `holder`, accepted after every task already there.
    pub(crate) fn put(&self, record: TaskRecord, holder: Holder) {
        let mut state = self.lock();
        state.accepted += 1;
        let accepted = state.accepted;
        state.rows.insert(
            record.key(),
            Row {
                record,
                result: None,
                holder,
                cancel_requested: false,
                accepted,
            },
        );
    }

    /// Puts a task that ended, with its final result.
    pub(crate) fn put_final(&self, record: TaskRecord, result: TaskResult) {
        let key = record.key();
        self.put(record, Holder::Nobody);
        if let Some(row) = self.lock().rows.get_mut(&key) {
            row.result = Some(result);
        }
    }

    /// Puts a session, as another replica wrote it.
    pub(crate) fn put_stored_session(
        &self,
        tenant: &Tenant,
        id: &SessionId,
        session: StoredSession,
    ) {
        self.lock()
            .sessions
            .insert((tenant.clone(), id.clone()), session);
    }

    /// A session as the store holds it.
    pub(crate) fn stored_session(&self, tenant: &Tenant, id: &SessionId) -> Option<StoredSession> {
        self.lock()
            .sessions
            .get(&(tenant.clone(), id.clone()))
            .cloned()
    }

    /// Adds an outcome another replica published.
    pub(crate) fn publish_theirs(&self, outcome: Outcome) {
        self.lock().theirs.push(outcome);
    }

    /// What this replica published.
    pub(crate) fn published(&self) -> Vec<Outcome> {
        self.lock().ours.clone()
    }

    /// Runs one operation, once let go when it hangs: refused when the
    /// store is down or the operation fails, else `run` under the lock.
    fn operate<'a, T: Send + 'a>(
        &'a self,
        name: &'static str,
        run: impl FnOnce(&mut StoreState) -> T + Send + 'a,
    ) -> StoreFuture<'a, T> {
        let mut hanging = self.hanging.subscribe();
        let stalled = hanging.borrow_and_update().contains(name);
        if stalled {
            self.lock().ops.push(Op::Hung(name));
        }
        async move {
            if stalled {
                let _ = hanging.wait_for(|ops| !ops.contains(name)).await;
            }
            let mut state = self.lock();
            if self.down.load(Ordering::SeqCst) || state.failing.contains(name) {
                state.ops.push(Op::Refused(name));
                return Err(StoreError::Unavailable(format!(
                    "{name}: the fake store is down"
                )));
            }
            Ok(run(&mut state))
        }
        .boxed()
    }
}

impl Store for FakeStore {
    fn location(&self) -> String {
        "memory".to_owned()
    }

    fn accept<'a>(&'a self, record: &'a TaskRecord) -> StoreFuture<'a, bool> {
        self.operate("accept", move |state| {
            let key = record.key();
            let taken = state.rows.get(&key).is_none_or(|row| row.result.is_some());
            if taken {
                state.accepted += 1;
                let accepted = state.accepted;
                state.rows.insert(
                    key.clone(),
                    Row {
                        record: record.clone(),
                        result: None,
                        holder: Holder::Us,
                        cancel_requested: false,
                        accepted,
                    },
                );
            }
            state.ops.push(Op::Accept {
                key,
                status: record.snapshot.status,
                runs: record.runs,
                taken,
            });
            taken
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a TaskKey,
        snapshot: &'a TaskResult,
        runs: u32,
    ) -> StoreFuture<'a, ()> {
        self.operate("update", move |state| {
            let finished = match state.rows.get_mut(key) {
                Some(row) if row.result.is_none() => {
                    row.record.snapshot = snapshot.clone();
                    row.record.runs = runs;
                    false
                }
                Some(_) => true,
                None => false,
            };
            state.ops.push(Op::Update {
                key: key.clone(),
                status: snapshot.status,
                runs,
                steps: snapshot.steps.len(),
                finished,
            });
        })
    }

    fn finish<'a>(&'a self, key: &'a TaskKey, result: &'a TaskResult) -> StoreFuture<'a, bool> {
        self.operate("finish", move |state| {
            let taken = match state.rows.get_mut(key) {
                Some(row) if row.result.is_none() => {
                    row.result = Some(result.clone());
                    true
                }
                _ => false,
            };
            state.ops.push(Op::Finish {
                key: key.clone(),
                status: result.status,
                taken,
            });
            taken
        })
    }

    fn get<'a>(&'a self, key: &'a TaskKey) -> StoreFuture<'a, Option<TaskResult>> {
        self.operate("get", move |state| {
            state.ops.push(Op::Get(key.clone()));
            state.rows.get(key).map(|row| {
                row.result
                    .clone()
                    .unwrap_or_else(|| row.record.snapshot.clone())
            })
        })
    }

    fn request_cancel<'a>(&'a self, key: &'a TaskKey) -> StoreFuture<'a, bool> {
        self.operate("request_cancel", move |state| {
            state.ops.push(Op::RequestCancel(key.clone()));
            match state.rows.get_mut(key) {
                Some(row) if row.result.is_none() => {
                    row.cancel_requested = true;
                    true
                }
                _ => false,
            }
        })
    }

    fn claim(&self, limit: usize) -> StoreFuture<'_, Vec<TaskRecord>> {
        self.operate("claim", move |state| {
            let mut claimable: Vec<&mut Row> = state
                .rows
                .values_mut()
                .filter(|row| row.result.is_none() && row.holder == Holder::Nobody)
                .collect();
            claimable.sort_by_key(|row| row.accepted);
            let claimed: Vec<TaskRecord> = claimable
                .into_iter()
                .take(limit)
                .map(|row| {
                    row.holder = Holder::Us;
                    row.record.clone()
                })
                .collect();
            state
                .ops
                .push(Op::Claim(claimed.iter().map(TaskRecord::key).collect()));
            claimed
        })
    }

    fn renew(&self) -> StoreFuture<'_, Vec<TaskKey>> {
        self.operate("renew", move |state| {
            let mut asked: Vec<(u64, TaskKey)> = state
                .rows
                .iter()
                .filter(|(_, row)| {
                    row.result.is_none() && row.holder == Holder::Us && row.cancel_requested
                })
                .map(|(key, row)| (row.accepted, key.clone()))
                .collect();
            asked.sort_by_key(|(accepted, _)| *accepted);
            let asked: Vec<TaskKey> = asked.into_iter().map(|(_, key)| key).collect();
            state.ops.push(Op::Renew(asked.clone()));
            asked
        })
    }

    fn held(&self) -> StoreFuture<'_, Vec<TaskKey>> {
        self.operate("held", move |state| {
            state
                .rows
                .iter()
                .filter(|(_, row)| row.result.is_none() && row.holder == Holder::Us)
                .map(|(key, _)| key.clone())
                .collect()
        })
    }

    fn release<'a>(&'a self, keys: &'a [TaskKey]) -> StoreFuture<'a, ()> {
        self.operate("release", move |state| {
            for key in keys {
                if let Some(row) = state.rows.get_mut(key)
                    && row.result.is_none()
                    && row.holder == Holder::Us
                {
                    row.holder = Holder::Nobody;
                }
            }
            state.ops.push(Op::Release(keys.to_vec()));
        })
    }

    fn prune_sessions(&self, _before: SystemTime) -> StoreFuture<'_, u64> {
        self.operate("prune_sessions", |_| 0)
    }

    fn prune(&self, before: SystemTime) -> StoreFuture<'_, u64> {
        self.operate("prune", move |state| {
            state.ops.push(Op::Prune);
            let old: Vec<TaskKey> = state
                .rows
                .iter()
                .filter(|(_, row)| {
                    row.result
                        .as_ref()
                        .and_then(|result| result.finished_at)
                        .is_some_and(|at| at < before)
                })
                .map(|(key, _)| key.clone())
                .collect();
            for key in &old {
                state.rows.remove(key);
            }
            old.len() as u64
        })
    }

    fn put_session<'a>(
        &'a self,
        tenant: &'a Tenant,
        id: &'a SessionId,
        context: &'a Map<String, Value>,
    ) -> StoreFuture<'a, ()> {
        self.operate("put_session", move |state| {
            state.ops.push(Op::PutSession(id.clone()));
            state
                .sessions
                .entry((tenant.clone(), id.clone()))
                .or_default()
                .context = context.clone();
        })
    }

    fn append_session<'a>(
        &'a self,
        tenant: &'a Tenant,
        id: &'a SessionId,
        kind: &'a ModelKind,
        entry: &'a Map<String, Value>,
        keep: usize,
    ) -> StoreFuture<'a, ()> {
        self.operate("append_session", move |state| {
            state.ops.push(Op::AppendSession(id.clone()));
            let entries = &mut state
                .sessions
                .entry((tenant.clone(), id.clone()))
                .or_default()
                .entries;
            entries.push((kind.clone(), entry.clone()));
            let excess = entries.len().saturating_sub(keep);
            entries.drain(..excess);
        })
    }

    fn session<'a>(
        &'a self,
        tenant: &'a Tenant,
        id: &'a SessionId,
    ) -> StoreFuture<'a, Option<StoredSession>> {
        self.operate("session", move |state| {
            state.ops.push(Op::Session(id.clone()));
            state.sessions.get(&(tenant.clone(), id.clone())).cloned()
        })
    }

    fn delete_session<'a>(
        &'a self,
        tenant: &'a Tenant,
        id: &'a SessionId,
    ) -> StoreFuture<'a, bool> {
        self.operate("delete_session", move |state| {
            state.ops.push(Op::DeleteSession(id.clone()));
            state
                .sessions
                .remove(&(tenant.clone(), id.clone()))
                .is_some()
        })
    }

    fn publish<'a>(&'a self, outcomes: &'a [Outcome]) -> StoreFuture<'a, ()> {
        self.operate("publish", move |state| {
            state.ops.push(Op::Publish(outcomes.len()));
            state.ours.extend_from_slice(outcomes);
        })
    }

    fn others_outcomes(&self, cursor: u64) -> StoreFuture<'_, (Vec<Outcome>, u64)> {
        self.operate("others_outcomes", move |state| {
            state.ops.push(Op::OthersOutcomes(cursor));
            let from = usize::try_from(cursor).unwrap().min(state.theirs.len());
            (state.theirs[from..].to_vec(), state.theirs.len() as u64)
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.operate("ping", move |state| state.ops.push(Op::Ping))
    }
}
