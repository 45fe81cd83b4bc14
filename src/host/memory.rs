//! An in-memory host for unit tests of plans, apply, handlers and
//! rollback: systemd units, packages, the firewall and the daemon's
//! synchronisation state kept in memory, with faults injected on request
//! (an operation on a unit or package fails, once or always), and every
//! operation recorded in order. Files stay real files under a temporary
//! root ([`MemoryHost::host`] builds a [`Host`] on one), so file writes,
//! backups and restores are the real code.
//!
//! The real backends are covered by the system tests (tests/system_*.rs);
//! this one exists so that every failure point of an apply can be tested
//! without root, a container or a daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    Activity, Enablement, Files, Firewall, FirewallState, Host, HostError, InstallPreview, Mode,
    PackageManager, PackageState, Port, ServiceManager, UnitStatus,
};
use crate::sync::{SyncStatus, TimeProbe};

/// An operation a fault can be injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Start,
    Stop,
    Restart,
    Enable,
    Disable,
    Mask,
    Unmask,
    /// systemd's daemon-reload (target "").
    Reload,
    Install,
    Remove,
    /// Opening UDP 123 (target ""), or TCP 4460 (target "nts-ke").
    Open,
    Close,
    /// The daemon reports itself unsynchronised (target "").
    Sync,
}

/// How often an injected fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    Once,
    Always,
}

#[derive(Clone, Debug)]
struct Fault {
    op: Op,
    target: String,
    times: Times,
}

/// One unit as systemd would report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryUnit {
    pub enablement: Enablement,
    pub activity: Activity,
}

/// Everything the in-memory backends hold, compared whole by tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryState {
    pub units: BTreeMap<String, MemoryUnit>,
    /// Installed packages and their versions.
    pub packages: BTreeMap<String, String>,
    pub firewall_open: bool,
    pub firewall_opened_by_timectl: bool,
    /// TCP 4460 (NTS-KE).
    pub nts_ke_open: bool,
    pub nts_ke_opened_by_timectl: bool,
}

#[derive(Debug, Default)]
struct Inner {
    state: MemoryState,
    /// The units each package installs (when it is installed).
    provides: BTreeMap<String, Vec<String>>,
    /// Units defined by a unit file under the root's /etc/systemd/system:
    /// known to systemd after a reload while the file exists.
    unit_files: Vec<String>,
    /// The root's files, for those unit files.
    files: Option<Files>,
    faults: Vec<Fault>,
    /// Every operation that changed something, in order ("start x.service").
    log: Vec<String>,
}

impl Inner {
    /// systemd's daemon-reload: units with a unit file appear, units whose
    /// file is gone disappear.
    fn load_unit_files(&mut self) -> Result<(), HostError> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        for unit in &self.unit_files {
            let path = PathBuf::from("/etc/systemd/system").join(unit);
            if files.read(&path)?.is_some() {
                self.state.units.entry(unit.clone()).or_insert(MemoryUnit {
                    enablement: Enablement::Disabled,
                    activity: Activity::Inactive,
                });
            } else {
                self.state.units.remove(unit);
            }
        }
        Ok(())
    }

    /// Whether a fault is injected for (`op`, `target`); a `Once` fault is
    /// used up.
    fn fault_fires(&mut self, op: Op, target: &str) -> bool {
        let Some(i) = (self.faults.iter()).position(|f| f.op == op && f.target == target) else {
            return false;
        };
        if self.faults[i].times == Times::Once {
            self.faults.remove(i);
        }
        true
    }
}

