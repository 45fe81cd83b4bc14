//! The executable the embedded engine's unit runs: the timectl package's
//! own `/usr/bin/timectl` where the managed host has the package, otherwise
//! an installed copy of this very timectl. [`choose`] decides which from the
//! host (its package database and files); a copy is compared byte for byte
//! (no hashing of megabytes on every plan), and the plan's fingerprint uses
//! the installed file's identity (size, modification time, inode). A copy
//! left from before the package was installed is removed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    Action, Change, ChangeKind, Converge, Diff, DiffError, ObserveError, PlanContext, ResourceId,
    hash_of,
};
use crate::host::{Host, HostError, Mode, PackageState};

/// Where the timectl package (ci/build-packages.sh) installs its executable.
pub const PACKAGED_BINARY: &str = "/usr/bin/timectl";
/// The name of that package, in dpkg's and rpm's databases.
pub const PACKAGE_NAME: &str = "timectl";

/// Which timectl executable the engine's unit runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum EngineBinary {
    /// The host's timectl package's executable: nothing to install.
    Package { path: PathBuf, version: String },
    /// A copy of `source` (the running timectl) installed at `path`.
    Copy { path: PathBuf, source: PathBuf },
}

impl EngineBinary {
    /// The executable on the managed host (the unit's ExecStart).
    pub fn path(&self) -> &Path {
        match self {
            EngineBinary::Package { path, .. } | EngineBinary::Copy { path, .. } => path,
        }
    }

    /// One line for the plan: which executable, and why.
    pub fn describe(&self) -> String {
        match self {
            EngineBinary::Package { path, version } => format!(
                "{} from the {PACKAGE_NAME} package {version} (no copy is installed)",
                path.display()
            ),
            EngineBinary::Copy { path, source } => {
                format!("{}, a copy of {}", path.display(), source.display())
            }
        }
    }
}

/// Decide which executable the engine runs on `host`: the packaged one when
/// the host's package database has the timectl package owning
/// [`PACKAGED_BINARY`] and the file is there, and, on a live host, when this
/// timectl *is* that file (an administrator running another build, say
/// `./target/release/timectl`, gets that build installed as a copy, as
/// without a package). In an offline root the running timectl is never the
/// root's, so the root's package decides alone. Returns the choice and, when
/// a package exists but is not used, a note saying why.
pub fn choose(host: &Host, copy_to: &Path) -> (EngineBinary, Option<String>) {
    let copy = EngineBinary::Copy {
        path: copy_to.to_path_buf(),
        source: host.timectl_binary.clone(),
    };
    let packaged = Path::new(PACKAGED_BINARY);
    let version = match host.packages.query(PACKAGE_NAME) {
        Ok(PackageState::Installed(version)) => version,
        // No package, or no database to ask (a bare example tree): a copy.
        _ => return (copy, None),
    };
    let unused = |why: String| {
        Some(format!(
            "the {PACKAGE_NAME} package {version} is installed, but {why}: the engine runs a copy of this timectl at {}",
            copy_to.display()
        ))
    };
    match host.packages.owns(PACKAGE_NAME, packaged) {
        Ok(true) => {}
        Ok(false) => return (copy, unused(format!("it does not own {PACKAGED_BINARY}"))),
        Err(e) => return (copy, unused(format!("its files could not be listed ({e})"))),
    }
    let installed = match host.files.stat(packaged) {
        Ok(Some(meta)) if meta.is_file() => meta,
        Ok(_) => return (copy, unused(format!("{PACKAGED_BINARY} is missing"))),
        Err(e) => {
            return (
                copy,
                unused(format!("{PACKAGED_BINARY} cannot be read ({e})")),
            );
        }
    };
    if host.mode == Mode::Live {
        let running = std::fs::metadata(&host.timectl_binary);
        let same = running
            .as_ref()
            .is_ok_and(|m| m.dev() == installed.dev() && m.ino() == installed.ino());
        if !same {
            return (
                copy,
                unused(format!(
                    "this is {}, not {PACKAGED_BINARY}",
                    host.timectl_binary.display()
                )),
            );
        }
    }
    (
        EngineBinary::Package {
            path: packaged.to_path_buf(),
            version,
        },
        None,
    )
}

