//! The command line: argument definitions, exit codes, confirmation and
//! progress. Each command is a function a test can call; nothing here
//! decides what a host needs.
//!
//! Exit codes: 0 success (or nothing to do), 1 error, 2 changes present
//! (`plan --detailed-exitcode`), as `terraform plan -detailed-exitcode`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::apply::{self, Progress};
use crate::host::Host;
use crate::plan::{self, Plan};
use crate::render;
use crate::spec::Spec;

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_CHANGES: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "timectl",
    version,
    about = "Declarative time synchronisation for hosts: plan and apply chrony, ntpd or timectl's own NTP engine",
    long_about = "timectl converges a host's time synchronisation to a YAML desired-state file.\n\n\
`timectl plan` shows, as a reviewable diff, every step that would make the host match the file: \
conflicting daemons stopped and disabled, the package installed, UDP 123 opened, the config file \
written, the daemon enabled and (re)started. `timectl apply` carries the steps out, verifies \
synchronisation, and undoes everything if a step fails. A second apply changes nothing.\n\n\
Without --root, timectl manages the running host. With --root DIR it manages an image or chroot \
offline: files under DIR, boot-time enablement as unit symlinks, nothing started.",
    after_help = "Examples:\n  timectl validate site.yaml\n  timectl plan site.yaml --root ./image\n  timectl plan site.yaml --out site.plan && timectl apply site.plan --yes\n  timectl plan site.yaml --json | jq .summary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a desired-state file; never touches a host.
    Validate(ValidateArgs),
    /// Print the JSON Schema of the desired-state file.
    Schema,
    /// Show the steps that would converge the host (a dry run).
    Plan(PlanArgs),
    /// Converge the host: run the plan, verify, roll back on failure.
    Apply(ApplyArgs),
    /// List the runs recorded on a host: id, start time, result, steps.
    Runs(RunsArgs),
    /// Undo a run (the last one unless RUN-ID is given), finished or
    /// interrupted, from its journal and backups.
    Rollback(RollbackArgs),
    /// Show what timectl detects about a host: distribution, paths, units.
    Facts(FactsArgs),
    /// Run the embedded NTP engine (client and server); see docs/engine.md.
    Daemon(crate::engine::cli::DaemonArgs),
    /// Show the running engine's synchronisation state and sources, like
    /// `chronyc tracking` and `chronyc sources`.
    Status(crate::engine::cli::StatusArgs),
    /// Print a shell completion script (bash, zsh or fish).
    #[command(
        long_about = "Print a shell completion script for timectl's subcommands and options.\n\n\
The packages install them already (bash: /usr/share/bash-completion/completions/timectl, \
zsh: _timectl in the vendor completions directory, fish: vendor_completions.d/timectl.fish). \
Without a package: `timectl completions bash > ~/.local/share/bash-completion/completions/timectl`."
    )]
    Completions(CompletionsArgs),
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: crate::manual::Shell,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The desired-state file (YAML).
    pub file: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Manage an offline root (image or chroot) instead of the running host.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Write the run's metrics for node_exporter's textfile collector to
    /// PATH (replaced atomically; name it *.prom in the collector's
    /// directory): last run time, result, changes made, drift detected.
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The desired-state file (YAML).
    pub file: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Save the plan for `timectl apply PLANFILE` (refused there if the host
    /// changes in between).
    #[arg(long, value_name = "PLANFILE")]
    pub out: Option<PathBuf>,
    /// Print the plan as versioned JSON (docs/json-format.md).
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print the plan as markdown, for a pull-request comment.
    #[arg(long)]
    pub markdown: bool,
    /// Also write the plan as markdown to FILE, whatever is printed: one
    /// look at the host gives both, e.g. `--json --markdown-out plan.md`
    /// for a bot that posts the markdown.
    #[arg(long, value_name = "FILE")]
    pub markdown_out: Option<PathBuf>,
    /// Exit 2 when there are changes, 0 when there are none, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// No colours, even on a terminal (also: NO_COLOR=1).
    #[arg(long)]
    pub no_color: bool,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// A desired-state file (YAML), or a plan saved with `plan --out`.
    pub file: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Args, Debug)]
