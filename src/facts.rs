//! What kind of host this is: the distribution family from
//! `<root>/etc/os-release`, and from it every distribution-specific name a
//! provider needs (config paths, unit names, package names, drift and key
//! files). Reading facts never changes anything.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Distribution family: decides paths and names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Rhel,
    Debian,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Rhel => "rhel",
            Family::Debian => "debian",
        })
    }
}

/// The time daemons timectl knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Daemon {
    Embedded,
    Chrony,
    Ntpd,
    Timesyncd,
    Openntpd,
}

impl Daemon {
    pub const ALL: [Daemon; 5] = [
        Daemon::Embedded,
        Daemon::Chrony,
        Daemon::Ntpd,
        Daemon::Timesyncd,
        Daemon::Openntpd,
    ];
}

/// Where a daemon's pieces live on this distribution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DaemonPaths {
    pub daemon: Daemon,
    /// Human name, e.g. "chronyd" or "ntpd (ntpsec)".
    pub label: String,
    /// The systemd unit that runs it.
    pub unit: String,
    /// Other names the same unit is known by (Alias=), checked too.
    pub unit_aliases: Vec<String>,
    /// The package that provides it; None when it ships with another
    /// package (timesyncd inside systemd on RHEL) or is timectl itself.
    pub package: Option<String>,
    pub config: PathBuf,
    pub driftfile: PathBuf,
    pub keyfile: Option<PathBuf>,
    /// For ntpd: whether it is ntpsec (which has NTS) rather than classic ntp.
    pub ntpsec: bool,
}

/// Facts about the host (or offline root) being planned.
#[derive(Clone, Debug, Serialize)]
pub struct Facts {
    /// `ID` from os-release (rhel, rocky, debian, ...).
    pub os_id: String,
    /// `VERSION_ID` from os-release, if any.
    pub version_id: Option<String>,
    /// `PRETTY_NAME`, for messages.
    pub pretty_name: String,
    pub family: Family,
    /// Major version number, if VERSION_ID has one.
    pub major: Option<u32>,
}

/// Why facts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("cannot read {}: {cause} (is this a root filesystem of a Linux distribution?)", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error(
        "unsupported distribution {id:?}{like} in {}: timectl knows the RHEL family (rhel, centos, rocky, almalinux, ol, fedora) and the Debian family (debian, ubuntu)",
        path.display(),
        like = if id_like.is_empty() { String::new() } else { format!(" (ID_LIKE={id_like:?})") }
    )]
    Unsupported {
        path: PathBuf,
        id: String,
        id_like: String,
    },
}

const RHEL_IDS: [&str; 6] = ["rhel", "centos", "rocky", "almalinux", "ol", "fedora"];
const DEBIAN_IDS: [&str; 2] = ["debian", "ubuntu"];

impl Facts {
    /// Read `<root>/etc/os-release` (or `<root>/usr/lib/os-release`).
    pub fn detect(root: &Path) -> Result<Facts, FactsError> {
        Facts::detect_in(&crate::host::Files::new(root))
    }

