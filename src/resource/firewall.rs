//! UDP 123 open (or closed) in the host's firewall, through whichever
//! backend the host uses (firewalld or nftables).

use super::{Action, Change, ChangeKind};
use crate::host::{Firewall, FirewallState, HostError};

#[derive(Debug, Clone)]
pub struct FirewallResource {
    /// Whether UDP 123 must be open.
    pub open: bool,
    /// Why: "this host serves time to 10.0.0.0/8".
    pub reason: String,
}

impl FirewallResource {
    pub fn plan(
        &self,
        backend: &dyn Firewall,
        observed: &FirewallState,
    ) -> Result<Vec<Change>, HostError> {
        let resource = "firewall:ntp".to_string();
        if self.open && !observed.ntp_open {
            return Ok(vec![Change {
                resource,
                kind: ChangeKind::Add,
                summary: format!("open UDP 123 in {}: {}", backend.describe(), backend.rule()),
                reason: self.reason.clone(),
                diff: None,
                action: Action::OpenFirewall,
            }]);
        }
        Ok(Vec::new())
    }
}