pub struct RunsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the journals as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The run to undo (`timectl runs` lists them); default: the last one.
    #[arg(value_name = "RUN-ID")]
    pub run_id: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FactsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Write to standard output; a closed pipe or a full disk is an error, not
/// The outcome of a run that asked for confirmation (apply, rollback): its
/// report, or the exit code after saying why nothing was `done` (refused,
/// the question could not be shown, or an error).
fn confirmed<T, E: std::fmt::Display>(
    result: Result<Option<T>, E>,
    not_shown: Option<anyhow::Error>,
    done: &str,
) -> anyhow::Result<Result<T, i32>> {
    match result {
        Ok(Some(report)) => Ok(Ok(report)),
        Ok(None) => match not_shown {
            Some(e) => Err(e.context(format!("nothing was {done}"))),
            None => {
                err_line(&format!("Nothing was {done}."));
                Ok(Err(EXIT_ERROR))
            }
        },
        Err(e) => {
            err_line(&format!("error: {e}"));
            Ok(Err(EXIT_ERROR))
        }
    }
}

/// a panic (`println!` panics on them).
pub fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| anyhow::anyhow!("cannot write to standard output: {e}"))
}

/// A line on standard error. Nothing is left to report a failure to, so
/// one is ignored (`eprintln!` would panic).
pub fn err_line(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// Parse arguments, run, and return the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            err_line(&format!("error: {e:#}"));
            EXIT_ERROR
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Validate(a) => validate(&a),
        Command::Schema => {
            out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&crate::spec::json_schema())?
            ))?;
            Ok(EXIT_OK)
        }
        Command::Plan(a) => with_metrics("plan", &a.metrics, |record| plan_command(&a, record)),
        Command::Apply(a) => with_metrics("apply", &a.metrics, |record| apply_command(&a, record)),
        Command::Runs(a) => runs_command(&a),
        Command::Rollback(a) => rollback_command(&a),
        Command::Facts(a) => facts_command(&a),
        Command::Daemon(a) => crate::engine::cli::run_daemon(a),
        Command::Status(a) => crate::engine::cli::run_status(a),
        Command::Completions(a) => {
            out(&String::from_utf8_lossy(&crate::manual::completions(
                a.shell,
            )))?;
            Ok(EXIT_OK)
        }
    }
}

fn validate(args: &ValidateArgs) -> anyhow::Result<i32> {
    match Spec::load(&args.file) {
        Ok(spec) => {
            out(&format!(
                "{}: valid ({} source(s), provider {})\n",
                args.file.display(),
                spec.timesync.sources.value.len(),
                spec.provider().name()
            ))?;
            Ok(EXIT_OK)
        }
        Err(e) => {
            err_line(&e.to_string());
            Ok(EXIT_ERROR)
        }
    }
}

pub fn host_for(target: &TargetArgs) -> anyhow::Result<Host> {
    match &target.root {
        Some(root) => {
            if !root.is_dir() {
                anyhow::bail!("--root {}: not a directory", root.display());
            }
            let root = root
                .canonicalize()
                .map_err(|e| anyhow::anyhow!("--root {}: {e}", root.display()))?;
            Ok(Host::offline(&root))
        }
        None => Ok(Host::live()),
    }
}

fn use_color(no_color: bool) -> bool {
    !no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

fn load_spec(path: &Path) -> anyhow::Result<Option<Spec>> {
    match Spec::load(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            err_line(&e.to_string());
            Ok(None)
        }
    }
}

/// What a plan or apply run did, for its metrics textfile.
#[derive(Debug, Default)]
struct RunRecord {
    planned_changes: Option<usize>,
    changes_made: usize,
    rolled_back: bool,
}