/// The handle tests keep: cheap to clone, all clones share one state.
#[derive(Clone, Debug, Default)]
pub struct MemoryHost {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryHost {
    pub fn new() -> MemoryHost {
        MemoryHost::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding it has failed already.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A unit that exists now.
    pub fn with_unit(self, unit: &str, enabled: bool, running: bool) -> MemoryHost {
        self.lock().state.units.insert(
            unit.to_string(),
            MemoryUnit {
                enablement: if enabled {
                    Enablement::Enabled
                } else {
                    Enablement::Disabled
                },
                activity: if running {
                    Activity::Active
                } else {
                    Activity::Inactive
                },
            },
        );
        self
    }

    /// A package that installs `units` (disabled, not running); installed
    /// now when `installed`.
    pub fn with_package(self, name: &str, installed: bool, units: &[&str]) -> MemoryHost {
        {
            let mut inner = self.lock();
            inner.provides.insert(
                name.to_string(),
                units.iter().map(ToString::to_string).collect(),
            );
            if installed {
                inner.state.packages.insert(name.to_string(), "1.0".into());
            }
        }
        self
    }

    /// A unit whose unit file timectl writes (/etc/systemd/system/UNIT):
    /// it exists once systemd reloaded with the file there.
    pub fn with_unit_file_unit(self, unit: &str) -> MemoryHost {
        self.lock().unit_files.push(unit.to_string());
        self
    }

    pub fn with_firewall_open(self, open: bool) -> MemoryHost {
        self.lock().state.firewall_open = open;
        self
    }

    /// TCP 4460 open by the administrator (not by timectl).
    pub fn with_nts_ke_open(self, open: bool) -> MemoryHost {
        self.lock().state.nts_ke_open = open;
        self
    }

    /// Make `op` on `target` fail (`target` "" for reload, firewall, sync).
    pub fn fail(&self, op: Op, target: &str, times: Times) {
        self.lock().faults.push(Fault {
            op,
            target: target.to_string(),
            times,
        });
    }

    pub fn state(&self) -> MemoryState {
        self.lock().state.clone()
    }

    /// The operations that changed something, in order.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// A live [`Host`] on these backends with its files under `root`
    /// (a temporary directory): files are real, the rest is this.
    pub fn host(&self, root: &Path) -> Host {
        self.lock().files = Some(Files::new(root));
        let firewall = self.clone();
        Host {
            root: root.to_path_buf(),
            mode: Mode::Live,
            manage_owners: false,
            timectl_binary: PathBuf::from("/nonexistent/timectl"),
            files: Files::new(root),
            services: Box::new(self.clone()),
            packages: Box::new(self.clone()),
            firewall: Some(Box::new(move || Box::new(firewall.clone()))),
            time_probe: Some(Box::new(self.clone())),
        }
    }

    /// Run `change` unless a fault fires for (`op`, `target`); record it.
    fn operate(
        &self,
        op: Op,
        target: &str,
        change: impl FnOnce(&mut Inner) -> Result<(), HostError>,
    ) -> Result<(), HostError> {
        let mut inner = self.lock();
        if inner.fault_fires(op, target) {
            return Err(HostError::msg(format!("injected failure: {op:?} {target}")));
        }
        change(&mut inner)?;
        inner
            .log
            .push(format!("{op:?} {target}").trim_end().to_string());
        Ok(())
    }

    fn unit_op(
        &self,
        op: Op,
        unit: &str,
        change: impl FnOnce(&mut MemoryUnit),
    ) -> Result<(), HostError> {
        self.operate(op, unit, |inner| match inner.state.units.get_mut(unit) {
            Some(u) => {
                change(u);
                Ok(())
            }
            None => Err(HostError::msg(format!("Unit {unit} not found."))),
        })
    }

    /// A start that fails leaves the unit failed, as systemd does.
    fn start_unit(&self, op: Op, unit: &str) -> Result<(), HostError> {
        let result = self.unit_op(op, unit, |u| u.activity = Activity::Active);
        if result.is_err()
            && let Some(u) = self.lock().state.units.get_mut(unit)
        {
            u.activity = Activity::Failed;
        }
        result
    }
}

impl ServiceManager for MemoryHost {
    fn describe(&self) -> String {
        "systemd (in memory)".into()
    }
    fn runs_units(&self) -> bool {
        true
    }
    fn status(&self, unit: &str) -> Result<UnitStatus, HostError> {
        let inner = self.lock();
        let u = inner.state.units.get(unit);
        Ok(UnitStatus {
            name: unit.to_string(),
            enablement: u.map_or(Enablement::NotFound, |u| u.enablement.clone()),
            activity: Some(u.map_or(Activity::Inactive, |u| u.activity.clone())),
        })
    }
    fn start(&self, unit: &str) -> Result<(), HostError> {
        self.start_unit(Op::Start, unit)
    }
    fn stop(&self, unit: &str) -> Result<(), HostError> {
        self.unit_op(Op::Stop, unit, |u| u.activity = Activity::Inactive)
    }
    fn restart(&self, unit: &str) -> Result<(), HostError> {
        self.start_unit(Op::Restart, unit)
    }
    fn enable(&self, unit: &str) -> Result<(), HostError> {
        self.unit_op(Op::Enable, unit, |u| u.enablement = Enablement::Enabled)
    }
    fn disable(&self, unit: &str) -> Result<(), HostError> {
        self.unit_op(Op::Disable, unit, |u| u.enablement = Enablement::Disabled)
    }
    fn mask(&self, unit: &str) -> Result<(), HostError> {
        self.unit_op(Op::Mask, unit, |u| u.enablement = Enablement::Masked)
    }
    fn unmask(&self, unit: &str) -> Result<(), HostError> {
        self.unit_op(Op::Unmask, unit, |u| u.enablement = Enablement::Disabled)
    }
    fn reload(&self) -> Result<(), HostError> {
        self.operate(Op::Reload, "", Inner::load_unit_files)
    }
}

impl PackageManager for MemoryHost {
    fn describe(&self) -> String {
        "packages (in memory)".into()
    }
    fn query(&self, name: &str) -> Result<PackageState, HostError> {
        Ok(match self.lock().state.packages.get(name) {
            Some(version) => PackageState::Installed(version.clone()),
            None => PackageState::Absent,
        })
    }
    fn owns(&self, _: &str, _: &Path) -> Result<bool, HostError> {
        Ok(false)
    }
    fn preview_install(&self, names: &[String]) -> Result<InstallPreview, HostError> {
        Ok(InstallPreview {
            installs: names.to_vec(),
            ..InstallPreview::default()
        })
    }
    fn install(&self, names: &[String]) -> Result<(), HostError> {
        for name in names {
            self.operate(Op::Install, name, |inner| {
                let units = inner.provides.get(name).cloned().unwrap_or_default();
                inner.state.packages.insert(name.clone(), "1.0".into());
                for unit in units {
                    inner.state.units.entry(unit).or_insert(MemoryUnit {
                        enablement: Enablement::Disabled,
                        activity: Activity::Inactive,
                    });
                }
                Ok(())
            })?;
        }
        Ok(())
    }
    fn remove(&self, names: &[String]) -> Result<(), HostError> {
        for name in names {
            self.operate(Op::Remove, name, |inner| {
                inner.state.packages.remove(name);
                for unit in inner.provides.get(name).cloned().unwrap_or_default() {
                    inner.state.units.remove(&unit);
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// The fault target for a port's open and close.
fn port_target(port: Port) -> &'static str {
    match port {
        Port::Ntp => "",
        Port::NtsKe => "nts-ke",
    }
}

impl Firewall for MemoryHost {
    fn describe(&self) -> String {
        "the firewall (in memory)".into()
    }
    fn rule_for(&self, port: Port) -> String {
        format!("{} dport {} accept", port.protocol(), port.number())
    }
    fn observe_port(&self, port: Port) -> Result<FirewallState, HostError> {
        let state = &self.lock().state;
        let (open, ours) = match port {
            Port::Ntp => (state.firewall_open, state.firewall_opened_by_timectl),
            Port::NtsKe => (state.nts_ke_open, state.nts_ke_opened_by_timectl),
        };
        Ok(FirewallState {
            ntp_open: open,
            detail: self.rule_for(port),
            opened_by_timectl: ours,
        })
    }
    fn open_port(&self, port: Port) -> Result<(), HostError> {
        self.operate(Op::Open, port_target(port), |inner| {
            let s = &mut inner.state;
            match port {
                Port::Ntp => (s.firewall_open, s.firewall_opened_by_timectl) = (true, true),
                Port::NtsKe => (s.nts_ke_open, s.nts_ke_opened_by_timectl) = (true, true),
            }
            Ok(())
        })
    }
    fn close_port(&self, port: Port) -> Result<(), HostError> {
        self.operate(Op::Close, port_target(port), |inner| {
            let s = &mut inner.state;
            match port {
                Port::Ntp => (s.firewall_open, s.firewall_opened_by_timectl) = (false, false),
                Port::NtsKe => (s.nts_ke_open, s.nts_ke_opened_by_timectl) = (false, false),
            }
            Ok(())
        })
    }
}

impl TimeProbe for MemoryHost {
    fn status(&self) -> Result<SyncStatus, HostError> {
        let unsynchronised = self.lock().fault_fires(Op::Sync, "");
        Ok(SyncStatus {
            synchronized: !unsynchronised,
            offset_seconds: Some(0.0),
            detail: if unsynchronised {
                "no source selected (injected)".into()
            } else {
                "in memory".into()
            },
            ..SyncStatus::default()
        })
    }
    fn step_now(&self) -> Result<String, HostError> {
        Ok("stepped (in memory)".into())
    }
}
