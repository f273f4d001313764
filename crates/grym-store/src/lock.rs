//! The exclusive lock on a SQLite store: `PATH.lock` beside the database,
//! held (an advisory `flock`) for as long as the store is open, so a second
//! grymd on the same file fails at start instead of taking over the
//! first one's tasks.
//!
//! The lock file itself stays when the store closes: removing it would let
//! a process that opened it just before lock a file no one else sees.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// A held lock; released when dropped (or when the process ends, however
/// it ends).
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Locks `PATH.lock` beside `database`, failing at once when another
    /// holder has it.
    pub(crate) fn acquire(database: &Path) -> Result<Self, Error> {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(Error::Locked { lock: path }),
            Err(TryLockError::Error(source)) => Err(Error::Io { path, source }),
        }
    }

    /// The lock file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("grym.db");
        let first = FileLock::acquire(&database).unwrap();
        let error = FileLock::acquire(&database).unwrap_err();
        assert!(
            error.to_string().contains("grym.db.lock"),
            "the error names the lock file: {error}"
        );
        drop(first);
        FileLock::acquire(&database).unwrap();
    }
}
