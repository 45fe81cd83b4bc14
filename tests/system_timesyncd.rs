//! `provider: timesyncd` on a running host: real systemd 252 in the nspawn
//! test host, real apt-get (installing systemd-timesyncd removes chrony: both
//! provide time-daemon), a real systemd-timesyncd asking a chronyd peer at
//! 192.0.2.2:123 upstream (timesyncd has no port setting), and verification
//! through `timedatectl timesync-status`.
//!
//! The container has no CAP_SYS_TIME and is a container, so the test host
//! clears the unit's ConditionCapability= and ConditionVirtualization= in a
//! drop-in (as the image does for chrony and ntpsec). timesyncd then gets
//! its answers but cannot adjust the clock ("Failed to call clock_adjtime():
//! Operation not permitted") and so never marks the kernel clock
//! synchronised: the specs ask `synchronized: false` with a `maxOffset`,
//! which still needs an answer from the server, with its offset.
//!
//! Run as root with `ci/system-tests.sh timesyncd` (all are #[ignore]d).

mod support;

use std::time::Duration;

use support::live::{
    apply, assert_idempotent, boot, chrony_selected, converge, plan_json, put_spec, summaries,
    text, unit, upstream_peer,
};
use support::{Container, record_timing, wait_for};

const UNIT: &str = "systemd-timesyncd.service";
const DROP_IN: &str = "/etc/systemd/timesyncd.conf.d/timectl.conf";

/// A timesyncd spec for `server`, polling every 16-32 s, with step.now.
fn timesyncd_spec(server: &str, within: &str) -> String {
    format!(
        "timesync:\n  provider: timesyncd\n  sources:\n    - server: {server}\n      minpoll: 4\n      maxpoll: 5\n  step: {{ now: true }}\n  verify: {{ synchronized: false, within: {within}, maxOffset: 100ms }}\n"
    )
}

/// What a container needs for systemd-timesyncd to start at all.
fn let_timesyncd_run_in_a_container(c: &Container) {
    c.exec_ok(&[
        "mkdir",
        "-p",
        "/etc/systemd/system/systemd-timesyncd.service.d",
    ]);
    c.write_file(
        "/etc/systemd/system/systemd-timesyncd.service.d/timectl-testhost.conf",
        "# timectl test host: a container without CAP_SYS_TIME.\n[Unit]\nConditionCapability=\nConditionVirtualization=\n",
    );
    c.exec_ok(&["systemctl", "daemon-reload"]);
}

/// chrony installed by the administrator and synchronised to the upstream
/// peer (the image's drop-in runs it with -x).
fn chrony_running_upstream(c: &Container) {
    c.apt_get(&["install", "chrony"]);
    c.write_file(
        "/etc/chrony/chrony.conf",
        "server 192.0.2.2 iburst minpoll -2 maxpoll 0\n",
    );
    c.exec_ok(&["systemctl", "restart", "chrony.service"]);
    wait_for(
        "chronyd to select the upstream peer",
        Duration::from_secs(20),
        || match chrony_selected(c) {
            Some(s) if s == "192.0.2.2" => Ok(()),
            other => Err(format!("selected {other:?}")),
        },
    );
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn timesyncd_replaces_running_chrony_and_verifies_its_server() {
    let c = boot(true);
    let _peer = upstream_peer(&c);
    chrony_running_upstream(&c);
    let_timesyncd_run_in_a_container(&c);
    let spec = put_spec(&c, "timesyncd", &timesyncd_spec("192.0.2.2", "30s"));

    let steps = summaries(&plan_json(&c, &spec));
    assert_eq!(
        steps,
        [
            "stop chrony.service",
            "disable chrony.service",
            "install package systemd-timesyncd (the package manager will REMOVE chrony)",
            "create /etc/systemd/timesyncd.conf.d/timectl.conf (0644 root:root)",
            "unmask systemd-timesyncd.service",
            "enable systemd-timesyncd.service",
            "start systemd-timesyncd.service",
        ],
        "{steps:?}"
    );

    let applied = converge(&c, &spec, "chrony -> systemd-timesyncd");
    let verify = &applied.report["verify"];
    assert_eq!(verify["source"], "192.0.2.2", "{}", applied.context());
    assert_eq!(verify["stratum"], 8, "{}", applied.context());
    let offset = verify["offset_seconds"].as_f64().expect("an offset");
    assert!(offset.abs() < 0.1, "{}", applied.context());
    assert!(
        applied.report["step_now"]
            .to_string()
            .contains("restarted systemd-timesyncd.service"),
        "{}",
        applied.context()
    );

    assert_eq!(unit(&c, UNIT), ("active".into(), "enabled".into()));
    assert_eq!(c.unit_property("chrony.service", "ActiveState"), "inactive");
    assert_ne!(c.package_status("chrony"), "installed");
    let drop_in = c.read_file(DROP_IN);
    assert!(
        drop_in.contains("\nNTP=192.0.2.2\n")
            && drop_in.contains("\nPollIntervalMinSec=16\nPollIntervalMaxSec=32\n"),
        "{drop_in}"
    );
    // timesyncd read the drop-in: its own view of the configuration.
    let shown = c.exec_ok(&["timedatectl", "show-timesync"]);
    assert!(
        shown.contains("SystemNTPServers=192.0.2.2\n")
            && shown.contains("PollIntervalMinUSec=16s\n")
            && shown.contains("PollIntervalMaxUSec=32s\n"),
        "{shown}"
    );
    assert_idempotent(&c, &spec);
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn timesyncd_with_a_silent_server_fails_verify_and_rolls_back() {
    let c = boot(true);
    let _peer = upstream_peer(&c);
    let_timesyncd_run_in_a_container(&c);
    let good = put_spec(&c, "good", &timesyncd_spec("192.0.2.2", "30s"));
    converge(&c, &good, "systemd-timesyncd from nothing");
    let before = c.read_file(DROP_IN);

    // Nobody answers at 192.0.2.3.
    let silent = put_spec(&c, "silent", &timesyncd_spec("192.0.2.3", "5s"));
    let failed = apply(&c, &silent);
    record_timing(
        "timesyncd apply with a silent server (verify times out)",
        failed.took,
    );
    assert_eq!(failed.out.status.code(), Some(1), "{}", failed.context());
    let error = failed.report["error"].as_str().unwrap_or("");
    assert!(
        error.contains("within 5s") && error.contains("192.0.2.3"),
        "{}",
        failed.context()
    );
    assert!(
        text(&failed.out.stderr).contains("undo:"),
        "{}",
        failed.context()
    );
    // Rolled back: the previous drop-in, timesyncd running with it.
    assert_eq!(c.read_file(DROP_IN), before);
    assert_eq!(unit(&c, UNIT), ("active".into(), "enabled".into()));
    assert_idempotent(&c, &good);
}
