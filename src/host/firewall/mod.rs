//! The host firewall, as far as timectl cares: is UDP 123 open (and TCP
//! 4460 for NTS-KE when the host serves NTS), open it, close what timectl
//! opened. Each port is handled on its own. Three backends behind
//! [`Firewall`]:
//!
//! - `firewalld` over D-Bus when firewalld runs: the `ntp` service in the
//!   default zone, runtime and permanent configuration both; for NTS-KE the
//!   port `4460/tcp` (firewalld ships no NTS-KE service: Debian 12's 1.3
//!   has none, so a port works on every version);
//! - `permanent`: firewalld's permanent configuration as files (zone XML
//!   under `<root>/etc/firewalld/zones`), for offline roots and for hosts
//!   where firewalld is installed but not running, as `firewall-offline-cmd`
//!   does it;
//! - `nftables` through `nft -j` on live hosts without firewalld: a rule
//!   recognised by its comment, inserted into each input chain that filters.
//!
//! What timectl added is recognisable afterwards (the nftables rule by its
//! comment, firewalld changes by a record under `/var/lib/timectl`), so that
//! it can be removed again when the desired state stops serving time,
//! without touching what an administrator opened.

pub mod firewalld;
pub mod nftables;
pub mod permanent;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Files, Firewall, HostError, Mode, Port, STATE_DIR};
use crate::spec::FirewallMode;

/// The firewalld service that opens UDP 123.
pub const FIREWALLD_SERVICE: &str = "ntp";

/// What timectl adds to a firewalld zone for a port: a service for UDP
/// 123, a port for TCP 4460 (no firewalld service for NTS-KE is shipped
/// everywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneEntry<'a> {
    Service(&'a str),
    /// Port number and protocol, as firewalld spells them.
    Port(&'a str, &'a str),
}

impl ZoneEntry<'_> {
    pub fn of(port: Port) -> ZoneEntry<'static> {
        match port {
            Port::Ntp => ZoneEntry::Service(FIREWALLD_SERVICE),
            Port::NtsKe => ZoneEntry::Port("4460", "tcp"),
        }
    }

    /// "service ntp", "port 4460/tcp".
    pub fn describe(self) -> String {
        match self {
            ZoneEntry::Service(name) => format!("service {name}"),
            ZoneEntry::Port(port, protocol) => format!("port {port}/{protocol}"),
        }
    }

    /// The firewall-cmd option that adds it.
    pub fn option(self) -> String {
        match self {
            ZoneEntry::Service(name) => format!("--add-service={name}"),
            ZoneEntry::Port(port, protocol) => format!("--add-port={port}/{protocol}"),
        }
    }

    /// Its element in a zone's XML.
    pub fn element(self) -> String {
        match self {
            ZoneEntry::Service(name) => format!("<service name=\"{name}\"/>"),
            ZoneEntry::Port(port, protocol) => {
                format!("<port port=\"{port}\" protocol=\"{protocol}\"/>")
            }
        }
    }
}
/// The D-Bus name firewalld owns while it runs.
pub const FIREWALLD_BUS_NAME: &str = "org.fedoraproject.FirewallD1";

/// What timectl recorded when it opened UDP 123 (or TCP 4460) in
/// firewalld: which zone and which of the two configurations it changed
/// (the other may have had the service already, put there by someone
/// else). One record per port, each in its own file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewalldRecord {
    pub zone: String,
    pub runtime: bool,
    pub permanent: bool,
}

impl FirewalldRecord {
    /// `state_dir` is a path under `files`' root (`/var/lib/timectl`).
    fn path(state_dir: &Path, port: Port) -> PathBuf {
        state_dir.join(match port {
            Port::Ntp => "firewall/firewalld-ntp.json",
            Port::NtsKe => "firewall/firewalld-nts-ke.json",
        })
    }

    /// The record for UDP 123, if timectl opened the service in `zone`.
    pub fn load(files: &Files, state_dir: &Path, zone: &str) -> Option<FirewalldRecord> {
        Self::load_for(files, state_dir, zone, Port::Ntp)
    }

    /// The record for `port`, if timectl opened it in `zone`.
    pub fn load_for(
        files: &Files,
        state_dir: &Path,
        zone: &str,
        port: Port,
    ) -> Option<FirewalldRecord> {
        let state = files.read(&Self::path(state_dir, port)).ok()??;
        let record: FirewalldRecord = serde_json::from_slice(&state.content).ok()?;
        (record.zone == zone && (record.runtime || record.permanent)).then_some(record)
    }

    /// Remember what was just added for UDP 123, on top of what was
    /// recorded before.
    pub fn add(
        files: &Files,
        state_dir: &Path,
        zone: &str,
        runtime: bool,
        permanent: bool,
    ) -> Result<(), HostError> {
        Self::add_for(files, state_dir, zone, Port::Ntp, runtime, permanent)
    }

