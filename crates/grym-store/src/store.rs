//! The core's [`Store`] trait over any [`Backend`]: encodes what the core
//! hands it, sends writes through the group-committing [`Writer`], makes
//! reads directly, bounds every call, and decodes what comes back.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use grym_core::{
    ModelKind, Outcome, SessionId, Store, StoreError, StoreFuture, StoredSession, TaskKey,
    TaskRecord, TaskResult, Tenant,
};
use serde_json::{Map, Value};

use crate::backend::{Backend, Claimed, Key, NewTask, SessionRows, Write};
use crate::codec::{self, Accepted, AcceptedRef};
use crate::error::Fault;
use crate::lock::FileLock;
use crate::writer::{WriteStats, Writer};

/// The longest a read may take, the pool's wait for a connection included.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A durable store on one backend.
pub(crate) struct SqlStore<B> {
    backend: Arc<B>,
    writer: Writer,
    /// A SQLite file's lock: held here, not by the backend the writer task
    /// shares, so it is let go the moment the store is dropped.
    _lock: Option<FileLock>,
}

impl<B: Backend> SqlStore<B> {
    /// Starts the writer of `backend`, holding `lock` until dropped.
    pub(crate) fn start(backend: B, lock: Option<FileLock>) -> Self {
        let backend = Arc::new(backend);
        let writer = Writer::spawn(Arc::clone(&backend));
        Self {
            backend,
            writer,
            _lock: lock,
        }
    }

    /// What its writer did so far.
    pub(crate) fn stats(&self) -> WriteStats {
        self.writer.stats().clone()
    }

    async fn write(&self, write: Write) -> Result<bool, StoreError> {
        self.writer.write(write).await
    }
}

impl<B: Backend> fmt::Debug for SqlStore<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("location", &self.backend.location())
            .finish_non_exhaustive()
    }
}

/// Runs a read under [`READ_TIMEOUT`].
async fn bounded<T>(
    what: &'static str,
    read: impl Future<Output = Result<T, Fault>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(result) => result.map_err(StoreError::from),
        Err(_) => Err(Fault::TimedOut(what).into()),
    }
}

fn decode_session(rows: SessionRows) -> Result<StoredSession, Fault> {
    let context = codec::decode("a session's context", &rows.context)?;
    let entries = rows
        .entries
        .into_iter()
        .map(|(kind, entry)| {
            Ok((
                ModelKind::new(kind),
                codec::decode("a session's entry", &entry)?,
            ))
        })
        .collect::<Result<_, Fault>>()?;
    Ok(StoredSession { context, entries })
}

fn key_of(key: &TaskKey) -> Key {
    Key {
        tenant: key.tenant.as_str().to_owned(),
        id: key.id.as_str().to_owned(),
    }
}

/// The core's keys of rows the backend listed.
fn task_keys(keys: Vec<Key>) -> Result<Vec<TaskKey>, StoreError> {
    keys.into_iter()
        .map(|key| {
            Ok(TaskKey {
                tenant: codec::tenant(&key.tenant)?,
                id: codec::task_id(&key.id)?,
            })
        })
        .collect::<Result<_, Fault>>()
        .map_err(StoreError::from)
}

fn session_key(tenant: &Tenant, id: &SessionId) -> Key {
    Key {
        tenant: tenant.as_str().to_owned(),
        id: id.as_str().to_owned(),
    }
}

impl<B: Backend> Store for SqlStore<B> {
    fn location(&self) -> String {
        self.backend.location()
    }

