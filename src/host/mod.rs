//! The real backends that observe and change a host: files under a root,
//! systemd units, packages, the firewall, and commands. Nothing here knows
//! about plans or NTP; resources drive these.
//!
//! A [`Host`] is either *live* (the running system: systemd over D-Bus,
//! apt/dnf, firewalld/nftables) or *offline* (`--root DIR`: an image or
//! chroot, where enablement is unit symlinks and nothing runs), chosen once
//! and used through the same traits by everything above.

pub mod bus;
pub mod command;
pub mod files;
pub mod firewall;
pub mod memory;
pub mod packages;
pub mod systemd;
pub mod units_offline;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use files::{FileState, Files};

/// A failure to observe or change something on the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{0}")]
    Message(String),
    #[error("{what} {}: {cause}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Not allowed as this user; plan says so instead of failing.
    #[error("permission denied: {0}")]
    Permission(String),
    /// The backend does not exist here (no systemd, no package database).
    #[error("not available: {0}")]
    Unavailable(String),
    /// A symlink under an offline root whose target does not resolve inside
    /// the root: nothing is read or changed through it.
    #[error(
        "{} is a symlink to {}, which does not resolve inside the root {}: symlinks under --root are followed inside it as in a chroot, never out of it; fix or remove the link",
        link.display(),
        target.display(),
        root.display()
    )]
    OutsideRoot {
        /// The link, as a path on the managed host (`/etc`).
        link: PathBuf,
        target: PathBuf,
        root: PathBuf,
    },
}

impl HostError {
    pub fn msg(text: impl Into<String>) -> HostError {
        HostError::Message(text.into())
    }

    pub fn io(path: &Path, what: &'static str, source: std::io::Error) -> HostError {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            return HostError::Permission(format!("{what} {}", path.display()));
        }
        HostError::Io {
            what,
            path: path.to_path_buf(),
            cause: source,
        }
    }
}

/// Live host or offline root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Live,
    Offline,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Live => "live",
            Mode::Offline => "offline",
        })
    }
}

/// Boot-time state of a unit, as `systemctl is-enabled` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enablement {
    Enabled,
    Disabled,
    Masked,
    /// No [Install] section: started by others only.
    Static,
    /// Another name of an enabled unit, or enabled through another unit.
    Indirect,
    /// No unit file.
    NotFound,
    Other(String),
}

impl Enablement {
    pub fn from_systemd(state: &str) -> Enablement {
        match state {
            "enabled" | "enabled-runtime" | "linked" | "linked-runtime" | "alias" => {
                Enablement::Enabled
            }
            "disabled" => Enablement::Disabled,
            "masked" | "masked-runtime" => Enablement::Masked,
            "static" => Enablement::Static,
            "indirect" | "generated" | "transient" => Enablement::Indirect,
            "" | "not-found" => Enablement::NotFound,
            other => Enablement::Other(other.to_string()),
        }
    }

    pub fn is_enabled(&self) -> bool {
        matches!(self, Enablement::Enabled)
    }
}

impl fmt::Display for Enablement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Enablement::Enabled => f.write_str("enabled"),
            Enablement::Disabled => f.write_str("disabled"),
            Enablement::Masked => f.write_str("masked"),
            Enablement::Static => f.write_str("static"),
            Enablement::Indirect => f.write_str("indirect"),
            Enablement::NotFound => f.write_str("not-found"),
            Enablement::Other(s) => f.write_str(s),
        }
    }
}

/// Run-time state of a unit (ActiveState), live hosts only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activity {
    Active,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    Reloading,
    Other(String),
}

impl Activity {
    pub fn from_systemd(state: &str) -> Activity {
        match state {
            "active" => Activity::Active,
            "inactive" => Activity::Inactive,
            "failed" => Activity::Failed,
            "activating" => Activity::Activating,
            "deactivating" => Activity::Deactivating,
            "reloading" => Activity::Reloading,
            other => Activity::Other(other.to_string()),
        }
    }

    /// Running or about to be: what "is it running?" means to a plan.
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            Activity::Active | Activity::Activating | Activity::Reloading
        )
    }
}

impl fmt::Display for Activity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activity::Active => f.write_str("active"),
            Activity::Inactive => f.write_str("inactive"),
            Activity::Failed => f.write_str("failed"),
            Activity::Activating => f.write_str("activating"),
            Activity::Deactivating => f.write_str("deactivating"),
            Activity::Reloading => f.write_str("reloading"),
            Activity::Other(s) => f.write_str(s),
        }
    }
}

/// What a service manager knows of one unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub name: String,
    pub enablement: Enablement,
    /// None where nothing runs (offline roots) or it could not be seen.
    pub activity: Option<Activity>,
}

impl UnitStatus {
    pub fn exists(&self) -> bool {
        self.enablement != Enablement::NotFound
    }
}