    /// [`Facts::detect`] through a root's [`Files`](crate::host::Files):
    /// inside the root when it is an offline one.
    pub fn detect_in(files: &crate::host::Files) -> Result<Facts, FactsError> {
        let primary = Path::new("/etc/os-release");
        let fallback = Path::new("/usr/lib/os-release");
        let found = match files.read(primary)? {
            Some(state) => Some((primary, state)),
            None => files.read(fallback)?.map(|state| (fallback, state)),
        };
        let Some((path, state)) = found else {
            return Err(FactsError::Read {
                path: files.resolve(primary)?,
                cause: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        };
        Facts::from_os_release(
            &files.resolve(path)?,
            &String::from_utf8_lossy(&state.content),
        )
    }

    /// Parse os-release text (`path` only for messages).
    pub fn from_os_release(path: &Path, text: &str) -> Result<Facts, FactsError> {
        let fields = parse_os_release(text);
        let id = fields.get("ID").cloned().unwrap_or_default().to_lowercase();
        let id_like = fields
            .get("ID_LIKE")
            .cloned()
            .unwrap_or_default()
            .to_lowercase();
        let family = if RHEL_IDS.contains(&id.as_str()) {
            Family::Rhel
        } else if DEBIAN_IDS.contains(&id.as_str()) {
            Family::Debian
        } else {
            // Derivatives declare their parent in ID_LIKE ("rhel fedora",
            // "ubuntu debian").
            let like: Vec<&str> = id_like.split_whitespace().collect();
            if like.iter().any(|l| RHEL_IDS.contains(l)) {
                Family::Rhel
            } else if like.iter().any(|l| DEBIAN_IDS.contains(l)) {
                Family::Debian
            } else {
                return Err(FactsError::Unsupported {
                    path: path.to_path_buf(),
                    id: if id.is_empty() { "(no ID)".into() } else { id },
                    id_like,
                });
            }
        };
        let version_id = fields.get("VERSION_ID").cloned();
        let major = version_id
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok());
        let pretty_name = fields
            .get("PRETTY_NAME")
            .cloned()
            .unwrap_or_else(|| format!("{id} {}", version_id.clone().unwrap_or_default()));
        Ok(Facts {
            os_id: id,
            version_id,
            pretty_name,
            family,
            major,
        })
    }

    /// VERSION_ID as a number (Ubuntu's "22.04" is 22.04), 0 when absent.
    fn version_number(&self) -> f64 {
        self.version_id
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Whether "ntpd" here means ntpsec (Debian 11+, Ubuntu 23.04+, Fedora)
    /// rather than classic ntp (RHEL/CentOS 7, older Debian and Ubuntu).
    pub fn ntpd_is_ntpsec(&self) -> bool {
        let version = self.version_number();
        match self.os_id.as_str() {
            "fedora" => true,
            "debian" => self.major.is_none_or(|m| m >= 11),
            "ubuntu" => version >= 23.04,
            _ => false,
        }
    }

    /// Whether systemd-timesyncd is a package of its own here (Debian 11+,
    /// Ubuntu 20.04+) rather than part of systemd.
    pub fn timesyncd_is_a_package(&self) -> bool {
        let version = self.version_number();
        match (self.family, self.os_id.as_str()) {
            (Family::Rhel, _) => false,
            (Family::Debian, "ubuntu") => version >= 20.04,
            (Family::Debian, _) => self.major.is_none_or(|m| m >= 11),
        }
    }

    /// Where each daemon lives on this distribution.
    pub fn daemon(&self, daemon: Daemon) -> DaemonPaths {
        let mut paths = self.layout(daemon).paths(daemon);
        // A separate package on Debian 11+ and Ubuntu 20.04+; part of
        // systemd before. RHEL 9 does not ship it at all (the timesyncd
        // provider refuses the RHEL family).
        if daemon == Daemon::Timesyncd && !self.timesyncd_is_a_package() {
            paths.package = None;
        }
        paths
    }

    /// The entry of the daemon table that applies on this distribution.
    fn layout(&self, daemon: Daemon) -> &'static Layout {
        let debian = self.family == Family::Debian;
        match daemon {
            Daemon::Chrony if debian => &CHRONY_DEBIAN,
            Daemon::Chrony => &CHRONY_RHEL,
            Daemon::Ntpd if debian && self.ntpd_is_ntpsec() => &NTPSEC_DEBIAN,
            Daemon::Ntpd if debian => &NTP_DEBIAN,
            Daemon::Ntpd if self.ntpd_is_ntpsec() => &NTPSEC_RHEL,
            Daemon::Ntpd => &NTP_RHEL,
            Daemon::Timesyncd => &TIMESYNCD,
            Daemon::Openntpd if debian => &OPENNTPD_DEBIAN,
            Daemon::Openntpd => &OPENNTPD_RHEL,
            Daemon::Embedded => &EMBEDDED,
        }
    }

    /// Other time daemons that conflict with `chosen`. On RHEL, openntpd's
    /// unit name collides with ntpd's, so it is left out there: both would
    /// name the same unit.
    pub fn conflicting(&self, chosen: Daemon) -> Vec<DaemonPaths> {
        Daemon::ALL
            .into_iter()
            .filter(|d| *d != chosen)
            .filter(|d| !(self.family == Family::Rhel && *d == Daemon::Openntpd))
            .map(|d| self.daemon(d))
            .collect()
    }
}

/// One row of the daemon table: [`DaemonPaths`] as constant data.
struct Layout {
    label: &'static str,
    unit: &'static str,
    unit_aliases: &'static [&'static str],
    package: Option<&'static str>,
    config: &'static str,
    driftfile: &'static str,
    keyfile: Option<&'static str>,
    ntpsec: bool,
}

impl Layout {
    fn paths(&self, daemon: Daemon) -> DaemonPaths {
        DaemonPaths {
            daemon,
            label: self.label.into(),
            unit: self.unit.into(),
            unit_aliases: self.unit_aliases.iter().map(|a| a.to_string()).collect(),
            package: self.package.map(String::from),
            config: PathBuf::from(self.config),
            driftfile: PathBuf::from(self.driftfile),
            keyfile: self.keyfile.map(PathBuf::from),
            ntpsec: self.ntpsec,
        }
    }
}

