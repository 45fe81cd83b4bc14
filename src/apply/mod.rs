//! Carrying out a plan: one apply at a time (a lock), every step written to
//! a run journal as it happens, every replaced file backed up first, and,
//! when a step fails, the steps already done undone in reverse order. After
//! the last step the host is planned again and must need nothing more; then
//! the clock is stepped once if asked and synchronisation is verified.

mod lock;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::host::{Host, HostError, Mode};
use crate::plan::{self, Plan, PlanError};
use crate::resource::{Action, ApplyContext};
use crate::spec::Spec;
use crate::sync::{self, SyncStatus};

pub use lock::Lock;

/// What happened to one step.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "status", content = "error")]
pub enum StepStatus {
    Done,
    Failed(String),
    /// Done, then undone by the rollback.
    Undone,
    /// Done, and the rollback could not undo it.
    UndoFailed(String),
    NotRun,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub summary: String,
    #[serde(flatten)]
    pub status: StepStatus,
    pub seconds: f64,
    /// The undo actions recorded for this step (journal only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undo: Vec<String>,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Nothing needed doing.
    NoChanges,
    Converged,
    /// A step failed and everything done was undone.
    RolledBack,
    /// A step failed and some of what was done could not be undone.
    RollbackIncomplete,
    /// Nothing needed changing, but the daemon is not synchronised.
    VerifyFailed,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub format_version: u32,
    pub run_id: String,
    pub root: PathBuf,
    pub mode: Mode,
    pub outcome: Outcome,
    pub steps: Vec<StepReport>,
    /// Why the run failed, when it did.
    pub error: Option<String>,
    /// Undo steps that failed: what the host may still have wrong.
    pub not_restored: Vec<String>,
    pub verify: Option<SyncStatus>,
    pub step_now: Option<String>,
    pub notes: Vec<String>,
    pub journal: Option<PathBuf>,
    pub backups: Option<PathBuf>,
    pub seconds: f64,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::NoChanges | Outcome::Converged)
    }
}

/// Progress of a run, for the command line.
#[derive(Debug)]
pub enum Progress<'a> {
    Step {
        index: usize,
        total: usize,
        summary: &'a str,
    },
    StepDone {
        seconds: f64,
    },
    StepFailed {
        error: &'a str,
    },
    RollingBack,
    Undo {
        summary: &'a str,
        ok: bool,
    },
    Checking,
    Verifying {
        waited: f64,
        status: &'a str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Refused(String),
    #[error("{context}: {cause}")]
    Host { context: String, cause: HostError },
}

/// A run identifier that sorts by time: 20261127T191500Z-3fa2.
fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{:04x}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        (now.subsec_nanos() ^ std::process::id()) & 0xffff
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The run journal: written after every step, so a crash leaves a record
/// of what was done and how to undo it.
#[derive(Serialize)]
struct Journal<'a> {
    format_version: u32,
    run_id: &'a str,
    timectl_version: &'a str,
    root: &'a Path,
    spec_path: &'a str,
    plan_fingerprint: &'a str,
    state: &'a str,
    steps: &'a [StepReport],
    backups: &'a Path,
}

struct Run<'a> {
    host: &'a Host,
    plan: &'a Plan,
    run_id: String,
    journal_path: PathBuf,
    backup_dir: PathBuf,
    steps: Vec<StepReport>,
    /// Undo actions of the steps done, in the order the steps ran.
    undo: Vec<(usize, Vec<Action>)>,
}