/// Run a plan or apply command and, with --metrics-textfile, write its
/// metrics however it ended. A textfile that cannot be written fails the
/// command (exit 1), after the run: monitoring that silently stops is worse.
fn with_metrics(
    command: &'static str,
    args: &MetricsArgs,
    run: impl FnOnce(&mut RunRecord) -> anyhow::Result<i32>,
) -> anyhow::Result<i32> {
    let started = std::time::Instant::now();
    let mut record = RunRecord::default();
    let outcome = run(&mut record);
    let Some(path) = &args.metrics_textfile else {
        return outcome;
    };
    let metrics = crate::textfile::RunMetrics {
        command,
        finished: std::time::SystemTime::now(),
        duration: started.elapsed(),
        result: match &outcome {
            _ if record.rolled_back => crate::textfile::RunResult::RolledBack,
            Ok(code) if *code != EXIT_ERROR => crate::textfile::RunResult::Success,
            _ => crate::textfile::RunResult::Failure,
        },
        planned_changes: record.planned_changes,
        changes_made: record.changes_made,
    };
    if let Err(e) = crate::textfile::write(path, &metrics) {
        err_line(&format!(
            "error: cannot write the metrics textfile {}: {e}",
            path.display()
        ));
        return outcome.map(|_| EXIT_ERROR);
    }
    outcome
}

fn plan_command(args: &PlanArgs, record: &mut RunRecord) -> anyhow::Result<i32> {
    let Some(spec) = load_spec(&args.file)? else {
        return Ok(EXIT_ERROR);
    };
    let host = host_for(&args.target)?;
    let plan = plan::build(&spec, &host)?;
    record.planned_changes = Some(plan.changes.len());
    if let Some(out) = &args.out {
        plan.save(out)?;
    }
    if let Some(path) = &args.markdown_out {
        std::fs::write(path, render::plan_markdown(&plan)).map_err(|e| {
            anyhow::anyhow!("cannot write the markdown plan to {}: {e}", path.display())
        })?;
    }
    if args.json {
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&render::plan_json(&plan))?
        ))?;
    } else if args.markdown {
        out(&render::plan_markdown(&plan))?;
    } else {
        let mut text = render::plan_text(&plan, use_color(args.no_color));
        if let Some(saved) = &args.out {
            text.push_str(&format!(
                "\nSaved this plan to {}: `timectl apply {}` carries out exactly these steps, and refuses if the host changes first.\n",
                saved.display(),
                saved.display()
            ));
        }
        out(&text)?;
    }
    Ok(if args.detailed_exitcode && !plan.is_empty() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    })
}

fn apply_command(args: &ApplyArgs, record: &mut RunRecord) -> anyhow::Result<i32> {
    let Some((spec, saved)) = apply_input(&args.file)? else {
        return Ok(EXIT_ERROR);
    };
    if args.target.root.is_none() && !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "applying to the running host needs root: run it with sudo (or use --root DIR for an image); `timectl plan` works without"
        );
    }
    let host = host_for(&args.target)?;
    check_saved_mode(args, saved.as_ref())?;
    let (yes, json) = (args.yes, args.json);
    // The plan must reach the operator before anything is applied: when it
    // cannot be written, nothing is.
    let mut not_shown: Option<anyhow::Error> = None;
    let mut confirm = |plan: &Plan| confirm_apply(plan, yes, json, record, &mut not_shown);
    let mut progress = |p: Progress<'_>| print_progress(&p);
    let result = apply::run(&spec, &host, saved.as_ref(), &mut confirm, &mut progress);
    let report = match confirmed(result, not_shown, "applied")? {
        Ok(report) => report,
        Err(code) => return Ok(code),
    };
    record_report(record, &report);
    print_report(&report, json)
}

