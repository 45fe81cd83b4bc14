//! Views of plans and reports: human text for terminals and code review,
//! versioned JSON for bots (docs/json-format.md), markdown for pull-request
//! comments. Views decide nothing; secrets never appear in any of them.

use serde::Serialize;

use crate::apply::{Outcome, Report, StepStatus};
use crate::plan::{FORMAT_VERSION, Plan, Summary};
use crate::resource::{Action, Change, ChangeKind};

fn symbol(kind: ChangeKind) -> char {
    match kind {
        ChangeKind::Add => '+',
        ChangeKind::Change => '~',
        ChangeKind::Remove => '-',
    }
}

pub fn summary_line(s: Summary) -> String {
    if s.add + s.change + s.remove == 0 {
        return "No changes: the host is as desired.".to_string();
    }
    format!(
        "Plan: {} to add, {} to change, {} to remove.",
        s.add, s.change, s.remove
    )
}

/// The escape sequences of the text view: all empty without color.
struct Palette {
    bold: &'static str,
    red: &'static str,
    green: &'static str,
    yellow: &'static str,
    cyan: &'static str,
    reset: &'static str,
}

impl Palette {
    fn new(color: bool) -> Palette {
        if color {
            Palette {
                bold: "\x1b[1m",
                red: "\x1b[31m",
                green: "\x1b[32m",
                yellow: "\x1b[33m",
                cyan: "\x1b[36m",
                reset: "\x1b[0m",
            }
        } else {
            Palette {
                bold: "",
                red: "",
                green: "",
                yellow: "",
                cyan: "",
                reset: "",
            }
        }
    }
}

/// Human text: summary line first, then each step with its reason and diff.
pub fn plan_text(plan: &Plan, color: bool) -> String {
    let p = Palette::new(color);
    let mut out = String::new();
    write_plan_header(&mut out, plan, &p);
    for (i, change) in plan.changes.iter().enumerate() {
        write_change(&mut out, i, change, &p);
    }
    write_after_changes(&mut out, plan);
    write_notes(&mut out, plan, &p);
    out
}

/// The summary line, the host line and the engine executable, if any.
fn write_plan_header(out: &mut String, plan: &Plan, p: &Palette) {
    let (bold, reset) = (p.bold, p.reset);
    out.push_str(&format!("{bold}{}{reset}\n", summary_line(plan.summary())));
    out.push_str(&format!(
        "Host: {} ({} family), {} {}; time daemon: {} ({}, provider {})\n",
        plan.os,
        plan.family,
        plan.mode,
        plan.root.display(),
        plan.daemon,
        plan.unit,
        plan.provider.name()
    ));
    if let Some(engine) = &plan.engine_binary {
        out.push_str(&format!("Engine executable: {}\n", engine.describe()));
    }
}

/// Step `i` (0-based): its symbol, number, summary and reason, then its
/// diff.
fn write_change(out: &mut String, i: usize, change: &Change, p: &Palette) {
    let c = match change.kind {
        ChangeKind::Add => p.green,
        ChangeKind::Change => p.yellow,
        ChangeKind::Remove => p.red,
    };
    out.push_str(&format!(
        "\n{c}{} {:>2}. {}{}\n      because {}\n",
        symbol(change.kind),
        i + 1,
        change.summary,
        p.reset,
        change.reason
    ));
    if let Some(diff) = &change.diff {
        for line in diff.lines() {
            let lc = diff_line_color(line, p);
            out.push_str(&format!("      {lc}{line}{}\n", p.reset));
        }
    }
}

/// The color of a unified diff line: headers bold, additions green,
/// removals red, hunk headers cyan.
fn diff_line_color(line: &str, p: &Palette) -> &'static str {
    if line.starts_with("+++") || line.starts_with("---") {
        p.bold
    } else if line.starts_with('+') {
        p.green
    } else if line.starts_with('-') {
        p.red
    } else if line.starts_with("@@") {
        p.cyan
    } else {
        ""
    }
}

