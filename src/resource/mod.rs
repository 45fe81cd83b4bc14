//! Resources: one kind of thing on a host each (a file, a package, a
//! service, the firewall, systemd's view of the unit files), all with one
//! contract, [`Converge`]: observe the host, diff the desired state against
//! what was observed into [`Change`]s, each carrying an [`Action`] whose
//! execution returns the actions that undo it. Every resource has a typed
//! [`ResourceId`] and declares its incoming [`Edge`]s (a config file
//! restarts its daemon, a unit file reloads systemd); `plan` orders by them.
//! Resources know nothing about NTP; providers decide what they should be.

pub mod binary;
pub mod file;
pub mod firewall;
pub mod id;
pub mod package;
pub mod service;
pub mod systemd_units;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::facts::DaemonPaths;
use crate::host::{Host, HostError, ServiceManager};
use crate::spec::ConflictPolicy;

pub use binary::BinaryResource;
pub use file::{FileContent, FileResource};
pub use firewall::FirewallResource;
pub use id::{Edge, EdgeKind, ResourceId};
pub use package::PackageResource;
pub use service::{ServiceResource, ServiceRole};
pub use systemd_units::SystemdUnitsResource;

/// One desired thing.
#[derive(Debug, Clone)]
pub enum Resource {
    File(FileResource),
    Binary(BinaryResource),
    Package(PackageResource),
    Service(ServiceResource),
    Firewall(FirewallResource),
    SystemdUnits(SystemdUnitsResource),
}

impl Resource {
    /// Its typed address: written `file:/etc/chrony.conf`,
    /// `service:chronyd.service`.
    pub fn id(&self) -> ResourceId {
        match self {
            Resource::File(r) => r.id(),
            Resource::Binary(r) => r.id(),
            Resource::Package(r) => r.id(),
            Resource::Service(r) => r.id(),
            Resource::Firewall(r) => r.id(),
            Resource::SystemdUnits(r) => r.id(),
        }
    }

    /// The edges that end at this resource.
    pub fn edges(&self) -> Vec<Edge> {
        match self {
            Resource::File(r) => r.edges(),
            Resource::Binary(r) => r.edges(),
            Resource::Package(r) => r.edges(),
            Resource::Service(r) => r.edges(),
            Resource::Firewall(r) => r.edges(),
            Resource::SystemdUnits(r) => r.edges(),
        }
    }
}

/// What a resource's observation and diff may know beyond the host: the
/// resources that change earlier in this plan (the sources of its edges)
/// and the chosen daemon.
pub struct PlanContext<'a> {
    pub host: &'a Host,
    /// Resources with at least one change earlier in this plan.
    pub changed: &'a BTreeSet<ResourceId>,
    /// The daemon that will own the clock.
    pub daemon: &'a DaemonPaths,
    pub conflicts: ConflictPolicy,
    /// The firewall backend preference (the one place plan and apply read
    /// it from is [`crate::provider::firewall_mode`]).
    pub firewall: crate::spec::FirewallMode,
}

impl PlanContext<'_> {
    /// Whether any of `ids` changes earlier in this plan; the first that
    /// does.
    pub fn first_changed<'i>(&self, ids: &'i [ResourceId]) -> Option<&'i ResourceId> {
        ids.iter().find(|id| self.changed.contains(id))
    }
}

/// A resource's changes, and what the user should know about it.
#[derive(Debug, Default)]
pub struct Diff {
    pub changes: Vec<Change>,
    pub notes: Vec<String>,
}

impl From<Vec<Change>> for Diff {
    fn from(changes: Vec<Change>) -> Diff {
        Diff {
            changes,
            notes: Vec::new(),
        }
    }
}

/// A resource that could not be observed: `subject` names it for a
/// blocker ("cannot see SUBJECT: why"), `context` for an error.
#[derive(Debug)]
pub struct ObserveError {
    pub subject: String,
    pub context: String,
    pub cause: HostError,
}

impl ObserveError {
    pub fn new(subject: impl Into<String>) -> impl FnOnce(HostError) -> ObserveError {
        let subject = subject.into();
        move |cause| ObserveError {
            context: format!("observing {subject}"),
            subject,
            cause,
        }
    }
}