/// systemd, live (D-Bus) or offline (unit symlinks).
pub trait ServiceManager {
    /// "systemd (D-Bus)", "systemd unit files under ROOT".
    fn describe(&self) -> String;
    /// Whether units can be started and stopped here (false offline).
    fn runs_units(&self) -> bool;
    fn status(&self, unit: &str) -> Result<UnitStatus, HostError>;
    fn start(&self, unit: &str) -> Result<(), HostError>;
    fn stop(&self, unit: &str) -> Result<(), HostError>;
    fn restart(&self, unit: &str) -> Result<(), HostError>;
    fn enable(&self, unit: &str) -> Result<(), HostError>;
    fn disable(&self, unit: &str) -> Result<(), HostError>;
    fn mask(&self, unit: &str) -> Result<(), HostError>;
    fn unmask(&self, unit: &str) -> Result<(), HostError>;
    /// Re-read unit files after they changed.
    fn reload(&self) -> Result<(), HostError>;
}

/// Installed state of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "version")]
pub enum PackageState {
    Installed(String),
    Absent,
}

/// What installing some packages would also do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallPreview {
    /// Packages that would be installed (including dependencies).
    pub installs: Vec<String>,
    /// Packages that would be removed (conflicts).
    pub removes: Vec<String>,
    /// Why the package manager could not be asked (not root, no network):
    /// the plan says so instead of promising nothing else changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchecked: Option<String>,
}

/// dpkg/apt or rpm/dnf.
pub trait PackageManager {
    fn describe(&self) -> String;
    fn query(&self, name: &str) -> Result<PackageState, HostError>;
    /// Whether the installed package `name` owns the file `path` (a path
    /// on the managed host), by the package database's file lists.
    fn owns(&self, name: &str, path: &Path) -> Result<bool, HostError>;
    /// What installing these would change, without changing anything.
    fn preview_install(&self, names: &[String]) -> Result<InstallPreview, HostError>;
    fn install(&self, names: &[String]) -> Result<(), HostError>;
    fn remove(&self, names: &[String]) -> Result<(), HostError>;
}

/// A port timectl manages in the host firewall: NTP (UDP 123), and NTS-KE
/// (TCP 4460, RFC 8915) when the host serves NTS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Port {
    /// UDP 123.
    Ntp,
    /// TCP 4460.
    NtsKe,
}

impl Port {
    pub const ALL: [Port; 2] = [Port::Ntp, Port::NtsKe];

    /// `udp` or `tcp`.
    pub fn protocol(self) -> &'static str {
        match self {
            Port::Ntp => "udp",
            Port::NtsKe => "tcp",
        }
    }

    pub fn number(self) -> u16 {
        match self {
            Port::Ntp => 123,
            Port::NtsKe => 4460,
        }
    }

    /// "UDP 123", "TCP 4460", for plans.
    pub fn label(self) -> String {
        format!("{} {}", self.protocol().to_uppercase(), self.number())
    }

    /// "udp/123", "tcp/4460", for details.
    pub fn short(self) -> String {
        format!("{}/{}", self.protocol(), self.number())
    }
}

/// Whether a port (UDP 123 unless said otherwise) is open, and the firewall
/// that decides it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallState {
    /// The port is open (the name is from when UDP 123 was the only one;
    /// kept so that fingerprints of existing plans do not change).
    pub ntp_open: bool,
    /// The rule or setting that opens it, as the backend shows it.
    pub detail: String,
    /// Whether what opens it was added by timectl (its nftables rule, or
    /// the firewalld service or port it recorded adding), so that timectl
    /// may close it again when the desired state no longer wants it.
    #[serde(default)]
    pub opened_by_timectl: bool,
}

/// firewalld or nftables, live or offline. Each port is observed, opened
/// and closed on its own; the methods without a port are about UDP 123.
pub trait Firewall {
    fn describe(&self) -> String;
    /// The exact rule timectl adds for `port`, for the plan.
    fn rule_for(&self, port: Port) -> String;
    fn observe_port(&self, port: Port) -> Result<FirewallState, HostError>;
    fn open_port(&self, port: Port) -> Result<(), HostError>;
    /// Remove what timectl added for `port` (only that).
    fn close_port(&self, port: Port) -> Result<(), HostError>;

    /// The exact rule timectl adds for UDP 123.
    fn rule(&self) -> String {
        self.rule_for(Port::Ntp)
    }
    fn observe(&self) -> Result<FirewallState, HostError> {
        self.observe_port(Port::Ntp)
    }
    fn open(&self) -> Result<(), HostError> {
        self.open_port(Port::Ntp)
    }
    fn close(&self) -> Result<(), HostError> {
        self.close_port(Port::Ntp)
    }
}

/// timectl's state directory on a managed host: the apply lock, run
/// journals, backups, the firewall record.
pub const STATE_DIR: &str = "/var/lib/timectl";

/// The running executable (for installing the embedded engine).
fn own_executable() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

/// What a live host has when systemd cannot be reached (no system bus, PID 1
/// is not systemd): every question is answered "not available" with the
/// reason, so plans say what they could not see and apply refuses.
struct NoServiceManager {
    why: String,
}

impl NoServiceManager {
    fn unavailable<T>(&self, what: &str) -> Result<T, HostError> {
        Err(HostError::Unavailable(format!("{what}: {}", self.why)))
    }
}

