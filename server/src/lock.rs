//! One server per data directory. `ferrite serve` holds an exclusive lock
//! on `<data_dir>/ferrite.lock` (which names its PID) for as long as it
//! runs; a second server on the same directory refuses to start, naming
//! the first. The lock is the operating system's (`flock`), so it ends
//! with the process however it ends: a killed server leaves the file but
//! not the lock, and the next start takes it over.
//!
//! On PostgreSQL several nodes share one database on purpose, each with
//! its own data directory: the lock is per data directory, never per
//! database. The CLI's small writes (`user`, `apikey`) do not take it;
//! `migrate` does, so it cannot change the schema under a running server.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "ferrite.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the data directory {} is already served by PID {pid} (it holds {}); stop that server first, or give this one another --data-dir",
        dir.display(),
        LOCK_FILE
    )]
    Held { dir: PathBuf, pid: String },
    #[error("cannot lock the data directory ({}): {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock on `data_dir` (which must exist), or says who holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                // The holder writes its PID just after locking: it may be
                // empty for that moment.
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    dir: data_dir.to_owned(),
                    pid: if pid.is_empty() {
                        "(unknown)".into()
                    } else {
                        pid.chars().take(20).collect()
                    },
                });
            }
            Err(TryLockError::Error(err)) => return Err(io(err)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let pid = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        match DataDirLock::acquire(dir.path()) {
            Err(err @ LockError::Held { .. }) => {
                let message = err.to_string();
                assert!(
                    message.contains(&format!("PID {}", std::process::id())),
                    "{message}"
                );
            }
            other => panic!("expected Held, got {other:?}"),
        }
        // Another directory is another lock.
        let elsewhere = tempfile::tempdir().unwrap();
        DataDirLock::acquire(elsewhere.path()).unwrap();
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