/// Why a diff could not be made.
#[derive(Debug)]
pub enum DiffError {
    Host {
        context: String,
        cause: HostError,
    },
    /// The desired state forbids the change it would need
    /// (`conflicts: fail`).
    Conflict(String),
}

impl DiffError {
    pub fn host(context: impl Into<String>) -> impl FnOnce(HostError) -> DiffError {
        let context = context.into();
        move |cause| DiffError::Host { context, cause }
    }
}

/// The contract every resource kind implements (mgmt's `CheckApply`,
/// split in two): observation is kept apart from the diff so the plan can
/// fingerprint what it saw; the changes carry [`Action`]s, which carry out
/// and undo themselves.
pub trait Converge {
    /// What is there now.
    type Observation;
    fn id(&self) -> ResourceId;
    /// The edges that end at this resource (`to == self.id()`).
    fn edges(&self) -> Vec<Edge> {
        Vec::new()
    }
    fn observe(&self, ctx: &PlanContext<'_>) -> Result<Self::Observation, ObserveError>;
    /// A hash of the observation for the plan's fingerprint; None when
    /// nothing was there to see (no firewall backend).
    fn fingerprint(&self, observed: &Self::Observation) -> Option<String>;
    fn diff(&self, observed: &Self::Observation, ctx: &PlanContext<'_>) -> Result<Diff, DiffError>;
    /// A change of this resource (without a file diff).
    fn change(&self, kind: ChangeKind, summary: String, reason: String, action: Action) -> Change {
        Change {
            resource: self.id(),
            kind,
            summary,
            reason,
            diff: None,
            action,
        }
    }
}

/// The SHA-256 of a value's JSON, for fingerprints.
pub fn hash_of<T: Serialize>(value: &T) -> String {
    file::sha256_hex(&serde_json::to_vec(value).unwrap_or_default())
}

/// How a change counts in the summary line ("1 to add, 2 to change, 1 to
/// remove").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Add,
    Change,
    Remove,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The resource it belongs to (`file:/etc/chrony.conf`).
    pub resource: ResourceId,
    pub kind: ChangeKind,
    /// What it does, imperative: "stop ntpd.service".
    pub summary: String,
    /// Why: "ntpd conflicts with chronyd: only one daemon may own the clock".
    pub reason: String,
    /// Unified diff for files (`(sensitive)` for secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    pub action: Action,
}

/// A file's content, mode and owner as written by an action.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWrite {
    pub path: PathBuf,
    pub content: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    /// Never shown: key files.
    pub sensitive: bool,
    /// Checks the new content before it replaces the file (see
    /// `FileResource::validate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<Vec<String>>,
}

impl std::fmt::Debug for FileWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWrite")
            .field("path", &self.path)
            .field(
                "content",
                &if self.sensitive {
                    "(sensitive)".to_string()
                } else {
                    format!("{} bytes", self.content.len())
                },
            )
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("owner", &self.owner)
            .field("group", &self.group)
            .finish()
    }
}

/// What to do to a host: plain data, so plans can be saved and journals
/// written; the same type describes undo steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    WriteFile(FileWrite),
    SetFileMeta {
        path: PathBuf,
        mode: u32,
        owner: String,
        group: String,
    },
    /// Put a file back as it was before this run.
    RestoreFile {
        path: PathBuf,
        from: Restore,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    RemoveFile {
        path: PathBuf,
    },
    /// Remove a directory this run created, if it is empty (undo only).
    RemoveEmptyDir {
        path: PathBuf,
    },
    /// Copy an executable (the running timectl) into place, mode 0755.
    InstallBinary {
        source: PathBuf,
        path: PathBuf,
        /// Size when planned: a different file by apply time is refused.
        size: u64,
    },
    InstallPackages {
        names: Vec<String>,
        /// What the package manager said it would remove on the way.
        also_removes: Vec<String>,
    },
    RemovePackages {
        names: Vec<String>,
    },
    EnableUnit {
        unit: String,
    },
    DisableUnit {
        unit: String,
    },
    MaskUnit {
        unit: String,
    },
    UnmaskUnit {
        unit: String,
    },
    StartUnit {
        unit: String,
        /// Restart instead when it is already running by the time this
        /// step runs (a package install may have started it with its
        /// default config).
        restart_if_running: bool,
    },
    StopUnit {
        unit: String,
    },
    RestartUnit {
        unit: String,
    },
    ReloadUnits,
    /// Open UDP 123.
    OpenFirewall,
    /// Close the UDP 123 timectl opened.
    CloseFirewall,
    /// Open TCP 4460 (NTS-KE).
    OpenNtsKe,
    /// Close the TCP 4460 timectl opened.
    CloseNtsKe,
}

