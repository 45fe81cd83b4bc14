//! A package that must be installed (or absent). Conflicts the package
//! manager would resolve by removing other packages are shown in the plan
//! before they happen.

use super::{Action, Change, ChangeKind};
use crate::host::{Host, HostError, PackageState};

#[derive(Debug, Clone)]
pub struct PackageResource {
    pub name: String,
    pub present: bool,
    /// What it provides, for reasons: "chronyd".
    pub purpose: String,
}

/// What was seen: installed, absent, or why it could not be seen.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PackageObservation {
    Known(PackageState),
    Unknown(String),
}

impl PackageResource {
    pub fn observe(&self, host: &Host) -> PackageObservation {
        match host.packages.query(&self.name) {
            Ok(state) => PackageObservation::Known(state),
            Err(e) => PackageObservation::Unknown(e.to_string()),
        }
    }

    pub fn plan(
        &self,
        host: &Host,
        observed: &PackageObservation,
    ) -> Result<Vec<Change>, HostError> {
        let resource = format!("package:{}", self.name);
        match (observed, self.present) {
            (PackageObservation::Known(PackageState::Absent), true) => {
                let names = vec![self.name.clone()];
                let preview = host.packages.preview_install(&names)?;
                let mut summary = format!("install package {}", self.name);
                if !preview.removes.is_empty() {
                    summary.push_str(&format!(
                        " (the package manager will REMOVE {})",
                        preview.removes.join(", ")
                    ));
                }
                Ok(vec![Change {
                    resource,
                    kind: ChangeKind::Add,
                    summary,
                    reason: format!(
                        "{} is provided by package {}, which is not installed",
                        self.purpose, self.name
                    ),
                    diff: None,
                    action: Action::InstallPackages {
                        names,
                        also_removes: preview.removes,
                    },
                }])
            }
            (PackageObservation::Known(PackageState::Installed(version)), false) => {
                Ok(vec![Change {
                    resource,
                    kind: ChangeKind::Remove,
                    summary: format!("remove package {} {version}", self.name),
                    reason: format!("{} must not be installed", self.purpose),
                    diff: None,
                    action: Action::RemovePackages {
                        names: vec![self.name.clone()],
                    },
                }])
            }
            _ => Ok(Vec::new()),
        }
    }
}
