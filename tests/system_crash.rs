//! Crash injection on the live test host (issue 9, item 2): a chrony ->
//! embedded switch inside an nspawn container (timectl run INSIDE it, real
//! systemd, real chronyd synchronised to a loopback peer), with the apply
//! killed by SIGKILL at every step boundary and at random moments. After
//! each kill: no managed file is torn, the next `plan` and `timectl runs`
//! report the interrupted run, `timectl rollback` puts the host back as it
//! was (files byte for byte, unit states, chronyd running and synchronised
//! again), and a fresh apply converges.
//!
//! Every spec says `clockControl: false`, and the container has no
//! CAP_SYS_TIME: nothing here can touch this machine's clock.
//!
//! Run as root with `ci/system-tests.sh crash` (all are #[ignore]d).

mod support;

use std::time::{Duration, Instant};

use support::live::{
    ENGINE, SwitchState, apply, boot, converge, engine_spec, hand_configured_chrony, loopback_peer,
    put_spec, switch_state, text, wait_chrony_selects_loopback,
};
use support::{Container, record_timing, wait_for};

const TIMECTL: &str = "/opt/timectl/timectl";
/// stop chrony, disable chrony, install the binary, engine.yaml, the unit,
/// reload, enable and start the engine.
const STEPS: usize = 8;
/// The steps that write a file (where a kill can leave a temporary file).
const WRITES: [usize; 3] = [3, 4, 5];

/// The switch's state plus the directories it creates and any stray
/// temporary files.
#[derive(Debug, PartialEq, Clone)]
struct HostState {
    switch: SwitchState,
    dirs: String,
}

fn host_state(c: &Container) -> HostState {
    HostState {
        switch: switch_state(c),
        dirs: c.exec_ok(&[
            "sh",
            "-c",
            "ls -d /usr/local/libexec/timectl /usr/local/libexec 2>/dev/null; \
             find /etc /usr/local -name '.*.timectl-*' 2>/dev/null; true",
        ]),
    }
}

/// Every managed file is as before or as after, never something else.
fn assert_not_torn(label: &str, now: &HostState, before: &HostState, after: &HostState) {
    for (i, (path, sum)) in now.switch.files.iter().enumerate() {
        assert!(
            *sum == before.switch.files[i].1 || *sum == after.switch.files[i].1,
            "{label}: {path} is neither as before nor as after ({sum:?})"
        );
    }
}

fn rollback(c: &Container, label: &str) {
    let t = Instant::now();
    let out = c.timectl(&["rollback", "--yes"]);
    assert!(
        out.status.success(),
        "{label}: rollback failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    record_timing("rollback of the switch", t.elapsed());
}

fn assert_reported(c: &Container, spec: &str, label: &str) -> String {
    let out = c.timectl(&["plan", spec, "--no-color"]);
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("was interrupted"))
        .unwrap_or_else(|| panic!("{label}: plan does not report the run:\n{stdout}"))
        .to_string();
    let runs = text(&c.timectl(&["runs"]).stdout);
    assert!(
        runs.lines()
            .last()
            .is_some_and(|l| l.contains("interrupted")),
        "{label}: {runs}"
    );
    line
}

