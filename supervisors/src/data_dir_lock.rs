//! One daemon per data directory: `DATA_DIR/lock`, held with an exclusive `flock` for as
//! long as the daemon runs and holding its pid as text.
//!
//! Contract:
//! - A second daemon on the same directory is refused at start with an error naming the
//!   directory and the pid in the lock file (the pid of the holder when it wrote it).
//! - The lock is the kernel's: it goes with the process (SIGKILL included), so a stale
//!   `lock` file of a dead daemon never blocks a restart.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The lock of a data directory, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

/// Why a data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "data_dir = {dir} is in use by another alpha-panda daemon (pid {pid}, see {lock}): stop it, or give this one another data_dir"
    )]
    Held {
        dir: PathBuf,
        lock: PathBuf,
        pid: String,
    },
    #[error("cannot lock data_dir = {dir} ({lock}): {problem}")]
    Io {
        dir: PathBuf,
        lock: PathBuf,
        problem: String,
    },
}

impl DataDirLock {
    /// Locks `dir` (creating it) for this process.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join("lock");
        let io = |e: &dyn std::fmt::Display| LockError::Io {
            dir: dir.to_owned(),
            lock: path.clone(),
            problem: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&e))?;
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    lock: path.clone(),
                    pid: if pid.is_empty() {
                        "unknown".to_owned()
                    } else {
                        pid.to_owned()
                    },
                });
            }
            return Err(io(&e));
        }
        file.set_len(0).map_err(|e| io(&e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| io(&e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| io(&e))?;
        file.flush().map_err(|e| io(&e))?;
        Ok(Self { _file: file, path })
    }

    /// `DATA_DIR/lock`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_directory_and_the_pid() {
        let dir = Scratch(std::env::temp_dir().join(format!("ap-lock-{}", uuid::Uuid::now_v7())));
        let first = DataDirLock::acquire(&dir.0).unwrap_or_else(|e| panic!("{e}"));
        let second = DataDirLock::acquire(&dir.0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("a second lock was granted"));
        assert!(second.contains(&dir.0.display().to_string()), "{second}");
        assert!(
            second.contains(&format!("pid {}", std::process::id())),
            "{second}"
        );
        drop(first);
        assert!(
            DataDirLock::acquire(&dir.0).is_ok(),
            "released with the first"
        );
    }
}