    fn accept<'a>(&'a self, record: &'a TaskRecord) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let task = codec::encode(&AcceptedRef {
                task: &record.task,
                deadline: record.deadline,
            })?;
            let snapshot = codec::encode(&record.snapshot)?;
            let write = Write::Accept(NewTask {
                key: key_of(&record.key()),
                state: codec::unfinished_state(record.snapshot.status),
                status: record.snapshot.status.as_str(),
                priority: codec::priority_rank(record.task.priority),
                deadline: record.deadline.map(codec::epoch_ms),
                runs: i64::from(record.runs),
                task,
                snapshot,
            });
            self.write(write).await
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a TaskKey,
        snapshot: &'a TaskResult,
        runs: u32,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let write = Write::Update {
                key: key_of(key),
                state: codec::unfinished_state(snapshot.status),
                status: snapshot.status.as_str(),
                snapshot: codec::encode(snapshot)?,
                runs: i64::from(runs),
            };
            self.write(write).await.map(drop)
        })
    }

    fn finish<'a>(&'a self, key: &'a TaskKey, result: &'a TaskResult) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let write = Write::Finish {
                key: key_of(key),
                status: result.status.as_str(),
                result: codec::encode(result)?,
                finished_at: codec::epoch_ms(result.finished_at.unwrap_or_else(SystemTime::now)),
            };
            self.write(write).await
        })
    }

    fn get<'a>(&'a self, key: &'a TaskKey) -> StoreFuture<'a, Option<TaskResult>> {
        Box::pin(async move {
            let key = key_of(key);
            let blob = bounded("reading a task", self.backend.get(&key)).await?;
            blob.map(|blob| codec::decode::<TaskResult>("a task's result", &blob))
                .transpose()
                .map_err(StoreError::from)
        })
    }

    fn request_cancel<'a>(&'a self, key: &'a TaskKey) -> StoreFuture<'a, bool> {
        Box::pin(async move { self.write(Write::RequestCancel { key: key_of(key) }).await })
    }

    fn claim(&self, limit: usize) -> StoreFuture<'_, Vec<TaskRecord>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut rows = bounded("claiming tasks", self.backend.claim(limit)).await?;
            rows.sort_by_key(|row| row.seq);
            // Row by row: one record this build cannot read does not hold
            // back the others (it stays held, and is let go again later).
            let decode = |row: &Claimed| -> Result<TaskRecord, Fault> {
                let accepted: Accepted = codec::decode("a claimed task", &row.task)?;
                let snapshot: TaskResult =
                    codec::decode("a claimed task's snapshot", &row.snapshot)?;
                Ok(TaskRecord {
                    task: accepted.task,
                    deadline: accepted.deadline,
                    snapshot,
                    runs: u32::try_from(row.runs).unwrap_or(u32::MAX),
                })
            };
            Ok(rows
                .iter()
                .filter_map(|row| match decode(row) {
                    Ok(record) => Some(record),
                    Err(fault) => {
                        tracing::error!(seq = row.seq, error = %StoreError::from(fault), "a claimed task cannot be read; it is left");
                        None
                    }
                })
                .collect())
        })
    }

    fn shared(&self) -> bool {
        self.backend.shared()
    }

    fn held(&self) -> StoreFuture<'_, Vec<TaskKey>> {
        Box::pin(async move {
            let keys = bounded("listing held tasks", self.backend.held()).await?;
            task_keys(keys)
        })
    }

    fn replicas(&self) -> StoreFuture<'_, u32> {
        Box::pin(async move { bounded("counting replicas", self.backend.replicas()).await })
    }

    fn renew(&self) -> StoreFuture<'_, Vec<TaskKey>> {
        Box::pin(async move {
            let keys = bounded("renewing leases", self.backend.renew()).await?;
            task_keys(keys)
        })
    }

    fn release<'a>(&'a self, keys: &'a [TaskKey]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(());
            }
            let keys = keys.iter().map(key_of).collect();
            self.write(Write::Release { keys }).await.map(drop)
        })
    }

    fn prune_sessions(&self, before: SystemTime) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            bounded(
                "pruning sessions",
                self.backend.prune_sessions(codec::epoch_ms(before)),
            )
            .await
        })
    }

    fn prune(&self, before: SystemTime) -> StoreFuture<'_, u64> {
        Box::pin(
            async move { bounded("pruning", self.backend.prune(codec::epoch_ms(before))).await },
        )
    }

    fn put_session<'a>(
        &'a self,
        tenant: &'a Tenant,
        id: &'a SessionId,
        context: &'a Map<String, Value>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let write = Write::PutSession {
                key: session_key(tenant, id),
                context: codec::encode(context)?,
            };
            self.write(write).await.map(drop)
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
        Box::pin(async move {
            let write = Write::AppendSession {
                key: session_key(tenant, id),
                kind: kind.as_str().to_owned(),
                entry: codec::encode(entry)?,
                keep: i64::try_from(keep).unwrap_or(i64::MAX),
            };
            self.write(write).await.map(drop)
        })
    }

    fn session<'a>(
        &'a self,
        tenant: &'a Tenant,
        id: &'a SessionId,
    ) -> StoreFuture<'a, Option<StoredSession>> {
        Box::pin(async move {
            let key = session_key(tenant, id);
            let Some(rows) = bounded("reading a session", self.backend.session(&key)).await? else {
                return Ok(None);
            };
            decode_session(rows).map(Some).map_err(StoreError::from)
        })
    }

    fn delete_session<'a>(
        &'a self,
        tenant: &'a Tenant,
        id: &'a SessionId,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            self.write(Write::DeleteSession {
                key: session_key(tenant, id),
            })
            .await
        })
    }

    fn publish<'a>(&'a self, outcomes: &'a [Outcome]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if outcomes.is_empty() {
                return Ok(());
            }
            let outcomes = outcomes
                .iter()
                .map(codec::encode)
                .collect::<Result<_, Fault>>()?;
            let write = Write::Publish {
                outcomes,
                at: codec::epoch_ms(SystemTime::now()),
            };
            self.write(write).await.map(drop)
        })
    }

    fn others_outcomes(&self, cursor: u64) -> StoreFuture<'_, (Vec<Outcome>, u64)> {
        Box::pin(async move {
            let cursor = i64::try_from(cursor).unwrap_or(i64::MAX);
            let rows = bounded("reading outcomes", self.backend.outcomes(cursor)).await?;
            let outcomes = rows
                .outcomes
                .iter()
                .map(|blob| codec::decode("an outcome", blob))
                .collect::<Result<_, Fault>>()?;
            Ok((outcomes, u64::try_from(rows.cursor).unwrap_or(0)))
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { bounded("a ping", self.backend.ping()).await })
    }
}
