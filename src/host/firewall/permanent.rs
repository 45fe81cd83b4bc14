//! firewalld's permanent configuration as files, the way
//! `firewall-offline-cmd` changes it: the default zone comes from
//! `<root>/etc/firewalld/firewalld.conf` (`DefaultZone=`, else `public`),
//! the zone from `<root>/etc/firewalld/zones/<zone>.xml`, or, while the
//! administrator has not customised it, from the shipped
//! `<root>/usr/lib/firewalld/zones/<zone>.xml`, which is copied to /etc with
//! the service added. Used for offline roots, and on live hosts where
//! firewalld is installed but not running (it reads these files at start).
//! NTS-KE (TCP 4460) is the element `<port port="4460" protocol="tcp"/>`
//! in the same zone, with its own record.

use std::path::{Path, PathBuf};

use super::{FirewalldRecord, ZoneEntry};
use crate::host::{Files, Firewall, FirewallState, HostError, Port};

const CONF: &str = "/etc/firewalld/firewalld.conf";
const ETC_ZONES: &str = "/etc/firewalld/zones";
const SHIPPED_ZONES: [&str; 2] = ["/usr/lib/firewalld/zones", "/lib/firewalld/zones"];

/// Whether firewalld is installed in the root and enabled at boot there.
pub fn firewalld_enabled_in(files: &Files) -> Result<bool, HostError> {
    let mut installed = false;
    for dir in SHIPPED_ZONES {
        installed |= files.is_dir(Path::new(dir))?;
    }
    let enabled = files
        .lstat(Path::new(
            "/etc/systemd/system/multi-user.target.wants/firewalld.service",
        ))?
        .is_some();
    Ok(installed && enabled)
}

pub struct PermanentFirewalld {
    files: Files,
    root: PathBuf,
    state_dir: PathBuf,
    zone: String,
    /// Why the live daemon is not used, for `describe` (None offline).
    live_note: Option<String>,
}

/// `<service name="ntp"/>` with any spacing and either quote.
#[cfg(test)]
fn service_line_matches(line: &str, service: &str) -> bool {
    line_matches(line, ZoneEntry::Service(service))
}

/// The entry's element (`<service name="ntp"/>`, `<port port="4460"
/// protocol="tcp"/>`) with any spacing, either quote and, for a port,
/// either order of the attributes.
fn line_matches(line: &str, entry: ZoneEntry<'_>) -> bool {
    let compact: String = line
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == '\'' { '"' } else { c })
        .collect();
    match entry {
        ZoneEntry::Service(name) => compact == format!("<servicename=\"{name}\"/>"),
        ZoneEntry::Port(port, protocol) => {
            compact == format!("<portport=\"{port}\"protocol=\"{protocol}\"/>")
                || compact == format!("<portprotocol=\"{protocol}\"port=\"{port}\"/>")
        }
    }
}

/// The zone XML with the service added before `</zone>` (unchanged if it is
/// there already).
pub fn add_service(xml: &str, service: &str) -> Result<String, HostError> {
    add_entry(xml, ZoneEntry::Service(service))
}

/// The zone XML with the entry added before `</zone>` (unchanged if it is
/// there already).
pub fn add_entry(xml: &str, entry: ZoneEntry<'_>) -> Result<String, HostError> {
    if xml.lines().any(|l| line_matches(l, entry)) {
        return Ok(xml.to_string());
    }
    let Some(end) = xml.rfind("</zone>") else {
        return Err(HostError::msg(
            "the zone file has no </zone>: not a firewalld zone",
        ));
    };
    let line_start = xml[..end].rfind('\n').map_or(0, |i| i + 1);
    let mut out = String::with_capacity(xml.len() + 48);
    out.push_str(&xml[..line_start]);
    out.push_str(&format!("  {}\n", entry.element()));
    out.push_str(&xml[line_start..]);
    Ok(out)
}

/// The zone XML without the service's line.
pub fn remove_service(xml: &str, service: &str) -> String {
    remove_entry(xml, ZoneEntry::Service(service))
}