/// Where a restored file's previous state comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "path", rename_all = "snake_case")]
pub enum Restore {
    /// Content from this backup copy, then mode and owner.
    Backup(PathBuf),
    /// Only mode and owner changed.
    MetaOnly,
    /// The file did not exist: remove it.
    Absent,
}

/// What an action needs besides the host: where to keep backups.
pub struct ApplyContext<'a> {
    pub host: &'a Host,
    /// `/var/lib/timectl/backups/<run-id>`, a path under the host's root
    /// (reached through `host.files`, like every other file).
    pub backup_dir: PathBuf,
    pub firewall: Option<&'a dyn crate::host::Firewall>,
}

impl ApplyContext<'_> {
    fn firewall(&self) -> Result<&dyn crate::host::Firewall, HostError> {
        self.firewall
            .ok_or_else(|| HostError::msg("no firewall backend for this host"))
    }
}

impl Action {
    /// Carry the action out; return the actions that undo it, in the order
    /// they must run: [`Action::prepare`], then [`Action::perform`].
    pub fn execute(&self, ctx: &ApplyContext<'_>) -> Result<Vec<Action>, HostError> {
        let undo = self.prepare(ctx)?;
        self.perform(ctx)?;
        Ok(undo)
    }

    /// Everything before the change itself: back up what it replaces and
    /// return the actions that undo it. They are right whether or not the
    /// change then happens (restoring a file from its backup, disabling a
    /// unit that was disabled before), so a run killed in the middle of a
    /// step can still be rolled back from its journal. Changes nothing on
    /// the host but timectl's own backups.
    pub fn prepare(&self, ctx: &ApplyContext<'_>) -> Result<Vec<Action>, HostError> {
        match self {
            Action::WriteFile(FileWrite { path, .. })
            | Action::RemoveFile { path }
            | Action::InstallBinary { path, .. } => backup(ctx, path),
            Action::SetFileMeta { path, .. } => undo_meta(ctx.host, path),
            Action::RestoreFile { .. } | Action::RemoveEmptyDir { .. } => Ok(Vec::new()),
            Action::InstallPackages {
                names,
                also_removes,
            } => Ok(undo_install(names, also_removes)),
            Action::RemovePackages { names } => Ok(undo_install(&[], names)),
            Action::EnableUnit { .. }
            | Action::DisableUnit { .. }
            | Action::StartUnit { .. }
            | Action::StopUnit { .. } => self.undo_unit_state(ctx.host.services.as_ref()),
            Action::MaskUnit { unit } => Ok(vec![Action::UnmaskUnit { unit: unit.clone() }]),
            Action::UnmaskUnit { unit } => Ok(vec![Action::MaskUnit { unit: unit.clone() }]),
            Action::RestartUnit { unit } => Ok(vec![Action::RestartUnit { unit: unit.clone() }]),
            Action::ReloadUnits => Ok(vec![Action::ReloadUnits]),
            Action::OpenFirewall => Ok(vec![Action::CloseFirewall]),
            Action::CloseFirewall => Ok(vec![Action::OpenFirewall]),
            Action::OpenNtsKe => Ok(vec![Action::CloseNtsKe]),
            Action::CloseNtsKe => Ok(vec![Action::OpenNtsKe]),
        }
    }

