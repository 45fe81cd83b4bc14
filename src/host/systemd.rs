//! The live service manager: systemd over D-Bus (`org.freedesktop.systemd1`).
//!
//! It reads each unit's LoadState, ActiveState, SubState and UnitFileState;
//! starts, stops and restarts units (job mode "replace") and waits for each
//! job's `JobRemoved` signal with a deadline; enables, disables, masks and
//! unmasks unit files and then reloads the manager, as `systemctl` does.
//! A start whose job "succeeded" but leaves the unit inactive or failed is
//! an error that says why: the unit's Result, the start conditions that were
//! not met, and the last lines of its journal.
//!
//! The [`ServiceManager`] trait is synchronous, zbus is async: the backend
//! owns a [`SystemBus`], a connection with its own current-thread tokio
//! runtime, and runs each call to completion there (see `host::bus` for why
//! that is enough and costs no thread). The bus is the system bus, or
//! `DBUS_SYSTEM_BUS_ADDRESS` when set: tests reach a container's systemd
//! through its bind-mounted bus socket.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use zbus::export::futures_core::Stream;
use zbus::{OwnedObjectPath, proxy};

use super::bus::{self, SystemBus, error as bus_error};
use super::command;
use super::{Activity, Enablement, HostError, ServiceManager, UnitStatus};

/// How long one start/stop/restart job may take: systemd's default start
/// timeout (90 s) plus a margin, so systemd gives up before we do.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn mask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn unmask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn reload(&self) -> zbus::Result<()>;
    fn subscribe(&self) -> zbus::Result<()>;
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: zbus::ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_error(&self) -> zbus::Result<(String, String)>;
    #[zbus(property)]
    fn condition_result(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn assert_result(&self) -> zbus::Result<bool>;
    /// (type, trigger, negate, parameter, state): state < 0 failed.
    #[zbus(property)]
    fn conditions(&self) -> zbus::Result<Vec<(String, bool, bool, String, i32)>>;
    #[zbus(property)]
    fn asserts(&self) -> zbus::Result<Vec<(String, bool, bool, String, i32)>>;
    /// Pin the unit in memory: an inactive unit is otherwise unloaded as
    /// soon as its job ends, and with it the record of why it did not run.
    #[zbus(name = "Ref")]
    fn pin(&self) -> zbus::Result<()>;
    #[zbus(name = "Unref")]
    fn unpin(&self) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn status_text(&self) -> zbus::Result<String>;
}

/// What a job does to a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Start,
    Stop,
    Restart,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
        }
    }
}

/// What a unit-file change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileOp {
    Enable,
    Disable,
    Mask,
    Unmask,
}

impl FileOp {
    fn name(self) -> &'static str {
        match self {
            FileOp::Enable => "enable",
            FileOp::Disable => "disable",
            FileOp::Mask => "mask",
            FileOp::Unmask => "unmask",
        }
    }
}

/// A unit's states, as read in one go.
#[derive(Debug, Clone)]
struct UnitState {
    id: String,
    load: String,
    active: String,
    sub: String,
    file: String,
}

/// systemd over D-Bus.
pub struct Systemd {
    bus: SystemBus,
    /// Whether the bus is this machine's own, so `journalctl` here reads the
    /// same journal as the units (not so for a container's bus reached from
    /// the host).
    local_journal: bool,
    job_timeout: Duration,
    /// Unit files changed (or a reload was asked for) since systemd last
    /// reloaded. The reload is made before the next job (start, stop,
    /// restart), and when this value is dropped: an apply that disables one
    /// daemon, writes unit files, enables another and starts it reloads
    /// once, not three times (each reload is about 0.2 s of systemd's time
    /// on a small host). Meanwhile `state` reads unit-file states from disk.
    reload_pending: AtomicBool,
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if self.reload_pending.load(Ordering::SeqCst)
            && let Err(e) = self.block_on(self.flush_reload())
        {
            eprintln!("timectl: warning: {e}");
        }
    }
}

