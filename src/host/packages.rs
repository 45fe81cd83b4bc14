//! Package state from the root's own database: dpkg's status file on the
//! Debian family, the rpm database (through `rpm --root`) on the RHEL
//! family. Installing and removing go through apt-get / dnf on live hosts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::command;
use super::{HostError, InstallPreview, Mode, PackageManager, PackageState};

/// Pick the package backend that matches what the root contains.
pub fn for_root(root: &Path, mode: Mode) -> Box<dyn PackageManager> {
    if root.join("var/lib/dpkg/status").is_file() {
        Box::new(Dpkg {
            root: root.to_path_buf(),
            mode,
        })
    } else if root.join("var/lib/rpm").is_dir() || root.join("usr/lib/sysimage/rpm").is_dir() {
        Box::new(Rpm {
            root: root.to_path_buf(),
            mode,
        })
    } else {
        Box::new(NoDatabase {
            root: root.to_path_buf(),
        })
    }
}

/// Debian family: /var/lib/dpkg/status, apt-get.
pub struct Dpkg {
    root: PathBuf,
    mode: Mode,
}

/// One stanza of dpkg's status file.
fn dpkg_lookup(status: &str, name: &str) -> PackageState {
    for stanza in status.split("\n\n") {
        let mut package = None;
        let mut state = None;
        let mut version = None;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                package = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                state = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            }
        }
        if package == Some(name) {
            // "install ok installed"; "deinstall ok config-files" is a
            // removed package whose conffiles remain: not installed.
            if state.is_some_and(|s| s.ends_with(" installed")) {
                return PackageState::Installed(version.unwrap_or("").to_string());
            }
        }
    }
    PackageState::Absent
}

const APT_TIMEOUT: Duration = Duration::from_secs(600);

impl PackageManager for Dpkg {
    fn describe(&self) -> String {
        match self.mode {
            Mode::Live => "dpkg/apt-get".into(),
            Mode::Offline => format!("dpkg status under {}", self.root.display()),
        }
    }

    fn query(&self, name: &str) -> Result<PackageState, HostError> {
        let path = self.root.join("var/lib/dpkg/status");
        let text =
            std::fs::read_to_string(&path).map_err(|e| HostError::io(&path, "cannot read", e))?;
        Ok(dpkg_lookup(&text, name))
    }

    fn preview_install(&self, names: &[String]) -> Result<InstallPreview, HostError> {
        if self.mode == Mode::Offline {
            return Ok(InstallPreview {
                installs: names.to_vec(),
                removes: Vec::new(),
            });
        }
        let mut argv = vec!["apt-get", "-s", "-q", "install"];
        argv.extend(names.iter().map(String::as_str));
        let out = command::run_ok(&argv, &[("LC_ALL", "C")], APT_TIMEOUT)?;
        Ok(parse_apt_simulation(&out.stdout))
    }

    fn install(&self, names: &[String]) -> Result<(), HostError> {
        self.require_live("install")?;
        let mut argv = vec![
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confold",
            "-o",
            "Dpkg::Options::=--force-confdef",
        ];
        argv.extend(names.iter().map(String::as_str));
        command::run_ok(
            &argv,
            &[("DEBIAN_FRONTEND", "noninteractive"), ("LC_ALL", "C")],
            APT_TIMEOUT,
        )?;
        Ok(())
    }

    fn remove(&self, names: &[String]) -> Result<(), HostError> {
        self.require_live("remove")?;
        let mut argv = vec!["apt-get", "remove", "-y", "-q"];
        argv.extend(names.iter().map(String::as_str));
        command::run_ok(
            &argv,
            &[("DEBIAN_FRONTEND", "noninteractive"), ("LC_ALL", "C")],
            APT_TIMEOUT,
        )?;
        Ok(())
    }
}

impl Dpkg {
    fn require_live(&self, what: &str) -> Result<(), HostError> {
        if self.mode == Mode::Offline {
            return Err(HostError::Unavailable(format!(
                "cannot {what} packages in an offline root ({}); install them when building the image",
                self.root.display()
            )));
        }
        Ok(())
    }
}

/// `apt-get -s install` lines: "Inst chrony (4.3-2 ...)" and "Remv ntpsec [..]".
pub fn parse_apt_simulation(text: &str) -> InstallPreview {
    let mut preview = InstallPreview::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Inst"), Some(name)) => preview.installs.push(name.to_string()),
            (Some("Remv"), Some(name)) => preview.removes.push(name.to_string()),
            _ => {}
        }
    }
    preview
}

/// RHEL family: the rpm database, dnf (or yum).
pub struct Rpm {
    root: PathBuf,
    mode: Mode,
}

impl PackageManager for Rpm {
    fn describe(&self) -> String {
        match self.mode {
            Mode::Live => "rpm/dnf".into(),
            Mode::Offline => format!("rpm database under {}", self.root.display()),
        }
    }