    /// Remember what was just added for `port`, on top of what was
    /// recorded before.
    pub fn add_for(
        files: &Files,
        state_dir: &Path,
        zone: &str,
        port: Port,
        runtime: bool,
        permanent: bool,
    ) -> Result<(), HostError> {
        let mut record =
            Self::load_for(files, state_dir, zone, port).unwrap_or_else(|| FirewalldRecord {
                zone: zone.to_string(),
                ..FirewalldRecord::default()
            });
        record.runtime |= runtime;
        record.permanent |= permanent;
        let text = serde_json::to_string_pretty(&record)
            .map_err(|e| HostError::msg(format!("cannot encode the firewall record: {e}")))?;
        files.write_atomic(
            &Self::path(state_dir, port),
            text.as_bytes(),
            0o644,
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }

    pub fn forget(files: &Files, state_dir: &Path) -> Result<(), HostError> {
        Self::forget_for(files, state_dir, Port::Ntp)
    }

    pub fn forget_for(files: &Files, state_dir: &Path, port: Port) -> Result<(), HostError> {
        files.remove(&Self::path(state_dir, port))
    }
}

/// Choose the firewall backend for a host, as the desired state prefers.
/// `Ok(None)`: there is nothing to manage (`firewall: none`, or `auto` found
/// no firewall).
pub fn select(
    files: &Files,
    mode: Mode,
    preference: FirewallMode,
) -> Result<Option<Box<dyn Firewall>>, HostError> {
    let root = files.root();
    let state_dir = Path::new(STATE_DIR);
    match (mode, preference) {
        (_, FirewallMode::None) => Ok(None),
        (Mode::Offline, FirewallMode::Firewalld) => {
            permanent::PermanentFirewalld::open_root(files, state_dir, None)
                .map(|f| Some(Box::new(f) as Box<dyn Firewall>))
        }
        (Mode::Offline, FirewallMode::Nftables) => Err(HostError::Unavailable(format!(
            "firewall: nftables cannot be managed on an offline root ({}): timectl changes the running ruleset only; use firewall: firewalld or none for images",
            root.display()
        ))),
        (Mode::Offline, FirewallMode::Auto) => {
            if permanent::firewalld_enabled_in(files)? {
                permanent::PermanentFirewalld::open_root(files, state_dir, None)
                    .map(|f| Some(Box::new(f) as Box<dyn Firewall>))
            } else {
                Ok(None)
            }
        }
        (Mode::Live, preference) => {
            if preference != FirewallMode::Nftables {
                match firewalld::Firewalld::connect_if_running(&files.resolve(state_dir)?)? {
                    Some(f) => return Ok(Some(Box::new(f))),
                    None if preference == FirewallMode::Firewalld => {
                        // Installed but not running: change the permanent
                        // configuration, which it loads when it starts.
                        return permanent::PermanentFirewalld::open_root(
                            files,
                            state_dir,
                            Some("firewalld is not running"),
                        )
                        .map(|f| Some(Box::new(f) as Box<dyn Firewall>));
                    }
                    None => {}
                }
            }
            match nftables::Nftables::detect() {
                Some(n) => Ok(Some(Box::new(n))),
                None if preference == FirewallMode::Nftables => Err(HostError::Unavailable(
                    "firewall: nftables, but nft is not installed".into(),
                )),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_accumulates_and_is_per_zone() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path());
        let state = Path::new(STATE_DIR);
        assert_eq!(FirewalldRecord::load(&files, state, "public"), None);
        FirewalldRecord::add(&files, state, "public", false, true).unwrap();
        FirewalldRecord::add(&files, state, "public", true, false).unwrap();
        assert_eq!(
            FirewalldRecord::load(&files, state, "public"),
            Some(FirewalldRecord {
                zone: "public".into(),
                runtime: true,
                permanent: true
            })
        );
        // A record for another zone does not count for this one.
        assert_eq!(FirewalldRecord::load(&files, state, "internal"), None);
        FirewalldRecord::forget(&files, state).unwrap();
        FirewalldRecord::forget(&files, state).unwrap();
        assert_eq!(FirewalldRecord::load(&files, state, "public"), None);
    }

    #[test]
    fn each_port_has_its_own_record() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path());
        let state = Path::new(STATE_DIR);
        FirewalldRecord::add_for(&files, state, "public", Port::NtsKe, true, false).unwrap();
        assert_eq!(FirewalldRecord::load(&files, state, "public"), None);
        assert_eq!(
            FirewalldRecord::load_for(&files, state, "public", Port::NtsKe),
            Some(FirewalldRecord {
                zone: "public".into(),
                runtime: true,
                permanent: false
            })
        );
        FirewalldRecord::add(&files, state, "public", true, true).unwrap();
        FirewalldRecord::forget(&files, state).unwrap();
        assert!(FirewalldRecord::load_for(&files, state, "public", Port::NtsKe).is_some());
        FirewalldRecord::forget_for(&files, state, Port::NtsKe).unwrap();
        assert_eq!(
            FirewalldRecord::load_for(&files, state, "public", Port::NtsKe),
            None
        );
        assert_eq!(
            ZoneEntry::of(Port::NtsKe).element(),
            "<port port=\"4460\" protocol=\"tcp\"/>"
        );
        assert_eq!(ZoneEntry::of(Port::Ntp).option(), "--add-service=ntp");
    }

    #[test]
    fn none_means_no_backend() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [Mode::Live, Mode::Offline] {
            assert!(
                select(&Files::new(dir.path()), mode, FirewallMode::None)
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[test]
    fn offline_auto_without_firewalld_manages_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            select(&Files::new(dir.path()), Mode::Offline, FirewallMode::Auto)
                .unwrap()
                .is_none()
        );
        let err = select(
            &Files::new(dir.path()),
            Mode::Offline,
            FirewallMode::Nftables,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("offline root"), "{err}");
    }
}
