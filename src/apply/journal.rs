//! The run journal: one JSON file per apply under
//! `/var/lib/timectl/runs/<run-id>.json`, replaced atomically (temporary
//! file, fsync, rename, directory fsync) at every change of state. A step is
//! recorded as started, with the actions that undo it, before it changes
//! anything; so whenever the process dies, the journal on disk says which
//! steps were done, which one may have been under way, and how to undo
//! each. `timectl runs` lists journals, the next `plan` and `apply` report
//! interrupted runs, and `timectl rollback` undoes a run from its journal
//! and backups.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::{Files, HostError, Mode, STATE_DIR};
use crate::resource::Action;
use crate::spec::FirewallMode;

/// Version of the journal format (docs/json-format.md).
pub const JOURNAL_FORMAT: u32 = 2;

/// What happened to one step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "status", content = "error")]
pub enum StepStatus {
    Done,
    Failed(String),
    /// Done, then undone by the rollback.
    Undone,
    /// Done, and the rollback could not undo it.
    UndoFailed(String),
    NotRun,
    /// Begun and not finished: the run was killed while it ran (journal
    /// only; its undo actions are right whether or not it happened).
    Started,
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Running,
    RollingBack,
    Succeeded,
    RolledBack,
    RollbackIncomplete,
    VerifyFailed,
    /// Found by a later run still `running` or `rolling-back` while no
    /// apply held the lock: the process died.
    Interrupted,
}

impl RunState {
    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::RollingBack => "rolling-back",
            RunState::Succeeded => "succeeded",
            RunState::RolledBack => "rolled-back",
            RunState::RollbackIncomplete => "rollback-incomplete",
            RunState::VerifyFailed => "verify-failed",
            RunState::Interrupted => "interrupted",
        }
    }

    /// The process stopped before the run finished.
    pub fn unfinished(self) -> bool {
        matches!(
            self,
            RunState::Running | RunState::RollingBack | RunState::Interrupted
        )
    }
}

/// One step in the journal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JournalStep {
    pub summary: String,
    #[serde(flatten)]
    pub status: StepStatus,
    #[serde(default)]
    pub seconds: f64,
    /// What undoes it, as text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undo: Vec<String>,
    /// What undoes it, as actions `timectl rollback` runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undo_actions: Vec<Action>,
    /// The files it writes or removes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathBuf>,
}

impl JournalStep {
    /// A step of the plan, before the run reaches it.
    pub fn not_run(change: &crate::resource::Change) -> JournalStep {
        JournalStep {
            summary: change.summary.clone(),
            status: StepStatus::NotRun,
            seconds: 0.0,
            undo: Vec::new(),
            undo_actions: Vec::new(),
            paths: change.action.paths(),
        }
    }
}

/// What `timectl rollback` did to a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_restored: Vec<String>,
}

