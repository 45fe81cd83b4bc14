//! Package state from the root's own database: dpkg's status file on the
//! Debian family, the rpm database (through `rpm --root`) on the RHEL
//! family. Installing and removing go through apt-get / dnf on live hosts.
//!
//! Live changes are non-interactive: apt-get runs with
//! `DEBIAN_FRONTEND=noninteractive`, `--force-confdef --force-confold` (a
//! config file the administrator changed is kept; timectl writes its own
//! after the install anyway) and waits for the dpkg lock instead of failing
//! at once; dnf runs with `-y`. What an install would also do is asked
//! first without changing anything (`apt-get -s install`, `dnf install
//! --assumeno`), so a plan shows, for example, that installing chrony on
//! Debian removes ntpsec: both provide `time-daemon` and conflict.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::command;
use super::{Files, HostError, InstallPreview, Mode, PackageManager, PackageState};

const DPKG_STATUS: &str = "/var/lib/dpkg/status";
const DPKG_INFO: &str = "/var/lib/dpkg/info";
const RPM_DBS: [&str; 2] = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"];

/// Pick the package backend that matches what the root contains.
pub fn for_root(files: &Files, mode: Mode) -> Box<dyn PackageManager> {
    let root = files.root().to_path_buf();
    let is_file = |p: &str| {
        files
            .stat(Path::new(p))
            .is_ok_and(|m| m.is_some_and(|m| m.is_file()))
    };
    let is_dir = |p: &str| files.is_dir(Path::new(p)).unwrap_or(false);
    if is_file(DPKG_STATUS) {
        Box::new(Dpkg {
            files: files.clone(),
            root,
            mode,
        })
    } else if RPM_DBS.iter().any(|d| is_dir(d)) {
        Box::new(Rpm {
            files: files.clone(),
            root,
            mode,
        })
    } else {
        Box::new(NoDatabase { root })
    }
}

/// Debian family: /var/lib/dpkg/status, apt-get.
pub struct Dpkg {
    files: Files,
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
/// apt-get waits this long for another package manager's lock.
const APT_LOCK_WAIT: &str = "DPkg::Lock::Timeout=120";
const APT_ENV: [(&str, &str); 3] = [
    ("DEBIAN_FRONTEND", "noninteractive"),
    ("LC_ALL", "C"),
    // needrestart (Ubuntu) would otherwise ask which services to restart.
    ("NEEDRESTART_MODE", "a"),
];

impl PackageManager for Dpkg {
    fn describe(&self) -> String {
        match self.mode {
            Mode::Live => "dpkg/apt-get".into(),
            Mode::Offline => format!("dpkg status under {}", self.root.display()),
        }
    }

    fn query(&self, name: &str) -> Result<PackageState, HostError> {
        let state = self.files.read(Path::new(DPKG_STATUS))?.ok_or_else(|| {
            HostError::msg(format!(
                "{} vanished",
                self.root
                    .join(DPKG_STATUS.trim_start_matches('/'))
                    .display()
            ))
        })?;
        Ok(dpkg_lookup(&String::from_utf8_lossy(&state.content), name))
    }

    fn owns(&self, name: &str, path: &Path) -> Result<bool, HostError> {
        // dpkg keeps each package's files in info/NAME.list (NAME:ARCH.list
        // for Multi-Arch: same packages), one absolute path a line.
        let wanted = path.to_string_lossy();
        for list in [
            format!("{DPKG_INFO}/{name}.list"),
            format!("{DPKG_INFO}/{name}:{}.list", std::env::consts::ARCH),
        ] {
            if let Some(state) = self.files.read(Path::new(&list))? {
                return Ok(String::from_utf8_lossy(&state.content)
                    .lines()
                    .any(|l| l == wanted));
            }
        }
        Ok(false)
    }

    fn preview_install(&self, names: &[String]) -> Result<InstallPreview, HostError> {
        if self.mode == Mode::Offline {
            return Ok(InstallPreview {
                installs: names.to_vec(),
                ..InstallPreview::default()
            });
        }
        // A simulation needs no privileges and changes nothing.
        let mut argv = vec!["apt-get", "-s", "-q", "--no-install-recommends", "install"];
        argv.extend(names.iter().map(String::as_str));
        match command::run_ok(&argv, &[("LC_ALL", "C")], APT_TIMEOUT) {
            Ok(out) => Ok(parse_apt_simulation(&out.stdout)),
            Err(e) => Ok(InstallPreview {
                installs: names.to_vec(),
                removes: Vec::new(),
                unchecked: Some(e.to_string()),
            }),
        }
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
            "-o",
            APT_LOCK_WAIT,
        ];
        argv.extend(names.iter().map(String::as_str));
        command::run_ok(&argv, &APT_ENV, APT_TIMEOUT).map_err(permission_hint)?;
        Ok(())
    }

