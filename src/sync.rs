//! Asking the running time daemon how it is doing, and telling it to step
//! the clock once: `chronyc`, `ntpq`, or the embedded engine's control
//! socket. Used after apply on live hosts to verify synchronisation.

use serde::{Deserialize, Serialize};

use crate::host::{Host, HostError};
use crate::provider::VerifyPlan;

/// What a daemon reports about synchronisation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub synchronized: bool,
    pub offset_seconds: Option<f64>,
    pub stratum: Option<u8>,
    /// The selected source (address or name).
    pub source: Option<String>,
    /// The daemon's own words, or why it could not be asked.
    pub detail: String,
}

impl SyncStatus {
    pub fn unknown(why: &str) -> SyncStatus {
        SyncStatus {
            detail: why.to_string(),
            ..SyncStatus::default()
        }
    }

    /// One line: "synchronised to 10.0.0.1, stratum 3, offset +0.000123 s".
    pub fn describe(&self) -> String {
        if !self.synchronized {
            return format!("not synchronised ({})", self.detail);
        }
        let mut text = "synchronised".to_string();
        if let Some(s) = &self.source {
            text.push_str(&format!(" to {s}"));
        }
        if let Some(s) = self.stratum {
            text.push_str(&format!(", stratum {s}"));
        }
        if let Some(o) = self.offset_seconds {
            text.push_str(&format!(", offset {o:+.6} s"));
        }
        text
    }

    /// Whether this meets the desired state's `verify`; the reason if not.
    pub fn meets(&self, verify: &VerifyPlan) -> Result<(), String> {
        if verify.synchronized && !self.synchronized {
            return Err(format!("the daemon is not synchronised ({})", self.detail));
        }
        if let Some(max) = verify.max_offset_seconds {
            match self.offset_seconds {
                Some(o) if o.abs() <= max => {}
                Some(o) => {
                    return Err(format!("offset {o:+.6} s is larger than maxOffset {max} s"));
                }
                None => return Err("the daemon reports no offset".into()),
            }
        }
        Ok(())
    }
}

/// A running daemon that can be asked.
pub trait TimeProbe {
    fn status(&self) -> Result<SyncStatus, HostError>;
    /// Step the clock once now; returns what the daemon said.
    fn step_now(&self) -> Result<String, HostError>;
}

/// The probe for a provider on a live host.
pub fn probe_for(_host: &Host, provider: &str) -> Result<Box<dyn TimeProbe>, HostError> {
    Err(HostError::Unavailable(format!(
        "asking {provider} for its synchronisation state is not supported yet"
    )))
}
