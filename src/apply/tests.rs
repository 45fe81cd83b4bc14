//! Apply, handlers and every rollback path of a daemon switch (ntpsec to
//! chrony on Debian 12, serving time, clockControl: false so a drop-in and
//! a systemd reload are part of it) on the in-memory host: units, packages,
//! the firewall and the daemon's synchronisation in memory, files real
//! under a temporary root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::host::memory::{MemoryHost, MemoryState, Op, Times};
use crate::resource::Action;

pub(crate) const SWITCH: &str = "timesync:\n  provider: chrony\n  sources:\n    - server: 127.0.0.1\n  clockControl: false\n  serve: { allow: [10.0.0.0/8] }\n  verify: { within: 1s }\n";

pub(crate) const CONFIG: &str = "/etc/chrony/chrony.conf";
pub(crate) const DROP_IN: &str =
    "/etc/systemd/system/chrony.service.d/timectl-no-clock-control.conf";

/// A Debian 12 host running ntpsec, chrony available as a package.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub memory: MemoryHost,
    pub host: Host,
    pub spec: Spec,
}

pub(crate) fn ntpsec_host() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in [
        ("etc/os-release", "ID=debian\nVERSION_ID=12\n"),
        ("etc/ntpsec/ntp.conf", "pool 2.debian.pool.ntp.org iburst\n"),
    ] {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("var/lib")).unwrap();
    let memory = MemoryHost::new()
        .with_package("ntpsec", true, &["ntpsec.service"])
        .with_unit("ntpsec.service", true, true)
        .with_package("chrony", false, &["chrony.service"]);
    let host = memory.host(dir.path());
    let spec = Spec::parse(Path::new("site.yaml"), SWITCH.to_string()).unwrap();
    Fixture {
        dir,
        memory,
        host,
        spec,
    }
}

/// Every file and directory under the root but timectl's state directory,
/// with content and mode.
fn tree(root: &Path) -> BTreeMap<PathBuf, (Option<Vec<u8>>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.starts_with(root.join("var/lib/timectl")) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode();
            let content = if meta.is_dir() {
                pending.push(path.clone());
                None
            } else {
                Some(std::fs::read(&path).unwrap())
            };
            out.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                (content, mode),
            );
        }
    }
    out
}

fn quiet(_: Progress<'_>) {}

fn apply_plan(f: &Fixture, plan: &Plan) -> Report {
    apply(plan, &f.spec, &f.host, &mut quiet).unwrap()
}

fn converge(f: &Fixture) -> Report {
    let report = run(&f.spec, &f.host, None, &mut |_| true, &mut quiet)
        .unwrap()
        .unwrap();
    assert_eq!(report.outcome, Outcome::Converged, "{:?}", report.error);
    report
}

fn summaries(plan: &Plan) -> Vec<String> {
    plan.changes.iter().map(|c| c.summary.clone()).collect()
}

#[test]
fn a_switch_is_planned_in_edge_order() {
    let f = ntpsec_host();
    let plan = plan::build(&f.spec, &f.host).unwrap();
    let ids: Vec<String> = plan
        .changes
        .iter()
        .map(|c| c.resource.to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "service:ntpsec.service",
            "service:ntpsec.service",
            "package:chrony",
            &format!("file:{CONFIG}"),
            &format!("file:{DROP_IN}"),
            "firewall:ntp",
            "systemd",
            "service:chrony.service",
            "service:chrony.service",
        ]
    );
    let actions: Vec<String> = plan.changes.iter().map(|c| c.action.describe()).collect();
    assert_eq!(
        actions,
        [
            "stop ntpsec.service",
            "disable ntpsec.service",
            "install chrony",
            &format!("write {CONFIG}"),
            &format!("write {DROP_IN}"),
            "open UDP 123 in the firewall",
            "reload systemd unit files",
            "enable chrony.service",
            "start chrony.service",
        ]
    );
    // The package may start the daemon with its default config: start
    // restarts it then (the package provides the unit, the files restart
    // it).
    assert!(matches!(
        plan.changes[8].action,
        Action::StartUnit {
            restart_if_running: true,
            ..
        }
    ));
    assert!(plan.blockers.is_empty());
}

