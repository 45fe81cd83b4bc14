//! A file with desired content, mode and owner. The content is either the
//! whole file (`config: managed`) or a minimal edit of what is there
//! (`config: edit`): old source lines are commented out and the new ones
//! inserted, as one marked block, where the first old one stood.

use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    Action, Change, ChangeKind, Converge, Diff, DiffError, FileWrite, ObserveError, PlanContext,
    ResourceId, hash_of,
};
use crate::host::{FileState, Host};

#[derive(Debug, Clone)]
pub struct FileResource {
    pub path: PathBuf,
    pub content: FileContent,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    /// Key material: never shown in a diff.
    pub sensitive: bool,
    /// What it is, for reasons: "chronyd configuration".
    pub purpose: String,
    /// A systemd unit file or drop-in: systemd must reload after it changes.
    pub unit_file: bool,
    /// A command that checks a new version before it is installed
    /// (`chronyd -p -f {}`), `{}` standing for a temporary copy. Run on live
    /// hosts, where the daemon's own parser is installed.
    pub validate: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub enum FileContent {
    Whole(String),
    Edit(SourcesEdit),
    /// The file must not exist.
    Absent,
}

/// A minimal edit of an existing config file.
#[derive(Debug, Clone)]
pub struct SourcesEdit {
    /// Directive keywords whose old lines are commented out
    /// (`server`, `pool`, `peer`, ...).
    pub replaces: Vec<String>,
    /// The lines that take their place.
    pub lines: Vec<String>,
    /// The whole file to write when there is no file to edit.
    pub if_missing: String,
}

pub const EDIT_BEGIN: &str =
    "# BEGIN timectl managed block: edit the desired-state file, not these lines";
pub const EDIT_END: &str = "# END timectl managed block";
pub const DISABLED_PREFIX: &str = "# disabled by timectl: ";

impl SourcesEdit {
    fn is_replaced(&self, line: &str) -> bool {
        let trimmed = line.trim_start();
        let keyword = trimmed.split_whitespace().next().unwrap_or("");
        self.replaces.iter().any(|r| r == keyword)
    }

    /// The edited text. Stable: editing the result again changes nothing.
    pub fn apply(&self, current: &str) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut insert_at: Option<usize> = None;
        let mut in_block = false;
        for line in current.lines() {
            if in_block {
                if line.trim() == EDIT_END {
                    in_block = false;
                }
                continue;
            }
            if line.trim() == EDIT_BEGIN {
                in_block = true;
                insert_at.get_or_insert(out.len());
                continue;
            }
            if self.is_replaced(line) {
                insert_at.get_or_insert(out.len());
                out.push(format!("{DISABLED_PREFIX}{line}"));
            } else {
                out.push(line.to_string());
            }
        }
        let mut block = vec![EDIT_BEGIN.to_string()];
        block.extend(self.lines.iter().cloned());
        block.push(EDIT_END.to_string());
        match insert_at {
            Some(at) => {
                out.splice(at..at, block);
            }
            None => {
                if out.last().is_some_and(|l| !l.trim().is_empty()) {
                    out.push(String::new());
                }
                out.extend(block);
            }
        }
        let mut text = out.join("\n");
        text.push('\n');
        text
    }
}

/// What a file is now, for the plan's fingerprint: a hash, not the text.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileObservation {
    pub exists: bool,
    pub sha256: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Converge for FileResource {
    /// The file as it is, if it exists.
    type Observation = Option<FileState>;

    fn id(&self) -> ResourceId {
        ResourceId::File(self.path.clone())
    }

    fn observe(&self, ctx: &PlanContext<'_>) -> Result<Option<FileState>, ObserveError> {
        (ctx.host.files.read(&self.path))
            .map_err(ObserveError::new(self.path.display().to_string()))
    }

    /// A hash, not the text.
    fn fingerprint(&self, current: &Option<FileState>) -> Option<String> {
        let observation = match current {
            Some(s) => FileObservation {
                exists: true,
                sha256: sha256_hex(&s.content),
                mode: s.mode,
                uid: s.uid,
                gid: s.gid,
            },
            None => FileObservation {
                exists: false,
                sha256: String::new(),
                mode: 0,
                uid: 0,
                gid: 0,
            },
        };
        Some(hash_of(&observation))
    }

    fn diff(&self, current: &Option<FileState>, ctx: &PlanContext<'_>) -> Result<Diff, DiffError> {
        Ok(Diff::from(self.changes(ctx.host, current.as_ref())))
    }
}

impl FileResource {
    /// The changes that make the file as desired.
    fn changes(&self, host: &Host, current: Option<&FileState>) -> Vec<Change> {
        let current_text = current.map(|s| String::from_utf8_lossy(&s.content).into_owned());
        let (desired, how) = match (&self.content, &current_text) {
            (FileContent::Absent, _) => return self.removal(current_text).into_iter().collect(),
            (FileContent::Whole(text), _) => (text.clone(), "managed"),
            (FileContent::Edit(edit), Some(old)) => (edit.apply(old), "edited"),
            (FileContent::Edit(edit), None) => (edit.if_missing.clone(), "managed"),
        };
        let (Some(state), Some(old)) = (current, &current_text) else {
            return vec![self.creation(&desired)];
        };
        if *old != desired || String::from_utf8(state.content.clone()).is_err() {
            return vec![Change {
                diff: Some(self.diff(old, &desired)),
                ..self.change(
                    ChangeKind::Change,
                    format!("update {}", self.path.display()),
                    format!(
                        "{} differs from the desired state ({how} content)",
                        self.purpose
                    ),
                    self.write(desired),
                )
            }];
        }
        self.meta_change(host, state).into_iter().collect()
    }

