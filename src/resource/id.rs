//! Typed resource addresses and the edges between resources. An id is
//! written as it always was (`file:/etc/chrony.conf`, `service:chrony.service`,
//! `firewall:ntp`, `systemd`) only where a plan is shown or saved; inside
//! the converger resources are compared and wired by [`ResourceId`].

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which thing on the host a resource (and each of its changes) is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceId {
    /// `file:PATH`: a config file, key file, unit file or drop-in.
    File(PathBuf),
    /// `binary:PATH`: the engine's installed executable.
    Binary(PathBuf),
    /// `package:NAME`.
    Package(String),
    /// `service:UNIT`.
    Service(String),
    /// `firewall:ntp`: UDP 123 in the host's firewall.
    Firewall,
    /// `systemd`: the service manager's view of the unit files (its
    /// reload).
    SystemdUnits,
}

impl ResourceId {
    /// The thing itself, for reasons ("/etc/chrony.conf changed"): a file's
    /// path, otherwise the whole id.
    pub fn subject(&self) -> String {
        match self {
            ResourceId::File(path) => path.display().to_string(),
            other => other.to_string(),
        }
    }

    /// Read an id as [`fmt::Display`] writes it (saved plans).
    pub fn parse(text: &str) -> Option<ResourceId> {
        if text == "firewall:ntp" {
            return Some(ResourceId::Firewall);
        }
        if text == "systemd" {
            return Some(ResourceId::SystemdUnits);
        }
        let (kind, rest) = text.split_once(':')?;
        Some(match kind {
            "file" => ResourceId::File(PathBuf::from(rest)),
            "binary" => ResourceId::Binary(PathBuf::from(rest)),
            "package" => ResourceId::Package(rest.to_string()),
            "service" => ResourceId::Service(rest.to_string()),
            _ => return None,
        })
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceId::File(path) => write!(f, "file:{}", path.display()),
            ResourceId::Binary(path) => write!(f, "binary:{}", path.display()),
            ResourceId::Package(name) => write!(f, "package:{name}"),
            ResourceId::Service(unit) => write!(f, "service:{unit}"),
            ResourceId::Firewall => f.write_str("firewall:ntp"),
            ResourceId::SystemdUnits => f.write_str("systemd"),
        }
    }
}

impl PartialEq<&str> for ResourceId {
    fn eq(&self, other: &&str) -> bool {
        ResourceId::parse(other).as_ref() == Some(self)
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ResourceId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown resource id `{text}`")))
    }
}

/// What one resource's change means for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// Only order: `from` is converged first (a conflicting daemon stopped
    /// before the chosen one's package is installed).
    Before,
    /// `from` may create `to` (a package or unit file that installs the
    /// unit): when `from` changes, `to` need not exist yet.
    Provides,
    /// A change of `from` restarts `to` (a config file and its daemon).
    Restarts,
    /// A change of `from` makes `to` reload (a unit file and systemd).
    Reloads,
}

/// `from` comes before `to` in a plan, and what a change of `from` does
/// to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub from: ResourceId,
    pub to: ResourceId,
    pub kind: EdgeKind,
}

impl Edge {
    pub fn new(from: ResourceId, to: ResourceId, kind: EdgeKind) -> Edge {
        Edge { from, to, kind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_and_read_as_before() {
        for (id, text) in [
            (
                ResourceId::File("/etc/chrony.conf".into()),
                "file:/etc/chrony.conf",
            ),
            (ResourceId::Binary("/usr/x".into()), "binary:/usr/x"),
            (ResourceId::Package("chrony".into()), "package:chrony"),
            (
                ResourceId::Service("chrony.service".into()),
                "service:chrony.service",
            ),
            (ResourceId::Firewall, "firewall:ntp"),
            (ResourceId::SystemdUnits, "systemd"),
        ] {
            assert_eq!(id.to_string(), text);
            assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
            assert_eq!(ResourceId::parse(text), Some(id));
        }
        assert_eq!(ResourceId::parse("disk:/x"), None);
    }
}
