//! The SQLite backend: one file, one process.
//!
//! Invariants:
//! - only one process has the file open as a store: its store holds
//!   [`FileLock`] on `PATH.lock` from open to drop;
//! - so every task held by a replica when the store opens was held by a
//!   process that is gone: open lets go of them all, and `claim` takes any
//!   unfinished task this replica does not hold, without waiting for
//!   leases (which are still written, on the local clock, for a store
//!   later moved to PostgreSQL's rules);
//! - the journal is WAL with `synchronous = FULL`: a commit is on disk
//!   before its callers hear of it, power loss included. The writer
//!   shares that fsync among every write of a batch.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection as _, Row as _};

use crate::backend::{Backend, Claimed, Key, OutcomeRows, SessionRows, Write};
use crate::codec;
use crate::error::{Error, Fault};
use crate::lock::FileLock;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for the write lock (a claim or a prune
/// beside the writer) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections: the writer's, and readers beside it (WAL lets them read
/// while it writes).
const CONNECTIONS: u32 = 4;
/// Rows deleted per statement when pruning, so the write lock is never
/// held long.
const PRUNE_CHUNK: i64 = 1000;
/// The most outcomes read at once.
const OUTCOMES_PAGE: i64 = 4096;

/// An open SQLite store.
#[derive(Debug)]
pub(crate) struct Sqlite {
    pool: SqlitePool,
    path: PathBuf,
    owner: String,
    lease: i64,
}

/// Opens the store at `path` for `owner`: creates its folder, takes its
/// lock (which the store must hold as long as it is open), runs its
/// migrations, and lets go of the tasks a previous process held.
pub(crate) async fn open(
    path: &Path,
    owner: String,
    lease: Duration,
) -> Result<(Sqlite, FileLock), Error> {
    create_folder(path)?;
    let lock = FileLock::acquire(path)?;
    tracing::debug!(lock = %lock.path().display(), "holding the store's lock");
    let pool = connect(path).await?;
    migrate(&pool, path).await?;
    sqlx::query("UPDATE tasks SET owner = NULL, lease_until = NULL WHERE state <> 'final'")
        .execute(&pool)
        .await
        .map_err(|source| Error::Connect {
            location: path.display().to_string(),
            source,
        })?;
    let backend = Sqlite {
        pool,
        path: path.to_path_buf(),
        owner,
        lease: codec::millis(lease),
    };
    Ok((backend, lock))
}

/// Opens the store at `path` without its lock, brings its schema up to
/// date and returns its version.
pub(crate) async fn check(path: &Path) -> Result<i64, Error> {
    create_folder(path)?;
    let pool = connect(path).await?;
    migrate(&pool, path).await?;
    let version =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .map_err(|source| Error::Connect {
                location: path.display().to_string(),
                source,
            })?;
    pool.close().await;
    Ok(version)
}

fn create_folder(path: &Path) -> Result<(), Error> {
    match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => {
            std::fs::create_dir_all(folder).map_err(|source| Error::Io {
                path: folder.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}

async fn connect(path: &Path) -> Result<SqlitePool, Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT);
    SqlitePoolOptions::new()
        .max_connections(CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|source| Error::Connect {
            location: path.display().to_string(),
            source,
        })
}

async fn migrate(pool: &SqlitePool, path: &Path) -> Result<(), Error> {
    MIGRATOR.run(pool).await.map_err(|source| Error::Migrate {
        location: path.display().to_string(),
        source,
    })
}

fn now_ms() -> i64 {
    codec::epoch_ms(SystemTime::now())
}

impl Sqlite {
    async fn apply(
        &self,
        conn: &mut SqliteConnection,
        write: &Write,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let changed = match write {
            Write::Accept(task) => sqlx::query(
                "INSERT INTO tasks (tenant, id, state, status, priority, deadline, seq, \
                         owner, lease_until, runs, cancel_requested, finished_at, task, snapshot) \
                     VALUES (?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks), \
                         ?, ?, ?, 0, NULL, ?, ?) \
                     ON CONFLICT (tenant, id) DO UPDATE SET \
                         state = excluded.state, status = excluded.status, \
                         priority = excluded.priority, deadline = excluded.deadline, \
                         seq = excluded.seq, owner = excluded.owner, \
                         lease_until = excluded.lease_until, runs = excluded.runs, \
                         cancel_requested = 0, finished_at = NULL, \
                         task = excluded.task, snapshot = excluded.snapshot \
                     WHERE tasks.state = 'final'",
            )
            .bind(task.key.tenant.as_str())
            .bind(task.key.id.as_str())
            .bind(task.state)
            .bind(task.status)
            .bind(task.priority)
            .bind(task.deadline)
            .bind(self.owner.as_str())
            .bind(now.saturating_add(self.lease))
            .bind(task.runs)
            .bind(task.task.as_slice())
            .bind(task.snapshot.as_slice())
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            Write::Update {
                key,
                state,
                status,
                snapshot,
                runs,
            } => sqlx::query(
                "UPDATE tasks SET state = ?, status = ?, snapshot = ?, runs = ? \
                     WHERE tenant = ? AND id = ? AND state <> 'final' AND owner = ?",
            )
            .bind(*state)
            .bind(*status)
            .bind(snapshot.as_slice())
            .bind(*runs)
            .bind(key.tenant.as_str())
            .bind(key.id.as_str())
            .bind(self.owner.as_str())
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            Write::Finish {
                key,
                status,
                result,
                finished_at,
            } => sqlx::query(
                "UPDATE tasks SET state = 'final', status = ?, snapshot = ?, \
                         finished_at = ?, task = NULL, owner = NULL, lease_until = NULL, \
                         cancel_requested = 0 \
                     WHERE tenant = ? AND id = ? AND state <> 'final'",
            )
            .bind(*status)
            .bind(result.as_slice())
            .bind(*finished_at)
            .bind(key.tenant.as_str())
            .bind(key.id.as_str())
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            Write::RequestCancel { key } => sqlx::query(
                "UPDATE tasks SET cancel_requested = 1 \
                     WHERE tenant = ? AND id = ? AND state <> 'final'",
            )
            .bind(key.tenant.as_str())
            .bind(key.id.as_str())
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            Write::Release { keys } => {
                let mut released = 0;
                for key in keys {
                    released += sqlx::query(
                        "UPDATE tasks SET owner = NULL, lease_until = NULL \
                         WHERE tenant = ? AND id = ? AND owner = ? AND state <> 'final'",
                    )
                    .bind(key.tenant.as_str())
                    .bind(key.id.as_str())
                    .bind(self.owner.as_str())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                }
                released
            }
            Write::PutSession { key, context } => sqlx::query(
                "INSERT INTO sessions (tenant, id, context, used_at) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (tenant, id) DO UPDATE \
                     SET context = excluded.context, used_at = excluded.used_at",
            )
            .bind(key.tenant.as_str())
            .bind(key.id.as_str())
            .bind(context.as_slice())
            .bind(now_ms())
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            Write::AppendSession {
                key,
                kind,
                entry,
                keep,
            } => {
                sqlx::query(
                    "INSERT INTO sessions (tenant, id, context, used_at) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (tenant, id) DO UPDATE SET used_at = excluded.used_at",
                )
                .bind(key.tenant.as_str())
                .bind(key.id.as_str())
                .bind(codec::EMPTY_MAP)
                .bind(now_ms())
                .execute(&mut *conn)
                .await?;
                let added = sqlx::query(
                    "INSERT INTO session_entries (tenant, session, kind, entry) \
                     VALUES (?, ?, ?, ?)",
                )
                .bind(key.tenant.as_str())
                .bind(key.id.as_str())
                .bind(kind.as_str())
                .bind(entry.as_slice())
                .execute(&mut *conn)
                .await?
                .rows_affected();
                sqlx::query(
                    "DELETE FROM session_entries WHERE tenant = ? AND session = ? \
                     AND seq NOT IN (SELECT seq FROM session_entries \
                         WHERE tenant = ? AND session = ? ORDER BY seq DESC LIMIT ?)",
                )
                .bind(key.tenant.as_str())
                .bind(key.id.as_str())
                .bind(key.tenant.as_str())
                .bind(key.id.as_str())
                .bind(*keep)
                .execute(&mut *conn)
                .await?;
                added
            }
            Write::DeleteSession { key } => {
                sqlx::query("DELETE FROM session_entries WHERE tenant = ? AND session = ?")
                    .bind(key.tenant.as_str())
                    .bind(key.id.as_str())
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("DELETE FROM sessions WHERE tenant = ? AND id = ?")
                    .bind(key.tenant.as_str())
                    .bind(key.id.as_str())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
            }
            Write::Publish { outcomes, at } => {
                for outcome in outcomes {
                    sqlx::query("INSERT INTO outcomes (replica, at, outcome) VALUES (?, ?, ?)")
                        .bind(self.owner.as_str())
                        .bind(*at)
                        .bind(outcome.as_slice())
                        .execute(&mut *conn)
                        .await?;
                }
                1
            }
        };
        Ok(changed > 0)
    }
}

impl Backend for Sqlite {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn commit<'a>(&'a self, writes: &'a [Write]) -> BoxFuture<'a, Result<Vec<bool>, Fault>> {
        Box::pin(async move {
            // IMMEDIATE: take the write lock up front, waiting (busy
            // timeout) behind a claim or a prune, rather than failing when
            // a read snapshot would have to become a write.
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let now = now_ms();
            let mut answers = Vec::with_capacity(writes.len());
            for write in writes {
                answers.push(self.apply(&mut tx, write, now).await?);
            }
            tx.commit().await?;
            Ok(answers)
        })
    }

    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Vec<u8>>, Fault>> {
        Box::pin(async move {
            let blob = sqlx::query_scalar("SELECT snapshot FROM tasks WHERE tenant = ? AND id = ?")
                .bind(key.tenant.as_str())
                .bind(key.id.as_str())
                .fetch_optional(&self.pool)
                .await?;
            Ok(blob)
        })
    }

    fn claim(&self, limit: i64) -> BoxFuture<'_, Result<Vec<Claimed>, Fault>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "UPDATE tasks SET owner = ?, lease_until = ? WHERE rowid IN ( \
                     SELECT rowid FROM tasks \
                     WHERE state <> 'final' AND (owner IS NULL OR owner <> ?) \
                     ORDER BY priority DESC, deadline IS NULL, deadline, seq LIMIT ?) \
                 RETURNING seq, task, snapshot, runs",
            )
            .bind(self.owner.as_str())
            .bind(now_ms().saturating_add(self.lease))
            .bind(self.owner.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(Claimed {
                        seq: row.try_get(0)?,
                        task: row.try_get::<Option<Vec<u8>>, _>(1)?.ok_or_else(|| {
                            Fault::Corrupt("an unfinished task without its input".to_owned())
                        })?,
                        snapshot: row.try_get(2)?,
                        runs: row.try_get(3)?,
                    })
                })
                .collect()
        })
    }

    fn shared(&self) -> bool {
        // One process holds the file (its lock says so).
        false
    }

    fn renew(&self) -> BoxFuture<'_, Result<Vec<Key>, Fault>> {
        Box::pin(async move {
            // Nothing to extend: the file's lock is this process's lease, and
            // no other process claims from it.
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT tenant, id FROM tasks \
                 WHERE owner = ? AND state <> 'final' AND cancel_requested",
            )
            .bind(self.owner.as_str())
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(Key::from).collect())
        })
    }

    fn held(&self) -> BoxFuture<'_, Result<Vec<Key>, Fault>> {
        Box::pin(async move {
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT tenant, id FROM tasks WHERE owner = ? AND state <> 'final'")
                    .bind(self.owner.as_str())
                    .fetch_all(&self.pool)
                    .await?;
            Ok(rows.into_iter().map(Key::from).collect())
        })
    }

    fn prune_sessions(&self, before: i64) -> BoxFuture<'_, Result<u64, Fault>> {
        Box::pin(async move {
            sqlx::query(
                "DELETE FROM session_entries WHERE (tenant, session) IN \
                 (SELECT tenant, id FROM sessions WHERE used_at < ?)",
            )
            .bind(before)
            .execute(&self.pool)
            .await?;
            let deleted = sqlx::query("DELETE FROM sessions WHERE used_at < ?")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected();
            Ok(deleted)
        })
    }

    fn prune(&self, before: i64) -> BoxFuture<'_, Result<u64, Fault>> {
        Box::pin(async move {
            let mut pruned = 0;
            loop {
                let deleted = sqlx::query(
                    "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks \
                     WHERE state = 'final' AND finished_at < ? LIMIT ?)",
                )
                .bind(before)
                .bind(PRUNE_CHUNK)
                .execute(&self.pool)
                .await?
                .rows_affected();
                pruned += deleted;
                if deleted < PRUNE_CHUNK.unsigned_abs() {
                    break;
                }
            }
            loop {
                let deleted = sqlx::query(
                    "DELETE FROM outcomes WHERE seq IN (SELECT seq FROM outcomes \
                     WHERE at < ? LIMIT ?)",
                )
                .bind(before)
                .bind(PRUNE_CHUNK)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if deleted < PRUNE_CHUNK.unsigned_abs() {
                    break;
                }
            }
            Ok(pruned)
        })
    }

    fn session<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<SessionRows>, Fault>> {
        Box::pin(async move {
            // One read transaction: the context and entries of one moment.
            let mut tx = self.pool.begin().await?;
            let context: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT context FROM sessions WHERE tenant = ? AND id = ?")
                    .bind(key.tenant.as_str())
                    .bind(key.id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(context) = context else {
                return Ok(None);
            };
            let entries: Vec<(String, Vec<u8>)> = sqlx::query_as(
                "SELECT kind, entry FROM session_entries \
                 WHERE tenant = ? AND session = ? ORDER BY seq",
            )
            .bind(key.tenant.as_str())
            .bind(key.id.as_str())
            .fetch_all(&mut *tx)
            .await?;
            tx.rollback().await?;
            Ok(Some(SessionRows { context, entries }))
        })
    }

    fn outcomes(&self, cursor: i64) -> BoxFuture<'_, Result<OutcomeRows, Fault>> {
        Box::pin(async move {
            if cursor <= 0 {
                let cursor: i64 = sqlx::query_scalar(
                    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outcomes'), 0)",
                )
                .fetch_one(&self.pool)
                .await?;
                return Ok(OutcomeRows {
                    outcomes: Vec::new(),
                    cursor,
                });
            }
            let rows: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT seq, CASE WHEN replica <> ? THEN outcome END FROM outcomes \
                 WHERE seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(self.owner.as_str())
            .bind(cursor)
            .bind(OUTCOMES_PAGE)
            .fetch_all(&self.pool)
            .await?;
            let next = rows.last().map_or(cursor, |(seq, _)| *seq);
            Ok(OutcomeRows {
                outcomes: rows.into_iter().filter_map(|(_, blob)| blob).collect(),
                cursor: next,
            })
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), Fault>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            conn.ping().await?;
            Ok(())
        })
    }
}