impl Run<'_> {
    fn write_journal(&self, state: &str) {
        let journal = Journal {
            format_version: plan::FORMAT_VERSION,
            run_id: &self.run_id,
            timectl_version: env!("CARGO_PKG_VERSION"),
            root: &self.host.root,
            spec_path: &self.plan.spec_path,
            plan_fingerprint: &self.plan.fingerprint,
            state,
            steps: &self.steps,
            backups: &self.backup_dir,
        };
        // The journal is a record, not a control path: failing to write it
        // must not stop a rollback.
        if let Ok(text) = serde_json::to_string_pretty(&journal) {
            let _ = self.host.files.write_atomic(
                &self.journal_path,
                text.as_bytes(),
                0o600,
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            );
        }
    }

    /// Undo every step done so far, newest first. A systemd reload or a
    /// daemon restart in the undo list waits until the file restores of
    /// the older steps are done (it runs before the next unit, package or
    /// firewall operation, or at the end): in plain reverse order it would
    /// run first and make systemd or the daemon read the files this run
    /// wrote, not the ones put back.
    fn roll_back(
        &mut self,
        ctx: &ApplyContext<'_>,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Vec<String> {
        progress(Progress::RollingBack);
        let mut not_restored = Vec::new();
        let mut waiting: Vec<(usize, Action)> = Vec::new();
        while let Some((index, actions)) = self.undo.pop() {
            if let Some(step) = self.steps.get_mut(index)
                && step.status == StepStatus::Done
            {
                step.status = StepStatus::Undone;
            }
            for action in actions {
                if action.rereads_files() {
                    waiting.push((index, action));
                    continue;
                }
                if !action.changes_only_files() {
                    self.undo_waiting(&mut waiting, ctx, progress, &mut not_restored);
                }
                self.undo_one(index, &action, ctx, progress, &mut not_restored);
            }
            self.write_journal("rolling-back");
        }
        self.undo_waiting(&mut waiting, ctx, progress, &mut not_restored);
        self.write_journal("rolling-back");
        not_restored
    }

    /// Run the undo actions that waited for file restores: reloads first.
    fn undo_waiting(
        &mut self,
        waiting: &mut Vec<(usize, Action)>,
        ctx: &ApplyContext<'_>,
        progress: &mut dyn FnMut(Progress<'_>),
        not_restored: &mut Vec<String>,
    ) {
        waiting.sort_by_key(|(_, a)| *a != Action::ReloadUnits);
        for (index, action) in std::mem::take(waiting) {
            self.undo_one(index, &action, ctx, progress, not_restored);
        }
    }

    /// Run one undo action of step `index`; a failure marks the step.
    fn undo_one(
        &mut self,
        index: usize,
        action: &Action,
        ctx: &ApplyContext<'_>,
        progress: &mut dyn FnMut(Progress<'_>),
        not_restored: &mut Vec<String>,
    ) {
        let summary = action.describe();
        let result = action.execute(ctx);
        progress(Progress::Undo {
            summary: &summary,
            ok: result.is_ok(),
        });
        if let Err(e) = result {
            not_restored.push(format!("{summary}: {e}"));
            // The failed step itself keeps saying why it failed.
            if let Some(step) = self.steps.get_mut(index)
                && !matches!(step.status, StepStatus::Failed(_))
            {
                step.status = StepStatus::UndoFailed(e.to_string());
            }
        }
    }
}

/// The whole of `timectl apply`: take the lock, plan, check a saved plan
/// against the fresh one, ask for confirmation, apply. Returns None when
/// the user declined.
pub fn run(
    spec: &Spec,
    host: &Host,
    saved: Option<&Plan>,
    confirm: &mut dyn FnMut(&Plan) -> bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Option<Report>, ApplyError> {
    let _lock = Lock::acquire(&host.files).map_err(|e| ApplyError::Refused(e.to_string()))?;
    let fresh = plan::build(spec, host)?;
    let plan = match saved {
        Some(saved) => {
            saved.check_still_valid(&fresh)?;
            saved
        }
        None => &fresh,
    };
    if !plan.changes.is_empty() && !confirm(plan) {
        return Ok(None);
    }
    apply(plan, spec, host, progress).map(Some)
}

/// Apply a plan made for `spec` on `host`. The caller holds the lock and
/// has checked that the plan is fresh ([`run`] does both). Returns a report
/// whatever happened once the run started; errors only for refusals before.
pub fn apply(
    plan: &Plan,
    spec: &Spec,
    host: &Host,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Report, ApplyError> {
    let started = Instant::now();
    if !plan.blockers.is_empty() {
        return Err(ApplyError::Refused(format!(
            "the plan could not see everything it needs, so nothing was applied:\n  - {}",
            plan.blockers.join("\n  - ")
        )));
    }
    let mut notes = plan.notes.clone();
    let run_id = new_run_id();
    if plan.changes.is_empty() {
        let (verify, step_now) = finish_live(plan, host, false, progress, &mut notes);
        let failed = verify.as_ref().and_then(|v| v.failure.clone());
        return Ok(Report {
            format_version: plan::FORMAT_VERSION,
            run_id,
            root: host.root.clone(),
            mode: host.mode,
            outcome: if failed.is_some() {
                Outcome::VerifyFailed
            } else {
                Outcome::NoChanges
            },
            steps: Vec::new(),
            error: failed,
            not_restored: Vec::new(),
            verify: verify.map(|v| v.status),
            step_now,
            notes,
            journal: None,
            backups: None,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    // Paths under the host's root, reached through host.files (inside the
    // root when it is an offline one).
    let state_dir = Path::new(crate::host::STATE_DIR);
    let runs = state_dir.join("runs");
    let backup_dir = state_dir.join("backups").join(&run_id);
    let preparing = |cause| ApplyError::Host {
        context: "preparing the run".into(),
        cause,
    };
    for dir in [&runs, &backup_dir] {
        host.files.create_dir_all(dir).map_err(preparing)?;
    }
    host.files
        .chmod(&state_dir.join("backups"), 0o700)
        .map_err(preparing)?;
    let firewall = host
        .firewall_backend(spec.timesync.firewall)
        .map_err(|e| ApplyError::Host {
            context: "choosing the firewall backend".into(),
            cause: e,
        })?;
    let ctx = ApplyContext {
        host,
        backup_dir: backup_dir.clone(),
        firewall: firewall.as_deref(),
    };
    let mut run = Run {
        host,
        plan,
        run_id: run_id.clone(),
        journal_path: runs.join(format!("{run_id}.json")),
        backup_dir: backup_dir.clone(),
        steps: plan
            .changes
            .iter()
            .map(|c| StepReport {
                summary: c.summary.clone(),
                status: StepStatus::NotRun,
                seconds: 0.0,
                undo: Vec::new(),
            })
            .collect(),
        undo: Vec::new(),
    };
    run.write_journal("running");

    let total = plan.changes.len();
    let mut failure: Option<String> = None;
    for (index, change) in plan.changes.iter().enumerate() {
        progress(Progress::Step {
            index: index + 1,
            total,
            summary: &change.summary,
        });
        let if_it_fails = change.action.undo_if_it_fails(&ctx);
        let t = Instant::now();
        let result = change.action.execute(&ctx);
        run.steps[index].seconds = t.elapsed().as_secs_f64();
        match result {
            Ok(undo) => {
                progress(Progress::StepDone {
                    seconds: run.steps[index].seconds,
                });
                run.steps[index].status = StepStatus::Done;
                run.steps[index].undo = undo.iter().map(Action::describe).collect();
                run.undo.push((index, undo));
                run.write_journal("running");
            }
            Err(e) => {
                let message = format!("{}: {e}", change.summary);
                progress(Progress::StepFailed { error: &message });
                run.steps[index].status = StepStatus::Failed(e.to_string());
                if !if_it_fails.is_empty() {
                    run.steps[index].undo = if_it_fails.iter().map(Action::describe).collect();
                    run.undo.push((index, if_it_fails));
                }
                failure = Some(message);
                break;
            }
        }
    }

    // Converged? Plan again: nothing may be left to do.
    if failure.is_none() {
        progress(Progress::Checking);
        match plan::build(spec, host) {
            Ok(again) if again.changes.is_empty() => {}
            Ok(again) => {
                failure = Some(format!(
                    "the host did not converge: {} change(s) still planned after apply: {}",
                    again.changes.len(),
                    again
                        .changes
                        .iter()
                        .map(|c| c.summary.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            Err(e) => failure = Some(format!("planning again after apply failed: {e}")),
        }
    }

    let mut verify = None;
    let mut step_now = None;
    // verify.rollback: false keeps the changes when only verification fails.
    let mut keep_changes = false;
    if failure.is_none() {
        let (v, s) = finish_live(plan, host, true, progress, &mut notes);
        step_now = s;
        if let Some(v) = v {
            if let Some(why) = &v.failure {
                failure = Some(why.clone());
                keep_changes = plan.verify.as_ref().is_some_and(|p| !p.rollback);
                if keep_changes {
                    notes.push(
                        "verify.rollback is false: the changes are kept although verification failed".into(),
                    );
                }
            }
            verify = Some(v.status);
        }
    }

    let (outcome, not_restored) = match &failure {
        None => (Outcome::Converged, Vec::new()),
        Some(_) if keep_changes => (Outcome::VerifyFailed, Vec::new()),
        Some(_) => {
            let not_restored = run.roll_back(&ctx, progress);
            if not_restored.is_empty() {
                (Outcome::RolledBack, not_restored)
            } else {
                (Outcome::RollbackIncomplete, not_restored)
            }
        }
    };
    run.write_journal(match outcome {
        Outcome::Converged | Outcome::NoChanges => "succeeded",
        Outcome::RolledBack => "rolled-back",
        Outcome::RollbackIncomplete => "rollback-incomplete",
        Outcome::VerifyFailed => "verify-failed",
    });
    Ok(Report {
        format_version: plan::FORMAT_VERSION,
        run_id,
        root: host.root.clone(),
        mode: host.mode,
        outcome,
        steps: run.steps.clone(),
        error: failure,
        not_restored,
        verify,
        step_now,
        notes,
        journal: host.files.resolve(&run.journal_path).ok(),
        backups: host.files.resolve(&backup_dir).ok(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

struct VerifyResult {
    status: SyncStatus,
    failure: Option<String>,
}

/// After the changes on a live host: step once if asked (only when this
/// run changed something, so a second apply stays a no-op), then wait for
/// the daemon to report itself synchronised.
fn finish_live(
    plan: &Plan,
    host: &Host,
    changed: bool,
    progress: &mut dyn FnMut(Progress<'_>),
    notes: &mut Vec<String>,
) -> (Option<VerifyResult>, Option<String>) {
    if host.mode == Mode::Offline {
        if plan.verify.is_some() || plan.step_now {
            notes.push(
                "offline root: the clock is not stepped and synchronisation is not verified".into(),
            );
        }
        return (None, None);
    }
    let probe = match sync::probe_for(host, &plan.provider) {
        Ok(p) => p,
        Err(e) => {
            let failure = plan
                .verify
                .as_ref()
                .map(|_| format!("cannot verify synchronisation: {e}"));
            return (
                failure.map(|f| VerifyResult {
                    status: SyncStatus::unknown(&f),
                    failure: Some(f),
                }),
                None,
            );
        }
    };
    let mut step_now = None;
    if plan.step_now && changed {
        step_now = Some(match probe.step_now() {
            Ok(text) => text,
            Err(e) => format!("could not step the clock: {e}"),
        });
    }
    let Some(verify) = &plan.verify else {
        return (None, step_now);
    };
    let deadline = Duration::from_secs_f64(verify.within_seconds);
    let started = Instant::now();
    loop {
        let status = probe
            .status()
            .unwrap_or_else(|e| SyncStatus::unknown(&e.to_string()));
        let waited = started.elapsed().as_secs_f64();
        progress(Progress::Verifying {
            waited,
            status: &status.describe(),
        });
        let verdict = status.meets(verify);
        if verdict.is_ok() {
            return (
                Some(VerifyResult {
                    status,
                    failure: None,
                }),
                step_now,
            );
        }
        if started.elapsed() >= deadline {
            let why = verdict.err().unwrap_or_default();
            return (
                Some(VerifyResult {
                    status,
                    failure: Some(format!(
                        "not synchronised within {}s: {why}",
                        verify.within_seconds
                    )),
                }),
                step_now,
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_419), (2025, 11, 27));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