#[derive(Debug, Clone)]
pub struct BinaryResource {
    /// Where it is installed on the host (`/usr/local/libexec/timectl/timectl`).
    pub path: PathBuf,
    /// The real path of the file to copy (the running timectl); None: the
    /// file must not exist (a copy the packaged executable replaced).
    pub source: Option<PathBuf>,
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

/// The installed file and the one to copy, as seen.
pub struct BinarySeen {
    pub observation: BinaryObservation,
    /// Size and mode of the installed file.
    installed: Option<(u64, u32)>,
    /// The content to install, when a copy is wanted.
    source: Option<Vec<u8>>,
}

impl Converge for BinaryResource {
    type Observation = BinarySeen;

    fn id(&self) -> ResourceId {
        ResourceId::Binary(self.path.clone())
    }

    fn observe(&self, ctx: &PlanContext<'_>) -> Result<BinarySeen, ObserveError> {
        self.observe_on(ctx.host)
            .map_err(ObserveError::new(self.path.display().to_string()))
    }

    fn fingerprint(&self, seen: &BinarySeen) -> Option<String> {
        Some(hash_of(&seen.observation))
    }

    fn diff(&self, seen: &BinarySeen, _: &PlanContext<'_>) -> Result<Diff, DiffError> {
        Ok(Diff::from(self.changes(seen)))
    }
}

impl BinaryResource {
    fn observe_on(&self, host: &Host) -> Result<BinarySeen, HostError> {
        let source = match &self.source {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| HostError::io(path, "cannot read", e))?)
            }
            None => None,
        };
        let Some(meta) = host.files.stat(&self.path)? else {
            return Ok(BinarySeen {
                observation: BinaryObservation {
                    exists: false,
                    size: 0,
                    mtime_ns: 0,
                    inode: 0,
                    same_as_source: false,
                },
                installed: None,
                source,
            });
        };
        let same = match &source {
            Some(source) => {
                meta.len() == source.len() as u64
                    && host
                        .files
                        .read(&self.path)?
                        .is_some_and(|installed| installed.content == *source)
            }
            None => false,
        };
        Ok(BinarySeen {
            observation: BinaryObservation {
                exists: true,
                size: meta.len(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                inode: meta.ino(),
                same_as_source: same,
            },
            installed: Some((meta.len(), meta.mode() & 0o7777)),
            source,
        })
    }

    fn changes(&self, seen: &BinarySeen) -> Vec<Change> {
        let shown = self.path.display();
        let (Some(source_path), Some(source)) = (&self.source, &seen.source) else {
            // The copy must go.
            return (seen.installed.iter())
                .map(|(size, _)| {
                    self.change(
                        ChangeKind::Remove,
                        format!("remove {shown} ({size} bytes)"),
                        format!("{}; this copy is no longer used", self.purpose),
                        Action::RemoveFile {
                            path: self.path.clone(),
                        },
                    )
                })
                .collect();
        };
        let action = Action::InstallBinary {
            source: source_path.clone(),
            path: self.path.clone(),
            size: source.len() as u64,
        };
        match seen.installed {
            None => vec![self.change(
                ChangeKind::Add,
                format!("install {shown} ({}, {} bytes)", self.label, source.len()),
                format!("{}; it is missing", self.purpose),
                action,
            )],
            Some((size, mode)) if !seen.observation.same_as_source || mode != 0o755 => {
                vec![self.change(
                    ChangeKind::Change,
                    format!("update {shown} to {} ({} bytes)", self.label, source.len()),
                    format!(
                        "{}; the installed copy ({size} bytes, mode {mode:04o}) is not this {}",
                        self.purpose, self.label
                    ),
                    action,
                )]
            }
            Some(_) => Vec::new(),
        }
    }
}
