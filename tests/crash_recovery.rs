//! Crash injection (issue 9, item 2): an apply of the RHEL 9 example
//! (ntpd -> chrony: disable ntpd, rewrite /etc/chrony.conf, enable chronyd)
//! is killed with SIGKILL at every step boundary, and at random moments.
//! After each kill:
//!
//! - no file is truncated: every path in the root is either as it was
//!   before the apply or as a complete apply leaves it (temporary files
//!   aside);
//! - the journal is whole, and the next `plan` (and `timectl runs`) report
//!   the interrupted run and the step it stopped at;
//! - `timectl rollback` restores the previous state byte for byte
//!   (temporary files included);
//! - a fresh apply converges (also straight after the kill, without a
//!   rollback, removing what the kill left).
//!
//! Step boundaries come from a test hook (`TIMECTL_TEST_ABORT_AT`): the
//! binary kills itself with SIGKILL right after step N is recorded as
//! started (`started:N`), after the new file of step N is complete but
//! before it replaces the old one (`write:N`), and after step N is recorded
//! as done (`done:N`). The random kills are real `kill -9`s from outside.

mod util;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{copy_root, differences, snapshot, text, timectl};

const SPEC: &str = "examples/rhel9-ntpd-to-chrony.yaml";
const STEPS: usize = 3;

fn is_temp(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains(".timectl-"))
}

fn is_state(path: &str) -> bool {
    path.starts_with("var")
}

/// Every path is as before or as after a complete apply; temporary files
/// are whole copies of the new content, mode 0600.
fn assert_not_torn(
    label: &str,
    root: &Path,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) {
    let now = snapshot(root);
    for (path, value) in &now {
        if is_state(path) {
            continue;
        }
        if is_temp(path) {
            let content = std::fs::read_to_string(root.join(path)).unwrap();
            let name = Path::new(path).file_name().unwrap().to_string_lossy();
            let real_name = name
                .trim_start_matches('.')
                .split(".timectl-")
                .next()
                .unwrap();
            let real = Path::new(path).with_file_name(real_name);
            let full = after
                .get(real.to_str().unwrap())
                .is_some_and(|v| v.ends_with(&content));
            assert!(full, "{label}: {path} is not a whole new {real:?}");
            continue;
        }
        assert!(
            before.get(path) == Some(value) || after.get(path) == Some(value),
            "{label}: {path} is neither as before nor as after: {value}"
        );
    }
    for path in before.keys().chain(after.keys()) {
        if !is_state(path) && !now.contains_key(path) {
            assert!(
                !before.contains_key(path) || !after.contains_key(path),
                "{label}: {path} vanished"
            );
        }
    }
}

fn journals(root: &Path) -> Vec<serde_json::Value> {
    let Ok(dir) = std::fs::read_dir(root.join("var/lib/timectl/runs")) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, serde_json::Value)> = dir
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: a torn journal ({e}): {text:?}", p.display()));
            (value["started_ns"].as_u64().unwrap(), value)
        })
        .collect();
    out.sort_by_key(|a| a.0);
    out.into_iter().map(|(_, v)| v).collect()
}

/// The reference: the root before, and after a complete apply.
fn reference() -> (BTreeMap<String, String>, BTreeMap<String, String>, Duration) {
    let root = copy_root("rhel9-ntpd");
    let before = snapshot(root.path());
    let r = root.path().display().to_string();
    let t = Instant::now();
    let out = timectl(&["apply", SPEC, "--root", &r, "--yes"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    (before, snapshot(root.path()), took)
}

/// What the next plan says about the interrupted run.
fn reported(root: &Path, run_id: &str) -> String {
    let r = root.display().to_string();
    let out = timectl(&["plan", SPEC, "--root", &r]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains(&format!("run {run_id}")) && l.contains("was interrupted"))
        .unwrap_or_else(|| panic!("plan does not report run {run_id}:\n{stdout}"))
        .to_string();
    let out = timectl(&["runs", "--root", &r]);
    let listed = text(&out).0;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(run_id) && l.contains("interrupted")),
        "{listed}"
    );
    line
}