/// The next item of a signal stream (a tiny `StreamExt::next`).
async fn next_item<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// "ConditionCapability=CAP_SYS_TIME", "ConditionVirtualization=!container".
fn failed_checks(checks: &[(String, bool, bool, String, i32)]) -> Vec<String> {
    checks
        .iter()
        .filter(|(_, _, _, _, state)| *state < 0)
        .map(|(kind, trigger, negate, parameter, _)| {
            format!(
                "{kind}={}{}{parameter}",
                if *trigger { "|" } else { "" },
                if *negate { "!" } else { "" }
            )
        })
        .collect()
}

impl Systemd {
    /// Connect to the system bus (or `DBUS_SYSTEM_BUS_ADDRESS`) and check
    /// that systemd answers there.
    pub fn connect() -> Result<Systemd, HostError> {
        Self::connect_to(&bus::system_address())
    }

    /// Connect to the systemd on the bus at `address` (a container's, from
    /// outside it).
    pub fn connect_to(address: &str) -> Result<Systemd, HostError> {
        let bus = SystemBus::connect_to(address)?;
        bus.block_on(async {
            let manager = ManagerProxy::new(bus.conn())
                .await
                .map_err(|e| bus_error("systemd", e))?;
            // One cheap call proves systemd is there (and not just a bus).
            manager
                .version()
                .await
                .map_err(|e| match bus_error("systemd", e) {
                    HostError::Unavailable(m) => {
                        HostError::Unavailable(format!("{m} (is PID 1 systemd?)"))
                    }
                    other => other,
                })?;
            // Without a subscriber systemd may not send job signals; the
            // call is allowed to everyone, and harmless if refused.
            let _ = manager.subscribe().await;
            Ok::<_, HostError>(())
        })?;
        Ok(Systemd {
            local_journal: bus::is_local_address(bus.address()),
            bus,
            job_timeout: JOB_TIMEOUT,
            reload_pending: AtomicBool::new(false),
        })
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.bus.block_on(future)
    }