    fn remove(&self, names: &[String]) -> Result<(), HostError> {
        self.require_live("remove")?;
        // remove, not purge: the package's config files stay, so a later
        // reinstall (a rollback) finds them as they were.
        let mut argv = vec!["apt-get", "remove", "-y", "-q", "-o", APT_LOCK_WAIT];
        argv.extend(names.iter().map(String::as_str));
        command::run_ok(&argv, &APT_ENV, APT_TIMEOUT).map_err(permission_hint)?;
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

/// A package tool run by a user who may not change packages says so in its
/// own words; make that a permission problem.
fn permission_hint(e: HostError) -> HostError {
    match e {
        HostError::Message(m)
            if m.contains("are you root?")
                || m.contains("Permission denied")
                || m.contains("This command has to be run") =>
        {
            HostError::Permission(m)
        }
        other => other,
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
    files: Files,
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
        // rpm --root opens the database by its path joined under the root:
        // refuse when a symlink would take that lookup out of the root.
        for db in RPM_DBS {
            self.files.check_host_view(Path::new(db), "rpm --root")?;
        }
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

    fn owns(&self, name: &str, path: &Path) -> Result<bool, HostError> {
        for db in RPM_DBS {
            self.files.check_host_view(Path::new(db), "rpm --root")?;
        }
        let root = self.root.display().to_string();
        let path = path.display().to_string();
        let out = command::run(
            &["rpm", "--root", &root, "-qf", "--qf", "%{NAME}\n", &path],
            &[("LC_ALL", "C")],
            Duration::from_secs(60),
        )?;
        // Not owned by any package: exit 1 and "not owned" on stdout.
        Ok(out.success() && out.stdout.lines().any(|l| l.trim() == name))
    }

    fn preview_install(&self, names: &[String]) -> Result<InstallPreview, HostError> {
        if self.mode == Mode::Offline {
            return Ok(InstallPreview {
                installs: names.to_vec(),
                ..InstallPreview::default()
            });
        }
        // dnf asks before it changes anything; --assumeno answers no, so
        // this prints the transaction and exits non-zero.
        let mut argv = vec![dnf_tool(), "install", "--assumeno"];
        argv.extend(names.iter().map(String::as_str));
        let out = command::run(&argv, &[("LC_ALL", "C")], APT_TIMEOUT)?;
        let text = format!("{}\n{}", out.stdout, out.stderr);
        if let Some(problem) = text
            .lines()
            .position(|l| l.trim_start().starts_with("Problem"))
        {
            let lines: Vec<&str> = text.lines().skip(problem).take(4).collect();
            return Err(HostError::msg(format!(
                "{} cannot install {}: {}",
                argv[0],
                names.join(" "),
                lines.join(" ")
            )));
        }
        let preview = parse_dnf_transaction(&text);
        if preview.installs.is_empty() && !out.success() && !text.contains("Operation aborted") {
            // Not root, no repositories reachable: say so in the plan.
            return Ok(InstallPreview {
                installs: names.to_vec(),
                removes: Vec::new(),
                unchecked: Some(format!(
                    "{} install --assumeno failed: {}",
                    argv[0],
                    out.tail(2)
                )),
            });
        }
        Ok(preview)
    }

    fn install(&self, names: &[String]) -> Result<(), HostError> {
        if self.mode == Mode::Offline {
            return Err(HostError::Unavailable(format!(
                "cannot install packages in an offline root ({}); install them when building the image",
                self.root.display()
            )));
        }
        let mut argv = vec![dnf_tool(), "install", "-y", "-q"];
        argv.extend(names.iter().map(String::as_str));
        command::run_ok(&argv, &[("LC_ALL", "C")], APT_TIMEOUT).map_err(permission_hint)?;
        Ok(())
    }

    fn remove(&self, names: &[String]) -> Result<(), HostError> {
        if self.mode == Mode::Offline {
            return Err(HostError::Unavailable(format!(
                "cannot remove packages in an offline root ({})",
                self.root.display()
            )));
        }
        let mut argv = vec![dnf_tool(), "remove", "-y", "-q"];
        argv.extend(names.iter().map(String::as_str));
        command::run_ok(&argv, &[("LC_ALL", "C")], APT_TIMEOUT).map_err(permission_hint)?;
        Ok(())
    }
}

/// dnf where it exists (RHEL 8+, Fedora), else yum (RHEL 7).
fn dnf_tool() -> &'static str {
    if Path::new("/usr/bin/dnf").exists() {
        "dnf"
    } else {
        "yum"
    }
}

/// The package names in a dnf/yum transaction summary, by section:
/// "Installing:", "Installing dependencies:", "Upgrading:" go to installs,
/// "Removing:", "Removing dependent packages:" and the like to removes.
/// Package rows start with one space; long names wrap their details onto
/// an indented next line.
pub fn parse_dnf_transaction(text: &str) -> InstallPreview {
    #[derive(PartialEq)]
    enum Section {
        None,
        Install,
        Remove,
    }
    let mut preview = InstallPreview::default();
    let mut section = Section::None;
    for line in text.lines() {
        if !line.starts_with(' ') {
            let header = line.trim_end();
            section = if header.starts_with("Installing")
                || header.starts_with("Upgrading")
                || header.starts_with("Reinstalling")
                || header.starts_with("Downgrading")
            {
                Section::Install
            } else if header.starts_with("Removing") || header.starts_with("Obsoleting") {
                Section::Remove
            } else {
                Section::None
            };
            continue;
        }
        if section == Section::None || line.starts_with("  ") {
            continue;
        }
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        match section {
            Section::Install => preview.installs.push(name.to_string()),
            Section::Remove => preview.removes.push(name.to_string()),
            Section::None => {}
        }
    }
    preview
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

    fn owns(&self, name: &str, _path: &Path) -> Result<bool, HostError> {
        self.query(name).map(|_| false)
    }

    fn preview_install(&self, names: &[String]) -> Result<InstallPreview, HostError> {
        Ok(InstallPreview {
            installs: names.to_vec(),
            ..InstallPreview::default()
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
        let files = Files::new(dir.path());
        assert!(for_root(&files, Mode::Offline).query("chrony").is_err());
        std::fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(dir.path().join("var/lib/dpkg/status"), STATUS).unwrap();
        let pm = for_root(&files, Mode::Offline);
        assert!(matches!(
            pm.query("chrony").unwrap(),
            PackageState::Installed(_)
        ));
        assert!(pm.install(&["chrony".into()]).is_err());
    }

    #[test]
    fn dpkg_file_lists_say_which_package_owns_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path());
        let info = dir.path().join("var/lib/dpkg/info");
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(dir.path().join("var/lib/dpkg/status"), STATUS).unwrap();
        std::fs::write(
            info.join("chrony.list"),
            "/.\n/usr/sbin\n/usr/sbin/chronyd\n",
        )
        .unwrap();
        let pm = for_root(&files, Mode::Offline);
        assert!(pm.owns("chrony", Path::new("/usr/sbin/chronyd")).unwrap());
        // A directory prefix or another file is not ownership of the file.
        assert!(!pm.owns("chrony", Path::new("/usr/sbin/chrony")).unwrap());
        assert!(!pm.owns("chrony", Path::new("/usr/bin/chronyc")).unwrap());
        assert!(!pm.owns("ntp", Path::new("/usr/sbin/chronyd")).unwrap());
        // No database at all: unknown, not "no".
        let bare = tempfile::tempdir().unwrap();
        assert!(
            for_root(&Files::new(bare.path()), Mode::Offline)
                .owns("chrony", Path::new("/usr/sbin/chronyd"))
                .is_err()
        );
    }

    #[test]
    fn dnf_transaction_shows_installs_and_removals() {
        let text = "Last metadata expiration check: 0:00:01 ago.\nDependencies resolved.\n================================================================================\n Package           Architecture    Version                 Repository      Size\n================================================================================\nInstalling:\n chrony            x86_64          4.3-1.el9               baseos         318 k\nInstalling dependencies:\n a-very-long-package-name-that-wraps\n                   x86_64          1.0-1.el9               baseos          30 k\nRemoving:\n ntp               x86_64          4.2.8p15-1.el9          @epel          1.4 M\nRemoving dependent packages:\n ntpstat           noarch          0.6-1.el9               @epel           12 k\n\nTransaction Summary\n================================================================================\nInstall  2 Packages\nRemove   2 Packages\n\nOperation aborted.\n";
        let p = parse_dnf_transaction(text);
        assert_eq!(
            p.installs,
            vec!["chrony", "a-very-long-package-name-that-wraps"]
        );
        assert_eq!(p.removes, vec!["ntp", "ntpstat"]);
        assert_eq!(
            parse_dnf_transaction("Nothing to do.\n"),
            InstallPreview::default()
        );
    }

    #[test]
    fn apt_simulation_shows_conflicts() {
        let text = "NOTE: This is only a simulation!\nRemv ntpsec [1.2.2+dfsg1-1+deb12u1]\nInst chrony (4.3-2+deb12u1 Debian:12.7/stable [amd64])\nConf chrony (4.3-2+deb12u1 Debian:12.7/stable [amd64])\n";
        let p = parse_apt_simulation(text);
        assert_eq!(p.installs, vec!["chrony"]);
        assert_eq!(p.removes, vec!["ntpsec"]);
    }
}