const CHRONY_DEBIAN: Layout = Layout {
    label: "chronyd",
    unit: "chrony.service",
    unit_aliases: &["chronyd.service"],
    package: Some("chrony"),
    config: "/etc/chrony/chrony.conf",
    driftfile: "/var/lib/chrony/chrony.drift",
    keyfile: Some("/etc/chrony/chrony.keys"),
    ntpsec: false,
};

const CHRONY_RHEL: Layout = Layout {
    label: "chronyd",
    unit: "chronyd.service",
    unit_aliases: &[],
    package: Some("chrony"),
    config: "/etc/chrony.conf",
    driftfile: "/var/lib/chrony/drift",
    keyfile: Some("/etc/chrony.keys"),
    ntpsec: false,
};

const NTPSEC_DEBIAN: Layout = Layout {
    label: "ntpd (ntpsec)",
    unit: "ntpsec.service",
    unit_aliases: &["ntp.service", "ntpd.service"],
    package: Some("ntpsec"),
    config: "/etc/ntpsec/ntp.conf",
    driftfile: "/var/lib/ntpsec/ntp.drift",
    keyfile: Some("/etc/ntpsec/ntp.keys"),
    ntpsec: true,
};

const NTP_DEBIAN: Layout = Layout {
    label: "ntpd",
    unit: "ntp.service",
    unit_aliases: &[],
    package: Some("ntp"),
    config: "/etc/ntp.conf",
    driftfile: "/var/lib/ntp/ntp.drift",
    keyfile: Some("/etc/ntp.keys"),
    ntpsec: false,
};

/// ntpsec on the RHEL family (Fedora): classic ntp's paths.
const NTPSEC_RHEL: Layout = Layout {
    label: "ntpd (ntpsec)",
    package: Some("ntpsec"),
    ntpsec: true,
    ..NTP_RHEL
};

const NTP_RHEL: Layout = Layout {
    label: "ntpd",
    unit: "ntpd.service",
    unit_aliases: &[],
    package: Some("ntp"),
    config: "/etc/ntp.conf",
    driftfile: "/var/lib/ntp/drift",
    keyfile: Some("/etc/ntp/keys"),
    ntpsec: false,
};

/// The package is dropped where timesyncd is part of systemd
/// ([`Facts::timesyncd_is_a_package`]).
const TIMESYNCD: Layout = Layout {
    label: "systemd-timesyncd",
    unit: "systemd-timesyncd.service",
    unit_aliases: &[],
    package: Some("systemd-timesyncd"),
    // timectl's drop-in: the package's own timesyncd.conf stays as shipped
    // (a dpkg conffile).
    config: "/etc/systemd/timesyncd.conf.d/timectl.conf",
    driftfile: "/var/lib/systemd/timesync/clock",
    keyfile: None,
    ntpsec: false,
};

const OPENNTPD_DEBIAN: Layout = Layout {
    label: "openntpd",
    unit: "openntpd.service",
    unit_aliases: &[],
    package: Some("openntpd"),
    config: "/etc/openntpd/ntpd.conf",
    driftfile: "/var/db/ntpd.drift",
    keyfile: None,
    ntpsec: false,
};

const OPENNTPD_RHEL: Layout = Layout {
    unit: "ntpd.service",
    config: "/etc/ntpd.conf",
    ..OPENNTPD_DEBIAN
};

const EMBEDDED: Layout = Layout {
    label: "timectl engine",
    unit: "timectl-engine.service",
    unit_aliases: &[],
    package: None,
    config: "/etc/timectl/engine.yaml",
    driftfile: "/var/lib/timectl-engine/drift",
    keyfile: None,
    ntpsec: false,
};

