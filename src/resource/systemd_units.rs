//! systemd's view of the unit files: reloaded (`daemon-reload`) once when
//! any unit file or drop-in that notifies it changed earlier in the plan,
//! before the units are enabled and started. Nothing happens where no units
//! run (an offline root reads unit files at boot).

use super::{
    Action, Change, ChangeKind, Converge, Diff, DiffError, Edge, EdgeKind, ObserveError,
    PlanContext, ResourceId,
};

#[derive(Debug, Clone, Default)]
pub struct SystemdUnitsResource {
    /// The unit files and drop-ins whose change needs a reload
    /// ([`EdgeKind::Reloads`]).
    pub reload_on: Vec<ResourceId>,
}

impl Converge for SystemdUnitsResource {
    /// Nothing to observe: whether to reload follows from the edges.
    type Observation = ();

    fn id(&self) -> ResourceId {
        ResourceId::SystemdUnits
    }

    fn edges(&self) -> Vec<Edge> {
        (self.reload_on.iter())
            .map(|from| Edge::new(from.clone(), self.id(), EdgeKind::Reloads))
            .collect()
    }

    fn observe(&self, _: &PlanContext<'_>) -> Result<(), ObserveError> {
        Ok(())
    }

    fn fingerprint(&self, _: &()) -> Option<String> {
        None
    }

    fn diff(&self, _: &(), ctx: &PlanContext<'_>) -> Result<Diff, DiffError> {
        if !ctx.host.services.runs_units() || ctx.first_changed(&self.reload_on).is_none() {
            return Ok(Diff::default());
        }
        Ok(Diff::from(vec![Change {
            resource: self.id(),
            kind: ChangeKind::Change,
            summary: "reload systemd unit files".into(),
            reason: "a unit file or drop-in changed".into(),
            diff: None,
            action: Action::ReloadUnits,
        }]))
    }
}