/// The spec `timectl apply` was given, and the saved plan when the file is
/// one (its spec is the one saved in it). None: the file was reported as
/// invalid on stderr.
fn apply_input(file: &Path) -> anyhow::Result<Option<(Spec, Option<Plan>)>> {
    let text = match crate::spec::read_text(file) {
        Ok(text) => text,
        Err(crate::spec::SpecError::Io { path, cause }) => {
            anyhow::bail!("cannot read {}: {cause}", path.display())
        }
        Err(e) => {
            err_line(&e.to_string());
            return Ok(None);
        }
    };
    if Plan::looks_like_plan(&text) {
        let saved = Plan::from_json(file, &text)?;
        let spec = Spec::parse(Path::new(&saved.spec_path), saved.spec_text.clone());
        Ok(reported(spec).map(|spec| (spec, Some(saved))))
    } else {
        Ok(reported(Spec::parse(file, text)).map(|spec| (spec, None)))
    }
}

/// The value, or None once the error is reported on stderr.
fn reported<T, E: std::fmt::Display>(result: Result<T, E>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            err_line(&e.to_string());
            None
        }
    }
}

/// A plan saved for an offline root is applied only with `--root`.
fn check_saved_mode(args: &ApplyArgs, saved: Option<&Plan>) -> anyhow::Result<()> {
    if let Some(saved) = saved
        && args.target.root.is_none()
        && saved.mode == crate::host::Mode::Offline
    {
        anyhow::bail!(
            "{} is a plan for the offline root {}: pass --root {}",
            args.file.display(),
            saved.root.display(),
            saved.root.display()
        );
    }
    Ok(())
}

/// Shows the plan (unless `json`) and asks to go on; a plan that cannot be
/// shown is an answer of no, its error kept in `not_shown`.
fn confirm_apply(
    plan: &Plan,
    yes: bool,
    json: bool,
    record: &mut RunRecord,
    not_shown: &mut Option<anyhow::Error>,
) -> bool {
    record.planned_changes = Some(plan.changes.len());
    if !json && let Err(e) = out(&render::plan_text(plan, use_color(false))) {
        *not_shown = Some(e);
        return false;
    }
    let target = if plan.mode == crate::host::Mode::Live {
        "this host".to_string()
    } else {
        plan.root.display().to_string()
    };
    ask(
        yes,
        &format!(
            "\nApply these {} change(s) to {target}? Type 'yes' to go on: ",
            plan.changes.len()
        ),
        "apply",
        not_shown,
    )
}

/// What the run did, for the metrics textfile.
fn record_report(record: &mut RunRecord, report: &apply::Report) {
    record.planned_changes = Some(report.steps.len());
    record.changes_made = report
        .steps
        .iter()
        .filter(|s| s.status == apply::journal::StepStatus::Done)
        .count();
    record.rolled_back = report.outcome == apply::Outcome::RolledBack;
}

/// Prints the run's report (JSON or text) and returns the exit code.
fn print_report(report: &apply::Report, json: bool) -> anyhow::Result<i32> {
    let text = if json {
        format!("{}\n", serde_json::to_string_pretty(report)?)
    } else {
        format!("\n{}", render::report_text(report))
    };
    if let Err(e) = out(&text) {
        // The run is over and recorded; only its report was lost.
        err_line(&format!(
            "error: {e:#} (the run {} {}; its journal: {})",
            report.run_id,
            if report.succeeded() {
                "succeeded"
            } else {
                "failed"
            },
            report
                .journal
                .as_ref()
                .map_or("none".to_string(), |j| j.display().to_string())
        ));
        return Ok(EXIT_ERROR);
    }
    Ok(if report.succeeded() {
        EXIT_OK
    } else {
        EXIT_ERROR
    })
}

/// Ask for "yes" on the terminal, unless `yes` says so already. A prompt
/// that cannot be written is an answer of no (and the error is kept).
fn ask(yes: bool, prompt: &str, what: &str, failed: &mut Option<anyhow::Error>) -> bool {
    if yes {
        return true;
    }
    if !std::io::stdin().is_terminal() {
        err_line(&format!(
            "error: refusing to {what} without --yes: stdin is not a terminal to confirm on"
        ));
        return false;
    }
    if let Err(e) = out(prompt) {
        *failed = Some(e);
        return false;
    }
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    answer.trim() == "yes"
}

