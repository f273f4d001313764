//! The durable store of grym orchestrator: the core's [`Store`] trait on
//! SQLite (one grymd, the embedded default) and PostgreSQL (several
//! replicas sharing one database), chosen by a URL.
//!
//! | URL | store |
//! | --- | --- |
//! | `memory` | none: the core keeps tasks and sessions in memory alone |
//! | `sqlite://PATH` | a file (its folder is created), locked by one process |
//! | `postgres://...`, `postgresql://...` | a database shared by replicas |
//!
//! How it is built, one room each:
//! - `location`: the URL, checked, shown without its password;
//! - `store`: the trait over a backend, every call bounded;
//! - `writer`: group commit, the one task per store that writes;
//! - `backend`: what a backend implements, in rows;
//! - `sqlite` (with `lock`) and `postgres`: each database's SQL;
//! - `codec`: records as MessagePack blobs, facts as columns.
//!
//! Each backend's schema is versioned migrations embedded in the binary
//! (`migrations/sqlite`, `migrations/postgres`), run at every open; a
//! database that holds a migration this build does not know is refused.
//!
//! A store serves one replica. The `replica` name given at open is its
//! readable part; each open adds a unique suffix, so a replica restarted
//! under the same name never renews the leases of the tasks its previous
//! run held (they run out, and are claimed again).

mod backend;
mod codec;
mod error;
mod location;
mod lock;
mod postgres;
mod sqlite;
mod store;
mod writer;

use std::sync::Arc;

use grym_core::{DurabilitySettings, Store};

pub use error::Error;
pub use location::StoreUrl;
#[doc(hidden)]
pub use writer::WriteStats;

use crate::store::SqlStore;

/// Opens the store at `url` for `replica`: `None` for `memory`.
///
/// Creates a SQLite file's folder and takes its lock, connects to
/// PostgreSQL, runs the migrations, and starts the writer task (which
/// stops when the store is dropped). Every wait is bounded: a database
/// that does not answer fails the open within seconds.
pub async fn open(
    url: &str,
    replica: &str,
    settings: &DurabilitySettings,
) -> Result<Option<Arc<dyn Store>>, Error> {
    Ok(open_counted(url, replica, settings)
        .await?
        .map(|(store, _)| store))
}

/// [`open`], with the counts of its writer, for tests and benchmarks.
#[doc(hidden)]
pub async fn open_counted(
    url: &str,
    replica: &str,
    settings: &DurabilitySettings,
) -> Result<Option<(Arc<dyn Store>, WriteStats)>, Error> {
    let owner = format!("{replica}#{}", uuid::Uuid::now_v7().simple());
    match StoreUrl::parse(url)? {
        StoreUrl::Memory => Ok(None),
        StoreUrl::Sqlite(path) => {
            let (backend, lock) = sqlite::open(&path, owner, settings.lease_ttl).await?;
            Ok(Some(started(backend, Some(lock))))
        }
        StoreUrl::Postgres { url, shown } => {
            let backend = postgres::open(&url, &shown, owner, settings.lease_ttl).await?;
            Ok(Some(started(backend, None)))
        }
    }
}

fn started<B: backend::Backend>(
    backend: B,
    lock: Option<lock::FileLock>,
) -> (Arc<dyn Store>, WriteStats) {
    let store = SqlStore::start(backend, lock);
    let stats = store.stats();
    (Arc::new(store), stats)
}

/// Opens the store at `url`, brings its schema up to date (or finds it
/// newer than this build, and fails) and returns its schema version:
/// what `grymd --check-store` reports. `None` for `memory`. Takes no lock,
/// so it may run beside a grymd using the store.
pub async fn check(url: &str) -> Result<Option<i64>, Error> {
    match StoreUrl::parse(url)? {
        StoreUrl::Memory => Ok(None),
        StoreUrl::Sqlite(path) => sqlite::check(&path).await.map(Some),
        StoreUrl::Postgres { url, shown } => postgres::check(&url, &shown).await.map(Some),
    }
}