    /// The undo of a unit's enable, disable, start or stop: whatever puts
    /// back the state it has now.
    fn undo_unit_state(&self, svc: &dyn ServiceManager) -> Result<Vec<Action>, HostError> {
        let enabled = |unit: &str| Ok::<_, HostError>(svc.status(unit)?.enablement.is_enabled());
        let unit_of = |unit: &String| unit.clone();
        Ok(match self {
            Action::EnableUnit { unit } if !enabled(unit)? => {
                vec![Action::DisableUnit {
                    unit: unit_of(unit),
                }]
            }
            Action::DisableUnit { unit } if enabled(unit)? => {
                vec![Action::EnableUnit {
                    unit: unit_of(unit),
                }]
            }
            Action::StartUnit {
                unit,
                restart_if_running,
            } => match (is_running(svc, unit)?, restart_if_running) {
                // The old process with the old config is gone; undo
                // restarts it once the old config is back.
                (true, true) => vec![Action::RestartUnit {
                    unit: unit_of(unit),
                }],
                (true, false) => vec![],
                (false, _) => vec![Action::StopUnit {
                    unit: unit_of(unit),
                }],
            },
            Action::StopUnit { unit } if is_running(svc, unit)? => vec![Action::StartUnit {
                unit: unit_of(unit),
                restart_if_running: false,
            }],
            _ => vec![],
        })
    }

    /// The change itself.
    pub fn perform(&self, ctx: &ApplyContext<'_>) -> Result<(), HostError> {
        let host = ctx.host;
        match self {
            Action::WriteFile(w) => write_file(host, w),
            Action::SetFileMeta {
                path,
                mode,
                owner,
                group,
            } => {
                let (uid, gid) = host.owner_ids(path, owner, group)?;
                host.files.set_meta(path, *mode, uid, gid)
            }
            Action::RestoreFile {
                path,
                from,
                mode,
                uid,
                gid,
            } => restore_file(host, path, from, (*mode, *uid, *gid)),
            Action::RemoveEmptyDir { path } => host.files.remove_empty_dir(path),
            Action::RemoveFile { path } => host.files.remove(path),
            Action::InstallBinary { source, path, size } => {
                install_binary(host, source, path, *size)
            }
            Action::InstallPackages { names, .. } => host.packages.install(names),
            Action::RemovePackages { names } => host.packages.remove(names),
            Action::OpenFirewall => ctx.firewall()?.open(),
            Action::CloseFirewall => ctx.firewall()?.close(),
            Action::OpenNtsKe => ctx.firewall()?.open_port(crate::host::Port::NtsKe),
            Action::CloseNtsKe => ctx.firewall()?.close_port(crate::host::Port::NtsKe),
            unit_action => unit_action.perform_on_units(host.services.as_ref()),
        }
    }

    /// The unit and systemd actions.
    fn perform_on_units(&self, svc: &dyn ServiceManager) -> Result<(), HostError> {
        match self {
            Action::EnableUnit { unit } => svc.enable(unit),
            Action::DisableUnit { unit } => svc.disable(unit),
            Action::MaskUnit { unit } => svc.mask(unit),
            Action::UnmaskUnit { unit } => svc.unmask(unit),
            Action::StartUnit {
                unit,
                restart_if_running,
            } => match (is_running(svc, unit)?, restart_if_running) {
                (true, true) => svc.restart(unit),
                (true, false) => Ok(()),
                (false, _) => svc.start(unit),
            },
            Action::StopUnit { unit } => svc.stop(unit),
            Action::RestartUnit { unit } => svc.restart(unit),
            Action::ReloadUnits => svc.reload(),
            other => Err(HostError::msg(format!(
                "{} is not a unit action",
                other.describe()
            ))),
        }
    }

