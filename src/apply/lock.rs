//! One apply at a time per root: an exclusive, non-blocking flock on
//! `<root>/var/lib/timectl/lock`, holding the owner's PID for the message
//! the second one gets. The kernel drops the lock when the process dies,
//! so a crash never leaves a stale lock.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::host::{Files, HostError, STATE_DIR};

pub struct Lock {
    _file: Flock<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another timectl apply is running on this host{holder} (lock {}); wait for it to finish",
        path.display()
    )]
    Busy { path: PathBuf, holder: String },
    #[error("cannot take the lock {}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot take the lock: {0}")]
    Host(#[from] HostError),
}

impl Lock {
    /// The lock of the root that `files` manage (`/var/lib/timectl/lock`
    /// under it, reached inside the root).
    pub fn acquire(files: &Files) -> Result<Lock, LockError> {
        let host_path = Path::new(STATE_DIR).join("lock");
        let path = files.resolve(&host_path)?;
        let file = files.open_rw(&host_path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                let _ = locked.set_len(0);
                let _ = locked.rewind();
                let _ = writeln!(locked, "{}", std::process::id());
                Ok(Lock { _file: locked })
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                Err(LockError::Busy {
                    path,
                    holder: if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                })
            }
            Err((_, errno)) => Err(LockError::Io {
                path,
                cause: std::io::Error::from(errno),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path());
        let first = Lock::acquire(&files).unwrap();
        let err = Lock::acquire(&files).err().unwrap().to_string();
        assert!(err.contains("another timectl apply is running"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(Lock::acquire(&files).is_ok());
    }
}
