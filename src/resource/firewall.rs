//! UDP 123 open (or closed) in the host's firewall, through whichever
//! backend the host uses (firewalld or nftables), and TCP 4460 with it when
//! the host serves NTS (NTS-KE, RFC 8915).
//!
//! Each port is its own change line. What the desired state no longer
//! wants is closed only if timectl opened it: an administrator's opening
//! stays. TCP 4460 is observed on every plan (timectl may have opened it
//! before), but it enters the fingerprint only when it matters to the plan
//! (wanted open, or opened by timectl), so a host where NTS plays no part
//! fingerprints exactly as before NTS-KE was managed.

use super::{
    Action, Change, ChangeKind, Converge, Diff, DiffError, ObserveError, PlanContext, ResourceId,
    hash_of,
};
use crate::host::{Firewall, FirewallState, HostError, Port};

#[derive(Debug, Clone)]
pub struct FirewallResource {
    /// Whether UDP 123 must be open.
    pub open: bool,
    /// Why: "this host serves time to 10.0.0.0/8".
    pub reason: String,
    /// TCP 4460 for NTS-KE must be open too (only with `open`).
    pub nts_ke: bool,
}

/// The firewall as seen: no backend to manage, or a backend and its state.
pub enum FirewallObservation {
    NoBackend,
    Seen {
        backend: Box<dyn Firewall>,
        /// UDP 123.
        state: FirewallState,
        /// TCP 4460 (NTS-KE).
        nts_ke: FirewallState,
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
        let observed = backend
            .observe_port(Port::Ntp)
            .and_then(|state| Ok((state, backend.observe_port(Port::NtsKe)?)));
        match observed {
            Ok((state, nts_ke)) => Ok(FirewallObservation::Seen {
                backend,
                state,
                nts_ke,
            }),
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
            FirewallObservation::Seen { state, nts_ke, .. } => {
                if self.wants_nts_ke() || nts_ke.opened_by_timectl {
                    Some(hash_of(&(state, nts_ke)))
                } else {
                    // As before TCP 4460 was managed: existing plans keep
                    // their fingerprints.
                    Some(hash_of(state))
                }
            }
        }
    }

    fn diff(&self, observed: &FirewallObservation, _: &PlanContext<'_>) -> Result<Diff, DiffError> {
        match observed {
            FirewallObservation::Seen {
                backend,
                state,
                nts_ke,
            } => self
                .plan(backend.as_ref(), state, nts_ke)
                .map(Diff::from)
                .map_err(DiffError::host("planning the firewall")),
            FirewallObservation::NoBackend if self.open => Ok(Diff {
                changes: Vec::new(),
                notes: vec![format!(
                    "{} should be open ({}), but no firewall backend was found: nothing to open",
                    if self.wants_nts_ke() {
                        "UDP 123 and TCP 4460 (NTS-KE)"
                    } else {
                        "UDP 123"
                    },
                    self.reason
                )],
            }),
            FirewallObservation::NoBackend => Ok(Diff::default()),
        }
    }
}

impl FirewallResource {
    /// TCP 4460 must be open.
    fn wants_nts_ke(&self) -> bool {
        self.open && self.nts_ke
    }

    fn plan(
        &self,
        backend: &dyn Firewall,
        observed: &FirewallState,
        nts_ke: &FirewallState,
    ) -> Result<Vec<Change>, HostError> {
        let resource = self.id();
        let mut changes = Vec::new();
        if self.open && !observed.ntp_open {
            changes.push(Change {
                resource: resource.clone(),
                kind: ChangeKind::Add,
                summary: format!("open UDP 123 in {}: {}", backend.describe(), backend.rule()),
                reason: self.reason.clone(),
                diff: None,
                action: Action::OpenFirewall,
            });
        }
        // Close only what timectl itself opened: a port the administrator
        // opened stays open.
        if !self.open && observed.ntp_open && observed.opened_by_timectl {
            changes.push(Change {
                resource: resource.clone(),
                kind: ChangeKind::Remove,
                summary: format!(
                    "close UDP 123 in {}: remove what timectl opened ({})",
                    backend.describe(),
                    observed.detail
                ),
                reason: self.reason.clone(),
                diff: None,
                action: Action::CloseFirewall,
            });
        }
        let port = Port::NtsKe;
        if self.wants_nts_ke() && !nts_ke.ntp_open {
            changes.push(Change {
                resource: resource.clone(),
                kind: ChangeKind::Add,
                summary: format!(
                    "open {} (NTS-KE) in {}: {}",
                    port.label(),
                    backend.describe(),
                    backend.rule_for(port)
                ),
                reason: format!("{}; NTS key exchange (RFC 8915) uses TCP 4460", self.reason),
                diff: None,
                action: Action::OpenNtsKe,
            });
        }
        if !self.wants_nts_ke() && nts_ke.ntp_open && nts_ke.opened_by_timectl {
            changes.push(Change {
                resource,
                kind: ChangeKind::Remove,
                summary: format!(
                    "close {} (NTS-KE) in {}: remove what timectl opened ({})",
                    port.label(),
                    backend.describe(),
                    nts_ke.detail
                ),
                reason: if self.open {
                    "this host does not serve NTS: NTS-KE (TCP 4460) is not needed".to_string()
                } else {
                    self.reason.clone()
                },
                diff: None,
                action: Action::CloseNtsKe,
            });
        }
        Ok(changes)
    }
}