/// What happens once the changes are made: a step, a verification.
fn write_after_changes(out: &mut String, plan: &Plan) {
    if !plan.step_now && plan.verify.is_none() {
        return;
    }
    out.push('\n');
    if plan.step_now {
        out.push_str("After the changes: step the clock once (step.now).\n");
    }
    if let Some(v) = &plan.verify {
        out.push_str(&format!(
            "After the changes: verify {} is synchronised within {}s{}.\n",
            plan.daemon,
            v.within_seconds,
            v.max_offset_seconds
                .map_or(String::new(), |m| format!(", |offset| <= {m}s"))
        ));
    }
}

/// The notes, then what keeps the plan incomplete.
fn write_notes(out: &mut String, plan: &Plan, p: &Palette) {
    for note in &plan.notes {
        out.push_str(&format!("\nnote: {note}"));
    }
    for blocker in &plan.blockers {
        out.push_str(&format!("\n{}incomplete:{} {blocker}", p.red, p.reset));
    }
    if !plan.notes.is_empty() || !plan.blockers.is_empty() {
        out.push('\n');
    }
}

/// One change as the JSON view shows it: no file content, only the diff
/// (already redacted for secrets).
#[derive(Serialize)]
struct JsonChange<'a> {
    resource: &'a crate::resource::ResourceId,
    kind: ChangeKind,
    op: &'static str,
    summary: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sensitive: bool,
}

fn op_name(action: &Action) -> &'static str {
    match action {
        Action::WriteFile(_) => "write_file",
        Action::SetFileMeta { .. } => "set_file_meta",
        Action::RestoreFile { .. } => "restore_file",
        Action::RemoveFile { .. } => "remove_file",
        Action::RemoveEmptyDir { .. } => "remove_empty_dir",
        Action::InstallBinary { .. } => "install_binary",
        Action::InstallPackages { .. } => "install_packages",
        Action::RemovePackages { .. } => "remove_packages",
        Action::EnableUnit { .. } => "enable_unit",
        Action::DisableUnit { .. } => "disable_unit",
        Action::MaskUnit { .. } => "mask_unit",
        Action::UnmaskUnit { .. } => "unmask_unit",
        Action::StartUnit { .. } => "start_unit",
        Action::StopUnit { .. } => "stop_unit",
        Action::RestartUnit { .. } => "restart_unit",
        Action::ReloadUnits => "reload_units",
        Action::OpenFirewall => "open_firewall",
        Action::CloseFirewall => "close_firewall",
        Action::OpenNtsKe => "open_nts_ke",
        Action::CloseNtsKe => "close_nts_ke",
    }
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    format_version: u32,
    timectl_version: &'a str,
    kind: &'static str,
    host: JsonHost<'a>,
    provider: &'a str,
    daemon: &'a str,
    unit: &'a str,
    spec: JsonSpec<'a>,
    summary: Summary,
    changes: Vec<JsonChange<'a>>,
    step_now: bool,
    verify: Option<&'a crate::provider::VerifyPlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine_binary: Option<&'a crate::resource::binary::EngineBinary>,
    notes: &'a [String],
    blockers: &'a [crate::plan::Blocker],
    fingerprint: &'a str,
}

#[derive(Serialize)]
struct JsonHost<'a> {
    os: &'a str,
    family: &'a str,
    mode: crate::host::Mode,
    root: &'a std::path::Path,
}

#[derive(Serialize)]
struct JsonSpec<'a> {
    path: &'a str,
    sha256: &'a str,
}

