//! Why apply must refuse a plan: typed while the plan is made, grouped
//! without reading words back, and written as words only where a plan is
//! shown or saved.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// Some things could not be observed, all for the same reason (an
    /// unreachable systemd, a firewall only root may read).
    CannotSee { subjects: Vec<String>, why: String },
    /// A blocker as a saved plan recorded it.
    Recorded(String),
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::CannotSee { subjects, why } => {
                write!(f, "cannot see {}: {why}", subjects.join(", "))
            }
            Blocker::Recorded(text) => f.write_str(text),
        }
    }
}

/// Blockers with the same reason become one naming every subject (an
/// unreachable systemd would otherwise repeat itself per unit).
pub fn group(blockers: Vec<Blocker>) -> Vec<Blocker> {
    let mut grouped: Vec<Blocker> = Vec::new();
    for blocker in blockers {
        let existing = grouped.iter_mut().find_map(|g| match (g, &blocker) {
            (
                Blocker::CannotSee { subjects, why },
                Blocker::CannotSee {
                    subjects: more,
                    why: same,
                },
            ) if why == same => Some((subjects, more)),
            _ => None,
        });
        match existing {
            Some((subjects, more)) => subjects.extend(more.iter().cloned()),
            None => grouped.push(blocker),
        }
    }
    grouped
}

impl Serialize for Blocker {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Blocker {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Blocker::Recorded)
    }
}