/// The zone XML without the entry's line.
pub fn remove_entry(xml: &str, entry: ZoneEntry<'_>) -> String {
    let mut out: String = xml
        .lines()
        .filter(|l| !line_matches(l, entry))
        .collect::<Vec<_>>()
        .join("\n");
    if xml.ends_with('\n') {
        out.push('\n');
    }
    out
}

impl PermanentFirewalld {
    /// The permanent configuration under `root`.
    /// `state_dir` is timectl's state directory as a path under the root.
    pub fn open_root(
        files: &Files,
        state_dir: &Path,
        live_note: Option<&str>,
    ) -> Result<PermanentFirewalld, HostError> {
        let files = files.clone();
        let root = files.root().to_path_buf();
        let zone = files
            .read(Path::new(CONF))?
            .and_then(|s| {
                String::from_utf8_lossy(&s.content)
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("DefaultZone="))
                    .map(|z| z.trim().to_string())
                    .find(|z| !z.is_empty())
            })
            .unwrap_or_else(|| "public".to_string());
        if zone.contains('/') || zone.starts_with('.') {
            return Err(HostError::msg(format!(
                "{CONF}: DefaultZone={zone:?} is not a zone name"
            )));
        }
        Ok(PermanentFirewalld {
            files,
            root,
            state_dir: state_dir.to_path_buf(),
            zone,
            live_note: live_note.map(str::to_string),
        })
    }

    fn etc_zone(&self) -> PathBuf {
        PathBuf::from(format!("{ETC_ZONES}/{}.xml", self.zone))
    }

    /// The zone's current XML and where it came from.
    fn zone_xml(&self) -> Result<(String, PathBuf), HostError> {
        let etc = self.etc_zone();
        if let Some(state) = self.files.read(&etc)? {
            return Ok((String::from_utf8_lossy(&state.content).into_owned(), etc));
        }
        for dir in SHIPPED_ZONES {
            let shipped = PathBuf::from(format!("{dir}/{}.xml", self.zone));
            if let Some(state) = self.files.read(&shipped)? {
                return Ok((
                    String::from_utf8_lossy(&state.content).into_owned(),
                    shipped,
                ));
            }
        }
        Err(HostError::msg(format!(
            "firewalld zone {} not found under {} ({ETC_ZONES} or {})",
            self.zone,
            self.root.display(),
            SHIPPED_ZONES.join(", ")
        )))
    }

    fn has(&self, entry: ZoneEntry<'_>) -> Result<bool, HostError> {
        let (xml, _) = self.zone_xml()?;
        Ok(xml.lines().any(|l| line_matches(l, entry)))
    }

    /// Write the zone under /etc, keeping the mode and owner of the file it
    /// replaces; a new one is 0644 like the shipped zones, owned by whoever
    /// runs timectl (root on a real host).
    fn write_zone(&self, xml: &str) -> Result<(), HostError> {
        let path = self.etc_zone();
        let (mode, uid, gid) = match self.files.read(&path)? {
            Some(s) => (s.mode, s.uid, s.gid),
            None => (
                0o644,
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        };
        self.files
            .write_atomic(&path, xml.as_bytes(), mode, uid, gid)
    }
}

impl Firewall for PermanentFirewalld {
    fn describe(&self) -> String {
        match &self.live_note {
            Some(note) => format!("firewalld permanent configuration ({note})"),
            None => format!(
                "firewalld permanent configuration under {}",
                self.root.display()
            ),
        }
    }

    fn rule_for(&self, port: Port) -> String {
        format!(
            "{} ({}) in zone {} ({ETC_ZONES}/{}.xml)",
            ZoneEntry::of(port).element(),
            port.short(),
            self.zone,
            self.zone
        )
    }

    fn observe_port(&self, port: Port) -> Result<FirewallState, HostError> {
        let entry = ZoneEntry::of(port);
        let open = self.has(entry)?;
        let ours = FirewalldRecord::load_for(&self.files, &self.state_dir, &self.zone, port)
            .is_some_and(|r| r.permanent);
        Ok(FirewallState {
            ntp_open: open,
            detail: format!(
                "{} {} zone {} (permanent)",
                entry.describe(),
                if open { "in" } else { "not in" },
                self.zone
            ),
            opened_by_timectl: open && ours,
        })
    }

