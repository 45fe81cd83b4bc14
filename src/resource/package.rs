//! A package that must be installed (or absent). Conflicts the package
//! manager would resolve by removing other packages are shown in the plan
//! before they happen.

use super::{
    Action, Change, ChangeKind, Converge, Diff, DiffError, Edge, EdgeKind, ObserveError,
    PlanContext, ResourceId, hash_of,
};
use crate::host::{Host, HostError, PackageState};

#[derive(Debug, Clone)]
pub struct PackageResource {
    pub name: String,
    pub present: bool,
    /// What it provides, for reasons: "chronyd".
    pub purpose: String,
    /// Resources converged before it ([`EdgeKind::Before`]): the
    /// conflicting daemons, stopped before their replacement is installed.
    pub after: Vec<ResourceId>,
}

impl Converge for PackageResource {
    type Observation = PackageObservation;

    fn id(&self) -> ResourceId {
        ResourceId::Package(self.name.clone())
    }

    fn edges(&self) -> Vec<Edge> {
        (self.after.iter())
            .map(|from| Edge::new(from.clone(), self.id(), EdgeKind::Before))
            .collect()
    }

    /// Never fails: a package database that cannot be read is a note.
    fn observe(&self, ctx: &PlanContext<'_>) -> Result<PackageObservation, ObserveError> {
        Ok(self.observe_on(ctx.host))
    }

    fn fingerprint(&self, observed: &PackageObservation) -> Option<String> {
        Some(hash_of(observed))
    }

    fn diff(
        &self,
        observed: &PackageObservation,
        ctx: &PlanContext<'_>,
    ) -> Result<Diff, DiffError> {
        let mut diff = Diff::from(
            self.plan(ctx.host, observed)
                .map_err(DiffError::host(format!("planning package {}", self.name)))?,
        );
        if let PackageObservation::Unknown(why) = observed {
            diff.notes
                .push(format!("package {} not checked: {why}", self.name));
        }
        Ok(diff)
    }
}

/// What was seen: installed, absent, or why it could not be seen.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PackageObservation {
    Known(PackageState),
    Unknown(String),
}

impl PackageResource {
    fn observe_on(&self, host: &Host) -> PackageObservation {
        match host.packages.query(&self.name) {
            Ok(state) => PackageObservation::Known(state),
            Err(e) => PackageObservation::Unknown(e.to_string()),
        }
    }

    fn plan(&self, host: &Host, observed: &PackageObservation) -> Result<Vec<Change>, HostError> {
        let resource = self.id();
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
                if let Some(why) = &preview.unchecked {
                    summary.push_str(&format!(
                        " (could not ask the package manager what else this changes: {why})"
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