/// One run's journal file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Journal {
    pub format_version: u32,
    pub run_id: String,
    pub timectl_version: String,
    pub root: PathBuf,
    #[serde(default = "live")]
    pub mode: Mode,
    pub spec_path: String,
    pub plan_fingerprint: String,
    /// Seconds since the Unix epoch.
    #[serde(default)]
    pub started_at: u64,
    /// Nanoseconds since the Unix epoch: orders runs started in the same
    /// second (run ids do not).
    #[serde(default)]
    pub started_ns: u64,
    #[serde(default)]
    pub pid: u32,
    pub state: RunState,
    pub steps: Vec<JournalStep>,
    /// The run's backups, a path under the root.
    pub backups: PathBuf,
    /// The firewall backend preference, for undoing firewall steps.
    #[serde(default)]
    pub firewall: FirewallMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set by `timectl rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
}

fn live() -> Mode {
    Mode::Live
}

pub fn runs_dir() -> PathBuf {
    Path::new(STATE_DIR).join("runs")
}

pub fn journal_path(run_id: &str) -> PathBuf {
    runs_dir().join(format!("{run_id}.json"))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `2026-11-27 19:15:00 UTC`.
pub fn format_time(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = super::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A run id is what `new_run_id` makes: letters, digits and `-` only.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Journal {
    /// Write it atomically.
    pub fn save(&self, files: &Files) -> Result<(), HostError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| HostError::msg(format!("cannot encode the run journal: {e}")))?;
        files.write_atomic(
            &journal_path(&self.run_id),
            format!("{text}\n").as_bytes(),
            0o600,
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }

    pub fn load(files: &Files, run_id: &str) -> Result<Journal, HostError> {
        if !valid_run_id(run_id) {
            return Err(HostError::msg(format!("{run_id:?} is not a run id")));
        }
        let path = journal_path(run_id);
        let state = files.read(&path)?.ok_or_else(|| {
            HostError::msg(format!(
                "no run {run_id}: {} does not exist (`timectl runs` lists the runs)",
                files.resolve(&path).unwrap_or(path.clone()).display()
            ))
        })?;
        serde_json::from_slice(&state.content).map_err(|e| {
            HostError::msg(format!(
                "{}: not a readable run journal: {e}",
                files.resolve(&path).unwrap_or(path.clone()).display()
            ))
        })
    }

    /// Every journal under the root, oldest first; unreadable ones as
    /// errors in the second list.
    pub fn list(files: &Files) -> Result<(Vec<Journal>, Vec<String>), HostError> {
        let Some(names) = files.list_dir(&runs_dir())? else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut runs = Vec::new();
        let mut broken = Vec::new();
        for name in names {
            let name = name.to_string_lossy();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if !valid_run_id(id) {
                continue;
            }
            match Journal::load(files, id) {
                Ok(j) => runs.push(j),
                Err(e) => broken.push(e.to_string()),
            }
        }
        runs.sort_by(|a, b| (a.started_ns, &a.run_id).cmp(&(b.started_ns, &b.run_id)));
        Ok((runs, broken))
    }

    /// Steps done (or undone-failed), for summaries: "2/3 done".
    pub fn count(&self, status: fn(&StepStatus) -> bool) -> usize {
        self.steps.iter().filter(|s| status(&s.status)).count()
    }

    /// Where the run stopped: the index of the step that was under way, or
    /// of the first step not run.
    pub fn stopped_at(&self) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| s.status == StepStatus::Started)
            .or_else(|| {
                self.steps
                    .iter()
                    .position(|s| s.status == StepStatus::NotRun)
            })
    }

    /// What an interrupted run did and left, in one paragraph.
    pub fn describe_interruption(&self) -> String {
        let total = self.steps.len();
        let at = match self.stopped_at() {
            Some(i) if self.steps[i].status == StepStatus::Started => format!(
                "at step {} of {total} ({}), which may or may not have happened",
                i + 1,
                self.steps[i].summary
            ),
            Some(i) => format!(
                "before step {} of {total} ({})",
                i + 1,
                self.steps[i].summary
            ),
            None => format!("after its last step (of {total}), before it was checked"),
        };
        let list = |status: fn(&StepStatus) -> bool| -> String {
            let items: Vec<String> = self
                .steps
                .iter()
                .enumerate()
                .filter(|(_, s)| status(&s.status))
                .map(|(i, s)| format!("{}. {}", i + 1, s.summary))
                .collect();
            if items.is_empty() {
                "none".into()
            } else {
                items.join("; ")
            }
        };
        let mut text = format!(
            "run {} (started {}{}) was interrupted {at}. Done: {}. Not run: {}.",
            self.run_id,
            format_time(self.started_at),
            if self.pid != 0 {
                format!(", pid {}", self.pid)
            } else {
                String::new()
            },
            list(|s| matches!(s, StepStatus::Done | StepStatus::UndoFailed(_))),
            list(|s| *s == StepStatus::NotRun),
        );
        if self.state == RunState::RollingBack {
            text.push_str(" It was rolling back a failure when it stopped.");
        }
        text.push_str(&format!(
            " `timectl rollback {}` undoes it from its journal and backups; an apply converges from the host as it is.",
            self.run_id
        ));
        text
    }
}

/// Whether an apply holds the lock of this root now. Opens the lock file
/// without creating it, so a plan changes nothing.
pub fn apply_running(files: &Files) -> Result<bool, HostError> {
    let path = Path::new(STATE_DIR).join("lock");
    let Some(file) = files.open_existing_read(&path)? else {
        return Ok(false);
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_) => Ok(false),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, e)) => Err(HostError::io(
            &files.resolve(&path)?,
            "cannot test the lock",
            std::io::Error::from(e),
        )),
    }
}

/// The runs that stopped without finishing and that no later converged run
/// made moot, newest first. `lock_held` says the caller holds the apply
/// lock (so no run is in progress); otherwise, while an apply runs, none
/// is reported.
pub fn interrupted(files: &Files, lock_held: bool) -> Result<Vec<Journal>, HostError> {
    if !lock_held && apply_running(files)? {
        return Ok(Vec::new());
    }
    let (runs, _) = Journal::list(files)?;
    let mut out = Vec::new();
    for run in runs.into_iter().rev() {
        if run.state == RunState::Succeeded {
            break;
        }
        if run.state.unfinished() && run.rollback.is_none() {
            out.push(run);
        }
    }
    Ok(out)
}