/// The plan as versioned JSON (docs/json-format.md).
pub fn plan_json(plan: &Plan) -> serde_json::Value {
    let view = JsonPlan {
        format_version: FORMAT_VERSION,
        timectl_version: &plan.timectl_version,
        kind: "plan",
        host: JsonHost {
            os: &plan.os,
            family: &plan.family,
            mode: plan.mode,
            root: &plan.root,
        },
        provider: plan.provider.name(),
        daemon: &plan.daemon,
        unit: &plan.unit,
        spec: JsonSpec {
            path: &plan.spec_path,
            sha256: &plan.spec_sha256,
        },
        summary: plan.summary(),
        changes: plan
            .changes
            .iter()
            .map(|c| JsonChange {
                resource: &c.resource,
                kind: c.kind,
                op: op_name(&c.action),
                summary: &c.summary,
                reason: &c.reason,
                diff: c.diff.as_deref(),
                sensitive: matches!(&c.action, Action::WriteFile(w) if w.sensitive),
            })
            .collect(),
        step_now: plan.step_now,
        verify: plan.verify.as_ref(),
        engine_binary: plan.engine_binary.as_ref(),
        notes: &plan.notes,
        blockers: &plan.blockers,
        fingerprint: &plan.fingerprint,
    };
    serde_json::to_value(view).unwrap_or(serde_json::Value::Null)
}

/// Markdown for a pull-request comment.
pub fn plan_markdown(plan: &Plan) -> String {
    let mut out = format!(
        "### timectl plan: {}\n\n**{}** ({} family, {}), time daemon **{}** (`{}`)\n\n",
        summary_line(plan.summary()),
        plan.os,
        plan.family,
        plan.mode,
        plan.daemon,
        plan.unit
    );
    if !plan.changes.is_empty() {
        out.push_str("| # | | step | why |\n|---|---|---|---|\n");
        for (i, c) in plan.changes.iter().enumerate() {
            out.push_str(&format!(
                "| {} | `{}` | {} | {} |\n",
                i + 1,
                symbol(c.kind),
                c.summary.replace('|', "\\|"),
                c.reason.replace('|', "\\|")
            ));
        }
        for c in &plan.changes {
            if let Some(diff) = &c.diff {
                out.push_str(&format!(
                    "\n<details><summary>{}</summary>\n\n```diff\n{}```\n</details>\n",
                    c.summary, diff
                ));
            }
        }
    }
    for note in &plan.notes {
        out.push_str(&format!("\n> note: {note}\n"));
    }
    for b in &plan.blockers {
        out.push_str(&format!("\n> **incomplete:** {b}\n"));
    }
    out
}

/// Human text for an apply report.
pub fn report_text(report: &Report) -> String {
    let mut out = String::new();
    let headline = match report.outcome {
        Outcome::NoChanges => "No changes: the host was already as desired.".to_string(),
        Outcome::Converged => format!(
            "Applied {} change(s) in {:.2}s: the host is as desired.",
            report.steps.len(),
            report.seconds
        ),
        Outcome::RolledBack => {
            "Apply FAILED; every step done was undone: the host is as it was.".to_string()
        }
        Outcome::RollbackIncomplete => {
            "Apply FAILED and the rollback was INCOMPLETE: see what could not be restored below."
                .to_string()
        }
        Outcome::VerifyFailed => "Nothing needed changing, but verification FAILED.".to_string(),
    };
    out.push_str(&headline);
    out.push('\n');
    if let Some(e) = &report.error {
        out.push_str(&format!("error: {e}\n"));
    }
    if report.outcome != Outcome::Converged && !report.steps.is_empty() {
        out.push_str("steps:\n");
        for s in &report.steps {
            let status = match &s.status {
                StepStatus::Done => "done".to_string(),
                StepStatus::Failed(e) => format!("FAILED: {e}"),
                StepStatus::Undone => "done, then undone".to_string(),
                StepStatus::UndoFailed(e) => format!("done, UNDO FAILED: {e}"),
                StepStatus::NotRun => "not run".to_string(),
                StepStatus::Started => "started, not finished".to_string(),
            };
            out.push_str(&format!("  {}: {status}\n", s.summary));
        }
    }
    for n in &report.not_restored {
        out.push_str(&format!("NOT RESTORED: {n}\n"));
    }
    if let Some(s) = &report.step_now {
        out.push_str(&format!("clock step: {s}\n"));
    }
    if let Some(v) = &report.verify {
        out.push_str(&format!("verify: {}\n", v.describe()));
    }
    for n in &report.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    if let Some(j) = &report.journal {
        out.push_str(&format!("journal: {}\n", j.display()));
    }
    out
}

