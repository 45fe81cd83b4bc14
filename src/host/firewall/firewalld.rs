//! firewalld over D-Bus, while it runs: the `ntp` service (udp/123) in the
//! default zone, in the runtime configuration (effective now) and in the
//! permanent one (effective after a reload or reboot). Both are checked and
//! both are changed; a service that is already there (`ALREADY_ENABLED`)
//! or already gone (`NOT_ENABLED`) is no change. What timectl added is
//! recorded (see [`FirewalldRecord`]) so that closing removes only that.
//! NTS-KE (TCP 4460) is the port `4460/tcp` in the same zone, handled the
//! same way with its own record (firewalld ships no NTS-KE service).

use std::path::{Path, PathBuf};

use zbus::{OwnedObjectPath, proxy};

use super::{FIREWALLD_BUS_NAME, FirewalldRecord, ZoneEntry};
use crate::host::bus::{SystemBus, error as bus_error};
use crate::host::{Files, Firewall, FirewallState, HostError, Port};

#[proxy(
    interface = "org.fedoraproject.FirewallD1",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
trait FirewallD {
    #[zbus(name = "getDefaultZone")]
    fn get_default_zone(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.fedoraproject.FirewallD1.zone",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
trait RuntimeZone {
    #[zbus(name = "queryService")]
    fn query_service(&self, zone: &str, service: &str) -> zbus::Result<bool>;
    #[zbus(name = "addService")]
    fn add_service(&self, zone: &str, service: &str, timeout: i32) -> zbus::Result<String>;
    #[zbus(name = "removeService")]
    fn remove_service(&self, zone: &str, service: &str) -> zbus::Result<String>;
    #[zbus(name = "queryPort")]
    fn query_port(&self, zone: &str, port: &str, protocol: &str) -> zbus::Result<bool>;
    #[zbus(name = "addPort")]
    fn add_port(
        &self,
        zone: &str,
        port: &str,
        protocol: &str,
        timeout: i32,
    ) -> zbus::Result<String>;
    #[zbus(name = "removePort")]
    fn remove_port(&self, zone: &str, port: &str, protocol: &str) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.fedoraproject.FirewallD1.config",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1/config"
)]
trait Config {
    #[zbus(name = "getZoneByName")]
    fn get_zone_by_name(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
}

#[proxy(
    interface = "org.fedoraproject.FirewallD1.config.zone",
    default_service = "org.fedoraproject.FirewallD1"
)]
trait PermanentZone {
    #[zbus(name = "queryService")]
    fn query_service(&self, service: &str) -> zbus::Result<bool>;
    #[zbus(name = "addService")]
    fn add_service(&self, service: &str) -> zbus::Result<()>;
    #[zbus(name = "removeService")]
    fn remove_service(&self, service: &str) -> zbus::Result<()>;
    #[zbus(name = "queryPort")]
    fn query_port(&self, port: &str, protocol: &str) -> zbus::Result<bool>;
    #[zbus(name = "addPort")]
    fn add_port(&self, port: &str, protocol: &str) -> zbus::Result<()>;
    #[zbus(name = "removePort")]
    fn remove_port(&self, port: &str, protocol: &str) -> zbus::Result<()>;
}

pub struct Firewalld {
    bus: SystemBus,
    zone: String,
    /// The state directory, a path on this (live) host.
    state_dir: PathBuf,
    files: Files,
}

/// firewalld reports "already there" and "not there" as errors whose
/// message starts with a code.
fn is_code(e: &zbus::Error, code: &str) -> bool {
    match e {
        zbus::Error::MethodError(_, Some(message), _) => message.starts_with(code),
        _ => false,
    }
}

/// Both configurations, as observed.
struct Seen {
    runtime: bool,
    permanent: bool,
}

impl Firewalld {
    /// firewalld, when it runs on the system bus; None when it does not.
    pub fn connect_if_running(state_dir: &Path) -> Result<Option<Firewalld>, HostError> {
        Self::connect_to(&crate::host::bus::system_address(), state_dir)
    }

