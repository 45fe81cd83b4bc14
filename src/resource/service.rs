//! A systemd unit: enabled at boot or not, running or not, masked or not,
//! and restarted when a file it depends on changes (a handler).

use super::{
    Action, Change, ChangeKind, Converge, Diff, DiffError, Edge, EdgeKind, ObserveError,
    PlanContext, ResourceId, hash_of,
};
use crate::host::{Enablement, HostError, UnitStatus};
use crate::spec::ConflictPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceRole {
    /// The daemon that must own the clock.
    Chosen,
    /// Another time daemon, to be stopped (and disabled or masked).
    Conflicting,
}

#[derive(Debug, Clone)]
pub struct ServiceResource {
    pub unit: String,
    pub role: ServiceRole,
    pub enabled: Option<bool>,
    pub running: Option<bool>,
    pub masked: Option<bool>,
    /// Why this state is wanted, shown with each change.
    pub reason: String,
    /// Resources whose change restarts it ([`EdgeKind::Restarts`]): its
    /// config files, its executable.
    pub restart_on: Vec<ResourceId>,
    /// Resources that may create its unit ([`EdgeKind::Provides`]): its
    /// package, unit files. When one changes earlier in the plan, a missing
    /// unit is expected, and a running one may be running with a default
    /// config (started by the package's install).
    pub installed_by: Vec<ResourceId>,
    /// Resources converged before it, with no other effect
    /// ([`EdgeKind::Before`]): the systemd reload, the firewall.
    pub after: Vec<ResourceId>,
}

impl Converge for ServiceResource {
    type Observation = UnitStatus;

    fn id(&self) -> ResourceId {
        ResourceId::Service(self.unit.clone())
    }

    fn edges(&self) -> Vec<Edge> {
        let to = self.id();
        let edge = |kind| {
            let to = to.clone();
            move |from: &ResourceId| Edge::new(from.clone(), to.clone(), kind)
        };
        (self.installed_by.iter().map(edge(EdgeKind::Provides)))
            .chain(self.restart_on.iter().map(edge(EdgeKind::Restarts)))
            .chain(self.after.iter().map(edge(EdgeKind::Before)))
            .collect()
    }

    fn observe(&self, ctx: &PlanContext<'_>) -> Result<UnitStatus, ObserveError> {
        ctx.host
            .services
            .status(&self.unit)
            .map_err(ObserveError::new(&self.unit))
    }

    fn fingerprint(&self, observed: &UnitStatus) -> Option<String> {
        Some(hash_of(observed))
    }

    fn diff(&self, status: &UnitStatus, ctx: &PlanContext<'_>) -> Result<Diff, DiffError> {
        if self.role == ServiceRole::Conflicting {
            if let Some(note) = self.alias_of_chosen(status, ctx) {
                return Ok(Diff {
                    changes: Vec::new(),
                    notes: vec![note],
                });
            }
            self.refuse_if_forbidden(status, ctx)?;
        }
        self.plan(ctx, status)
            .map(Diff::from)
            .map_err(DiffError::host(format!("planning {}", self.unit)))
    }
}

impl ServiceResource {
    /// A conflicting daemon's unit name can be another name (Alias=) of
    /// the chosen daemon's unit: systemd resolves it to the chosen unit,
    /// which must never be stopped.
    fn alias_of_chosen(&self, status: &UnitStatus, ctx: &PlanContext<'_>) -> Option<String> {
        let chosen = ctx.daemon;
        (status.name != self.unit
            && (status.name == chosen.unit || chosen.unit_aliases.contains(&status.name)))
        .then(|| {
            format!(
                "{} is another name of {}, the chosen daemon's unit: left alone",
                self.unit, status.name
            )
        })
    }

    /// `conflicts: fail` refuses to replace a daemon that is in use.
    fn refuse_if_forbidden(
        &self,
        status: &UnitStatus,
        ctx: &PlanContext<'_>,
    ) -> Result<(), DiffError> {
        let in_use = status.enablement.is_enabled()
            || status.activity.as_ref().is_some_and(|a| a.is_running());
        if ctx.conflicts != ConflictPolicy::Fail || !in_use {
            return Ok(());
        }
        Err(DiffError::Conflict(format!(
            "{} is {}{}, and the desired state says `conflicts: fail`: refusing to replace it with {} (use conflicts: disable to switch)",
            self.unit,
            status.enablement,
            status
                .activity
                .as_ref()
                .map_or(String::new(), |a| format!(" and {a}")),
            ctx.daemon.label
        )))
    }

