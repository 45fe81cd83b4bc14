//! UDP 123 open (or closed) in the host's firewall, through whichever
//! backend the host uses (firewalld or nftables).

use super::{
    Action, Change, ChangeKind, Converge, Diff, DiffError, ObserveError, PlanContext, ResourceId,
    hash_of,
};
use crate::host::{Firewall, FirewallState, HostError};

#[derive(Debug, Clone)]
pub struct FirewallResource {
    /// Whether UDP 123 must be open.
    pub open: bool,
    /// Why: "this host serves time to 10.0.0.0/8".
    pub reason: String,
}

/// The firewall as seen: no backend to manage, or a backend and its state.
pub enum FirewallObservation {
    NoBackend,
    Seen {
        backend: Box<dyn Firewall>,
        state: FirewallState,
    },
}

impl Converge for FirewallResource {
    type Observation = FirewallObservation;

    fn id(&self) -> ResourceId {
        ResourceId::Firewall
    }

    fn observe(&self, ctx: &PlanContext<'_>) -> Result<FirewallObservation, ObserveError> {
        let backend = ctx
            .host
            .firewall_backend(ctx.firewall)
            .map_err(|cause| ObserveError {
                subject: "the firewall".into(),
                context: "choosing the firewall backend".into(),
                cause,
            })?;
        let Some(backend) = backend else {
            return Ok(FirewallObservation::NoBackend);
        };
        match backend.observe() {
            Ok(state) => Ok(FirewallObservation::Seen { backend, state }),
            Err(cause) => Err(ObserveError {
                subject: format!("the firewall ({})", backend.describe()),
                context: "observing the firewall".into(),
                cause,
            }),
        }
    }

    fn fingerprint(&self, observed: &FirewallObservation) -> Option<String> {
        match observed {
            FirewallObservation::NoBackend => None,
            FirewallObservation::Seen { state, .. } => Some(hash_of(state)),
        }
    }

    fn diff(&self, observed: &FirewallObservation, _: &PlanContext<'_>) -> Result<Diff, DiffError> {
        match observed {
            FirewallObservation::Seen { backend, state } => self
                .plan(backend.as_ref(), state)
                .map(Diff::from)
                .map_err(DiffError::host("planning the firewall")),
            FirewallObservation::NoBackend if self.open => Ok(Diff {
                changes: Vec::new(),
                notes: vec![format!(
                    "UDP 123 should be open ({}), but no firewall backend was found: nothing to open",
                    self.reason
                )],
            }),
            FirewallObservation::NoBackend => Ok(Diff::default()),
        }
    }
}

impl FirewallResource {
    fn plan(
        &self,
        backend: &dyn Firewall,
        observed: &FirewallState,
    ) -> Result<Vec<Change>, HostError> {
        let resource = self.id();
        if self.open && !observed.ntp_open {
            return Ok(vec![Change {
                resource: resource.clone(),
                kind: ChangeKind::Add,
                summary: format!("open UDP 123 in {}: {}", backend.describe(), backend.rule()),
                reason: self.reason.clone(),
                diff: None,
                action: Action::OpenFirewall,
            }]);
        }
        // Close only what timectl itself opened: a port the administrator
        // opened stays open.
        if !self.open && observed.ntp_open && observed.opened_by_timectl {
            return Ok(vec![Change {
                resource,
                kind: ChangeKind::Remove,
                summary: format!(
                    "close UDP 123 in {}: remove what timectl opened ({})",
                    backend.describe(),
                    observed.detail
                ),
                reason: self.reason.clone(),
                diff: None,
                action: Action::CloseFirewall,
            }]);
        }
        Ok(Vec::new())
    }
}