    async fn manager(&self) -> Result<ManagerProxy<'_>, HostError> {
        ManagerProxy::builder(self.bus.conn())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| bus_error("systemd", e))
    }

    /// The reload owed since unit files changed, if any.
    async fn flush_reload(&self) -> Result<(), HostError> {
        if self.reload_pending.swap(false, Ordering::SeqCst) {
            let reloaded = self.manager().await?.reload().await;
            if let Err(e) = reloaded {
                self.reload_pending.store(true, Ordering::SeqCst);
                return Err(bus_error("reloading systemd", e));
            }
        }
        Ok(())
    }

    async fn unit_path(&self, unit: &str) -> Result<OwnedObjectPath, HostError> {
        self.manager()
            .await?
            .load_unit(unit)
            .await
            .map_err(|e| bus_error(&format!("loading {unit}"), e))
    }

    async fn unit_proxy(&self, unit: &str) -> Result<UnitProxy<'_>, HostError> {
        let path = self.unit_path(unit).await?;
        UnitProxy::builder(self.bus.conn())
            .path(path)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| bus_error(unit, e))
    }

    async fn state(&self, unit: &str) -> Result<UnitState, HostError> {
        // Unit files changed and systemd has not reloaded yet: its LoadState
        // and UnitFileState are from before. The unit file's state on disk
        // (GetUnitFileState; an error when there is no unit file) is what a
        // reload would show, except for an alias made since (Alias= links
        // appear when a unit is enabled): that resolves to its unit only
        // after the reload, so it is made now.
        let mut disk = None;
        if self.reload_pending.load(Ordering::SeqCst) {
            let on_disk = self.unit_file_on_disk(unit).await?;
            if on_disk == "alias" {
                self.flush_reload().await?;
            } else {
                disk = Some(on_disk);
            }
        }
        let proxy = self.unit_proxy(unit).await?;
        let err = |what: &str| {
            let context = format!("reading {what} of {unit}");
            move |e| bus_error(&context, e)
        };
        let mut state = UnitState {
            id: proxy.id().await.map_err(err("Id"))?,
            load: proxy.load_state().await.map_err(err("LoadState"))?,
            active: proxy.active_state().await.map_err(err("ActiveState"))?,
            sub: proxy.sub_state().await.map_err(err("SubState"))?,
            file: proxy
                .unit_file_state()
                .await
                .map_err(err("UnitFileState"))?,
        };
        if let Some(mut disk) = disk {
            if !state.id.is_empty() && state.id != unit {
                disk = self.unit_file_on_disk(&state.id).await?;
            }
            state.load = match (state.load.as_str(), disk.as_str()) {
                (_, "masked" | "masked-runtime") => "masked".into(),
                ("not-found" | "masked", d) if !d.is_empty() => "loaded".into(),
                ("masked", "") => "not-found".into(),
                (load, _) => load.into(),
            };
            state.file = disk;
        }
        Ok(state)
    }

    /// The unit file's state on disk, "" when there is none.
    async fn unit_file_on_disk(&self, unit: &str) -> Result<String, HostError> {
        Ok(self
            .manager()
            .await?
            .get_unit_file_state(unit)
            .await
            .unwrap_or_default())
    }

    /// Why a unit is not running after a start: its Result, unmet
    /// conditions or assertions, its status text and its last log lines.
    async fn explain(&self, unit: &str, state: &UnitState) -> String {
        let mut parts = vec![if state.sub == state.active {
            format!("{unit} is {}", state.active)
        } else {
            format!("{unit} is {} ({})", state.active, state.sub)
        }];
        if let Ok(proxy) = self.unit_proxy(unit).await {
            if proxy.condition_result().await == Ok(false) {
                let failed = failed_checks(&proxy.conditions().await.unwrap_or_default());
                parts.push(if failed.is_empty() {
                    format!("a start condition was not met (systemctl show -p Conditions {unit})")
                } else {
                    format!("a start condition was not met: {}", failed.join(", "))
                });
            }
            let failed = failed_checks(&proxy.asserts().await.unwrap_or_default());
            if !failed.is_empty() {
                parts.push(format!("an assertion failed: {}", failed.join(", ")));
            }
            if state.load != "loaded" {
                let reason = proxy
                    .load_error()
                    .await
                    .map(|(_, message)| message)
                    .unwrap_or_default();
                parts.push(format!("load state {} {reason}", state.load));
            }
        }
        if let Ok(path) = self.unit_path(unit).await
            && let Ok(service) = ServiceProxy::builder(self.bus.conn())
                .path(path)
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await
        {
            if let Ok(result) = service.result().await
                && result != "success"
            {
                // The main process's status; a forking daemon that fails
                // before it forks shows up in the log lines instead.
                match service.exec_main_status().await {
                    Ok(status) if status != 0 => {
                        parts.push(format!("Result={result}, exit status {status}"))
                    }
                    _ => parts.push(format!("Result={result}")),
                }
            }
            if let Ok(text) = service.status_text().await
                && !text.is_empty()
            {
                parts.push(format!("status: {text}"));
            }
        }
        let mut text = parts.join("; ");
        if let Some(log) = self.journal_tail(unit) {
            text.push_str("\n  last log lines:\n    ");
            text.push_str(&log.replace('\n', "\n    "));
        }
        text
    }

    /// `journalctl -u UNIT -n 5`, only where the journal is this bus's.
    fn journal_tail(&self, unit: &str) -> Option<String> {
        if !self.local_journal {
            return None;
        }
        let out = command::run(
            &[
                "journalctl",
                "--no-pager",
                "-q",
                "-o",
                "short",
                "-n",
                "5",
                "-u",
                unit,
            ],
            &[("LC_ALL", "C")],
            Duration::from_secs(10),
        )
        .ok()?;
        let text = out.stdout.trim().to_string();
        (out.success() && !text.is_empty()).then_some(text)
    }

    /// Queue a job and wait until systemd reports it finished, then check
    /// that the unit is where the job should have left it.
    async fn job(&self, verb: Verb, unit: &str) -> Result<(), HostError> {
        // A unit written or changed since the last reload is started as it
        // is on disk.
        self.flush_reload().await?;
        let manager = self.manager().await?;
        // Listen before queueing, so the signal cannot be missed.
        let mut removed = manager
            .receive_job_removed()
            .await
            .map_err(|e| bus_error("listening for systemd jobs", e))?;
        let context = format!("{} {unit}", verb.name());
        let pinned = self.unit_proxy(unit).await.ok();
        if let Some(p) = &pinned {
            // Best effort: without it, conditions may read as unchecked.
            let _ = p.pin().await;
        }
        let result = self
            .run_job(&manager, &mut removed, verb, unit, &context)
            .await;
        if let Some(p) = &pinned {
            let _ = p.unpin().await;
        }
        result
    }

    async fn run_job(
        &self,
        manager: &ManagerProxy<'_>,
        removed: &mut JobRemovedStream,
        verb: Verb,
        unit: &str,
        context: &str,
    ) -> Result<(), HostError> {
        let job = match verb {
            Verb::Start => manager.start_unit(unit, "replace").await,
            Verb::Stop => manager.stop_unit(unit, "replace").await,
            Verb::Restart => manager.restart_unit(unit, "replace").await,
        }
        .map_err(|e| bus_error(context, e))?;
        let wait = async {
            while let Some(signal) = next_item(removed).await {
                let Ok(args) = signal.args() else { continue };
                if args.job().as_str() == job.as_str() {
                    return Ok(args.result().to_string());
                }
            }
            Err(HostError::msg(format!(
                "{context}: the connection to systemd closed while waiting for the job"
            )))
        };
        let result = tokio::time::timeout(self.job_timeout, wait)
            .await
            .map_err(|_| {
                HostError::msg(format!(
                    "{context}: the job did not finish within {}s",
                    self.job_timeout.as_secs()
                ))
            })??;
        let state = self.state(unit).await?;
        let ok = match verb {
            Verb::Start | Verb::Restart => {
                result == "done" && matches!(state.active.as_str(), "active" | "reloading")
            }
            Verb::Stop => {
                result == "done" && matches!(state.active.as_str(), "inactive" | "failed")
            }
        };
        if ok {
            return Ok(());
        }
        let why = self.explain(unit, &state).await;
        Err(HostError::msg(match verb {
            _ if result == "done" && verb != Verb::Stop => {
                format!(
                    "systemd ran the {} job but the unit is not running: {why}",
                    verb.name()
                )
            }
            _ => format!("the {} job ended \"{result}\": {why}", verb.name()),
        }))
    }

    /// Change unit files; systemd reloads before the next job (or at the
    /// end), so the manager sees the change.
    async fn unit_files(&self, op: FileOp, unit: &str) -> Result<(), HostError> {
        let manager = self.manager().await?;
        let context = format!("{} {unit}", op.name());
        let err = |e| bus_error(&context, e);
        let files = [unit];
        match op {
            FileOp::Enable => {
                let (has_install, _changes) = manager
                    .enable_unit_files(&files, false, false)
                    .await
                    .map_err(err)?;
                if !has_install {
                    return Err(HostError::msg(format!(
                        "{context}: the unit has no [Install] section (a static unit) and cannot be enabled"
                    )));
                }
            }
            FileOp::Disable => {
                manager
                    .disable_unit_files(&files, false)
                    .await
                    .map_err(err)?;
            }
            // force: replace a link that enables the unit with the mask.
            FileOp::Mask => {
                manager
                    .mask_unit_files(&files, false, true)
                    .await
                    .map_err(err)?;
            }
            FileOp::Unmask => {
                manager
                    .unmask_unit_files(&files, false)
                    .await
                    .map_err(err)?;
            }
        }
        self.reload_pending.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl ServiceManager for Systemd {
    fn describe(&self) -> String {
        format!("systemd (D-Bus at {})", self.bus.address())
    }

    fn runs_units(&self) -> bool {
        true
    }

    fn status(&self, unit: &str) -> Result<UnitStatus, HostError> {
        let state = self.block_on(self.state(unit))?;
        let enablement = match state.load.as_str() {
            "not-found" => Enablement::NotFound,
            "masked" => Enablement::Masked,
            _ => Enablement::from_systemd(&state.file),
        };
        Ok(UnitStatus {
            // The unit's own name: an alias (chronyd.service) resolves to
            // the unit it names (chrony.service).
            name: if state.id.is_empty() {
                unit.to_string()
            } else {
                state.id
            },
            enablement,
            activity: Some(Activity::from_systemd(&state.active)),
        })
    }

    fn start(&self, unit: &str) -> Result<(), HostError> {
        self.block_on(self.job(Verb::Start, unit))
    }

    fn stop(&self, unit: &str) -> Result<(), HostError> {
        let state = self.block_on(self.state(unit))?;
        if state.load == "not-found" {
            // Nothing to stop; StopUnit would fail with NoSuchUnit.
            return Ok(());
        }
        self.block_on(async {
            self.job(Verb::Stop, unit).await?;
            // Stopped means inactive: a unit left "failed" (a start that
            // did not come up, stopped again by a rollback) would otherwise
            // stay listed by `systemctl --failed` and differ from before.
            if self.state(unit).await?.active == "failed" {
                self.manager()
                    .await?
                    .reset_failed_unit(unit)
                    .await
                    .map_err(|e| bus_error(&format!("reset-failed {unit}"), e))?;
            }
            Ok(())
        })
    }

    fn restart(&self, unit: &str) -> Result<(), HostError> {
        self.block_on(self.job(Verb::Restart, unit))
    }

    fn enable(&self, unit: &str) -> Result<(), HostError> {
        self.block_on(self.unit_files(FileOp::Enable, unit))
    }

    fn disable(&self, unit: &str) -> Result<(), HostError> {
        self.block_on(self.unit_files(FileOp::Disable, unit))
    }

    fn mask(&self, unit: &str) -> Result<(), HostError> {
        self.block_on(self.unit_files(FileOp::Mask, unit))
    }

    fn unmask(&self, unit: &str) -> Result<(), HostError> {
        self.block_on(self.unit_files(FileOp::Unmask, unit))
    }

    /// Owed until the next job, or the end (see `reload_pending`).
    fn reload(&self) -> Result<(), HostError> {
        self.reload_pending.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_conditions_read_like_unit_files() {
        let checks = vec![
            (
                "ConditionCapability".to_string(),
                false,
                false,
                "CAP_SYS_TIME".to_string(),
                -1,
            ),
            (
                "ConditionVirtualization".to_string(),
                false,
                true,
                "container".to_string(),
                -1,
            ),
            (
                "ConditionPathExists".to_string(),
                false,
                false,
                "/etc/chrony".to_string(),
                1,
            ),
        ];
        assert_eq!(
            failed_checks(&checks),
            vec![
                "ConditionCapability=CAP_SYS_TIME",
                "ConditionVirtualization=!container"
            ]
        );
    }

    #[test]
    fn no_bus_is_unavailable_not_a_crash() {
        // A socket that cannot exist: connecting must fail cleanly and say
        // that systemd could not be seen (a plan turns that into a blocker).
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}/none", dir.path().display());
        match Systemd::connect_to(&address) {
            Err(HostError::Unavailable(m)) => assert!(m.contains(&address), "{m}"),
            Err(other) => panic!("expected Unavailable, got {other:?}"),
            Ok(_) => panic!("connected to a socket that does not exist"),
        }
    }
}