#[test]
fn a_switch_applies_and_a_second_apply_changes_nothing() {
    let f = ntpsec_host();
    let report = converge(&f);
    assert_eq!(report.steps.len(), 9);
    assert_eq!(
        f.memory.log(),
        [
            "Stop ntpsec.service",
            "Disable ntpsec.service",
            "Install chrony",
            "Open",
            "Reload",
            "Enable chrony.service",
            "Start chrony.service",
        ]
    );
    let state = f.memory.state();
    let unit = |u: &str| {
        let u = &state.units[u];
        (u.enablement.to_string(), u.activity.to_string())
    };
    assert_eq!(
        unit("ntpsec.service"),
        ("disabled".into(), "inactive".into())
    );
    assert_eq!(unit("chrony.service"), ("enabled".into(), "active".into()));
    assert!(state.packages.contains_key("chrony"));
    assert!(state.firewall_open);
    assert!(
        std::fs::read_to_string(f.dir.path().join(CONFIG.trim_start_matches('/')))
            .unwrap()
            .contains("server 127.0.0.1")
    );
    assert!(plan::build(&f.spec, &f.host).unwrap().is_empty());
    let again = converge_no_changes(&f);
    assert_eq!(again.outcome, Outcome::NoChanges);
    assert_eq!(f.memory.log().len(), 7, "a second apply changes nothing");
}

fn converge_no_changes(f: &Fixture) -> Report {
    run(&f.spec, &f.host, None, &mut |_| true, &mut quiet)
        .unwrap()
        .unwrap()
}

