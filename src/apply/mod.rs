//! Carrying out a plan: one apply at a time (a lock), every step recorded in
//! a run journal before it starts and after it ends (atomically: a killed
//! run leaves a whole journal), every replaced file backed up first, and,
//! when a step fails, the steps already done undone in reverse order. After
//! the last step the host is planned again and must need nothing more; then
//! the clock is stepped once if asked and synchronisation is verified.
//!
//! A run that was killed is reported by the next `plan` and `apply`, and
//! [`rollback`] undoes any run from its journal and backups.

pub mod journal;
mod lock;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::host::{Host, HostError, Mode};
use crate::plan::{self, Plan, PlanError};
use crate::resource::{Action, ApplyContext};
use crate::spec::Spec;
use crate::sync::{self, SyncStatus, TimeProbe};

pub use journal::{Journal, JournalStep, RunState, StepStatus};
pub use lock::Lock;

/// Test hook for crash injection: when `TIMECTL_TEST_ABORT_AT` names this
/// point (`started:N`, `write:N`, `done:N` for step N), the process kills
/// itself with SIGKILL there, as an operator's `kill -9` or a power cut
/// would stop it. Never set outside tests.
pub const ABORT_ENV: &str = "TIMECTL_TEST_ABORT_AT";

/// The step being carried out (1-based; 0 outside a step), for the hook.
static CURRENT_STEP: AtomicUsize = AtomicUsize::new(0);

/// A crash-injection point inside the current step (`write` from
/// [`crate::host::Files`], just before a new file replaces the old one).
pub fn crash_point_in_step(kind: &str) {
    let step = CURRENT_STEP.load(Ordering::Relaxed);
    if step > 0 {
        crash_point(&format!("{kind}:{step}"));
    }
}

