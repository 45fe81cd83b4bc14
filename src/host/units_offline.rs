//! systemd unit enablement on an offline root, as `systemctl --root` does
//! it: a unit is enabled when symlinks for its `[Install]` section
//! (`WantedBy=`, `RequiredBy=`, `Alias=`) exist under
//! `<root>/etc/systemd/system`, masked when `/etc/systemd/system/<unit>`
//! points to /dev/null. Nothing runs on an offline root.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::{Enablement, HostError, ServiceManager, UnitStatus};

/// Unit file directories in systemd's order of precedence (without /run,
/// which does not exist in an image).
const UNIT_DIRS: [&str; 4] = [
    "etc/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

const ETC_UNITS: &str = "etc/systemd/system";

pub struct OfflineUnits {
    root: PathBuf,
}

/// The `[Install]` section of a unit file.
#[derive(Debug, Default, PartialEq, Eq)]
struct Install {
    wanted_by: Vec<String>,
    required_by: Vec<String>,
    alias: Vec<String>,
    also: Vec<String>,
}

impl Install {
    fn is_empty(&self) -> bool {
        self.wanted_by.is_empty()
            && self.required_by.is_empty()
            && self.alias.is_empty()
            && self.also.is_empty()
    }
}

fn parse_install(text: &str) -> Install {
    let mut install = Install::default();
    let mut in_install = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let values = value.split_whitespace().map(str::to_string);
        match key.trim() {
            "WantedBy" => install.wanted_by.extend(values),
            "RequiredBy" => install.required_by.extend(values),
            "Alias" => install.alias.extend(values),
            "Also" => install.also.extend(values),
            _ => {}
        }
    }
    install
}

impl OfflineUnits {
    pub fn new(root: &Path) -> OfflineUnits {
        OfflineUnits {
            root: root.to_path_buf(),
        }
    }

    fn etc(&self) -> PathBuf {
        self.root.join(ETC_UNITS)
    }

    /// The unit file (root-relative host path, real path), skipping the
    /// symlinks in /etc that enable or mask units.
    fn unit_file(&self, unit: &str) -> Option<(String, PathBuf)> {
        for dir in UNIT_DIRS {
            let real = self.root.join(dir).join(unit);
            let Ok(meta) = real.symlink_metadata() else {
                continue;
            };
            if dir == ETC_UNITS && meta.file_type().is_symlink() {
                continue;
            }
            if meta.file_type().is_symlink() || meta.is_file() {
                return Some((format!("/{dir}/{unit}"), real));
            }
        }
        None
    }

    fn is_masked(&self, unit: &str) -> bool {
        std::fs::read_link(self.etc().join(unit))
            .map(|t| t == Path::new("/dev/null"))
            .unwrap_or(false)
    }

    /// An alias symlink in /etc pointing at another unit (enabled alias).
    fn alias_target(&self, unit: &str) -> Option<String> {
        let target = std::fs::read_link(self.etc().join(unit)).ok()?;
        if target == Path::new("/dev/null") {
            return None;
        }
        target
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
    }

    fn install_of(&self, unit: &str) -> Result<(String, Install), HostError> {
        let (host_path, real) = self.unit_file(unit).ok_or_else(|| {
            HostError::msg(format!(
                "unit {unit} not found under {}",
                self.root.display()
            ))
        })?;
        let text =
            std::fs::read_to_string(&real).map_err(|e| HostError::io(&real, "cannot read", e))?;
        Ok((host_path, parse_install(&text)))
    }

    fn link(&self, link: &Path, target: &str) -> Result<(), HostError> {
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| HostError::io(dir, "cannot create directory", e))?;
        }
        if let Ok(existing) = std::fs::read_link(link) {
            if existing == Path::new(target) {
                return Ok(());
            }
            std::fs::remove_file(link).map_err(|e| HostError::io(link, "cannot replace", e))?;
        }
        symlink(target, link).map_err(|e| HostError::io(link, "cannot create symlink", e))
    }

    fn enable_inner(&self, unit: &str, depth: usize) -> Result<(), HostError> {
        let (host_path, install) = self.install_of(unit)?;
        if install.is_empty() {
            return Err(HostError::msg(format!(
                "{unit} has no [Install] section (a static unit) and cannot be enabled"
            )));
        }
        for target in &install.wanted_by {
            self.link(
                &self.etc().join(format!("{target}.wants")).join(unit),
                &host_path,
            )?;
        }
        for target in &install.required_by {
            self.link(
                &self.etc().join(format!("{target}.requires")).join(unit),
                &host_path,
            )?;
        }
        for alias in &install.alias {
            self.link(&self.etc().join(alias), &host_path)?;
        }
        if depth < 4 {
            for also in &install.also {
                self.enable_inner(also, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Every `*.wants/<unit>` and `*.requires/<unit>` link under /etc.
    fn install_links(&self, unit: &str) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.etc()) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".wants") || name.ends_with(".requires")
            })
            .map(|e| e.path().join(unit))
            .filter(|p| p.symlink_metadata().is_ok())
            .collect()
    }
}

impl ServiceManager for OfflineUnits {
    fn describe(&self) -> String {
        format!("systemd unit files under {}", self.root.display())
    }

    fn runs_units(&self) -> bool {
        false
    }

