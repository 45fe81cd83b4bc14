//! Helpers for scenarios that run timectl INSIDE a test container (live
//! mode): specs written into the container, `plan` and `apply` through the
//! bind-mounted binary, their JSON read back, convergence and idempotence
//! checks, unit states, and the chronyd peers such scenarios synchronise to.
//! Used by tests/system_live.rs and tests/system_embedded.rs.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::container::TIMECTL_IN_CONTAINER;
use super::{
    CONTAINER_TOOLS, ChronyPeer, Container, ContainerOptions, ntpdig, record_timing,
    require_root_and,
};

/// Host tools the live scenarios need besides the container's.
pub const CHRONY_TOOLS: &[&str] = &["chronyd", "chronyc", "ntpdig"];

/// Fails (never skips) unless root and every tool is there.
pub fn require() {
    let mut tools = CONTAINER_TOOLS.to_vec();
    tools.extend_from_slice(CHRONY_TOOLS);
    require_root_and(&tools);
}

/// Boots a test container (with the 192.0.2.0/24 uplink if asked).
pub fn boot(uplink: bool) -> Container {
    require();
    Container::boot_with(ContainerOptions {
        uplink,
        ..ContainerOptions::default()
    })
}

/// A chrony spec for a server at `server` (with `port` unless 123), fast
/// polling, no clock control, verified within 30 s; `extra` is appended
/// under `timesync:` (two-space indented lines).
pub fn chrony_spec(server: &str, port: u16, extra: &str) -> String {
    let port = if port == 123 {
        String::new()
    } else {
        format!("\n      port: {port}")
    };
    format!(
        "timesync:\n  provider: chrony\n  sources:\n    - server: {server}{port}\n      iburst: true\n      minpoll: -2\n      maxpoll: 0\n  clockControl: false\n  verify: {{ synchronized: true, within: 30s, maxOffset: 100ms }}\n{extra}"
    )
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `spec` into the container (world-readable, so a normal user can
/// plan it too) and returns its path there.
pub fn put_spec(c: &Container, name: &str, spec: &str) -> String {
    c.exec_ok(&["mkdir", "-p", "/etc/timectl/specs"]);
    let path = format!("/etc/timectl/specs/{name}.yaml");
    c.write_file(&path, spec);
    path
}

/// `timectl plan SPEC --detailed-exitcode`: (exit code, stdout, stderr).
pub fn plan(c: &Container, spec: &str) -> (i32, String, String) {
    let out = c.timectl(&["plan", spec, "--detailed-exitcode", "--no-color"]);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// The JSON plan (must succeed).
pub fn plan_json(c: &Container, spec: &str) -> Value {
    let out = c.timectl(&["plan", spec, "--json"]);
    assert!(out.status.success(), "plan --json {spec}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("plan JSON")
}

/// The one-line summaries of a JSON plan's changes, in order.
pub fn summaries(plan: &Value) -> Vec<String> {
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["summary"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The result of `timectl apply SPEC --yes --json`.
pub struct Applied {
    pub out: Output,
    pub report: Value,
    pub took: Duration,
}

impl Applied {
    pub fn outcome(&self) -> &str {
        self.report["outcome"].as_str().unwrap_or("")
    }

    /// Seconds spent in the steps themselves (without verification).
    pub fn steps_seconds(&self) -> f64 {
        self.report["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["seconds"].as_f64())
            .sum()
    }

    /// Everything worth seeing when an assertion about this run fails.
    pub fn context(&self) -> String {
        format!(
            "exit {:?}\nreport: {}\nstderr:\n{}",
            self.out.status.code(),
            serde_json::to_string_pretty(&self.report).unwrap_or_default(),
            text(&self.out.stderr)
        )
    }
}

/// `timectl apply SPEC --yes --json` with the bind-mounted timectl.
pub fn apply(c: &Container, spec: &str) -> Applied {
    apply_with(c, TIMECTL_IN_CONTAINER, spec)
}

/// The same with another timectl executable inside the container.
pub fn apply_with(c: &Container, timectl: &str, spec: &str) -> Applied {
    let start = Instant::now();
    let out = c.exec(&[timectl, "apply", spec, "--yes", "--json"]);
    let took = start.elapsed();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "apply {spec} printed no JSON report ({e}):\nstdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    Applied { out, report, took }
}

/// Requires that `applied` converged; records its time under `label`.
pub fn expect_converged(applied: Applied, label: &str) -> Applied {
    assert!(
        applied.out.status.success() && applied.outcome() == "converged",
        "{label}: {}",
        applied.context()
    );
    record_timing(&format!("apply {label}"), applied.took);
    record_timing(
        &format!("apply {label} (steps only, without verify)"),
        Duration::from_secs_f64(applied.steps_seconds()),
    );
    applied
}

/// Apply and require convergence; records the time under `label`.
pub fn converge(c: &Container, spec: &str, label: &str) -> Applied {
    expect_converged(apply(c, spec), label)
}

/// The second apply: nothing to change, and plan agrees.
pub fn assert_idempotent(c: &Container, spec: &str) {
    let again = apply(c, spec);
    assert!(
        again.out.status.success() && again.outcome() == "no-changes",
        "second apply changed something: {}",
        again.context()
    );
    let (code, stdout, _) = plan(c, spec);
    assert_eq!(code, 0, "plan after convergence:\n{stdout}");
}

/// (ActiveState, UnitFileState) of `unit` in the container.
pub fn unit(c: &Container, unit: &str) -> (String, String) {
    (
        c.unit_property(unit, "ActiveState"),
        c.unit_property(unit, "UnitFileState"),
    )
}

/// The source the container's chronyd selected (`*` in `chronyc sources`).
pub fn chrony_selected(c: &Container) -> Option<String> {
    let out = c.exec(&["chronyc", "-n", "-c", "sources"]);
    text(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split(',').collect();
        (f.len() > 2 && f[1] == "*").then(|| f[2].to_string())
    })
}

/// A peer (local stratum 8) for a daemon in the container on the shared
/// loopback, 127.0.0.1:11123.
pub fn loopback_peer(c: &Container) -> ChronyPeer {
    ChronyPeer::builder().port(11123).netns(c.netns()).start()
}

/// A port-123 peer upstream of the container (for ntpd, and for clients
/// the container serves).
pub fn upstream_peer(c: &Container) -> ChronyPeer {
    ChronyPeer::builder()
        .port(123)
        .bind("192.0.2.2")
        .allow("192.0.2.0/24")
        .netns(c.uplink().netns())
        .start()
}

/// A client upstream asks the container for the time across the uplink
/// (what the firewall must let in).
pub fn served_upstream(c: &Container) -> Result<(), String> {
    ntpdig(Some(c.uplink().netns()), "192.0.2.1").map(|_| ())
}

/// The container's own nftables firewall, as a hardened host has it: drop
/// what is not allowed (loopback and replies pass).
pub fn drop_by_default_firewall(c: &Container) {
    c.exec_ok(&[
        "nft",
        "add table inet filter\n\
         add chain inet filter input { type filter hook input priority filter; policy drop; }\n\
         add rule inet filter input iifname \"lo\" accept\n\
         add rule inet filter input ct state established,related accept",
    ]);
}

/// step.now with clockControl: false is dropped with a note, not run and
/// not a failure.
pub fn assert_step_now_ignored(applied: &Applied) {
    assert_eq!(
        applied.report["step_now"],
        Value::Null,
        "{}",
        applied.context()
    );
    assert!(
        applied.report["notes"]
            .to_string()
            .contains("step.now is ignored: clockControl is false"),
        "{}",
        applied.context()
    );
}

// --- the chrony -> embedded switch (system_embedded.rs, system_crash.rs) ---

pub const ENGINE: &str = "timectl-engine.service";
pub const INSTALLED: &str = "/usr/local/libexec/timectl/timectl";
pub const ENGINE_CONF: &str = "/etc/timectl/engine.yaml";
pub const ENGINE_UNIT: &str = "/etc/systemd/system/timectl-engine.service";
pub const CHRONY_CONF: &str = "/etc/chrony/chrony.conf";

/// An embedded spec (the default provider: no `provider:` key) for the
/// loopback peer, polling fast, without clock control; `extra` is appended
/// under `timesync:`.
pub fn engine_spec(extra: &str) -> String {
    format!(
        "timesync:\n  sources:\n    - server: 127.0.0.1\n      port: 11123\n      iburst: true\n      minpoll: -2\n      maxpoll: 0\n  clockControl: false\n  verify: {{ synchronized: true, within: 20s, maxOffset: 100ms }}\n{extra}"
    )
}

/// A host where the administrator installed chrony from the repository and
/// pointed it at the loopback peer by hand (the image's chrony drop-in runs
/// chronyd with -x); waits until chronyd selected the peer.
pub fn hand_configured_chrony(c: &Container) {
    c.apt_get(&["install", "chrony"]);
    c.write_file(
        CHRONY_CONF,
        "# Written by the administrator.\n\
         server 127.0.0.1 port 11123 iburst minpoll -2 maxpoll 0\n\
         driftfile /var/lib/chrony/chrony.drift\n\
         makestep 1 3\n",
    );
    c.exec_ok(&["systemctl", "restart", "chrony.service"]);
    wait_chrony_selects_loopback(c);
}

/// Waits until chronyd in the container selected the loopback peer.
pub fn wait_chrony_selects_loopback(c: &Container) {
    super::wait_for(
        "chronyd to select the loopback peer",
        Duration::from_secs(20),
        || match chrony_selected(c) {
            Some(s) if s == "127.0.0.1" => Ok(()),
            other => Err(format!("selected {other:?}")),
        },
    );
}

/// What the switch changes and a rollback must put back: chrony's and the
/// engine's unit states, the managed files (sha256, or absent) and the
/// units wanted by multi-user.target.
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchState {
    pub units: Vec<(String, String, String)>,
    pub files: Vec<(String, Option<String>)>,
    pub wants: String,
}

pub fn switch_state(c: &Container) -> SwitchState {
    let units = ["chrony.service", ENGINE]
        .iter()
        .map(|u| {
            let (active, file) = unit(c, u);
            (u.to_string(), active, file)
        })
        .collect();
    let files = [CHRONY_CONF, ENGINE_CONF, ENGINE_UNIT, INSTALLED]
        .iter()
        .map(|path| {
            let out = c.exec(&["sha256sum", path]);
            let sum = out.status.success().then(|| {
                text(&out.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            });
            (path.to_string(), sum)
        })
        .collect();
    SwitchState {
        units,
        files,
        wants: c.exec_ok(&["ls", "/etc/systemd/system/multi-user.target.wants"]),
    }
}
