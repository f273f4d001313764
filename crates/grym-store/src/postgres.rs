//! The PostgreSQL backend: one database shared by every replica.
//!
//! Invariants:
//! - an unfinished task is held by the replica named in `owner` until
//!   `lease_until`, on the database's clock (`grym_now_ms()`), never a
//!   replica's; the holder extends it by renewing;
//! - a claim takes only tasks released (owner NULL) or whose holder's lease
//!   ran out, never this replica's own, and locks what it takes with
//!   `FOR UPDATE SKIP LOCKED`, so replicas claiming at once never take the
//!   same task;
//! - every statement is bounded on the server (`statement_timeout`,
//!   `lock_timeout`) as well as by the store, so a stuck database becomes
//!   an error, never a hang.
//!
//! Outcomes are numbered by a sequence. A transaction may commit after one
//! that drew a later number, so a replica that read past it misses it: an
//! outcome is a statistic, and one missed now and then is harmless.

use std::str::FromStr as _;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Row as _};

use crate::backend::{Backend, Claimed, Key, OutcomeRows, SessionRows, Write};
use crate::codec;
use crate::error::{Error, Fault};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long a caller waits for a pooled connection, connecting included:
/// with the database down, this is how soon a write fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections: the writer's, and reads beside it.
const CONNECTIONS: u32 = 8;
/// The server's bounds on each statement and each wait for a row lock, in
/// milliseconds.
const STATEMENT_TIMEOUT_MS: u32 = 5000;
const LOCK_TIMEOUT_MS: u32 = 5000;
/// How long the server keeps a session idle inside a transaction (a
/// replica that vanished mid-batch) before ending it, in milliseconds.
const IDLE_IN_TRANSACTION_MS: u32 = 30_000;
/// Rows deleted per statement when pruning.
const PRUNE_CHUNK: i64 = 1000;
/// The most outcomes read at once.
const OUTCOMES_PAGE: i64 = 4096;

/// An open PostgreSQL store.
#[derive(Debug)]
pub(crate) struct Postgres {
    pool: PgPool,
    shown: String,
    owner: String,
    lease: i64,
}

/// Connects to `url` (shown as `shown`) for `owner` and runs the
/// migrations.
pub(crate) async fn open(
    url: &str,
    shown: &str,
    owner: String,
    lease: Duration,
) -> Result<Postgres, Error> {
    let pool = connect(url, shown).await?;
    migrate(&pool, shown).await?;
    let store = Postgres {
        pool,
        shown: shown.to_owned(),
        owner,
        lease: codec::millis(lease),
    };
    // Present before it holds anything: no other replica takes what it
    // accepts before its first renewal.
    store.announce().await.map_err(|source| Error::Connect {
        location: shown.to_owned(),
        source,
    })?;
    Ok(store)
}

impl Postgres {
    /// Marks this replica present for one lease more.
    async fn announce(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO replicas (owner, seen_until) VALUES ($1, grym_now_ms() + $2) \
             ON CONFLICT (owner) DO UPDATE SET seen_until = EXCLUDED.seen_until",
        )
        .bind(self.owner.as_str())
        .bind(self.lease)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Connects to `url`, brings the schema up to date and returns its
/// version.
pub(crate) async fn check(url: &str, shown: &str) -> Result<i64, Error> {
    let pool = connect(url, shown).await?;
    migrate(&pool, shown).await?;
    let version =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .map_err(|source| Error::Connect {
                location: shown.to_owned(),
                source,
            })?;
    pool.close().await;
    Ok(version)
}

async fn connect(url: &str, shown: &str) -> Result<PgPool, Error> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|error| Error::BadUrl {
            url: shown.to_owned(),
            reason: error.to_string(),
        })?
        .application_name("grymd")
        .options([
            ("statement_timeout", STATEMENT_TIMEOUT_MS),
            ("lock_timeout", LOCK_TIMEOUT_MS),
            (
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_MS,
            ),
        ]);
    PgPoolOptions::new()
        .max_connections(CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|source| Error::Connect {
            location: shown.to_owned(),
            source,
        })
}

async fn migrate(pool: &PgPool, shown: &str) -> Result<(), Error> {
    // The migrator holds an advisory lock: replicas starting at once take
    // turns.
    MIGRATOR.run(pool).await.map_err(|source| Error::Migrate {
        location: shown.to_owned(),
        source,
    })
}