    fn open_port(&self, port: Port) -> Result<(), HostError> {
        let (xml, _) = self.zone_xml()?;
        let updated = add_entry(&xml, ZoneEntry::of(port))?;
        if updated != xml {
            self.write_zone(&updated)?;
            FirewalldRecord::add_for(&self.files, &self.state_dir, &self.zone, port, false, true)?;
        }
        Ok(())
    }

    fn close_port(&self, port: Port) -> Result<(), HostError> {
        let etc = self.etc_zone();
        if let Some(state) = self.files.read(&etc)? {
            let xml = String::from_utf8_lossy(&state.content).into_owned();
            let updated = remove_entry(&xml, ZoneEntry::of(port));
            if updated != xml {
                self.write_zone(&updated)?;
            }
        }
        FirewalldRecord::forget_for(&self.files, &self.state_dir, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone>\n  <short>Public</short>\n  <service name=\"ssh\"/>\n  <service name=\"dhcpv6-client\"/>\n  <forward/>\n</zone>\n";

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let zones = dir.path().join("usr/lib/firewalld/zones");
        std::fs::create_dir_all(&zones).unwrap();
        std::fs::write(zones.join("public.xml"), PUBLIC).unwrap();
        std::fs::write(
            zones.join("internal.xml"),
            PUBLIC.replace("Public", "Internal"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn add_and_remove_keep_the_rest_of_the_zone() {
        let added = add_service(PUBLIC, "ntp").unwrap();
        assert!(
            added.contains("  <service name=\"ntp\"/>\n</zone>\n"),
            "{added}"
        );
        assert!(added.contains("<service name=\"ssh\"/>"));
        assert_eq!(add_service(&added, "ntp").unwrap(), added);
        assert_eq!(remove_service(&added, "ntp"), PUBLIC);
        assert!(service_line_matches("<service name='ntp' />", "ntp"));
        assert!(!service_line_matches("<service name=\"ntpx\"/>", "ntp"));
        assert!(add_service("<notazone/>", "ntp").is_err());
    }

    #[test]
    fn opens_the_default_zone_as_firewall_offline_cmd_does() {
        let dir = root();
        let state = dir.path().join("var/lib/timectl");
        std::fs::create_dir_all(dir.path().join("etc/firewalld")).unwrap();
        std::fs::write(
            dir.path().join("etc/firewalld/firewalld.conf"),
            "# comment\nDefaultZone=internal\n",
        )
        .unwrap();
        let _ = state;
        let fw = PermanentFirewalld::open_root(
            &Files::new(dir.path()),
            Path::new(crate::host::STATE_DIR),
            None,
        )
        .unwrap();
        assert!(fw.rule().contains("zone internal"));
        let before = fw.observe().unwrap();
        assert!(!before.ntp_open && !before.opened_by_timectl);
        fw.open().unwrap();
        let etc =
            std::fs::read_to_string(dir.path().join("etc/firewalld/zones/internal.xml")).unwrap();
        assert!(etc.contains("<short>Internal</short>"));
        assert!(etc.contains("<service name=\"ntp\"/>"));
        // The shipped file is never changed.
        assert!(
            !std::fs::read_to_string(dir.path().join("usr/lib/firewalld/zones/internal.xml"))
                .unwrap()
                .contains("ntp")
        );
        let after = fw.observe().unwrap();
        assert!(after.ntp_open && after.opened_by_timectl);
        fw.close().unwrap();
        let closed = fw.observe().unwrap();
        assert!(!closed.ntp_open && !closed.opened_by_timectl);
    }

    #[test]
    fn a_service_the_admin_added_is_not_ours() {
        let dir = root();
        let zones = dir.path().join("etc/firewalld/zones");
        std::fs::create_dir_all(&zones).unwrap();
        std::fs::write(
            zones.join("public.xml"),
            add_service(PUBLIC, "ntp").unwrap(),
        )
        .unwrap();
        let fw = PermanentFirewalld::open_root(&Files::new(dir.path()), Path::new("/state"), None)
            .unwrap();
        let state = fw.observe().unwrap();
        assert!(state.ntp_open);
        assert!(!state.opened_by_timectl);
        // Opening what is open changes nothing and records nothing.
        fw.open().unwrap();
        assert!(!fw.observe().unwrap().opened_by_timectl);
    }

    #[test]
    fn nts_ke_is_a_port_element_with_its_own_record() {
        let entry = ZoneEntry::of(Port::NtsKe);
        let added = add_entry(PUBLIC, entry).unwrap();
        assert!(
            added.contains("  <port port=\"4460\" protocol=\"tcp\"/>\n</zone>\n"),
            "{added}"
        );
        assert_eq!(add_entry(&added, entry).unwrap(), added);
        assert_eq!(remove_entry(&added, entry), PUBLIC);
        // Either order of the attributes, either quote; not another port.
        for line in [
            "<port protocol='tcp' port='4460' />",
            "  <port port=\"4460\"  protocol=\"tcp\"/>",
        ] {
            assert!(line_matches(line, entry), "{line}");
        }
        for line in [
            "<port port=\"4460\" protocol=\"udp\"/>",
            "<port port=\"44600\" protocol=\"tcp\"/>",
        ] {
            assert!(!line_matches(line, entry), "{line}");
        }

        let dir = root();
        let fw = PermanentFirewalld::open_root(
            &Files::new(dir.path()),
            Path::new(crate::host::STATE_DIR),
            None,
        )
        .unwrap();
        assert_eq!(
            fw.rule_for(Port::NtsKe),
            "<port port=\"4460\" protocol=\"tcp\"/> (tcp/4460) in zone public (/etc/firewalld/zones/public.xml)"
        );
        fw.open().unwrap();
        fw.open_port(Port::NtsKe).unwrap();
        let zone = dir.path().join("etc/firewalld/zones/public.xml");
        let etc = std::fs::read_to_string(&zone).unwrap();
        assert!(etc.contains("<service name=\"ntp\"/>") && etc.contains("<port port=\"4460\""));
        let nts = fw.observe_port(Port::NtsKe).unwrap();
        assert!(nts.ntp_open && nts.opened_by_timectl, "{nts:?}");
        assert_eq!(nts.detail, "port 4460/tcp in zone public (permanent)");
        // Closing TCP 4460 leaves UDP 123 (and its record) alone.
        fw.close_port(Port::NtsKe).unwrap();
        let etc = std::fs::read_to_string(&zone).unwrap();
        assert!(etc.contains("<service name=\"ntp\"/>") && !etc.contains("4460"));
        let ntp = fw.observe().unwrap();
        assert!(ntp.ntp_open && ntp.opened_by_timectl, "{ntp:?}");
        let nts = fw.observe_port(Port::NtsKe).unwrap();
        assert!(!nts.ntp_open && !nts.opened_by_timectl, "{nts:?}");
    }

    #[test]
    fn an_admins_nts_ke_port_is_not_ours() {
        let dir = root();
        let zones = dir.path().join("etc/firewalld/zones");
        std::fs::create_dir_all(&zones).unwrap();
        std::fs::write(
            zones.join("public.xml"),
            PUBLIC.replace(
                "</zone>",
                "  <port protocol=\"tcp\" port=\"4460\"/>\n</zone>",
            ),
        )
        .unwrap();
        let fw = PermanentFirewalld::open_root(&Files::new(dir.path()), Path::new("/state"), None)
            .unwrap();
        let state = fw.observe_port(Port::NtsKe).unwrap();
        assert!(state.ntp_open && !state.opened_by_timectl, "{state:?}");
        fw.open_port(Port::NtsKe).unwrap();
        assert!(!fw.observe_port(Port::NtsKe).unwrap().opened_by_timectl);
    }

    #[test]
    fn missing_zone_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let fw =
            PermanentFirewalld::open_root(&Files::new(dir.path()), Path::new("/"), None).unwrap();
        let err = fw.observe().unwrap_err().to_string();
        assert!(err.contains("zone public not found"), "{err}");
    }

    #[test]
    fn enabled_means_installed_and_wanted() {
        let dir = root();
        assert!(!firewalld_enabled_in(&Files::new(dir.path())).unwrap());
        let wants = dir
            .path()
            .join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(
            "/usr/lib/systemd/system/firewalld.service",
            wants.join("firewalld.service"),
        )
        .unwrap();
        assert!(firewalld_enabled_in(&Files::new(dir.path())).unwrap());
    }
}