fn crash_point(point: &str) {
    if std::env::var_os(ABORT_ENV).is_some_and(|v| v == point) {
        eprintln!("{ABORT_ENV}={point}: killing this process (test hook)");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
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
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

struct Run<'a> {
    host: &'a Host,
    journal: Journal,
    /// Undo actions of the steps done, in the order the steps ran.
    undo: Vec<(usize, Vec<Action>)>,
}

impl Run<'_> {
    /// The run's journal, every step not run yet, written before anything
    /// changes.
    fn start<'a>(
        plan: &Plan,
        spec: &Spec,
        host: &'a Host,
        run_id: &str,
        backup_dir: &Path,
    ) -> Result<Run<'a>, ApplyError> {
        let mut run = Run {
            host,
            journal: Journal {
                format_version: journal::JOURNAL_FORMAT,
                run_id: run_id.to_string(),
                timectl_version: env!("CARGO_PKG_VERSION").to_string(),
                root: host.root.clone(),
                mode: host.mode,
                spec_path: plan.spec_path.clone(),
                plan_fingerprint: plan.fingerprint.clone(),
                started_at: journal::now(),
                started_ns: journal::now_ns(),
                pid: std::process::id(),
                state: RunState::Running,
                steps: plan.changes.iter().map(JournalStep::not_run).collect(),
                backups: backup_dir.to_path_buf(),
                firewall: crate::provider::firewall_mode(spec),
                error: None,
                rollback: None,
            },
            undo: Vec::new(),
        };
        run.write_journal(RunState::Running)
            .map_err(|cause| ApplyError::Host {
                context: "preparing the run".into(),
                cause,
            })?;
        Ok(run)
    }

    /// Run the plan's steps in order until one fails; returns why it did.
    fn steps_of(
        &mut self,
        plan: &Plan,
        ctx: &ApplyContext<'_>,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Option<String> {
        let total = plan.changes.len();
        for (index, change) in plan.changes.iter().enumerate() {
            progress(Progress::Step {
                index: index + 1,
                total,
                summary: &change.summary,
            });
            if let Err(e) = self.step(index, &change.action, ctx) {
                let message = format!("{}: {e}", change.summary);
                progress(Progress::StepFailed { error: &message });
                return Some(message);
            }
            progress(Progress::StepDone {
                seconds: self.journal.steps[index].seconds,
            });
        }
        None
    }

    /// One step: backups and undo first, then "started" on disk, then the
    /// change; recorded as done, or failed with what undoes it.
    fn step(
        &mut self,
        index: usize,
        action: &Action,
        ctx: &ApplyContext<'_>,
    ) -> Result<(), HostError> {
        let if_it_fails = action.undo_if_it_fails(ctx);
        let t = Instant::now();
        let mut prepared = None;
        let result = action.prepare(ctx).and_then(|undo| {
            prepared = Some(undo.clone());
            self.record_started(index, undo)?;
            crash_point(&format!("started:{}", index + 1));
            CURRENT_STEP.store(index + 1, Ordering::Relaxed);
            let done = action.perform(ctx);
            CURRENT_STEP.store(0, Ordering::Relaxed);
            done
        });
        self.journal.steps[index].seconds = t.elapsed().as_secs_f64();
        let Err(e) = result else {
            self.journal.steps[index].status = StepStatus::Done;
            let undo = prepared.unwrap_or_default();
            self.undo.push((index, undo));
            let _ = self.write_journal(RunState::Running);
            crash_point(&format!("done:{}", index + 1));
            return Ok(());
        };
        // A file step's prepared undo is right whether or not the change
        // happened (a write that failed may have created directories);
        // other steps undo only what a failure leaves.
        let undo = match prepared {
            Some(undo) if action.changes_only_files() => undo,
            _ => if_it_fails,
        };
        let step = &mut self.journal.steps[index];
        step.status = StepStatus::Failed(e.to_string());
        step.undo = undo.iter().map(Action::describe).collect();
        step.undo_actions = undo.clone();
        if !undo.is_empty() {
            self.undo.push((index, undo));
        }
        let _ = self.write_journal(RunState::Running);
        Err(e)
    }

    /// The step and its undo on disk before it starts.
    fn record_started(&mut self, index: usize, undo: Vec<Action>) -> Result<(), HostError> {
        let step = &mut self.journal.steps[index];
        step.status = StepStatus::Started;
        step.undo = undo.iter().map(Action::describe).collect();
        step.undo_actions = undo;
        self.write_journal(RunState::Running).map_err(|e| {
            HostError::msg(format!("not started: cannot record it in the journal: {e}"))
        })
    }

    /// Roll back unless it converged (or the changes are kept), and record
    /// the outcome.
    fn finish(
        &mut self,
        failure: &Option<String>,
        keep_changes: bool,
        ctx: &ApplyContext<'_>,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> (Outcome, Vec<String>) {
        let (outcome, not_restored) = match failure {
            None => (Outcome::Converged, Vec::new()),
            Some(_) if keep_changes => (Outcome::VerifyFailed, Vec::new()),
            Some(_) => {
                let not_restored = self.roll_back(ctx, progress);
                if not_restored.is_empty() {
                    (Outcome::RolledBack, not_restored)
                } else {
                    (Outcome::RollbackIncomplete, not_restored)
                }
            }
        };
        self.journal.error = failure.clone();
        let _ = self.write_journal(match outcome {
            Outcome::Converged | Outcome::NoChanges => RunState::Succeeded,
            Outcome::RolledBack => RunState::RolledBack,
            Outcome::RollbackIncomplete => RunState::RollbackIncomplete,
            Outcome::VerifyFailed => RunState::VerifyFailed,
        });
        (outcome, not_restored)
    }

    /// Write the journal in `state`. Before a step this must succeed (a step
    /// not on record is not started); during a rollback a failure to write
    /// it must not stop the rollback.
    fn write_journal(&mut self, state: RunState) -> Result<(), HostError> {
        self.journal.state = state;
        self.journal.save(&self.host.files)
    }

    fn steps(&self) -> Vec<StepReport> {
        step_reports(&self.journal)
    }

    fn roll_back(
        &mut self,
        ctx: &ApplyContext<'_>,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Vec<String> {
        let undo = std::mem::take(&mut self.undo);
        undo_steps(
            &mut self.journal,
            undo,
            ctx,
            progress,
            RunState::RollingBack,
        )
    }
}