    /// firewalld on the bus at `address`, when it runs there.
    pub fn connect_to(address: &str, state_dir: &Path) -> Result<Option<Firewalld>, HostError> {
        let bus = match SystemBus::connect_to(address) {
            Ok(bus) => bus,
            // No system bus: no firewalld either.
            Err(HostError::Unavailable(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !bus.has_owner(FIREWALLD_BUS_NAME)? {
            return Ok(None);
        }
        let zone = bus.block_on(async {
            FirewallDProxy::new(bus.conn())
                .await
                .map_err(|e| bus_error("firewalld", e))?
                .get_default_zone()
                .await
                .map_err(|e| bus_error("asking firewalld for its default zone", e))
        })?;
        Ok(Some(Firewalld {
            bus,
            zone,
            state_dir: state_dir.to_path_buf(),
            files: Files::new(Path::new("/")),
        }))
    }

    async fn permanent_zone(&self) -> Result<PermanentZoneProxy<'_>, HostError> {
        let path = ConfigProxy::new(self.bus.conn())
            .await
            .map_err(|e| bus_error("firewalld", e))?
            .get_zone_by_name(&self.zone)
            .await
            .map_err(|e| bus_error(&format!("firewalld permanent zone {}", self.zone), e))?;
        PermanentZoneProxy::builder(self.bus.conn())
            .path(path)
            .build()
            .await
            .map_err(|e| bus_error("firewalld", e))
    }

    async fn runtime_zone(&self) -> Result<RuntimeZoneProxy<'_>, HostError> {
        RuntimeZoneProxy::new(self.bus.conn())
            .await
            .map_err(|e| bus_error("firewalld", e))
    }

    fn seen(&self, entry: ZoneEntry<'_>) -> Result<Seen, HostError> {
        self.bus.block_on(async {
            let runtime = self.runtime_zone().await?;
            let runtime = match entry {
                ZoneEntry::Service(name) => runtime.query_service(&self.zone, name).await,
                ZoneEntry::Port(port, protocol) => {
                    runtime.query_port(&self.zone, port, protocol).await
                }
            }
            .map_err(|e| bus_error("asking firewalld (runtime)", e))?;
            let permanent = self.permanent_zone().await?;
            let permanent = match entry {
                ZoneEntry::Service(name) => permanent.query_service(name).await,
                ZoneEntry::Port(port, protocol) => permanent.query_port(port, protocol).await,
            }
            .map_err(|e| bus_error("asking firewalld (permanent)", e))?;
            Ok(Seen { runtime, permanent })
        })
    }
}

/// A change that is no change: already there, or already gone.
fn unchanged(result: zbus::Result<()>, code: &str, context: String) -> Result<bool, HostError> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if is_code(&e, code) => Ok(false),
        Err(e) => Err(bus_error(&context, e)),
    }
}

impl Firewall for Firewalld {
    fn describe(&self) -> String {
        "firewalld (D-Bus)".to_string()
    }

    fn rule_for(&self, port: Port) -> String {
        let entry = ZoneEntry::of(port);
        format!(
            "{} ({}) in zone {}, runtime and permanent (firewall-cmd --zone={} {} [--permanent])",
            entry.describe(),
            port.short(),
            self.zone,
            self.zone,
            entry.option()
        )
    }

    fn observe_port(&self, port: Port) -> Result<FirewallState, HostError> {
        let entry = ZoneEntry::of(port);
        let seen = self.seen(entry)?;
        let record = FirewalldRecord::load_for(&self.files, &self.state_dir, &self.zone, port);
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        Ok(FirewallState {
            ntp_open: seen.runtime && seen.permanent,
            detail: format!(
                "{} in zone {}: runtime {}, permanent {}",
                entry.describe(),
                self.zone,
                yes_no(seen.runtime),
                yes_no(seen.permanent)
            ),
            opened_by_timectl: record
                .is_some_and(|r| (r.runtime && seen.runtime) || (r.permanent && seen.permanent)),
        })
    }

    fn open_port(&self, port: Port) -> Result<(), HostError> {
        let entry = ZoneEntry::of(port);
        let what = entry.describe();
        let (added_runtime, added_permanent) = self.bus.block_on(async {
            let runtime = self.runtime_zone().await?;
            let result = match entry {
                ZoneEntry::Service(name) => runtime.add_service(&self.zone, name, 0).await,
                ZoneEntry::Port(p, protocol) => runtime.add_port(&self.zone, p, protocol, 0).await,
            };
            let added_runtime = unchanged(
                result.map(|_| ()),
                "ALREADY_ENABLED",
                format!("adding {what} (runtime)"),
            )?;
            let permanent = self.permanent_zone().await?;
            let result = match entry {
                ZoneEntry::Service(name) => permanent.add_service(name).await,
                ZoneEntry::Port(p, protocol) => permanent.add_port(p, protocol).await,
            };
            let added_permanent = unchanged(
                result,
                "ALREADY_ENABLED",
                format!("adding {what} (permanent)"),
            )?;
            Ok::<_, HostError>((added_runtime, added_permanent))
        })?;
        if added_runtime || added_permanent {
            FirewalldRecord::add_for(
                &self.files,
                &self.state_dir,
                &self.zone,
                port,
                added_runtime,
                added_permanent,
            )?;
        }
        Ok(())
    }

    fn close_port(&self, port: Port) -> Result<(), HostError> {
        let entry = ZoneEntry::of(port);
        let what = entry.describe();
        // Only what timectl added; without a record (an explicit close),
        // both.
        let record = FirewalldRecord::load_for(&self.files, &self.state_dir, &self.zone, port)
            .unwrap_or(FirewalldRecord {
                zone: self.zone.clone(),
                runtime: true,
                permanent: true,
            });
        self.bus.block_on(async {
            if record.runtime {
                let runtime = self.runtime_zone().await?;
                let result = match entry {
                    ZoneEntry::Service(name) => runtime.remove_service(&self.zone, name).await,
                    ZoneEntry::Port(p, protocol) => {
                        runtime.remove_port(&self.zone, p, protocol).await
                    }
                };
                unchanged(
                    result.map(|_| ()),
                    "NOT_ENABLED",
                    format!("removing {what} (runtime)"),
                )?;
            }
            if record.permanent {
                let permanent = self.permanent_zone().await?;
                let result = match entry {
                    ZoneEntry::Service(name) => permanent.remove_service(name).await,
                    ZoneEntry::Port(p, protocol) => permanent.remove_port(p, protocol).await,
                };
                unchanged(
                    result,
                    "NOT_ENABLED",
                    format!("removing {what} (permanent)"),
                )?;
            }
            Ok::<_, HostError>(())
        })?;
        FirewalldRecord::forget_for(&self.files, &self.state_dir, port)
    }
}