impl ServiceManager for NoServiceManager {
    fn describe(&self) -> String {
        format!("systemd (not available: {})", self.why)
    }
    fn runs_units(&self) -> bool {
        true
    }
    fn status(&self, unit: &str) -> Result<UnitStatus, HostError> {
        let _ = unit;
        self.unavailable("cannot ask systemd")
    }
    fn start(&self, unit: &str) -> Result<(), HostError> {
        self.unavailable(&format!("cannot start {unit}"))
    }
    fn stop(&self, unit: &str) -> Result<(), HostError> {
        self.unavailable(&format!("cannot stop {unit}"))
    }
    fn restart(&self, unit: &str) -> Result<(), HostError> {
        self.unavailable(&format!("cannot restart {unit}"))
    }
    fn enable(&self, unit: &str) -> Result<(), HostError> {
        self.unavailable(&format!("cannot enable {unit}"))
    }
    fn disable(&self, unit: &str) -> Result<(), HostError> {
        self.unavailable(&format!("cannot disable {unit}"))
    }
    fn mask(&self, unit: &str) -> Result<(), HostError> {
        self.unavailable(&format!("cannot mask {unit}"))
    }
    fn unmask(&self, unit: &str) -> Result<(), HostError> {
        self.unavailable(&format!("cannot unmask {unit}"))
    }
    fn reload(&self) -> Result<(), HostError> {
        self.unavailable("cannot reload systemd")
    }
}

/// The host being planned or changed.
pub struct Host {
    pub root: PathBuf,
    pub mode: Mode,
    /// Whether file owners can be set (running as root). An unprivileged
    /// image build leaves owners as they are instead of failing.
    pub manage_owners: bool,
    /// The timectl executable that the embedded engine's unit runs a copy
    /// of: this process's own, unless a caller (a test) says otherwise.
    pub timectl_binary: PathBuf,
    pub files: Files,
    pub services: Box<dyn ServiceManager>,
    pub packages: Box<dyn PackageManager>,
    /// The firewall backend when the host brings its own (the in-memory
    /// host); None: chosen from the root's files and the desired state.
    pub firewall: Option<Box<dyn Fn() -> Box<dyn Firewall>>>,
    /// What answers for the daemon's synchronisation when the host brings
    /// its own (the in-memory host); None: the chosen daemon is asked.
    pub time_probe: Option<Box<dyn crate::sync::TimeProbe>>,
}

impl Host {
    /// An offline root: files under `root`, enablement as unit symlinks,
    /// packages read from the root's database, nothing started.
    pub fn offline(root: &Path) -> Host {
        let files = Files::new(root);
        Host {
            root: root.to_path_buf(),
            mode: Mode::Offline,
            manage_owners: nix::unistd::geteuid().is_root(),
            timectl_binary: own_executable(),
            services: Box::new(units_offline::OfflineUnits::new(files.clone())),
            packages: packages::for_root(&files, Mode::Offline),
            files,
            firewall: None,
            time_probe: None,
        }
    }

    /// The running host: files under /, systemd over D-Bus, the package
    /// manager, the live firewall.
    pub fn live() -> Host {
        let root = PathBuf::from("/");
        let services: Box<dyn ServiceManager> = match systemd::Systemd::connect() {
            Ok(systemd) => Box::new(systemd),
            Err(HostError::Unavailable(why)) => Box::new(NoServiceManager { why }),
            Err(e) => Box::new(NoServiceManager { why: e.to_string() }),
        };
        let files = Files::new(&root);
        Host {
            packages: packages::for_root(&files, Mode::Live),
            files,
            services,
            mode: Mode::Live,
            manage_owners: nix::unistd::geteuid().is_root(),
            timectl_binary: own_executable(),
            root,
            firewall: None,
            time_probe: None,
        }
    }

    /// The firewall backend to manage UDP 123 with, as the desired state
    /// prefers it; None when there is none to manage.
    pub fn firewall_backend(
        &self,
        preference: crate::spec::FirewallMode,
    ) -> Result<Option<Box<dyn Firewall>>, HostError> {
        match &self.firewall {
            _ if preference == crate::spec::FirewallMode::None => Ok(None),
            Some(own) => Ok(Some(own())),
            None => firewall::select(&self.files, self.mode, preference),
        }
    }

    /// Numeric owner for a file: the named one when owners are managed,
    /// otherwise whoever owns it now (or this process, for a new file).
    pub fn owner_ids(
        &self,
        path: &Path,
        owner: &str,
        group: &str,
    ) -> Result<(u32, u32), HostError> {
        if self.manage_owners {
            return Ok((self.files.uid_of(owner)?, self.files.gid_of(group)?));
        }
        Ok(match self.files.read(path)? {
            Some(state) => (state.uid, state.gid),
            None => (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        })
    }

    /// The root's timectl state directory (locks, journals, backups), as a
    /// real path for messages; files in it are reached through
    /// [`Host::files`] and [`STATE_DIR`].
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR.trim_start_matches('/'))
    }
}
