//! firewalld over D-Bus, while it runs: the `ntp` service (udp/123) in the
//! default zone, in the runtime configuration (effective now) and in the
//! permanent one (effective after a reload or reboot). Both are checked and
//! both are changed; a service that is already there (`ALREADY_ENABLED`)
//! or already gone (`NOT_ENABLED`) is no change. What timectl added is
//! recorded (see [`FirewalldRecord`]) so that closing removes only that.

use std::path::{Path, PathBuf};

use zbus::{OwnedObjectPath, proxy};

use super::{FIREWALLD_BUS_NAME, FIREWALLD_SERVICE, FirewalldRecord};
use crate::host::bus::{SystemBus, error as bus_error};
use crate::host::{Files, Firewall, FirewallState, HostError};

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

    fn seen(&self) -> Result<Seen, HostError> {
        self.bus.block_on(async {
            let runtime = RuntimeZoneProxy::new(self.bus.conn())
                .await
                .map_err(|e| bus_error("firewalld", e))?
                .query_service(&self.zone, FIREWALLD_SERVICE)
                .await
                .map_err(|e| bus_error("asking firewalld (runtime)", e))?;
            let permanent = self
                .permanent_zone()
                .await?
                .query_service(FIREWALLD_SERVICE)
                .await
                .map_err(|e| bus_error("asking firewalld (permanent)", e))?;
            Ok(Seen { runtime, permanent })
        })
    }
}

impl Firewall for Firewalld {
    fn describe(&self) -> String {
        "firewalld (D-Bus)".to_string()
    }

    fn rule(&self) -> String {
        format!(
            "service {FIREWALLD_SERVICE} (udp/123) in zone {}, runtime and permanent (firewall-cmd --zone={} --add-service={FIREWALLD_SERVICE} [--permanent])",
            self.zone, self.zone
        )
    }

    fn observe(&self) -> Result<FirewallState, HostError> {
        let seen = self.seen()?;
        let record = FirewalldRecord::load(&self.files, &self.state_dir, &self.zone);
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        Ok(FirewallState {
            ntp_open: seen.runtime && seen.permanent,
            detail: format!(
                "service {FIREWALLD_SERVICE} in zone {}: runtime {}, permanent {}",
                self.zone,
                yes_no(seen.runtime),
                yes_no(seen.permanent)
            ),
            opened_by_timectl: record
                .is_some_and(|r| (r.runtime && seen.runtime) || (r.permanent && seen.permanent)),
        })
    }

    fn open(&self) -> Result<(), HostError> {
        let (added_runtime, added_permanent) = self.bus.block_on(async {
            let runtime = RuntimeZoneProxy::new(self.bus.conn())
                .await
                .map_err(|e| bus_error("firewalld", e))?;
            let added_runtime = match runtime.add_service(&self.zone, FIREWALLD_SERVICE, 0).await {
                Ok(_) => true,
                Err(e) if is_code(&e, "ALREADY_ENABLED") => false,
                Err(e) => return Err(bus_error("adding service ntp (runtime)", e)),
            };
            let permanent = self.permanent_zone().await?;
            let added_permanent = match permanent.add_service(FIREWALLD_SERVICE).await {
                Ok(()) => true,
                Err(e) if is_code(&e, "ALREADY_ENABLED") => false,
                Err(e) => return Err(bus_error("adding service ntp (permanent)", e)),
            };
            Ok((added_runtime, added_permanent))
        })?;
        if added_runtime || added_permanent {
            FirewalldRecord::add(
                &self.files,
                &self.state_dir,
                &self.zone,
                added_runtime,
                added_permanent,
            )?;
        }
        Ok(())
    }

    fn close(&self) -> Result<(), HostError> {
        // Only what timectl added; without a record (an explicit close),
        // both.
        let record = FirewalldRecord::load(&self.files, &self.state_dir, &self.zone).unwrap_or(
            FirewalldRecord {
                zone: self.zone.clone(),
                runtime: true,
                permanent: true,
            },
        );
        self.bus.block_on(async {
            if record.runtime {
                let runtime = RuntimeZoneProxy::new(self.bus.conn())
                    .await
                    .map_err(|e| bus_error("firewalld", e))?;
                match runtime.remove_service(&self.zone, FIREWALLD_SERVICE).await {
                    Ok(_) => {}
                    Err(e) if is_code(&e, "NOT_ENABLED") => {}
                    Err(e) => return Err(bus_error("removing service ntp (runtime)", e)),
                }
            }
            if record.permanent {
                let permanent = self.permanent_zone().await?;
                match permanent.remove_service(FIREWALLD_SERVICE).await {
                    Ok(()) => {}
                    Err(e) if is_code(&e, "NOT_ENABLED") => {}
                    Err(e) => return Err(bus_error("removing service ntp (permanent)", e)),
                }
            }
            Ok::<_, HostError>(())
        })?;
        FirewalldRecord::forget(&self.files, &self.state_dir)
    }
}