fn rollback_restores(label: &str, root: &Path, before: &BTreeMap<String, String>) {
    let r = root.display().to_string();
    let out = timectl(&["rollback", "--root", &r, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{label}: {stdout}{stderr}");
    assert_eq!(
        differences(before, &snapshot(root)),
        Vec::<String>::new(),
        "{label}: rollback did not restore the root byte for byte\n{stdout}{stderr}"
    );
}

fn converges(label: &str, root: &Path, after: &BTreeMap<String, String>) {
    let r = root.display().to_string();
    let out = timectl(&["apply", SPEC, "--root", &r, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{label}: {stdout}{stderr}");
    let out = timectl(&["plan", SPEC, "--root", &r, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{label}: {:?}", text(&out));
    assert_eq!(
        differences(after, &snapshot(root)),
        Vec::<String>::new(),
        "{label}: a fresh apply did not converge to the reference"
    );
}

#[test]
fn killed_at_every_step_boundary_the_run_is_reported_and_undone() {
    let (before, after, _) = reference();
    let mut table = Vec::new();
    for step in 1..=STEPS {
        for kind in ["started", "write", "done"] {
            let point = format!("{kind}:{step}");
            // Two copies: rollback then apply, and apply straight away.
            let mut reached = false;
            for then_rollback in [true, false] {
                let root = copy_root("rhel9-ntpd");
                let r = root.path().display().to_string();
                let out = Command::new(env!("CARGO_BIN_EXE_timectl"))
                    .args(["apply", SPEC, "--root", &r, "--yes"])
                    .current_dir(util::repo())
                    .env("NO_COLOR", "1")
                    .env("TIMECTL_TEST_ABORT_AT", &point)
                    .output()
                    .unwrap();
                if out.status.code() == Some(0) {
                    // No such point in this step (no file is written by a
                    // unit link step).
                    assert_eq!(kind, "write", "{point} not reached: {:?}", text(&out));
                    break;
                }
                reached = true;
                assert_eq!(out.status.signal(), Some(9), "{point}: {:?}", text(&out));
                let label = format!(
                    "{point} (then {})",
                    if then_rollback { "rollback" } else { "apply" }
                );
                assert_not_torn(&label, root.path(), &before, &after);
                let runs = journals(root.path());
                assert_eq!(runs.len(), 1, "{label}");
                assert_eq!(runs[0]["state"], "running", "{label}");
                let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
                let line = reported(root.path(), &run_id);
                let expected = match kind {
                    "done" if step == STEPS => "after its last step".to_string(),
                    "done" => format!("before step {} of {STEPS}", step + 1),
                    _ => format!("at step {step} of {STEPS}"),
                };
                assert!(line.contains(&expected), "{label}: {line}");
                if kind == "write" {
                    assert!(
                        snapshot(root.path()).keys().any(|k| is_temp(k)),
                        "{label}: the kill should have left the temporary file"
                    );
                }
                if then_rollback {
                    rollback_restores(&label, root.path(), &before);
                    converges(&label, root.path(), &after);
                } else {
                    converges(&label, root.path(), &after);
                    assert!(
                        !snapshot(root.path()).keys().any(|k| is_temp(k)),
                        "{label}: the temporary file was not removed"
                    );
                    // The journal of the killed run now says so.
                    let runs = journals(root.path());
                    assert_eq!(runs[0]["state"], "interrupted", "{label}");
                }
            }
            if reached {
                table.push(point);
            }
        }
    }
    // started:1..3, write:2, done:1..3
    assert_eq!(table.len(), 2 * STEPS + 1, "{table:?}");
    eprintln!(
        "crash injection: {n}/{n} step boundaries ({}) reported, rolled back byte for byte, re-applied",
        table.join(" "),
        n = table.len()
    );
}

#[test]
fn random_sigkills_never_leave_a_torn_root() {
    let (before, after, took) = reference();
    // Kill times spread over the whole run, process start included.
    let window = took.mul_f64(1.3).max(Duration::from_millis(20));
    let rounds = 40;
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seed: u64 = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for round in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = window.mul_f64((seed % 10_000) as f64 / 10_000.0);
        let root = copy_root("rhel9-ntpd");
        let r = root.path().display().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_timectl"))
            .args(["apply", SPEC, "--root", &r, "--yes"])
            .current_dir(util::repo())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let status = child.wait().unwrap();
        let label = format!("round {round}, kill after {delay:?}");
        assert_not_torn(&label, root.path(), &before, &after);
        let runs = journals(root.path());
        let outcome = match (status.signal(), runs.first()) {
            (None, _) => "finished before the kill",
            (Some(_), None) => "killed before the journal",
            (Some(_), Some(run)) if run["state"] == "running" => {
                reported(root.path(), run["run_id"].as_str().unwrap());
                "killed mid-run: reported"
            }
            (Some(_), Some(_)) => "killed after the journal was final",
        };
        *outcomes.entry(outcome).or_default() += 1;
        if runs.is_empty() {
            // Nothing recorded, nothing changed.
            assert_eq!(
                differences(&before, &snapshot(root.path())),
                Vec::<String>::new(),
                "{label}"
            );
        } else {
            rollback_restores(&label, root.path(), &before);
        }
        converges(&label, root.path(), &after);
    }
    eprintln!(
        "random SIGKILL: {rounds}/{rounds} rounds consistent (window {window:?}): {outcomes:?}"
    );
    assert!(
        outcomes
            .get("killed mid-run: reported")
            .copied()
            .unwrap_or(0)
            > 0,
        "no kill landed inside a run: {outcomes:?}"
    );
}

#[test]
fn finished_runs_are_listed_and_rolled_back_newest_first() {
    let root = copy_root("rhel9-ntpd");
    let r = root.path().display().to_string();
    let before = snapshot(root.path());
    let out = timectl(&["apply", SPEC, "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let after_first = snapshot(root.path());
    // A second run on top: another server.
    let specs = tempfile::tempdir().unwrap();
    let spec = util::write_spec(
        specs.path(),
        "other.yaml",
        &std::fs::read_to_string(util::repo().join(SPEC))
            .unwrap()
            .replace("ntp2.corp.example.com", "ntp3.corp.example.com"),
    );
    let spec = spec.display().to_string();
    let out = timectl(&["apply", &spec, "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let runs = journals(root.path());
    assert_eq!(runs.len(), 2);
    let first = runs[0]["run_id"].as_str().unwrap().to_string();
    let second = runs[1]["run_id"].as_str().unwrap().to_string();

    let listed = text(&timectl(&["runs", "--root", &r])).0;
    let lines: Vec<&str> = listed.lines().collect();
    assert!(lines[0].starts_with("RUN"), "{listed}");
    assert!(
        lines[1].starts_with(&first)
            && lines[1].contains("succeeded")
            && lines[1].contains("3 of 3 done"),
        "{listed}"
    );
    assert!(
        lines[2].starts_with(&second) && lines[2].contains("1 of 1 done"),
        "{listed}"
    );

    // The older run cannot be undone under the newer one.
    let out = timectl(&["rollback", &first, "--root", &r, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("run {second} changed this host after run {first}")),
        "{stderr}"
    );
    // Without --yes and without a terminal nothing happens.
    let out = timectl(&["rollback", "--root", &r]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("refusing to roll back without --yes"));
    // Newest first: the second run, then the first.
    let out = timectl(&["rollback", "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert_eq!(
        differences(&after_first, &snapshot(root.path())),
        Vec::<String>::new()
    );
    let out = timectl(&["rollback", &first, "--root", &r, "--yes", "--json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["run_id"], first.as_str());
    assert_eq!(report["undone"], 3);
    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new()
    );
    // Twice is refused.
    let out = timectl(&["rollback", &first, "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("already rolled back"),
        "{:?}",
        text(&out)
    );
    let out = timectl(&["rollback", "no-such-run", "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("no run no-such-run"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn journals_of_the_old_format_are_listed_but_not_rolled_back() {
    let root = copy_root("rhel9-ntpd");
    let r = root.path().display().to_string();
    let runs = root.path().join("var/lib/timectl/runs");
    std::fs::create_dir_all(&runs).unwrap();
    // What timectl wrote before the journal had undo actions.
    std::fs::write(
        runs.join("20261127T191500Z-3fa2.json"),
        r#"{"format_version":1,"run_id":"20261127T191500Z-3fa2","timectl_version":"0.1.0","root":"/","spec_path":"site.yaml","plan_fingerprint":"x","state":"succeeded","steps":[{"summary":"disable ntpd.service","status":"done","seconds":0.1,"undo":["enable ntpd.service"]}],"backups":"/var/lib/timectl/backups/20261127T191500Z-3fa2"}"#,
    )
    .unwrap();
    let before = snapshot(root.path());
    let listed = text(&timectl(&["runs", "--root", &r])).0;
    assert!(
        listed.contains("20261127T191500Z-3fa2") && listed.contains("succeeded"),
        "{listed}"
    );
    let out = timectl(&["rollback", "--root", &r, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("journal format 1"), "{stderr}");
    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new()
    );
}