/// `timectl runs`: one line per run, oldest first.
pub fn runs_text(runs: &[crate::apply::Journal], apply_running: bool) -> String {
    use crate::apply::journal::format_time;
    if runs.is_empty() {
        return "No runs recorded.\n".to_string();
    }
    let mut out = format!(
        "{:<24}  {:<23}  {:<20}  {}\n",
        "RUN", "STARTED", "RESULT", "STEPS"
    );
    let last = runs.len() - 1;
    for (i, run) in runs.iter().enumerate() {
        out.push_str(&format!(
            "{:<24}  {:<23}  {:<20}  {}\n",
            run.run_id,
            format_time(run.started_at),
            run_result(run, apply_running && i == last),
            run_steps(run)
        ));
    }
    out
}

/// A run's result as `timectl runs` shows it.
pub fn run_result(run: &crate::apply::Journal, may_be_running: bool) -> String {
    use crate::apply::RunState;
    match (&run.rollback, run.state) {
        (Some(r), _) if r.complete => "rolled back (later)".to_string(),
        (Some(_), _) => "rollback incomplete".to_string(),
        (None, RunState::Running | RunState::RollingBack) if may_be_running => {
            run.state.name().to_string()
        }
        (None, state) if state.unfinished() => "interrupted".to_string(),
        (None, state) => state.name().to_string(),
    }
}

/// "3 of 3 done", "1 of 3 done, step 2 started".
pub fn run_steps(run: &crate::apply::Journal) -> String {
    let total = run.steps.len();
    let done = run.count(|s| matches!(s, StepStatus::Done));
    let mut parts = vec![format!("{done} of {total} done")];
    let undone = run.count(|s| matches!(s, StepStatus::Undone));
    if undone > 0 {
        parts.push(format!("{undone} undone"));
    }
    if let Some(i) = run
        .steps
        .iter()
        .position(|s| s.status == StepStatus::Started)
    {
        parts.push(format!("step {} started", i + 1));
    }
    if let Some(i) = run
        .steps
        .iter()
        .position(|s| matches!(s.status, StepStatus::Failed(_)))
    {
        parts.push(format!("step {} failed", i + 1));
    }
    let undo_failed = run.count(|s| matches!(s, StepStatus::UndoFailed(_)));
    if undo_failed > 0 {
        parts.push(format!("{undo_failed} not undone"));
    }
    parts.join(", ")
}

/// What `timectl rollback` is about to undo.
pub fn rollback_preview(
    run: &crate::apply::Journal,
    undo: &[(usize, Vec<crate::resource::Action>)],
) -> String {
    use crate::apply::journal::format_time;
    let mut out = format!(
        "Roll back run {} ({}, started {}): {} step(s) to undo, newest first.\n",
        run.run_id,
        run_result(run, false),
        format_time(run.started_at),
        undo.len()
    );
    for (index, actions) in undo.iter().rev() {
        let step = &run.steps[*index];
        let what = if actions.is_empty() {
            "nothing to undo".to_string()
        } else {
            actions
                .iter()
                .map(Action::describe)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let note = if step.status == StepStatus::Started {
            " (started, perhaps not done)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {}. {}{note}\n      undo: {what}\n",
            index + 1,
            step.summary
        ));
    }
    out
}

/// The result of `timectl rollback`.
pub fn rollback_text(report: &crate::apply::RollbackReport) -> String {
    let mut out = if report.complete() {
        format!(
            "Rolled back run {}: {} step(s) undone; the host is as it was before that run.\n",
            report.run_id, report.undone
        )
    } else {
        format!(
            "Rollback of run {} was INCOMPLETE: see what could not be restored below.\n",
            report.run_id
        )
    };
    for n in &report.not_restored {
        out.push_str(&format!("NOT RESTORED: {n}\n"));
    }
    if let Some(j) = &report.journal {
        out.push_str(&format!("journal: {}\n", j.display()));
    }
    out
}
