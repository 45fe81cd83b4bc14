//! A systemd unit: enabled at boot or not, running or not, masked or not,
//! and restarted when a file it depends on changes (a handler).

use super::{Action, Change, ChangeKind};
use crate::host::{Enablement, Host, HostError, UnitStatus};

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
    /// Resource ids (`file:/etc/chrony.conf`) whose change means restart.
    pub restart_on: Vec<String>,
}

impl ServiceResource {
    pub fn observe(&self, host: &Host) -> Result<UnitStatus, HostError> {
        host.services.status(&self.unit)
    }

    /// Changes from the observed status. `changed` lists the resources
    /// already changing in this plan (for restarts); `will_install` says
    /// whether the unit's package is being installed earlier in the plan,
    /// so a missing unit file is expected.
    pub fn plan(
        &self,
        host: &Host,
        status: &UnitStatus,
        changed: &[String],
        will_install: bool,
    ) -> Result<Vec<Change>, HostError> {
        let resource = format!("service:{}", self.unit);
        let unit = &self.unit;
        let mut out = Vec::new();
        let mut push = |kind, summary: String, reason: String, action| {
            out.push(Change {
                resource: resource.clone(),
                kind,
                summary,
                reason,
                diff: None,
                action,
            })
        };
        if !status.exists() && !will_install {
            if self.role == ServiceRole::Chosen {
                return Err(HostError::msg(format!(
                    "unit {unit} does not exist and no package that provides it is being installed"
                )));
            }
            return Ok(Vec::new());
        }
        let masked = status.enablement == Enablement::Masked;
        let running = status.activity.as_ref().is_some_and(|a| a.is_running());
        let live = host.services.runs_units();

        if self.masked == Some(false) && masked {
            push(
                ChangeKind::Change,
                format!("unmask {unit}"),
                format!("{unit} is masked; {}", self.reason),
                Action::UnmaskUnit { unit: unit.clone() },
            );
        }
        if self.running == Some(false) && live && running {
            push(
                ChangeKind::Remove,
                format!("stop {unit}"),
                self.reason.clone(),
                Action::StopUnit { unit: unit.clone() },
            );
        }
        if self.enabled == Some(false) && status.enablement.is_enabled() {
            push(
                ChangeKind::Remove,
                format!("disable {unit}"),
                self.reason.clone(),
                Action::DisableUnit { unit: unit.clone() },
            );
        }
        if self.masked == Some(true) && !masked {
            push(
                ChangeKind::Remove,
                format!("mask {unit}"),
                format!("{} (conflicts: mask)", self.reason),
                Action::MaskUnit { unit: unit.clone() },
            );
        }
        if self.enabled == Some(true) && (!status.enablement.is_enabled() || !status.exists()) {
            push(
                ChangeKind::Add,
                format!("enable {unit}"),
                if status.exists() {
                    format!("{}; it is {} at boot", self.reason, status.enablement)
                } else {
                    format!("{}; its unit is installed by this plan", self.reason)
                },
                Action::EnableUnit { unit: unit.clone() },
            );
        }
        let trigger = self.restart_on.iter().find(|r| changed.contains(r));
        if self.running == Some(true) && live {
            if !running {
                push(
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
                );
            } else if let Some(trigger) = trigger {
                push(
                    ChangeKind::Change,
                    format!("restart {unit}"),
                    format!(
                        "{} changed",
                        trigger.strip_prefix("file:").unwrap_or(trigger)
                    ),
                    Action::RestartUnit { unit: unit.clone() },
                );
            }
        }
        Ok(out)
    }
}