    fn write(&self, content: String) -> Action {
        Action::WriteFile(FileWrite {
            path: self.path.clone(),
            content,
            mode: self.mode,
            owner: self.owner.clone(),
            group: self.group.clone(),
            sensitive: self.sensitive,
            validate: self.validate.clone(),
        })
    }

    fn meta(&self) -> String {
        format!("{:04o} {}:{}", self.mode, self.owner, self.group)
    }

    /// Remove a file that is not wanted.
    fn removal(&self, current_text: Option<String>) -> Option<Change> {
        current_text.map(|old| Change {
            diff: Some(self.diff(&old, "")),
            ..self.change(
                ChangeKind::Remove,
                format!("remove {}", self.path.display()),
                format!("{} is not wanted", self.purpose),
                Action::RemoveFile {
                    path: self.path.clone(),
                },
            )
        })
    }

    /// Create a missing file.
    fn creation(&self, desired: &str) -> Change {
        Change {
            diff: Some(self.diff("", desired)),
            ..self.change(
                ChangeKind::Add,
                format!("create {} ({})", self.path.display(), self.meta()),
                format!("{} is missing", self.purpose),
                self.write(desired.to_string()),
            )
        }
    }

    /// Set mode and owner of a file whose content is right.
    fn meta_change(&self, host: &Host, state: &FileState) -> Option<Change> {
        if self.meta_matches(host, state.mode, state.uid, state.gid) {
            return None;
        }
        Some(self.change(
            ChangeKind::Change,
            format!("set {} to {}", self.path.display(), self.meta()),
            format!(
                "{} is {:04o} {}:{}",
                self.purpose,
                state.mode,
                host.files.user_name(state.uid),
                host.files.group_name(state.gid)
            ),
            Action::SetFileMeta {
                path: self.path.clone(),
                mode: self.mode,
                owner: self.owner.clone(),
                group: self.group.clone(),
            },
        ))
    }

    fn meta_matches(&self, host: &Host, mode: u32, uid: u32, gid: u32) -> bool {
        // A user or group that does not exist yet (its package is not
        // installed) cannot match.
        if !host.manage_owners {
            return mode == self.mode;
        }
        mode == self.mode
            && host.files.uid_of(&self.owner).is_ok_and(|u| u == uid)
            && host.files.gid_of(&self.group).is_ok_and(|g| g == gid)
    }

    fn diff(&self, old: &str, new: &str) -> String {
        if self.sensitive {
            return "(sensitive)".to_string();
        }
        let path = self.path.display().to_string();
        similar::TextDiff::from_lines(old, new)
            .unified_diff()
            .context_radius(3)
            .header(&path, &format!("{path} (desired)"))
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit() -> SourcesEdit {
        SourcesEdit {
            replaces: vec!["server".into(), "pool".into(), "peer".into()],
            lines: vec![
                "server time.bora.net iburst".into(),
                "server ntp.example.com iburst".into(),
            ],
            if_missing: "whole\n".into(),
        }
    }

    const RHEL_DEFAULT: &str = "# Use public servers from the pool.ntp.org project.\npool 2.rhel.pool.ntp.org iburst\n\n# Record the rate\ndriftfile /var/lib/chrony/drift\nmakestep 1.0 3\n";

    #[test]
    fn edit_comments_out_old_sources_and_inserts_new_ones_in_their_place() {
        let edited = edit().apply(RHEL_DEFAULT);
        let expected = format!(
            "# Use public servers from the pool.ntp.org project.\n{EDIT_BEGIN}\nserver time.bora.net iburst\nserver ntp.example.com iburst\n{EDIT_END}\n{DISABLED_PREFIX}pool 2.rhel.pool.ntp.org iburst\n\n# Record the rate\ndriftfile /var/lib/chrony/drift\nmakestep 1.0 3\n"
        );
        assert_eq!(edited, expected);
    }

    #[test]
    fn edit_is_idempotent_and_replaces_its_own_block() {
        let once = edit().apply(RHEL_DEFAULT);
        assert_eq!(edit().apply(&once), once);
        let mut other = edit();
        other.lines = vec!["pool pool.example.org iburst".into()];
        let changed = other.apply(&once);
        assert!(changed.contains("pool pool.example.org iburst"));
        assert!(!changed.contains("server time.bora.net"));
        // The admin's other lines survive every edit.
        assert!(changed.contains("makestep 1.0 3\n"));
        assert_eq!(changed.matches(EDIT_BEGIN).count(), 1);
    }

    #[test]
    fn edit_without_old_sources_appends_the_block() {
        let edited = edit().apply("driftfile /x\n");
        assert!(edited.starts_with("driftfile /x\n\n# BEGIN timectl"));
        assert!(edited.ends_with(&format!("{EDIT_END}\n")));
    }

    #[test]
    fn keywords_match_whole_words_only() {
        let edited = edit().apply("serverless yes\n  server old.example iburst\n");
        assert!(edited.contains("serverless yes\n"));
        assert!(edited.contains(&format!("{DISABLED_PREFIX}  server old.example iburst")));
    }
}