    /// The host files this action writes or removes (for the journal, and
    /// to find temporary files a killed run left next to them).
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Action::WriteFile(w) => vec![w.path.clone()],
            Action::SetFileMeta { path, .. }
            | Action::RestoreFile { path, .. }
            | Action::RemoveFile { path }
            | Action::InstallBinary { path, .. } => vec![path.clone()],
            _ => Vec::new(),
        }
    }

    /// What puts the host back if this action fails half-way, asked before
    /// it runs. A start or restart that fails leaves the unit failed, or
    /// retrying under its `Restart=` (with a config the rollback is about
    /// to take away): a unit that was not running is stopped; one that was
    /// running is restarted once the rollback has put its files back.
    /// Everything else either happens or does not.
    pub fn undo_if_it_fails(&self, ctx: &ApplyContext<'_>) -> Vec<Action> {
        match self {
            Action::StartUnit { unit, .. } | Action::RestartUnit { unit } => {
                let running = ctx
                    .host
                    .services
                    .status(unit)
                    .ok()
                    .and_then(|s| s.activity)
                    .is_some_and(|a| a.is_running());
                vec![if running {
                    Action::RestartUnit { unit: unit.clone() }
                } else {
                    Action::StopUnit { unit: unit.clone() }
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Only changes files (no unit, package or firewall operation).
    pub fn changes_only_files(&self) -> bool {
        matches!(
            self,
            Action::WriteFile(_)
                | Action::SetFileMeta { .. }
                | Action::RestoreFile { .. }
                | Action::RemoveFile { .. }
                | Action::RemoveEmptyDir { .. }
                | Action::InstallBinary { .. }
        )
    }

    /// A unit or package operation: one that a pending systemd reload or
    /// daemon restart must come before during a rollback.
    pub fn reads_unit_files(&self) -> bool {
        !self.changes_only_files() && !self.is_firewall()
    }

    /// Opens or closes a port in the firewall.
    pub fn is_firewall(&self) -> bool {
        matches!(
            self,
            Action::OpenFirewall | Action::CloseFirewall | Action::OpenNtsKe | Action::CloseNtsKe
        )
    }

    /// Makes systemd or a daemon read files again: as an undo it must wait
    /// until the files of older steps are restored.
    pub fn rereads_files(&self) -> bool {
        matches!(self, Action::ReloadUnits | Action::RestartUnit { .. })
    }

    /// One line for reports: "restore /etc/chrony.conf from backup".
    pub fn describe(&self) -> String {
        match self {
            Action::WriteFile(w) => format!("write {}", w.path.display()),
            Action::SetFileMeta {
                path,
                mode,
                owner,
                group,
            } => {
                format!("set {} to {mode:04o} {owner}:{group}", path.display())
            }
            Action::RestoreFile { path, from, .. } => match from {
                Restore::MetaOnly => format!("restore mode and owner of {}", path.display()),
                Restore::Backup(_) => format!("restore {} from backup", path.display()),
                Restore::Absent => format!("remove {} (it did not exist before)", path.display()),
            },
            Action::RemoveFile { path } => format!("remove {}", path.display()),
            Action::RemoveEmptyDir { path } => {
                format!("remove the directory {} if empty", path.display())
            }
            Action::InstallBinary { path, .. } => format!("install {}", path.display()),
            Action::InstallPackages { names, .. } => format!("install {}", names.join(" ")),
            Action::RemovePackages { names } => format!("remove package {}", names.join(" ")),
            Action::EnableUnit { unit } => format!("enable {unit}"),
            Action::DisableUnit { unit } => format!("disable {unit}"),
            Action::MaskUnit { unit } => format!("mask {unit}"),
            Action::UnmaskUnit { unit } => format!("unmask {unit}"),
            Action::StartUnit { unit, .. } => format!("start {unit}"),
            Action::StopUnit { unit } => format!("stop {unit}"),
            Action::RestartUnit { unit } => format!("restart {unit}"),
            Action::ReloadUnits => "reload systemd unit files".to_string(),
            Action::OpenFirewall => "open UDP 123 in the firewall".to_string(),
            Action::CloseFirewall => "close UDP 123 in the firewall".to_string(),
            Action::OpenNtsKe => "open TCP 4460 (NTS-KE) in the firewall".to_string(),
            Action::CloseNtsKe => "close TCP 4460 (NTS-KE) in the firewall".to_string(),
        }
    }
}

/// Run a file's validation command on its new version (`{}` is replaced by
/// the temporary file). A validator that is not installed is skipped: the
/// check is a safety net, not a requirement.
fn validate_file(command: Option<&Vec<String>>, path: &Path, tmp: &Path) -> Result<(), HostError> {
    let Some(command) = command else {
        return Ok(());
    };
    let tmp_text = tmp.display().to_string();
    let argv: Vec<String> = command.iter().map(|a| a.replace("{}", &tmp_text)).collect();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    match crate::host::command::run(
        &argv,
        &[("LC_ALL", "C")],
        std::time::Duration::from_secs(60),
    ) {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(HostError::msg(format!(
            "the new {} was rejected by `{}` and was not installed: {}",
            path.display(),
            command.join(" "),
            out.tail(3).replace(&tmp_text, &path.display().to_string())
        ))),
        Err(HostError::Unavailable(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copy a file into the run's backup directory before it is replaced, and
/// return how to put it back. A file that does not exist yet is undone by
/// removing it, and the directories its write will create with it.
fn backup(ctx: &ApplyContext<'_>, path: &Path) -> Result<Vec<Action>, HostError> {
    let Some(before) = ctx.host.files.read(path)? else {
        let mut undo = vec![Action::RestoreFile {
            path: path.to_path_buf(),
            from: Restore::Absent,
            mode: 0,
            uid: 0,
            gid: 0,
        }];
        // Deepest first.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == Path::new("/") || ctx.host.files.lstat(d)?.is_some() {
                break;
            }
            undo.push(Action::RemoveEmptyDir {
                path: d.to_path_buf(),
            });
            dir = d.parent();
        }
        return Ok(undo);
    };
    let relative = path.strip_prefix("/").unwrap_or(path);
    let copy = ctx.backup_dir.join(relative);
    // Plain bytes only: attributes and xattrs are not needed to restore and
    // some filesystems (overlayfs in containers) refuse them. Written like
    // every managed file (atomically, inside the root); backups may hold
    // key material: only their owner reads them.
    ctx.host.files.write_atomic(
        &copy,
        &before.content,
        0o600,
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )?;
    Ok(vec![Action::RestoreFile {
        path: path.to_path_buf(),
        from: Restore::Backup(copy),
        mode: before.mode,
        uid: before.uid,
        gid: before.gid,
    }])
}

fn is_running(svc: &dyn ServiceManager, unit: &str) -> Result<bool, HostError> {
    Ok(svc.status(unit)?.activity.is_some_and(|a| a.is_running()))
}

/// Undo of a package install: remove what it installs, put back what the
/// package manager removed on the way.
fn undo_install(installs: &[String], removes: &[String]) -> Vec<Action> {
    let mut undo = Vec::new();
    if !installs.is_empty() {
        undo.push(Action::RemovePackages {
            names: installs.to_vec(),
        });
    }
    if !removes.is_empty() {
        undo.push(Action::InstallPackages {
            names: removes.to_vec(),
            also_removes: Vec::new(),
        });
    }
    undo
}

/// Undo of a mode and owner change.
fn undo_meta(host: &Host, path: &Path) -> Result<Vec<Action>, HostError> {
    let before = host
        .files
        .read(path)?
        .ok_or_else(|| HostError::msg(format!("{} vanished", path.display())))?;
    Ok(vec![Action::RestoreFile {
        path: path.to_path_buf(),
        from: Restore::MetaOnly,
        mode: before.mode,
        uid: before.uid,
        gid: before.gid,
    }])
}

fn write_file(host: &Host, w: &FileWrite) -> Result<(), HostError> {
    let (uid, gid) = host.owner_ids(&w.path, &w.owner, &w.group)?;
    // The daemon's own parser checks the new file on live hosts; in an
    // offline root the host's tools do not apply.
    let validate = w
        .validate
        .as_ref()
        .filter(|_| host.mode == crate::host::Mode::Live);
    let check = |tmp: &Path| validate_file(validate, &w.path, tmp);
    host.files.write_atomic_checked(
        &w.path,
        w.content.as_bytes(),
        w.mode,
        uid,
        gid,
        Some(&check),
    )
}

fn restore_file(
    host: &Host,
    path: &Path,
    from: &Restore,
    (mode, uid, gid): (u32, u32, u32),
) -> Result<(), HostError> {
    match from {
        Restore::MetaOnly => host.files.set_meta(path, mode, uid, gid),
        Restore::Absent => host.files.remove(path),
        Restore::Backup(b) => {
            let content = host
                .files
                .read(b)?
                .ok_or_else(|| {
                    HostError::msg(format!(
                        "the backup {} of {} is missing",
                        b.display(),
                        path.display()
                    ))
                })?
                .content;
            host.files.write_atomic(path, &content, mode, uid, gid)
        }
    }
}

fn install_binary(host: &Host, source: &Path, path: &Path, size: u64) -> Result<(), HostError> {
    let content = std::fs::read(source).map_err(|e| HostError::io(source, "cannot read", e))?;
    if content.len() as u64 != size {
        return Err(HostError::msg(format!(
            "{} changed since the plan was made ({} bytes, planned {size})",
            source.display(),
            content.len()
        )));
    }
    let (uid, gid) = host.owner_ids(path, "root", "root")?;
    host.files.write_atomic(path, &content, 0o755, uid, gid)
}
