//! The crate's failures: [`Error`] for opening a store, and the faults of
//! its operations, which become the core's [`StoreError`] at the trait.
//!
//! No message here holds a password: URLs appear as [`StoreUrl`] shows
//! them, and the database's own errors never repeat the URL.
//!
//! [`StoreUrl`]: crate::StoreUrl

use std::path::PathBuf;

use grym_core::StoreError;

/// Why a store could not be opened or checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL names no store this build knows.
    #[error("the store URL {url:?} is not valid: {reason}")]
    BadUrl {
        /// The URL, without its password.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process holds the SQLite file.
    #[error(
        "{} is locked by another process: only one grymd may use a SQLite store (use PostgreSQL for several replicas)",
        lock.display()
    )]
    Locked {
        /// The lock file beside the database.
        lock: PathBuf,
    },
    /// A file or folder of the SQLite store could not be made or opened.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be reached, or refused to set up.
    #[error("the store at {location} could not be opened: {source}")]
    Connect {
        /// Where the store is, without a password.
        location: String,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought to this build's version, or holds
    /// migrations this build does not know.
    #[error("the store at {location} could not be migrated: {source}")]
    Migrate {
        /// Where the store is, without a password.
        location: String,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// Why one operation failed, before it becomes the core's word.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The database failed or could not be reached.
    Db(sqlx::Error),
    /// A record could not be read back.
    Corrupt(String),
    /// The operation ran past its bound.
    TimedOut(&'static str),
}

impl From<sqlx::Error> for Fault {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. } => Self::Corrupt(error.to_string()),
            error => Self::Db(error),
        }
    }
}

impl From<Fault> for StoreError {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Db(error) => StoreError::Unavailable(error.to_string()),
            Fault::Corrupt(message) => StoreError::Corrupt(message),
            Fault::TimedOut(what) => StoreError::Unavailable(format!("{what} timed out")),
        }
    }
}
