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
    /// Show what timectl detects about a host: distribution, paths, units.
    Facts(FactsArgs),
    /// Run the embedded NTP engine (client and server); see docs/engine.md.
    Daemon(crate::engine::cli::DaemonArgs),
    /// Show the running engine's synchronisation state and sources, like
    /// `chronyc tracking` and `chronyc sources`.
    Status(crate::engine::cli::StatusArgs),
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
    /// Exit 2 when there are changes, 0 when there are none, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// No colours, even on a terminal (also: NO_COLOR=1).
    #[arg(long)]
    pub no_color: bool,
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
}

#[derive(Args, Debug)]
pub struct FactsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parse arguments, run, and return the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_ERROR
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Validate(a) => validate(&a),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::spec::json_schema())?
            );
            Ok(EXIT_OK)
        }
        Command::Plan(a) => plan_command(&a),
        Command::Apply(a) => apply_command(&a),
        Command::Facts(a) => facts_command(&a),
        Command::Daemon(a) => crate::engine::cli::run_daemon(a),
        Command::Status(a) => crate::engine::cli::run_status(a),
    }
}

fn validate(args: &ValidateArgs) -> anyhow::Result<i32> {
    match Spec::load(&args.file) {
        Ok(spec) => {
            println!(
                "{}: valid ({} source(s), provider {})",
                args.file.display(),
                spec.timesync.sources.value.len(),
                spec.provider().name()
            );
            Ok(EXIT_OK)
        }
        Err(e) => {
            eprintln!("{e}");
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
            eprintln!("{e}");
            Ok(None)
        }
    }
}

fn plan_command(args: &PlanArgs) -> anyhow::Result<i32> {
    let Some(spec) = load_spec(&args.file)? else {
        return Ok(EXIT_ERROR);
    };
    let host = host_for(&args.target)?;
    let plan = plan::build(&spec, &host)?;
    if let Some(out) = &args.out {
        plan.save(out)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&render::plan_json(&plan))?
        );
    } else if args.markdown {
        print!("{}", render::plan_markdown(&plan));
    } else {
        print!("{}", render::plan_text(&plan, use_color(args.no_color)));
        if let Some(out) = &args.out {
            println!(
                "\nSaved this plan to {}: `timectl apply {}` carries out exactly these steps, and refuses if the host changes first.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(if args.detailed_exitcode && !plan.is_empty() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    })
}

fn apply_command(args: &ApplyArgs) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file.display()))?;
    let (spec, saved) = if Plan::looks_like_plan(&text) {
        let saved = Plan::from_json(&args.file, &text)?;
        let spec = match Spec::parse(Path::new(&saved.spec_path), saved.spec_text.clone()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return Ok(EXIT_ERROR);
            }
        };
        (spec, Some(saved))
    } else {
        match Spec::parse(&args.file, text) {
            Ok(s) => (s, None),
            Err(e) => {
                eprintln!("{e}");
                return Ok(EXIT_ERROR);
            }
        }
    };
    if args.target.root.is_none() && !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "applying to the running host needs root: run it with sudo (or use --root DIR for an image); `timectl plan` works without"
        );
    }
    let host = host_for(&args.target)?;
    if let Some(saved) = &saved
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
    let yes = args.yes;
    let json = args.json;
    let mut confirm = |plan: &Plan| -> bool {
        if !json {
            print!("{}", render::plan_text(plan, use_color(false)));
        }
        if yes {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: refusing to apply without --yes: stdin is not a terminal to confirm on"
            );
            return false;
        }
        print!(
            "\nApply these {} change(s) to {}? Type 'yes' to go on: ",
            plan.changes.len(),
            if plan.mode == crate::host::Mode::Live {
                "this host".to_string()
            } else {
                plan.root.display().to_string()
            }
        );
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        answer.trim() == "yes"
    };
    let mut progress = |p: Progress<'_>| print_progress(&p);
    let report = match apply::run(&spec, &host, saved.as_ref(), &mut confirm, &mut progress) {
        Ok(Some(report)) => report,
        Ok(None) => {
            eprintln!("Nothing was applied.");
            return Ok(EXIT_ERROR);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("\n{}", render::report_text(&report));
    }
    Ok(if report.succeeded() {
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
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "facts": facts,
                "daemons": daemons,
                "services": host.services.describe(),
                "packages": host.packages.describe(),
            }))?
        );
        return Ok(EXIT_OK);
    }
    println!(
        "{} ({} family), {} {}",
        facts.pretty_name,
        facts.family,
        host.mode,
        host.root.display()
    );
    println!("services: {}", host.services.describe());
    println!("packages: {}", host.packages.describe());
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
        println!(
            "  {:<18} unit {:<28} config {:<26} [{status}]",
            d.label,
            d.unit,
            d.config.display()
        );
    }
    Ok(EXIT_OK)
}