    /// Changes from the observed status.
    fn plan(&self, ctx: &PlanContext<'_>, status: &UnitStatus) -> Result<Vec<Change>, HostError> {
        let will_install = ctx.first_changed(&self.installed_by).is_some();
        if !status.exists() && !will_install {
            if self.role == ServiceRole::Chosen {
                return Err(HostError::msg(format!(
                    "unit {} does not exist and no package that provides it is being installed",
                    self.unit
                )));
            }
            return Ok(Vec::new());
        }
        let live = ctx.host.services.runs_units();
        let mut out = self.stop_changes(status, live);
        out.extend(self.enable_change(status));
        if self.running == Some(true) && live {
            let trigger = ctx.first_changed(&self.restart_on);
            out.extend(self.start_change(status, trigger, will_install));
        }
        Ok(out)
    }

    /// Unmask, stop, disable, mask: in that order.
    fn stop_changes(&self, status: &UnitStatus, live: bool) -> Vec<Change> {
        let unit = &self.unit;
        let masked = status.enablement == Enablement::Masked;
        let running = status.activity.as_ref().is_some_and(|a| a.is_running());
        let mut out = Vec::new();
        if self.masked == Some(false) && masked {
            out.push(self.change(
                ChangeKind::Change,
                format!("unmask {unit}"),
                format!("{unit} is masked; {}", self.reason),
                Action::UnmaskUnit { unit: unit.clone() },
            ));
        }
        if self.running == Some(false) && live && running {
            out.push(self.change(
                ChangeKind::Remove,
                format!("stop {unit}"),
                self.reason.clone(),
                Action::StopUnit { unit: unit.clone() },
            ));
        }
        if self.enabled == Some(false) && status.enablement.is_enabled() {
            out.push(self.change(
                ChangeKind::Remove,
                format!("disable {unit}"),
                self.reason.clone(),
                Action::DisableUnit { unit: unit.clone() },
            ));
        }
        if self.masked == Some(true) && !masked {
            out.push(self.change(
                ChangeKind::Remove,
                format!("mask {unit}"),
                format!("{} (conflicts: mask)", self.reason),
                Action::MaskUnit { unit: unit.clone() },
            ));
        }
        out
    }

    fn enable_change(&self, status: &UnitStatus) -> Option<Change> {
        let unit = &self.unit;
        (self.enabled == Some(true) && (!status.enablement.is_enabled() || !status.exists())).then(
            || {
                self.change(
                    ChangeKind::Add,
                    format!("enable {unit}"),
                    if status.exists() {
                        format!("{}; it is {} at boot", self.reason, status.enablement)
                    } else {
                        format!("{}; its unit is installed by this plan", self.reason)
                    },
                    Action::EnableUnit { unit: unit.clone() },
                )
            },
        )
    }

    /// Start it, or restart it when a resource it restarts on changed.
    fn start_change(
        &self,
        status: &UnitStatus,
        trigger: Option<&ResourceId>,
        will_install: bool,
    ) -> Option<Change> {
        let unit = &self.unit;
        let running = status.activity.as_ref().is_some_and(|a| a.is_running());
        if !running {
            return Some(self.change(
                ChangeKind::Add,
                format!("start {unit}"),
                format!(
                    "{}; it is {}",
                    self.reason,
                    status
                        .activity
                        .as_ref()
                        .map_or("not running".to_string(), |a| a.to_string())
                ),
                Action::StartUnit {
                    unit: unit.clone(),
                    restart_if_running: trigger.is_some() || will_install,
                },
            ));
        }
        trigger.map(|trigger| {
            self.change(
                ChangeKind::Change,
                format!("restart {unit}"),
                format!("{} changed", trigger.subject()),
                Action::RestartUnit { unit: unit.clone() },
            )
        })
    }
}