/// After a kill: reported, rolled back to `before` (and chronyd running
/// and synchronised again), then converged to `after`, then back.
fn recover(c: &Container, spec: &str, label: &str, before: &HostState, after: &HostState) {
    assert_not_torn(label, &host_state(c), before, after);
    assert_reported(c, spec, label);
    rollback(c, label);
    assert_eq!(&host_state(c), before, "{label}: rollback");
    wait_chrony_selects_loopback(c);
    converge(c, spec, &format!("after a kill ({label})"));
    assert_eq!(&host_state(c), after, "{label}: converged");
    rollback(c, label);
    assert_eq!(&host_state(c), before, "{label}: reset");
    wait_chrony_selects_loopback(c);
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn chrony_to_embedded_killed_at_every_step_boundary() {
    let c = boot(false);
    let _peer = loopback_peer(&c);
    hand_configured_chrony(&c);
    let spec = put_spec(&c, "engine", &engine_spec(""));
    let before = host_state(&c);
    converge(&c, &spec, "chrony -> embedded (reference)");
    let after = host_state(&c);
    assert_eq!(
        after.switch.units[1],
        (ENGINE.to_string(), "active".into(), "enabled".into())
    );
    rollback(&c, "reference");
    assert_eq!(host_state(&c), before, "rollback of a finished run");
    wait_chrony_selects_loopback(&c);

    let mut points = Vec::new();
    for step in 1..=STEPS {
        points.push(format!("started:{step}"));
        if WRITES.contains(&step) {
            points.push(format!("write:{step}"));
        }
        points.push(format!("done:{step}"));
    }
    let mut passed = Vec::new();
    for point in &points {
        let env = format!("TIMECTL_TEST_ABORT_AT={point}");
        let out = c.exec(&["env", &env, TIMECTL, "apply", &spec, "--yes", "--json"]);
        assert!(
            !out.status.success(),
            "{point}: the hook did not kill the apply:\n{}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(&format!("{env}: killing this process")),
            "{point}: {}",
            text(&out.stderr)
        );
        if point.starts_with("write:") {
            assert!(
                host_state(&c).dirs.contains(".timectl-"),
                "{point}: no temporary file was left"
            );
        }
        recover(&c, &spec, point, &before, &after);
        passed.push(point.clone());
    }
    eprintln!(
        "container crash injection: {n}/{n} step boundaries ({}) reported, rolled back (files, units, chronyd synchronised), re-applied",
        passed.join(" "),
        n = passed.len()
    );
    assert_eq!(passed.len(), 2 * STEPS + WRITES.len());
}

/// The PIDs (host namespace) of a process's children.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The timectl process under `root` (nsenter -> setpriv exec'd timectl).
fn timectl_under(root: u32) -> Option<u32> {
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if pid != root && exe.is_some_and(|e| e.file_name().is_some_and(|n| n == "timectl")) {
            return Some(pid);
        }
        queue.extend(children(pid));
    }
    None
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn chrony_to_embedded_killed_at_random_moments() {
    let c = boot(false);
    let _peer = loopback_peer(&c);
    hand_configured_chrony(&c);
    let spec = put_spec(&c, "engine", &engine_spec(""));
    let before = host_state(&c);
    let t = Instant::now();
    converge(&c, &spec, "chrony -> embedded (reference)");
    let took = t.elapsed();
    let after = host_state(&c);
    rollback(&c, "reference");
    wait_chrony_selects_loopback(&c);

    let rounds = 6;
    let mut mid_run = 0;
    let mut seed = u64::from(std::process::id()) | 1;
    for round in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = took.mul_f64((seed % 1000) as f64 / 1000.0);
        let mut child = c
            .command(&[TIMECTL, "apply", &spec, "--yes", "--json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn apply");
        let started = Instant::now();
        // Wait for the timectl process itself, then for the moment.
        let pid = wait_for("the apply to start", Duration::from_secs(10), || {
            timectl_under(child.id()).ok_or_else(|| "not yet".to_string())
        });
        std::thread::sleep(delay.saturating_sub(started.elapsed()));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let status = child.wait().expect("wait");
        let label = format!("random kill {round} after {delay:?}");
        let runs = text(&c.timectl(&["runs"]).stdout);
        let interrupted = runs
            .lines()
            .last()
            .is_some_and(|l| l.contains("interrupted"));
        if status.success() || !interrupted {
            // Finished first (perhaps killed after its journal was final),
            // or killed before its journal: an apply converges from here.
            assert_not_torn(&label, &host_state(&c), &before, &after);
            let again = apply(&c, &spec);
            assert!(
                again.out.status.success() && matches!(again.outcome(), "converged" | "no-changes"),
                "{label}: {}",
                again.context()
            );
            assert_eq!(host_state(&c), after, "{label}");
            rollback(&c, &label);
            assert_eq!(host_state(&c), before, "{label}: reset");
            wait_chrony_selects_loopback(&c);
            continue;
        }
        mid_run += 1;
        recover(&c, &spec, &label, &before, &after);
    }
    eprintln!(
        "container random SIGKILL: {rounds}/{rounds} rounds consistent, {mid_run} landed mid-run"
    );
}