impl Postgres {
    async fn apply(&self, conn: &mut PgConnection, write: &Write) -> Result<bool, sqlx::Error> {
        let changed = match write {
            Write::Accept(task) => sqlx::query(
                "INSERT INTO tasks (tenant, id, state, status, priority, deadline, owner, \
                         lease_until, runs, task, snapshot) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, grym_now_ms() + $8, $9, $10, $11) \
                     ON CONFLICT (tenant, id) DO UPDATE SET \
                         state = EXCLUDED.state, status = EXCLUDED.status, \
                         priority = EXCLUDED.priority, deadline = EXCLUDED.deadline, \
                         seq = EXCLUDED.seq, owner = EXCLUDED.owner, \
                         lease_until = EXCLUDED.lease_until, runs = EXCLUDED.runs, \
                         cancel_requested = false, finished_at = NULL, \
                         task = EXCLUDED.task, snapshot = EXCLUDED.snapshot \
                     WHERE tasks.state = 'final'",
            )
            .bind(task.key.tenant.as_str())
            .bind(task.key.id.as_str())
            .bind(task.state)
            .bind(task.status)
            .bind(task.priority)
            .bind(task.deadline)
            .bind(self.owner.as_str())
            .bind(self.lease)
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
                "UPDATE tasks SET state = $3, status = $4, snapshot = $5, runs = $6 \
                     WHERE tenant = $1 AND id = $2 AND state <> 'final' AND owner = $7",
            )
            .bind(key.tenant.as_str())
            .bind(key.id.as_str())
            .bind(*state)
            .bind(*status)
            .bind(snapshot.as_slice())
            .bind(*runs)
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
                "UPDATE tasks SET state = 'final', status = $3, snapshot = $4, \
                         finished_at = $5, task = NULL, owner = NULL, lease_until = NULL, \
                         cancel_requested = false \
                     WHERE tenant = $1 AND id = $2 AND state <> 'final'",
            )
            .bind(key.tenant.as_str())
            .bind(key.id.as_str())
            .bind(*status)
            .bind(result.as_slice())
            .bind(*finished_at)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            Write::RequestCancel { key } => sqlx::query(
                "UPDATE tasks SET cancel_requested = true \
                     WHERE tenant = $1 AND id = $2 AND state <> 'final'",
            )
            .bind(key.tenant.as_str())
            .bind(key.id.as_str())
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            Write::Release { keys } => {
                let tenants: Vec<&str> = keys.iter().map(|k| k.tenant.as_str()).collect();
                let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
                sqlx::query(
                    "UPDATE tasks AS t SET owner = NULL, lease_until = NULL \
                     FROM unnest($1::text[], $2::text[]) AS k(tenant, id) \
                     WHERE t.tenant = k.tenant AND t.id = k.id \
                         AND t.owner = $3 AND t.state <> 'final'",
                )
                .bind(tenants)
                .bind(ids)
                .bind(self.owner.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected()
            }
            Write::PutSession { key, context } => sqlx::query(
                "INSERT INTO sessions (tenant, id, context, used_at) \
                     VALUES ($1, $2, $3, grym_now_ms()) \
                     ON CONFLICT (tenant, id) DO UPDATE \
                     SET context = EXCLUDED.context, used_at = EXCLUDED.used_at",
            )
            .bind(key.tenant.as_str())
            .bind(key.id.as_str())
            .bind(context.as_slice())
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
                    "INSERT INTO sessions (tenant, id, context, used_at) \
                     VALUES ($1, $2, $3, grym_now_ms()) \
                     ON CONFLICT (tenant, id) DO UPDATE SET used_at = EXCLUDED.used_at",
                )
                .bind(key.tenant.as_str())
                .bind(key.id.as_str())
                .bind(codec::EMPTY_MAP)
                .execute(&mut *conn)
                .await?;
                let added = sqlx::query(
                    "INSERT INTO session_entries (tenant, session, kind, entry) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(key.tenant.as_str())
                .bind(key.id.as_str())
                .bind(kind.as_str())
                .bind(entry.as_slice())
                .execute(&mut *conn)
                .await?
                .rows_affected();
                sqlx::query(
                    "DELETE FROM session_entries WHERE tenant = $1 AND session = $2 \
                     AND seq NOT IN (SELECT seq FROM session_entries \
                         WHERE tenant = $1 AND session = $2 ORDER BY seq DESC LIMIT $3)",
                )
                .bind(key.tenant.as_str())
                .bind(key.id.as_str())
                .bind(*keep)
                .execute(&mut *conn)
                .await?;
                added
            }
            Write::DeleteSession { key } => {
                sqlx::query("DELETE FROM session_entries WHERE tenant = $1 AND session = $2")
                    .bind(key.tenant.as_str())
                    .bind(key.id.as_str())
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("DELETE FROM sessions WHERE tenant = $1 AND id = $2")
                    .bind(key.tenant.as_str())
                    .bind(key.id.as_str())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
            }
            Write::Publish { outcomes, at } => {
                let blobs: Vec<&[u8]> = outcomes.iter().map(Vec::as_slice).collect();
                sqlx::query(
                    "INSERT INTO outcomes (replica, at, outcome) \
                     SELECT $1, $2, blob FROM unnest($3::bytea[]) WITH ORDINALITY AS o(blob, n) \
                     ORDER BY n",
                )
                .bind(self.owner.as_str())
                .bind(*at)
                .bind(blobs)
                .execute(&mut *conn)
                .await?;
                1
            }
        };
        Ok(changed > 0)
    }
}