fn edit_file(f: &Fixture, path: &str) {
    let path = f.dir.path().join(path.trim_start_matches('/'));
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("# edited by hand\n");
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_changed_config_file_restarts_the_running_daemon() {
    let f = ntpsec_host();
    converge(&f);
    edit_file(&f, CONFIG);
    let plan = plan::build(&f.spec, &f.host).unwrap();
    assert_eq!(
        summaries(&plan),
        [format!("update {CONFIG}"), "restart chrony.service".into()]
    );
    assert_eq!(plan.changes[1].reason, format!("{CONFIG} changed"));
    let before = f.memory.log().len();
    assert_eq!(apply_plan(&f, &plan).outcome, Outcome::Converged);
    assert_eq!(f.memory.log()[before..], ["Restart chrony.service"]);
}

#[test]
fn a_changed_unit_file_reloads_systemd_once_then_restarts() {
    let f = ntpsec_host();
    converge(&f);
    edit_file(&f, DROP_IN);
    edit_file(&f, CONFIG);
    let plan = plan::build(&f.spec, &f.host).unwrap();
    assert_eq!(
        summaries(&plan),
        [
            format!("update {CONFIG}"),
            format!("update {DROP_IN}"),
            "reload systemd unit files".into(),
            "restart chrony.service".into()
        ]
    );
    let before = f.memory.log().len();
    assert_eq!(apply_plan(&f, &plan).outcome, Outcome::Converged);
    assert_eq!(
        f.memory.log()[before..],
        ["Reload", "Restart chrony.service"]
    );
}

#[test]
fn a_running_daemon_without_changes_is_not_restarted() {
    let f = ntpsec_host();
    converge(&f);
    let before = f.memory.log().len();
    assert_eq!(converge_no_changes(&f).outcome, Outcome::NoChanges);
    assert_eq!(f.memory.log().len(), before);
}

/// Where a switch fails, and how.
enum Failure {
    Fault(Op, &'static str, Times),
    /// The file's validation command rejects the new version.
    Rejected(&'static str),
}

/// Fail the switch at `failure`, expect the step `failed` (1-based; 10 is
/// verification) to be the one that failed and the host exactly as before,
/// with `log` the backends' operations in order (the forward steps, then
/// the undo).
fn rolls_back(failure: Failure, failed: usize, log: &[&str]) {
    let f = ntpsec_host();
    let files_before = tree(f.dir.path());
    let state_before: MemoryState = f.memory.state();
    let mut plan = plan::build(&f.spec, &f.host).unwrap();
    match failure {
        Failure::Fault(op, target, times) => f.memory.fail(op, target, times),
        Failure::Rejected(path) => {
            for change in &mut plan.changes {
                if let Action::WriteFile(w) = &mut change.action
                    && w.path == Path::new(path)
                {
                    w.validate = Some(vec!["false".into(), "{}".into()]);
                }
            }
        }
    }
    let report = apply_plan(&f, &plan);
    assert_eq!(report.outcome, Outcome::RolledBack, "{:?}", report.error);
    assert!(report.not_restored.is_empty(), "{:?}", report.not_restored);
    let failed_steps: Vec<usize> = (report.steps.iter().enumerate())
        .filter(|(_, s)| matches!(s.status, StepStatus::Failed(_)))
        .map(|(i, _)| i + 1)
        .collect();
    if failed <= 9 {
        assert_eq!(failed_steps, [failed], "{:?}", report.error);
    } else {
        assert!(failed_steps.is_empty());
        assert!(report.verify.is_some_and(|v| !v.synchronized));
    }
    assert!(
        (report.steps.iter()).all(|s| matches!(
            s.status,
            StepStatus::Undone | StepStatus::NotRun | StepStatus::Failed(_)
        )),
        "{:?}",
        report.steps
    );
    assert_eq!(f.memory.log(), log);
    assert_eq!(f.memory.state(), state_before);
    assert_eq!(tree(f.dir.path()), files_before);
}

const STOP_OLD: &str = "Stop ntpsec.service";
const DISABLE_OLD: &str = "Disable ntpsec.service";
const INSTALL: &str = "Install chrony";
const OPEN: &str = "Open";
const RELOAD: &str = "Reload";
const ENABLE: &str = "Enable chrony.service";
const START: &str = "Start chrony.service";
const UNDO_START: &str = "Stop chrony.service";
const UNDO_ENABLE: &str = "Disable chrony.service";
const UNDO_OPEN: &str = "Close";
const UNDO_INSTALL: &str = "Remove chrony";
const UNDO_DISABLE_OLD: &str = "Enable ntpsec.service";
const UNDO_STOP_OLD: &str = "Start ntpsec.service";

#[test]
fn rollback_when_stopping_the_old_daemon_fails() {
    rolls_back(
        Failure::Fault(Op::Stop, "ntpsec.service", Times::Once),
        1,
        &[],
    );
}

#[test]
fn rollback_when_disabling_the_old_daemon_fails() {
    rolls_back(
        Failure::Fault(Op::Disable, "ntpsec.service", Times::Once),
        2,
        &[STOP_OLD, UNDO_STOP_OLD],
    );
}

#[test]
fn rollback_when_the_package_install_fails() {
    rolls_back(
        Failure::Fault(Op::Install, "chrony", Times::Always),
        3,
        &[STOP_OLD, DISABLE_OLD, UNDO_DISABLE_OLD, UNDO_STOP_OLD],
    );
}

const UNDO_TO_INSTALL: [&str; 6] = [
    STOP_OLD,
    DISABLE_OLD,
    INSTALL,
    UNDO_INSTALL,
    UNDO_DISABLE_OLD,
    UNDO_STOP_OLD,
];

#[test]
fn rollback_when_the_config_file_is_rejected() {
    rolls_back(Failure::Rejected(CONFIG), 4, &UNDO_TO_INSTALL);
}

#[test]
fn rollback_when_the_drop_in_is_rejected() {
    // The config file written by step 4 is removed again (the tree check).
    rolls_back(Failure::Rejected(DROP_IN), 5, &UNDO_TO_INSTALL);
}

#[test]
fn rollback_when_opening_the_firewall_fails() {
    rolls_back(
        Failure::Fault(Op::Open, "", Times::Always),
        6,
        &UNDO_TO_INSTALL,
    );
}

#[test]
fn rollback_when_the_systemd_reload_fails() {
    rolls_back(
        Failure::Fault(Op::Reload, "", Times::Once),
        7,
        &[
            STOP_OLD,
            DISABLE_OLD,
            INSTALL,
            OPEN,
            UNDO_OPEN,
            UNDO_INSTALL,
            UNDO_DISABLE_OLD,
            UNDO_STOP_OLD,
        ],
    );
}

#[test]
fn rollback_when_enabling_the_new_daemon_fails() {
    // The undo of the reload waits until the files are restored, and runs
    // before the package goes.
    rolls_back(
        Failure::Fault(Op::Enable, "chrony.service", Times::Always),
        8,
        &[
            STOP_OLD,
            DISABLE_OLD,
            INSTALL,
            OPEN,
            RELOAD,
            UNDO_OPEN,
            RELOAD,
            UNDO_INSTALL,
            UNDO_DISABLE_OLD,
            UNDO_STOP_OLD,
        ],
    );
}

const UNDO_ALL: [&str; 14] = [
    STOP_OLD,
    DISABLE_OLD,
    INSTALL,
    OPEN,
    RELOAD,
    ENABLE,
    START,
    UNDO_START,
    UNDO_ENABLE,
    UNDO_OPEN,
    RELOAD,
    UNDO_INSTALL,
    UNDO_DISABLE_OLD,
    UNDO_STOP_OLD,
];

#[test]
fn rollback_when_starting_the_new_daemon_fails() {
    // The failed start leaves the unit failed: it is stopped.
    let mut log = UNDO_ALL.to_vec();
    log.remove(6);
    rolls_back(
        Failure::Fault(Op::Start, "chrony.service", Times::Always),
        9,
        &log,
    );
}

#[test]
fn rollback_when_the_new_daemon_does_not_synchronise() {
    rolls_back(Failure::Fault(Op::Sync, "", Times::Always), 10, &UNDO_ALL);
}

#[test]
fn an_undo_that_fails_is_reported_and_the_rest_is_still_undone() {
    let f = ntpsec_host();
    f.memory.fail(Op::Enable, "chrony.service", Times::Always);
    // Putting the old daemon back at boot fails.
    f.memory.fail(Op::Enable, "ntpsec.service", Times::Always);
    let plan = plan::build(&f.spec, &f.host).unwrap();
    let report = apply_plan(&f, &plan);
    assert_eq!(report.outcome, Outcome::RollbackIncomplete);
    assert_eq!(report.not_restored.len(), 1, "{:?}", report.not_restored);
    assert!(report.not_restored[0].starts_with("enable ntpsec.service: injected failure"));
    let state = f.memory.state();
    assert!(!state.packages.contains_key("chrony"));
    assert!(!state.firewall_open);
    assert_eq!(state.units["ntpsec.service"].activity.to_string(), "active");
}

const ENGINE_SPEC: &str =
    "timesync:\n  sources:\n    - server: 127.0.0.1\n  verify: { within: 1s }\n";
const ENGINE_BINARY: &str = "/usr/local/libexec/timectl/timectl";
const ENGINE_UNIT: &str = "/etc/systemd/system/timectl-engine.service";

/// A Debian 12 host running chrony, switched to the embedded engine, which
/// runs a copy of `/source-timectl` (standing for the running timectl).
fn chrony_host_to_engine() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in [
        ("etc/os-release", "ID=debian\nVERSION_ID=12\n"),
        (
            "etc/chrony/chrony.conf",
            "pool 2.debian.pool.ntp.org iburst\n",
        ),
        ("source-timectl", "timectl, first build\n"),
    ] {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("var/lib")).unwrap();
    let memory = MemoryHost::new()
        .with_package("chrony", true, &["chrony.service"])
        .with_unit("chrony.service", true, true)
        .with_unit_file_unit("timectl-engine.service");
    let mut host = memory.host(dir.path());
    host.timectl_binary = dir.path().join("source-timectl");
    let spec = Spec::parse(Path::new("site.yaml"), ENGINE_SPEC.to_string()).unwrap();
    Fixture {
        dir,
        memory,
        host,
        spec,
    }
}

#[test]
fn an_engine_switch_reloads_systemd_before_enabling_the_unit_it_wrote() {
    let f = chrony_host_to_engine();
    let plan = plan::build(&f.spec, &f.host).unwrap();
    let actions: Vec<String> = plan.changes.iter().map(|c| c.action.describe()).collect();
    assert_eq!(
        actions,
        [
            "stop chrony.service",
            "disable chrony.service",
            &format!("install {ENGINE_BINARY}"),
            "write /etc/timectl/engine.yaml",
            &format!("write {ENGINE_UNIT}"),
            "reload systemd unit files",
            "enable timectl-engine.service",
            "start timectl-engine.service",
        ]
    );
    converge(&f);
    assert_eq!(
        f.memory.log(),
        [
            "Stop chrony.service",
            "Disable chrony.service",
            "Reload",
            "Enable timectl-engine.service",
            "Start timectl-engine.service",
        ]
    );
}

#[test]
fn a_new_engine_binary_restarts_the_engine() {
    let f = chrony_host_to_engine();
    converge(&f);
    std::fs::write(
        f.dir.path().join("source-timectl"),
        "timectl, a newer build\n",
    )
    .unwrap();
    let plan = plan::build(&f.spec, &f.host).unwrap();
    assert_eq!(plan.changes.len(), 2, "{:?}", summaries(&plan));
    assert!(
        plan.changes[0]
            .summary
            .starts_with(&format!("update {ENGINE_BINARY}"))
    );
    assert_eq!(plan.changes[1].summary, "restart timectl-engine.service");
    assert_eq!(
        plan.changes[1].reason,
        format!("binary:{ENGINE_BINARY} changed")
    );
    let before = f.memory.log().len();
    assert_eq!(apply_plan(&f, &plan).outcome, Outcome::Converged);
    assert_eq!(f.memory.log()[before..], ["Restart timectl-engine.service"]);
}

#[test]
fn an_engine_switch_that_fails_to_start_leaves_no_unit_behind() {
    let f = chrony_host_to_engine();
    let files_before = tree(f.dir.path());
    let state_before = f.memory.state();
    f.memory
        .fail(Op::Start, "timectl-engine.service", Times::Always);
    let plan = plan::build(&f.spec, &f.host).unwrap();
    let report = apply_plan(&f, &plan);
    assert_eq!(report.outcome, Outcome::RolledBack, "{:?}", report.error);
    // The unit file is removed before systemd reloads: the unit is gone.
    assert_eq!(f.memory.state(), state_before);
    assert_eq!(tree(f.dir.path()), files_before);
    assert_eq!(
        f.memory.log()[3..],
        [
            "Enable timectl-engine.service",
            "Stop timectl-engine.service",
            "Disable timectl-engine.service",
            "Reload",
            "Enable chrony.service",
            "Start chrony.service",
        ]
    );
}

#[test]
fn civil_dates() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(20_419), (2025, 11, 27));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
}

