//! systemd unit enablement on an offline root, as `systemctl --root` does
//! it: a unit is enabled when symlinks for its `[Install]` section
//! (`WantedBy=`, `RequiredBy=`, `Alias=`) exist under
//! `<root>/etc/systemd/system`, masked when `/etc/systemd/system/<unit>`
//! points to /dev/null. Nothing runs on an offline root.

use std::path::{Path, PathBuf};

use super::{Enablement, Files, HostError, ServiceManager, UnitStatus};

/// Unit file directories in systemd's order of precedence (without /run,
/// which does not exist in an image).
const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

const ETC_UNITS: &str = "/etc/systemd/system";

/// Unit enablement under an offline root. Every path goes through the
/// root's [`Files`], so links and directories resolve inside the root.
pub struct OfflineUnits {
    files: Files,
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

/// A unit or target name as one path component: never `..` or a path.
fn unit_name(name: &str) -> Result<&str, HostError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(HostError::msg(format!("{name:?} is not a unit name")));
    }
    Ok(name)
}

impl OfflineUnits {
    pub fn new(files: Files) -> OfflineUnits {
        OfflineUnits { files }
    }

    fn etc(&self, name: &str) -> Result<PathBuf, HostError> {
        Ok(Path::new(ETC_UNITS).join(unit_name(name)?))
    }

    /// The unit file (as a host path), skipping the symlinks in /etc that
    /// enable or mask units.
    fn unit_file(&self, unit: &str) -> Result<Option<PathBuf>, HostError> {
        let unit = unit_name(unit)?;
        for dir in UNIT_DIRS {
            let path = Path::new(dir).join(unit);
            let Some(meta) = self.files.lstat(&path)? else {
                continue;
            };
            if dir == ETC_UNITS && meta.file_type().is_symlink() {
                continue;
            }
            if meta.file_type().is_symlink() || meta.is_file() {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    fn is_masked(&self, unit: &str) -> Result<bool, HostError> {
        Ok(self
            .files
            .read_link(&self.etc(unit)?)?
            .is_some_and(|t| t == Path::new("/dev/null")))
    }

    /// An alias symlink in /etc pointing at another unit (enabled alias).
    fn alias_target(&self, unit: &str) -> Result<Option<String>, HostError> {
        let Some(target) = self.files.read_link(&self.etc(unit)?)? else {
            return Ok(None);
        };
        if target == Path::new("/dev/null") {
            return Ok(None);
        }
        Ok(target
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string))
    }

    fn install_of(&self, unit: &str) -> Result<(PathBuf, Install), HostError> {
        let path = self.unit_file(unit)?.ok_or_else(|| {
            HostError::msg(format!(
                "unit {unit} not found under {}",
                self.files.root().display()
            ))
        })?;
        let state = self.files.read(&path)?.ok_or_else(|| {
            HostError::msg(format!(
                "unit {unit}: {} is a link that leads nowhere under {}",
                path.display(),
                self.files.root().display()
            ))
        })?;
        Ok((
            path,
            parse_install(&String::from_utf8_lossy(&state.content)),
        ))
    }

    fn enable_inner(&self, unit: &str, depth: usize) -> Result<(), HostError> {
        let (host_path, install) = self.install_of(unit)?;
        if install.is_empty() {
            return Err(HostError::msg(format!(
                "{unit} has no [Install] section (a static unit) and cannot be enabled"
            )));
        }
        let unit = unit_name(unit)?;
        for target in &install.wanted_by {
            let dir = self.etc(&format!("{}.wants", unit_name(target)?))?;
            self.files.symlink(&host_path, &dir.join(unit))?;
        }
        for target in &install.required_by {
            let dir = self.etc(&format!("{}.requires", unit_name(target)?))?;
            self.files.symlink(&host_path, &dir.join(unit))?;
        }
        for alias in &install.alias {
            self.files.symlink(&host_path, &self.etc(alias)?)?;
        }
        if depth < 4 {
            for also in &install.also {
                self.enable_inner(also, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Every `*.wants/<unit>` and `*.requires/<unit>` link under /etc.
    fn install_links(&self, unit: &str) -> Result<Vec<PathBuf>, HostError> {
        let unit = unit_name(unit)?;
        let Some(names) = self.files.list_dir(Path::new(ETC_UNITS))? else {
            return Ok(Vec::new());
        };
        let mut links = Vec::new();
        for name in names {
            let name = name.to_string_lossy();
            if !(name.ends_with(".wants") || name.ends_with(".requires")) {
                continue;
            }
            let link = Path::new(ETC_UNITS).join(name.as_ref()).join(unit);
            if self.files.lstat(&link)?.is_some() {
                links.push(link);
            }
        }
        Ok(links)
    }
}

impl ServiceManager for OfflineUnits {
    fn describe(&self) -> String {
        format!("systemd unit files under {}", self.files.root().display())
    }

    fn runs_units(&self) -> bool {
        false
    }

    fn status(&self, unit: &str) -> Result<UnitStatus, HostError> {
        let enablement = if self.is_masked(unit)? {
            Enablement::Masked
        } else if self.unit_file(unit)?.is_none() {
            if self.alias_target(unit)?.is_some() {
                Enablement::Indirect
            } else {
                Enablement::NotFound
            }
        } else {
            let (_, install) = self.install_of(unit)?;
            let mut aliased = false;
            for alias in &install.alias {
                aliased |= self.files.lstat(&self.etc(alias)?)?.is_some();
            }
            if install.is_empty() {
                Enablement::Static
            } else if aliased || !self.install_links(unit)?.is_empty() {
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
        for link in self.install_links(unit)? {
            self.files.remove(&link)?;
        }
        if let Ok((host_path, install)) = self.install_of(unit) {
            for alias in install.alias {
                let link = self.etc(&alias)?;
                if self.files.read_link(&link)?.is_some_and(|t| t == host_path) {
                    self.files.remove(&link)?;
                }
            }
        }
        Ok(())
    }

    fn mask(&self, unit: &str) -> Result<(), HostError> {
        let link = self.etc(unit)?;
        if let Some(meta) = self.files.lstat(&link)?
            && !meta.file_type().is_symlink()
        {
            return Err(HostError::msg(format!(
                "cannot mask {unit}: {} is a unit file, not a link",
                self.files.resolve(&link)?.display()
            )));
        }
        self.files.symlink(Path::new("/dev/null"), &link)
    }

    fn unmask(&self, unit: &str) -> Result<(), HostError> {
        if self.is_masked(unit)? {
            self.files.remove(&self.etc(unit)?)?;
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
        let units = OfflineUnits::new(Files::new(dir.path()));
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
        let units = OfflineUnits::new(Files::new(dir.path()));
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
        let units = OfflineUnits::new(Files::new(dir.path()));
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