fn runs_command(args: &RunsArgs) -> anyhow::Result<i32> {
    let host = host_for(&args.target)?;
    let (runs, broken) = apply::Journal::list(&host.files)?;
    let running = apply::journal::apply_running(&host.files).unwrap_or(false);
    for b in &broken {
        err_line(&format!("warning: {b}"));
    }
    if args.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&runs)?))?;
    } else {
        out(&render::runs_text(&runs, running))?;
    }
    Ok(EXIT_OK)
}

fn rollback_command(args: &RollbackArgs) -> anyhow::Result<i32> {
    if args.target.root.is_none() && !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "rolling back the running host needs root: run it with sudo (or use --root DIR for an image)"
        );
    }
    let host = host_for(&args.target)?;
    let (yes, json) = (args.yes, args.json);
    let mut not_shown: Option<anyhow::Error> = None;
    let mut confirm = |run: &apply::Journal, undo: &[(usize, Vec<crate::resource::Action>)]| {
        if !json && let Err(e) = out(&render::rollback_preview(run, undo)) {
            not_shown = Some(e);
            return false;
        }
        ask(
            yes,
            &format!("\nUndo run {}? Type 'yes' to go on: ", run.run_id),
            "roll back",
            &mut not_shown,
        )
    };
    let mut progress = |p: Progress<'_>| print_progress(&p);
    let result = apply::rollback(&host, args.run_id.as_deref(), &mut confirm, &mut progress);
    let report = match confirmed(result, not_shown, "rolled back")? {
        Ok(report) => report,
        Err(code) => return Ok(code),
    };
    if json {
        out(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        out(&format!("\n{}", render::rollback_text(&report)))?;
    }
    Ok(if report.complete() {
        EXIT_OK
    } else {
        EXIT_ERROR
    })
}

fn print_progress(p: &Progress<'_>) {
    let mut err = std::io::stderr();
    let _ = match p {
        Progress::Step {
            index,
            total,
            summary,
        } => write!(err, "[{index}/{total}] {summary} ... "),
        Progress::StepDone { seconds } => writeln!(err, "done ({seconds:.2}s)"),
        Progress::StepFailed { error } => writeln!(err, "FAILED\n  {error}"),
        Progress::RollingBack => writeln!(err, "rolling back the steps already done:"),
        Progress::Undo { summary, ok } => {
            writeln!(
                err,
                "  undo: {summary} ... {}",
                if *ok { "ok" } else { "FAILED" }
            )
        }
        Progress::Checking => writeln!(err, "checking that nothing is left to do ..."),
        Progress::Verifying { waited, status } => {
            writeln!(err, "verifying ({waited:.1}s): {status}")
        }
    };
}

fn facts_command(args: &FactsArgs) -> anyhow::Result<i32> {
    let host = host_for(&args.target)?;
    let facts = crate::facts::Facts::detect_in(&host.files)?;
    let daemons: Vec<_> = crate::facts::Daemon::ALL
        .into_iter()
        .map(|d| facts.daemon(d))
        .collect();
    if args.json {
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::json!({
                "facts": facts,
                "daemons": daemons,
                "services": host.services.describe(),
                "packages": host.packages.describe(),
            }))?
        ))?;
        return Ok(EXIT_OK);
    }
    let mut text = format!(
        "{} ({} family), {} {}\nservices: {}\npackages: {}\n",
        facts.pretty_name,
        facts.family,
        host.mode,
        host.root.display(),
        host.services.describe(),
        host.packages.describe()
    );
    for d in daemons {
        let status = host
            .services
            .status(&d.unit)
            .map(|s| {
                format!(
                    "{}{}",
                    s.enablement,
                    s.activity.map_or(String::new(), |a| format!(", {a}"))
                )
            })
            .unwrap_or_else(|e| format!("unknown: {e}"));
        text.push_str(&format!(
            "  {:<18} unit {:<28} config {:<26} [{status}]\n",
            d.label,
            d.unit,
            d.config.display()
        ));
    }
    out(&text)?;
    Ok(EXIT_OK)
}