/// A daemon that is synchronised from look number `.1` on (`.0` counts
/// the looks).
struct SyncedOnLook(std::cell::Cell<u32>, u32);

/// Verify synchronisation within `seconds`, any offset.
fn verify_synchronized_within(seconds: f64) -> crate::provider::VerifyPlan {
    crate::provider::VerifyPlan {
        synchronized: true,
        within_seconds: seconds,
        max_offset_seconds: None,
        rollback: true,
    }
}

impl TimeProbe for SyncedOnLook {
    fn status(&self) -> Result<SyncStatus, HostError> {
        let n = self.0.get() + 1;
        self.0.set(n);
        Ok(SyncStatus {
            synchronized: n >= self.1,
            offset_seconds: Some(0.0),
            detail: format!("look {n}"),
            ..SyncStatus::default()
        })
    }
    fn step_now(&self) -> Result<String, HostError> {
        Ok(String::new())
    }
}

/// Verification asks again soon after the start (50, then 100 ms) rather
/// than every 500 ms: a daemon synchronised on the third look is seen so
/// within about 150 ms (it was 1 s), and the progress reports each look.
#[test]
fn verification_looks_again_soon_after_the_start() {
    let probe = SyncedOnLook(std::cell::Cell::new(0), 3);
    let verify = verify_synchronized_within(30.0);
    let mut waits = Vec::new();
    let started = std::time::Instant::now();
    let result = wait_for_sync(&probe, &verify, &mut |p| {
        if let Progress::Verifying { waited, .. } = p {
            waits.push(waited);
        }
    });
    let took = started.elapsed();
    assert!(result.failure.is_none(), "{:?}", result.failure);
    assert_eq!(probe.0.get(), 3);
    assert_eq!(waits.len(), 3, "{waits:?}");
    // The third look comes after 50 + 100 ms of pauses; a generous bound
    // for a busy machine, still well under the old 1 s.
    assert!(waits[2] >= 0.15, "{waits:?}");
    assert!(took < Duration::from_millis(700), "took {took:?}");
}

/// The last look is made at the deadline, not a pause after it.
#[test]
fn verification_gives_up_at_its_deadline() {
    let probe = SyncedOnLook(std::cell::Cell::new(0), 100);
    let verify = verify_synchronized_within(0.06);
    let result = wait_for_sync(&probe, &verify, &mut |_| {});
    let failure = result.failure.expect("not synchronised in 60 ms");
    assert!(
        failure.contains("not synchronised within 0.06s"),
        "{failure}"
    );
    // Looks at 0 and 50 ms, then once more at the deadline (60 ms).
    assert_eq!(probe.0.get(), 3);
}