/// Undo steps of a run, newest first, saving the journal after each. A
/// systemd reload or a daemon restart in the undo list waits until the file
/// restores of the older steps are done (it runs before the next unit or
/// package operation, or at the end; a firewall operation does not wait
/// for it, so a firewall step between the files and the reload cannot make
/// it run early): in plain reverse order it
/// would run first and make systemd or the daemon read the files this run
/// wrote, not the ones put back. Returns what could not be undone.
fn undo_steps(
    journal: &mut Journal,
    mut undo: Vec<(usize, Vec<Action>)>,
    ctx: &ApplyContext<'_>,
    progress: &mut dyn FnMut(Progress<'_>),
    state: RunState,
) -> Vec<String> {
    progress(Progress::RollingBack);
    journal.state = state;
    let save = |j: &Journal| {
        let _ = j.save(&ctx.host.files);
    };
    save(journal);
    let mut not_restored = Vec::new();
    let mut waiting: Vec<(usize, Action)> = Vec::new();
    while let Some((index, actions)) = undo.pop() {
        for action in actions {
            if action.rereads_files() {
                waiting.push((index, action));
                continue;
            }
            if action.reads_unit_files() {
                undo_waiting(journal, &mut waiting, ctx, progress, &mut not_restored);
            }
            undo_one(journal, index, &action, ctx, progress, &mut not_restored);
        }
        if let Some(step) = journal.steps.get_mut(index)
            && matches!(step.status, StepStatus::Done | StepStatus::Started)
        {
            step.status = StepStatus::Undone;
        }
        save(journal);
    }
    undo_waiting(journal, &mut waiting, ctx, progress, &mut not_restored);
    save(journal);
    not_restored
}

/// Run the undo actions that waited for file restores: reloads first.
fn undo_waiting(
    journal: &mut Journal,
    waiting: &mut Vec<(usize, Action)>,
    ctx: &ApplyContext<'_>,
    progress: &mut dyn FnMut(Progress<'_>),
    not_restored: &mut Vec<String>,
) {
    waiting.sort_by_key(|(_, a)| *a != Action::ReloadUnits);
    for (index, action) in std::mem::take(waiting) {
        undo_one(journal, index, &action, ctx, progress, not_restored);
    }
}

/// Run one undo action of step `index`; a failure marks the step.
fn undo_one(
    journal: &mut Journal,
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
        if let Some(step) = journal.steps.get_mut(index)
            && !matches!(step.status, StepStatus::Failed(_))
        {
            step.status = StepStatus::UndoFailed(e.to_string());
        }
    }
}

/// Remove the temporary files a killed run left next to the files this plan
/// and interrupted runs write (and their backups), and in the journal
/// directory.
fn remove_stale_temps(host: &Host, plan: Option<&Plan>, interrupted: &[Journal]) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = plan
        .iter()
        .flat_map(|p| &p.changes)
        .flat_map(|c| c.action.paths())
        .collect();
    for run in interrupted {
        for step in &run.steps {
            for path in step.paths.iter().chain(
                step.undo_actions
                    .iter()
                    .flat_map(Action::paths)
                    .collect::<Vec<_>>()
                    .iter(),
            ) {
                paths.push(path.clone());
                paths.push(run.backups.join(path.strip_prefix("/").unwrap_or(path)));
            }
        }
    }
    paths.sort();
    paths.dedup();
    let mut removed = Vec::new();
    for path in paths {
        if let Ok(r) = host.files.remove_stale_temps(&path) {
            removed.extend(r);
        }
    }
    if let Ok(r) = host.files.remove_stale_temps_in(&journal::runs_dir()) {
        removed.extend(r);
    }
    removed
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
    // Holding the lock, every unfinished journal is a run that died.
    let interrupted = journal::interrupted(&host.files, true).map_err(|e| ApplyError::Host {
        context: "reading the run journals".into(),
        cause: e,
    })?;
    let fresh = plan::build(spec, host)?;
    let mut plan = match saved {
        Some(saved) => {
            saved.check_still_valid(&fresh)?;
            saved.clone()
        }
        None => fresh,
    };
    plan.notes
        .retain(|n| !n.starts_with("run ") || !n.contains(" was interrupted "));
    for run in &interrupted {
        plan.notes.insert(0, run.describe_interruption());
    }
    if !plan.changes.is_empty() && !confirm(&plan) {
        return Ok(None);
    }
    for run in &interrupted {
        if run.state != RunState::Interrupted {
            let mut marked = run.clone();
            marked.state = RunState::Interrupted;
            let _ = marked.save(&host.files);
        }
    }
    let removed = remove_stale_temps(host, Some(&plan), &interrupted);
    if !removed.is_empty() {
        plan.notes.push(format!(
            "removed {} temporary file(s) a killed run left: {}",
            removed.len(),
            removed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    apply(&plan, spec, host, progress).map(Some)
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
    refuse_blocked(plan)?;
    let mut notes = plan.notes.clone();
    let run_id = new_run_id();
    if plan.changes.is_empty() {
        return Ok(unchanged(plan, host, run_id, notes, started, progress));
    }
    let backup_dir = prepare_run_dirs(host, &run_id)?;
    let firewall = host
        .firewall_backend(crate::provider::firewall_mode(spec))
        .map_err(|e| ApplyError::Host {
            context: "choosing the firewall backend".into(),
            cause: e,
        })?;
    let ctx = ApplyContext {
        host,
        backup_dir: backup_dir.clone(),
        firewall: firewall.as_deref(),
    };
    let mut run = Run::start(plan, spec, host, &run_id, &backup_dir)?;
    let mut failure = run.steps_of(plan, &ctx, progress);
    if failure.is_none() {
        failure = check_converged(spec, host, progress);
    }
    let (mut verify, mut step_now, mut keep_changes) = (None, None, false);
    if failure.is_none() {
        (verify, step_now, failure, keep_changes) = verify_run(plan, host, progress, &mut notes);
    }
    let (outcome, not_restored) = run.finish(&failure, keep_changes, &ctx, progress);
    Ok(Report {
        format_version: plan::FORMAT_VERSION,
        run_id: run_id.clone(),
        root: host.root.clone(),
        mode: host.mode,
        outcome,
        steps: run.steps(),
        error: failure,
        not_restored,
        verify,
        step_now,
        notes,
        journal: host.files.resolve(&journal::journal_path(&run_id)).ok(),
        backups: host.files.resolve(&backup_dir).ok(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A plan that could not see everything is never applied.
fn refuse_blocked(plan: &Plan) -> Result<(), ApplyError> {
    if plan.blockers.is_empty() {
        return Ok(());
    }
    Err(ApplyError::Refused(format!(
        "the plan could not see everything it needs, so nothing was applied:\n  - {}",
        (plan.blockers.iter())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n  - ")
    )))
}

/// The report of a plan with nothing to change: only verification runs.
fn unchanged(
    plan: &Plan,
    host: &Host,
    run_id: String,
    mut notes: Vec<String>,
    started: Instant,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Report {
    let (verify, step_now) = finish_live(plan, host, false, progress, &mut notes);
    let failed = verify.as_ref().and_then(|v| v.failure.clone());
    Report {
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
    }
}

/// Create the journal and backup directories (paths under the host's
/// root, reached through host.files); returns the run's backup directory.
fn prepare_run_dirs(host: &Host, run_id: &str) -> Result<PathBuf, ApplyError> {
    let state_dir = Path::new(crate::host::STATE_DIR);
    let backup_dir = state_dir.join("backups").join(run_id);
    let preparing = |cause| ApplyError::Host {
        context: "preparing the run".into(),
        cause,
    };
    for dir in [&journal::runs_dir(), &backup_dir] {
        host.files.create_dir_all(dir).map_err(preparing)?;
    }
    host.files
        .chmod(&state_dir.join("backups"), 0o700)
        .map_err(preparing)?;
    Ok(backup_dir)
}

/// Converged? Plan again: nothing may be left to do. Returns why not.
fn check_converged(
    spec: &Spec,
    host: &Host,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Option<String> {
    progress(Progress::Checking);
    match plan::build(spec, host) {
        Ok(again) if again.changes.is_empty() => None,
        Ok(again) => Some(format!(
            "the host did not converge: {} change(s) still planned after apply: {}",
            again.changes.len(),
            again
                .changes
                .iter()
                .map(|c| c.summary.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )),
        Err(e) => Some(format!("planning again after apply failed: {e}")),
    }
}

/// Step and verify after the changes: the verification, the step, why it
/// failed, and whether the changes stay anyway (`verify.rollback: false`).
fn verify_run(
    plan: &Plan,
    host: &Host,
    progress: &mut dyn FnMut(Progress<'_>),
    notes: &mut Vec<String>,
) -> (Option<SyncStatus>, Option<String>, Option<String>, bool) {
    let (verify, step_now) = finish_live(plan, host, true, progress, notes);
    let Some(verify) = verify else {
        return (None, step_now, None, false);
    };
    let keep_changes =
        verify.failure.is_some() && plan.verify.as_ref().is_some_and(|p| !p.rollback);
    if keep_changes {
        notes.push(
            "verify.rollback is false: the changes are kept although verification failed".into(),
        );
    }
    (Some(verify.status), step_now, verify.failure, keep_changes)
}

/// A step's index and the actions that undo it.
pub type StepUndo = (usize, Vec<Action>);
/// Steps to undo, oldest first.
pub type UndoList = Vec<StepUndo>;

/// What `timectl rollback` did.
#[derive(Clone, Debug, Serialize)]
pub struct RollbackReport {
    pub run_id: String,
    pub root: PathBuf,
    /// The run's state before the rollback.
    pub was: RunState,
    pub steps: Vec<StepReport>,
    pub undone: usize,
    pub not_restored: Vec<String>,
    pub journal: Option<PathBuf>,
}

impl RollbackReport {
    pub fn complete(&self) -> bool {
        self.not_restored.is_empty()
    }
}

/// The run `timectl rollback` would undo (the last one when no id is
/// given), and the undo actions per step, oldest step first. Refuses runs
/// that are already undone and runs that a later run built on.
pub fn rollback_target(
    host: &Host,
    run_id: Option<&str>,
) -> Result<(Journal, UndoList), ApplyError> {
    let host_err = |cause| ApplyError::Host {
        context: "reading the run journals".into(),
        cause,
    };
    let (runs, _) = Journal::list(&host.files).map_err(host_err)?;
    let journal = match run_id {
        Some(id) => Journal::load(&host.files, id).map_err(host_err)?,
        // The last run that left something to undo.
        None => runs
            .iter()
            .rev()
            .find(|r| r.state != RunState::RolledBack && !rolled_back_by_hand(r))
            .cloned()
            .ok_or_else(|| {
                ApplyError::Refused("no run under this root has anything left to roll back".into())
            })?,
    };
    refuse_unrollable(&journal).map_err(ApplyError::Refused)?;
    refuse_if_built_on(&journal, &runs).map_err(ApplyError::Refused)?;
    let undo = undo_list(&journal);
    Ok((journal, undo))
}

/// A run `timectl rollback` undid completely.
fn rolled_back_by_hand(run: &Journal) -> bool {
    run.rollback.as_ref().is_some_and(|b| b.complete)
}

/// Runs that cannot be rolled back: recorded without undo actions, or
/// already undone.
fn refuse_unrollable(journal: &Journal) -> Result<(), String> {
    if journal.format_version < journal::JOURNAL_FORMAT {
        return Err(format!(
            "run {} was recorded by an older timectl (journal format {}) without the actions that undo it: it cannot be rolled back automatically; its backups are in {}",
            journal.run_id,
            journal.format_version,
            journal.backups.display()
        ));
    }
    if let Some(done) = &journal.rollback
        && done.complete
    {
        return Err(format!(
            "run {} was already rolled back ({})",
            journal.run_id,
            journal::format_time(done.at)
        ));
    }
    if journal.state == RunState::RolledBack && journal.rollback.is_none() {
        return Err(format!(
            "run {} was rolled back when it failed: nothing of it is left to undo",
            journal.run_id
        ));
    }
    Ok(())
}

/// Runs are rolled back newest first: refuse a run that a later run still
/// in place changed the host after.
fn refuse_if_built_on(journal: &Journal, runs: &[Journal]) -> Result<(), String> {
    let position = runs.iter().position(|r| r.run_id == journal.run_id);
    let later = runs
        .iter()
        .skip(position.map_or(runs.len(), |p| p + 1))
        .rfind(|r| {
            r.state != RunState::RolledBack
                && !rolled_back_by_hand(r)
                && r.steps.iter().any(|s| {
                    matches!(
                        s.status,
                        StepStatus::Done | StepStatus::Started | StepStatus::UndoFailed(_)
                    )
                })
        });
    match later {
        Some(last) => Err(format!(
            "run {} changed this host after run {}: roll that back first (`timectl rollback {}`), newest first",
            last.run_id, journal.run_id, last.run_id
        )),
        None => Ok(()),
    }
}

/// The undo actions of the run's steps that did something, oldest first.
fn undo_list(journal: &Journal) -> UndoList {
    journal
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| match &s.status {
            StepStatus::Done | StepStatus::Started | StepStatus::UndoFailed(_) => true,
            // A failed step's own clean-up (stop a unit whose start failed)
            // is repeated: it is harmless when it already ran.
            StepStatus::Failed(_) => journal.state.unfinished(),
            StepStatus::Undone | StepStatus::NotRun => false,
        })
        .map(|(i, s)| (i, s.undo_actions.clone()))
        .collect()
}

/// The whole of `timectl rollback`: take the lock, find the run, confirm,
/// undo its steps newest first from the journal and backups.
pub fn rollback(
    host: &Host,
    run_id: Option<&str>,
    confirm: &mut dyn FnMut(&Journal, &[StepUndo]) -> bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Option<RollbackReport>, ApplyError> {
    let _lock = Lock::acquire(&host.files).map_err(|e| ApplyError::Refused(e.to_string()))?;
    let (mut journal, undo) = rollback_target(host, run_id)?;
    if !confirm(&journal, &undo) {
        return Ok(None);
    }
    let was = journal.state;
    remove_stale_temps(host, None, std::slice::from_ref(&journal));
    let needs_firewall = undo.iter().flat_map(|(_, a)| a).any(Action::is_firewall);
    let firewall = if needs_firewall {
        host.firewall_backend(journal.firewall)
            .map_err(|e| ApplyError::Host {
                context: "choosing the firewall backend".into(),
                cause: e,
            })?
    } else {
        None
    };
    // Files only: nothing of the plan is redone, no backups are taken.
    let ctx = ApplyContext {
        host,
        backup_dir: journal.backups.clone(),
        firewall: firewall.as_deref(),
    };
    let undone = undo.len();
    let state = journal.state;
    let not_restored = undo_steps(&mut journal, undo, &ctx, progress, state);
    journal.rollback = Some(journal::RollbackRecord {
        at: journal::now(),
        complete: not_restored.is_empty(),
        not_restored: not_restored.clone(),
    });
    journal.state = if not_restored.is_empty() {
        RunState::RolledBack
    } else {
        RunState::RollbackIncomplete
    };
    let _ = journal.save(&host.files);
    Ok(Some(RollbackReport {
        run_id: journal.run_id.clone(),
        root: host.root.clone(),
        was,
        steps: step_reports(&journal),
        undone,
        not_restored,
        journal: host
            .files
            .resolve(&journal::journal_path(&journal.run_id))
            .ok(),
    }))
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
    let probe = match probe_for(host, plan) {
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
    (
        Some(wait_for_sync(probe.as_ref(), verify, progress)),
        step_now,
    )
}

/// Ask the daemon until it meets `verify` or the deadline passes.
fn wait_for_sync(
    probe: &dyn TimeProbe,
    verify: &crate::provider::VerifyPlan,
    progress: &mut dyn FnMut(Progress<'_>),
) -> VerifyResult {
    let deadline = Duration::from_secs_f64(verify.within_seconds);
    let started = Instant::now();
    // Ask soon after the start and then less often: a daemon on a near
    // source is often synchronised within a fraction of a second, and the
    // run should not wait a whole interval longer than it (50, 100, 200,
    // 400 ms, then every 500 ms).
    let mut pause = Duration::from_millis(50);
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
            return VerifyResult {
                status,
                failure: None,
            };
        }
        if started.elapsed() >= deadline {
            let why = verdict.err().unwrap_or_default();
            return VerifyResult {
                status,
                failure: Some(format!(
                    "not synchronised within {}s: {why}",
                    verify.within_seconds
                )),
            };
        }
        std::thread::sleep(pause.min(deadline.saturating_sub(started.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// What answers for the daemon's synchronisation: the host's own probe
/// (the in-memory host), or the chosen daemon.
fn probe_for<'a>(host: &'a Host, plan: &Plan) -> Result<Box<dyn TimeProbe + 'a>, HostError> {
    struct Borrowed<'a>(&'a dyn TimeProbe);
    impl TimeProbe for Borrowed<'_> {
        fn status(&self) -> Result<SyncStatus, HostError> {
            self.0.status()
        }
        fn step_now(&self) -> Result<String, HostError> {
            self.0.step_now()
        }
    }
    match &host.time_probe {
        Some(own) => Ok(Box::new(Borrowed(own.as_ref()))),
        None => sync::probe_for(host, plan.provider),
    }
}

/// The journal's steps as the report shows them.
fn step_reports(journal: &journal::Journal) -> Vec<StepReport> {
    journal
        .steps
        .iter()
        .map(|s| StepReport {
            summary: s.summary.clone(),
            status: s.status.clone(),
            seconds: s.seconds,
            undo: s.undo.clone(),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod nts_ke_tests;