impl Backend for Postgres {
    fn location(&self) -> String {
        self.shown.clone()
    }

    fn commit<'a>(&'a self, writes: &'a [Write]) -> BoxFuture<'a, Result<Vec<bool>, Fault>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let mut answers = Vec::with_capacity(writes.len());
            for write in writes {
                answers.push(self.apply(&mut tx, write).await?);
            }
            tx.commit().await?;
            Ok(answers)
        })
    }

    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Vec<u8>>, Fault>> {
        Box::pin(async move {
            let blob =
                sqlx::query_scalar("SELECT snapshot FROM tasks WHERE tenant = $1 AND id = $2")
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
                "WITH picked AS ( \
                     SELECT tenant, id FROM tasks \
                     WHERE state <> 'final' \
                         AND (owner IS NULL OR (owner <> $1 AND NOT EXISTS ( \
                             SELECT 1 FROM replicas \
                             WHERE replicas.owner = tasks.owner \
                                 AND replicas.seen_until >= grym_now_ms()))) \
                     ORDER BY priority DESC, deadline ASC NULLS LAST, seq \
                     LIMIT $2 \
                     FOR UPDATE SKIP LOCKED) \
                 UPDATE tasks AS t SET owner = $1, lease_until = grym_now_ms() + $3 \
                 FROM picked WHERE t.tenant = picked.tenant AND t.id = picked.id \
                 RETURNING t.seq, t.task, t.snapshot, t.runs",
            )
            .bind(self.owner.as_str())
            .bind(limit)
            .bind(self.lease)
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
        true
    }

    fn replicas(&self) -> BoxFuture<'_, Result<u32, Fault>> {
        Box::pin(async move {
            let present: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM replicas WHERE seen_until >= grym_now_ms()",
            )
            .fetch_one(&self.pool)
            .await?;
            Ok(u32::try_from(present).unwrap_or(u32::MAX).max(1))
        })
    }

    fn renew(&self) -> BoxFuture<'_, Result<Vec<Key>, Fault>> {
        Box::pin(async move {
            // One row: the lease is the replica's, not each task's.
            self.announce().await?;
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT tenant, id FROM tasks \
                 WHERE owner = $1 AND state <> 'final' AND cancel_requested",
            )
            .bind(self.owner.as_str())
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(Key::from).collect())
        })
    }

    fn held(&self) -> BoxFuture<'_, Result<Vec<Key>, Fault>> {
        Box::pin(async move {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT tenant, id FROM tasks WHERE owner = $1 AND state <> 'final'",
            )
            .bind(self.owner.as_str())
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(Key::from).collect())
        })
    }

    fn prune_sessions(&self, before: i64) -> BoxFuture<'_, Result<u64, Fault>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "DELETE FROM session_entries USING sessions \
                 WHERE session_entries.tenant = sessions.tenant \
                     AND session_entries.session = sessions.id AND sessions.used_at < $1",
            )
            .bind(before)
            .execute(&mut *tx)
            .await?;
            let deleted = sqlx::query("DELETE FROM sessions WHERE used_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(deleted)
        })
    }

    fn prune(&self, before: i64) -> BoxFuture<'_, Result<u64, Fault>> {
        Box::pin(async move {
            let mut pruned = 0;
            loop {
                let deleted = sqlx::query(
                    "DELETE FROM tasks WHERE ctid IN (SELECT ctid FROM tasks \
                     WHERE state = 'final' AND finished_at < $1 LIMIT $2)",
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
                     WHERE at < $1 LIMIT $2)",
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
            sqlx::query("DELETE FROM replicas WHERE seen_until < $1")
                .bind(before)
                .execute(&self.pool)
                .await?;
            Ok(pruned)
        })
    }

    fn session<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<SessionRows>, Fault>> {
        Box::pin(async move {
            // One snapshot: the context and entries of one moment.
            let mut tx = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
            let context: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT context FROM sessions WHERE tenant = $1 AND id = $2")
                    .bind(key.tenant.as_str())
                    .bind(key.id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(context) = context else {
                return Ok(None);
            };
            let entries: Vec<(String, Vec<u8>)> = sqlx::query_as(
                "SELECT kind, entry FROM session_entries \
                 WHERE tenant = $1 AND session = $2 ORDER BY seq",
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
                    "SELECT COALESCE(pg_sequence_last_value('outcomes_seq_seq'), 0)",
                )
                .fetch_one(&self.pool)
                .await?;
                return Ok(OutcomeRows {
                    outcomes: Vec::new(),
                    cursor,
                });
            }
            let rows: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT seq, CASE WHEN replica <> $1 THEN outcome END FROM outcomes \
                 WHERE seq > $2 ORDER BY seq LIMIT $3",
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