    fn query(&self, name: &str) -> Result<PackageState, HostError> {
        let root = self.root.display().to_string();
        let out = command::run(
            &[
                "rpm",
                "--root",
                &root,
                "-q",
                "--qf",
                "%{VERSION}-%{RELEASE}\n",
                name,
            ],
            &[("LC_ALL", "C")],
            Duration::from_secs(60),
        )?;
        if out.success() {
            Ok(PackageState::Installed(
                out.stdout.lines().next().unwrap_or("").to_string(),
            ))
        } else if out.stdout.contains("is not installed") {
            Ok(PackageState::Absent)
        } else {
            Err(HostError::msg(format!(
                "rpm -q {name} failed: {}",
                out.tail(3)
            )))
        }
    }

    fn preview_install(&self, names: &[String]) -> Result<InstallPreview, HostError> {
        Ok(InstallPreview {
            installs: names.to_vec(),
            removes: Vec::new(),
        })
    }

    fn install(&self, names: &[String]) -> Result<(), HostError> {
        if self.mode == Mode::Offline {
            return Err(HostError::Unavailable(format!(
                "cannot install packages in an offline root ({}); install them when building the image",
                self.root.display()
            )));
        }
        let tool = if Path::new("/usr/bin/dnf").exists() {
            "dnf"
        } else {
            "yum"
        };
        let mut argv = vec![tool, "install", "-y", "-q"];
        argv.extend(names.iter().map(String::as_str));
        command::run_ok(&argv, &[("LC_ALL", "C")], APT_TIMEOUT)?;
        Ok(())
    }

    fn remove(&self, names: &[String]) -> Result<(), HostError> {
        if self.mode == Mode::Offline {
            return Err(HostError::Unavailable(format!(
                "cannot remove packages in an offline root ({})",
                self.root.display()
            )));
        }
        let tool = if Path::new("/usr/bin/dnf").exists() {
            "dnf"
        } else {
            "yum"
        };
        let mut argv = vec![tool, "remove", "-y", "-q"];
        argv.extend(names.iter().map(String::as_str));
        command::run_ok(&argv, &[("LC_ALL", "C")], APT_TIMEOUT)?;
        Ok(())
    }
}

/// A root without any package database (a bare example tree): package
/// state is unknown, and the plan says so instead of guessing.
pub struct NoDatabase {
    root: PathBuf,
}

impl PackageManager for NoDatabase {
    fn describe(&self) -> String {
        format!("no package database under {}", self.root.display())
    }

    fn query(&self, _name: &str) -> Result<PackageState, HostError> {
        Err(HostError::Unavailable(format!(
            "no package database under {} (neither var/lib/dpkg/status nor an rpm database)",
            self.root.display()
        )))
    }

    fn preview_install(&self, names: &[String]) -> Result<InstallPreview, HostError> {
        Ok(InstallPreview {
            installs: names.to_vec(),
            removes: Vec::new(),
        })
    }

    fn install(&self, _names: &[String]) -> Result<(), HostError> {
        Err(HostError::Unavailable(self.describe()))
    }

    fn remove(&self, _names: &[String]) -> Result<(), HostError> {
        Err(HostError::Unavailable(self.describe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: chrony\nStatus: install ok installed\nPriority: optional\nVersion: 4.3-2+deb12u1\n\nPackage: ntpsec\nStatus: deinstall ok config-files\nVersion: 1.2.2+dfsg1-1+deb12u1\n\nPackage: ntp\nStatus: install ok installed\nVersion: 1:4.2.8p15+dfsg-2~1.2.2+dfsg1-1+deb12u1\n";

    #[test]
    fn dpkg_status_lookup() {
        assert_eq!(
            dpkg_lookup(STATUS, "chrony"),
            PackageState::Installed("4.3-2+deb12u1".into())
        );
        // Removed but with config files left: not installed.
        assert_eq!(dpkg_lookup(STATUS, "ntpsec"), PackageState::Absent);
        assert_eq!(dpkg_lookup(STATUS, "openntpd"), PackageState::Absent);
        // Prefix of another name does not match.
        assert_eq!(dpkg_lookup(STATUS, "chron"), PackageState::Absent);
    }

    #[test]
    fn backend_follows_the_root() {
        let dir = tempfile::tempdir().unwrap();
        assert!(for_root(dir.path(), Mode::Offline).query("chrony").is_err());
        std::fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(dir.path().join("var/lib/dpkg/status"), STATUS).unwrap();
        let pm = for_root(dir.path(), Mode::Offline);
        assert!(matches!(
            pm.query("chrony").unwrap(),
            PackageState::Installed(_)
        ));
        assert!(pm.install(&["chrony".into()]).is_err());
    }

    #[test]
    fn apt_simulation_shows_conflicts() {
        let text = "NOTE: This is only a simulation!\nRemv ntpsec [1.2.2+dfsg1-1+deb12u1]\nInst chrony (4.3-2+deb12u1 Debian:12.7/stable [amd64])\nConf chrony (4.3-2+deb12u1 Debian:12.7/stable [amd64])\n";
        let p = parse_apt_simulation(text);
        assert_eq!(p.installs, vec!["chrony"]);
        assert_eq!(p.removes, vec!["ntpsec"]);
    }
}