    fn status(&self, unit: &str) -> Result<UnitStatus, HostError> {
        let enablement = if self.is_masked(unit) {
            Enablement::Masked
        } else if self.unit_file(unit).is_none() {
            if self.alias_target(unit).is_some() {
                Enablement::Indirect
            } else {
                Enablement::NotFound
            }
        } else {
            let (_, install) = self.install_of(unit)?;
            if install.is_empty() {
                Enablement::Static
            } else if !self.install_links(unit).is_empty()
                || install
                    .alias
                    .iter()
                    .any(|a| self.etc().join(a).symlink_metadata().is_ok())
            {
                Enablement::Enabled
            } else {
                Enablement::Disabled
            }
        };
        Ok(UnitStatus {
            name: unit.to_string(),
            enablement,
            activity: None,
        })
    }

    fn start(&self, unit: &str) -> Result<(), HostError> {
        Err(HostError::Unavailable(format!(
            "cannot start {unit}: nothing runs on an offline root"
        )))
    }

    fn stop(&self, unit: &str) -> Result<(), HostError> {
        Err(HostError::Unavailable(format!(
            "cannot stop {unit}: nothing runs on an offline root"
        )))
    }

    fn restart(&self, unit: &str) -> Result<(), HostError> {
        Err(HostError::Unavailable(format!(
            "cannot restart {unit}: nothing runs on an offline root"
        )))
    }

    fn enable(&self, unit: &str) -> Result<(), HostError> {
        self.enable_inner(unit, 0)
    }

    fn disable(&self, unit: &str) -> Result<(), HostError> {
        for link in self.install_links(unit) {
            std::fs::remove_file(&link).map_err(|e| HostError::io(&link, "cannot remove", e))?;
        }
        if let Ok((host_path, install)) = self.install_of(unit) {
            for alias in install.alias {
                let link = self.etc().join(&alias);
                if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(&host_path)) {
                    std::fs::remove_file(&link)
                        .map_err(|e| HostError::io(&link, "cannot remove", e))?;
                }
            }
        }
        Ok(())
    }

    fn mask(&self, unit: &str) -> Result<(), HostError> {
        let link = self.etc().join(unit);
        if let Ok(meta) = link.symlink_metadata()
            && !meta.file_type().is_symlink()
        {
            return Err(HostError::msg(format!(
                "cannot mask {unit}: {} is a unit file, not a link",
                link.display()
            )));
        }
        self.link(&link, "/dev/null")
    }

    fn unmask(&self, unit: &str) -> Result<(), HostError> {
        if self.is_masked(unit) {
            let link = self.etc().join(unit);
            std::fs::remove_file(&link).map_err(|e| HostError::io(&link, "cannot remove", e))?;
        }
        Ok(())
    }

    fn reload(&self) -> Result<(), HostError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHRONY: &str = "[Unit]\nDescription=chrony\n[Service]\nExecStart=/usr/sbin/chronyd\n[Install]\nAlias=chronyd.service\nWantedBy=multi-user.target\n";

    fn root_with(units: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(&lib).unwrap();
        for (name, text) in units {
            std::fs::write(lib.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn parses_install_section() {
        let i = parse_install(CHRONY);
        assert_eq!(i.wanted_by, vec!["multi-user.target"]);
        assert_eq!(i.alias, vec!["chronyd.service"]);
        assert!(parse_install("[Unit]\nWantedBy=x\n").is_empty());
    }

    #[test]
    fn enable_and_disable_like_systemctl_root() {
        let dir = root_with(&[("chrony.service", CHRONY)]);
        let units = OfflineUnits::new(dir.path());
        assert_eq!(
            units.status("chrony.service").unwrap().enablement,
            Enablement::Disabled
        );
        units.enable("chrony.service").unwrap();
        let wants = dir
            .path()
            .join("etc/systemd/system/multi-user.target.wants/chrony.service");
        assert_eq!(
            std::fs::read_link(&wants).unwrap(),
            PathBuf::from("/usr/lib/systemd/system/chrony.service")
        );
        assert!(
            dir.path()
                .join("etc/systemd/system/chronyd.service")
                .symlink_metadata()
                .is_ok()
        );
        assert_eq!(
            units.status("chrony.service").unwrap().enablement,
            Enablement::Enabled
        );
        // Enabling twice changes nothing and does not fail.
        units.enable("chrony.service").unwrap();
        units.disable("chrony.service").unwrap();
        assert!(wants.symlink_metadata().is_err());
        assert!(
            dir.path()
                .join("etc/systemd/system/chronyd.service")
                .symlink_metadata()
                .is_err()
        );
        assert_eq!(
            units.status("chrony.service").unwrap().enablement,
            Enablement::Disabled
        );
    }

    #[test]
    fn mask_and_unmask() {
        let dir = root_with(&[("ntpd.service", "[Install]\nWantedBy=multi-user.target\n")]);
        let units = OfflineUnits::new(dir.path());
        units.mask("ntpd.service").unwrap();
        assert_eq!(
            units.status("ntpd.service").unwrap().enablement,
            Enablement::Masked
        );
        units.unmask("ntpd.service").unwrap();
        assert_eq!(
            units.status("ntpd.service").unwrap().enablement,
            Enablement::Disabled
        );
    }

    #[test]
    fn missing_and_static_units() {
        let dir = root_with(&[("helper.service", "[Service]\nExecStart=/bin/true\n")]);
        let units = OfflineUnits::new(dir.path());
        assert_eq!(
            units.status("nope.service").unwrap().enablement,
            Enablement::NotFound
        );
        assert_eq!(
            units.status("helper.service").unwrap().enablement,
            Enablement::Static
        );
        assert!(units.enable("helper.service").is_err());
        assert!(units.enable("nope.service").is_err());
        assert!(units.start("helper.service").is_err());
    }
}
