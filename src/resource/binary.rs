//! An executable installed as a copy of another file: the embedded engine's
//! unit runs an installed copy of this very timectl. Compared byte for byte
//! (no hashing of megabytes on every plan); the plan's fingerprint uses the
//! installed file's identity (size, modification time, inode).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::Serialize;

use super::{Action, Change, ChangeKind};
use crate::host::{Host, HostError};

#[derive(Debug, Clone)]
pub struct BinaryResource {
    /// Where it is installed on the host (`/usr/local/libexec/timectl/timectl`).
    pub path: PathBuf,
    /// The real path of the file to copy (the running timectl).
    pub source: PathBuf,
    /// What it is, for reasons: "timectl 0.1.0".
    pub label: String,
    pub purpose: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BinaryObservation {
    pub exists: bool,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    pub same_as_source: bool,
}

impl BinaryResource {
    pub fn plan(&self, host: &Host) -> Result<(BinaryObservation, Vec<Change>), HostError> {
        let source = std::fs::read(&self.source)
            .map_err(|e| HostError::io(&self.source, "cannot read", e))?;
        let (observation, current) = match host.files.stat(&self.path)? {
            Some(meta) => {
                let same = meta.len() == source.len() as u64
                    && host
                        .files
                        .read(&self.path)?
                        .is_some_and(|installed| installed.content == source);
                (
                    BinaryObservation {
                        exists: true,
                        size: meta.len(),
                        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000
                            + i128::from(meta.mtime_nsec()),
                        inode: meta.ino(),
                        same_as_source: same,
                    },
                    Some((meta.len(), meta.mode() & 0o7777)),
                )
            }
            None => (
                BinaryObservation {
                    exists: false,
                    size: 0,
                    mtime_ns: 0,
                    inode: 0,
                    same_as_source: false,
                },
                None,
            ),
        };
        let action = Action::InstallBinary {
            source: self.source.clone(),
            path: self.path.clone(),
            size: source.len() as u64,
        };
        let resource = format!("binary:{}", self.path.display());
        let shown = self.path.display();
        let changes = match current {
            None => vec![Change {
                resource,
                kind: ChangeKind::Add,
                summary: format!("install {shown} ({}, {} bytes)", self.label, source.len()),
                reason: format!("{}; it is missing", self.purpose),
                diff: None,
                action,
            }],
            Some((size, mode)) if !observation.same_as_source || mode != 0o755 => vec![Change {
                resource,
                kind: ChangeKind::Change,
                summary: format!("update {shown} to {} ({} bytes)", self.label, source.len()),
                reason: format!(
                    "{}; the installed copy ({size} bytes, mode {mode:04o}) is not this {}",
                    self.purpose, self.label
                ),
                diff: None,
                action,
            }],
            Some(_) => Vec::new(),
        };
        Ok((observation, changes))
    }
}