/// `KEY=value` lines, with optional single or double quotes around value.
fn parse_os_release(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            out.insert(key.trim().to_string(), unquoted.replace("\\\"", "\""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(text: &str) -> Result<Facts, FactsError> {
        Facts::from_os_release(Path::new("/r/etc/os-release"), text)
    }

    #[test]
    fn rhel_family_paths() {
        let f = facts("NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\nPRETTY_NAME=\"Rocky Linux 9.3 (Blue Onyx)\"\n").unwrap();
        assert_eq!(f.family, Family::Rhel);
        assert_eq!(f.major, Some(9));
        let chrony = f.daemon(Daemon::Chrony);
        assert_eq!(chrony.unit, "chronyd.service");
        assert_eq!(chrony.config, PathBuf::from("/etc/chrony.conf"));
        assert_eq!(chrony.driftfile, PathBuf::from("/var/lib/chrony/drift"));
        let ntpd = f.daemon(Daemon::Ntpd);
        assert_eq!(ntpd.unit, "ntpd.service");
        assert_eq!(ntpd.config, PathBuf::from("/etc/ntp.conf"));
        assert_eq!(ntpd.package.as_deref(), Some("ntp"));
        assert!(!ntpd.ntpsec);
    }

    #[test]
    fn debian_family_paths() {
        let f =
            facts("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n")
                .unwrap();
        assert_eq!(f.family, Family::Debian);
        let chrony = f.daemon(Daemon::Chrony);
        assert_eq!(chrony.unit, "chrony.service");
        assert_eq!(chrony.config, PathBuf::from("/etc/chrony/chrony.conf"));
        let ntpd = f.daemon(Daemon::Ntpd);
        assert_eq!(ntpd.unit, "ntpsec.service");
        assert_eq!(ntpd.config, PathBuf::from("/etc/ntpsec/ntp.conf"));
        assert_eq!(ntpd.package.as_deref(), Some("ntpsec"));
        assert!(ntpd.ntpsec);
    }

    #[test]
    fn old_debian_and_ubuntu_use_classic_ntp() {
        let buster = facts("ID=debian\nVERSION_ID=\"10\"\n").unwrap();
        assert_eq!(buster.daemon(Daemon::Ntpd).unit, "ntp.service");
        let jammy = facts("ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"22.04\"\n").unwrap();
        assert_eq!(
            jammy.daemon(Daemon::Ntpd).config,
            PathBuf::from("/etc/ntp.conf")
        );
        let noble = facts("ID=ubuntu\nVERSION_ID=\"24.04\"\n").unwrap();
        assert!(noble.daemon(Daemon::Ntpd).ntpsec);
    }

    #[test]
    fn derivatives_by_id_like() {
        let f = facts("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n").unwrap();
        assert_eq!(f.family, Family::Debian);
        let f =
            facts("ID=\"eurolinux\"\nID_LIKE=\"rhel fedora centos\"\nVERSION_ID=8.6\n").unwrap();
        assert_eq!(f.family, Family::Rhel);
    }

    #[test]
    fn unknown_distribution_names_what_was_found() {
        let err = facts("ID=alpine\nVERSION_ID=3.19\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"alpine\""), "{err}");
        assert!(err.contains("/r/etc/os-release"), "{err}");
        assert!(err.contains("RHEL family"), "{err}");
    }

    #[test]
    fn conflicting_daemons_exclude_the_chosen_one() {
        let f = facts("ID=debian\nVERSION_ID=12\n").unwrap();
        let units: Vec<String> = f
            .conflicting(Daemon::Chrony)
            .into_iter()
            .map(|d| d.unit)
            .collect();
        assert!(!units.contains(&"chrony.service".to_string()));
        assert!(units.contains(&"ntpsec.service".to_string()));
        assert!(units.contains(&"systemd-timesyncd.service".to_string()));
        assert!(units.contains(&"openntpd.service".to_string()));
        assert!(units.contains(&"timectl-engine.service".to_string()));
    }

    #[test]
    fn timesyncd_is_its_own_package_on_newer_debian_and_ubuntu() {
        let package = |text| facts(text).unwrap().daemon(Daemon::Timesyncd).package;
        let own = Some("systemd-timesyncd".to_string());
        assert_eq!(package("ID=debian\nVERSION_ID=12\n"), own);
        assert_eq!(package("ID=ubuntu\nVERSION_ID=\"22.04\"\n"), own);
        assert_eq!(package("ID=debian\nVERSION_ID=10\n"), None);
        assert_eq!(package("ID=ubuntu\nVERSION_ID=\"18.04\"\n"), None);
        assert_eq!(package("ID=rocky\nVERSION_ID=9.3\n"), None);
        let paths = facts("ID=debian\nVERSION_ID=12\n")
            .unwrap()
            .daemon(Daemon::Timesyncd);
        assert_eq!(paths.unit, "systemd-timesyncd.service");
        assert_eq!(
            paths.config,
            PathBuf::from("/etc/systemd/timesyncd.conf.d/timectl.conf")
        );
    }

    #[test]
    fn missing_os_release_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Facts::detect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("os-release"), "{err}");
    }
}
