//! The embedded provider end to end on a real systemd host (issue 5): an
//! nspawn container booted from the test image, timectl run INSIDE it, the
//! engine run by systemd from its installed copy under the hardened unit,
//! synchronised to a real chronyd peer on the container's loopback
//! (127.0.0.1:11123, stratum 8), answered by real ntpdig, behind real
//! nftables, with real apt-get installing chrony from the image's offline
//! repository.
//!
//! Every spec says `clockControl: false`: the container has no
//! CAP_SYS_TIME anyway, but no test may ever let the engine try to set this
//! machine's clock. Every scenario ends with a second apply that changes
//! nothing and `plan --detailed-exitcode` exiting 0; apply times are
//! recorded (`timing:` lines, summarised by ci/system-tests.sh).
//!
//! Run as root with `ci/system-tests.sh embedded` (all are #[ignore]d).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::live::require;
use support::live::{
    Applied, apply, apply_with, assert_idempotent, assert_step_now_ignored, boot, chrony_selected,
    chrony_spec, converge, drop_by_default_firewall, expect_converged, loopback_peer, plan,
    plan_json, put_spec, served_upstream, summaries, text, unit,
};
use support::live::{
    ENGINE, ENGINE_CONF, ENGINE_UNIT, INSTALLED, engine_spec, hand_configured_chrony, switch_state,
};
use support::{ChronyPeer, Container, ContainerOptions, Pki, ntpdig, record_timing, wait_for};

/// systemd's range for DynamicUser= uids.
const DYNAMIC_UIDS: std::ops::RangeInclusive<u32> = 61184..=65519;
const CAP_NET_BIND_SERVICE: u64 = 1 << 10;

/// `timectl status --json` from the installed copy inside the container:
/// the engine's own view through its control socket.
fn engine_status(c: &Container) -> Value {
    let out = c.exec_ok(&[INSTALLED, "status", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json ({e}): {out}"))
}

/// The engine's main process as the kernel sees it.
struct EngineProcess {
    pid: String,
    uid: u32,
    cap_eff: u64,
    cap_prm: u64,
    cap_bnd: u64,
    cap_amb: u64,
    no_new_privs: bool,
}

fn engine_process(c: &Container) -> EngineProcess {
    let pid = c.unit_property(ENGINE, "MainPID");
    assert_ne!(pid, "0", "{ENGINE} has no main process");
    let status = c.read_file(&format!("/proc/{pid}/status"));
    let field = |name: &str| -> &str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"))
            .trim()
    };
    let mask =
        |name: &str| u64::from_str_radix(field(name), 16).unwrap_or_else(|e| panic!("{name}: {e}"));
    EngineProcess {
        uid: field("Uid:")
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .expect("real uid"),
        cap_eff: mask("CapEff:"),
        cap_prm: mask("CapPrm:"),
        cap_bnd: mask("CapBnd:"),
        cap_amb: mask("CapAmb:"),
        no_new_privs: field("NoNewPrivs:") == "1",
        pid,
    }
}

/// The unit's system call allow-list (SystemCallFilter=@system-service;
/// @clock is added only with clock control) is in force for the engine.
fn assert_syscall_filter(c: &Container) {
    let allowed = c.unit_property(ENGINE, "SystemCallFilter");
    let allowed: Vec<&str> = allowed.split_whitespace().collect();
    for needed in [
        "bind",
        "sendmsg",
        "recvmsg",
        "epoll_wait",
        "rename",
        "fsync",
    ] {
        assert!(
            allowed.contains(&needed),
            "{needed} not allowed: {allowed:?}"
        );
    }
    for denied in ["reboot", "mount", "init_module", "ptrace"] {
        assert!(!allowed.contains(&denied), "{denied} allowed: {allowed:?}");
    }
    assert!(!allowed.contains(&"clock_adjtime"), "{allowed:?}");
    let p = engine_process(c);
    let seccomp = c.read_file(&format!("/proc/{}/status", p.pid));
    assert!(seccomp.contains("\nSeccomp:\t2\n"), "{seccomp}");
}

/// How many times systemd reloaded, by its journal (systemd 252 logs
/// "Reloading." without saying who asked).
fn systemd_reloads(c: &Container) -> usize {
    let log = c.exec_ok(&["journalctl", "--no-pager", "-o", "cat", "_PID=1"]);
    log.lines().filter(|l| *l == "Reloading.").count()
}

/// chrony configured by hand and synchronised (live::hand_configured_chrony),
/// running and enabled.
fn chrony_running_by_hand(c: &Container) {
    hand_configured_chrony(c);
    assert_eq!(
        unit(c, "chrony.service"),
        ("active".into(), "enabled".into())
    );
}

/// The engine is synchronised to the loopback peer, by its own account.
fn assert_engine_synchronised(c: &Container) {
    let status = wait_for(
        "the engine to report itself synchronised",
        Duration::from_secs(20),
        || {
            let s = engine_status(c);
            if s["synchronized"] == true {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    );
    assert_eq!(status["clock_control"], false, "{status}");
    assert_eq!(status["stratum"], 9, "{status}");
    assert_eq!(status["reference_address"], "127.0.0.1:11123", "{status}");
    let selected: Vec<&Value> = status["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter(|s| s["selected"] == true)
        .collect();
    assert_eq!(selected.len(), 1, "{status}");
    assert_eq!(selected[0]["address"], "127.0.0.1:11123");
    assert_eq!(selected[0]["state"], "selected");
}

/// The verification in an apply report: synchronised to the loopback peer
/// at stratum 9 with a small offset.
fn assert_verified(applied: &Applied) {
    let verify = &applied.report["verify"];
    assert_eq!(verify["synchronized"], true, "{}", applied.context());
    assert_eq!(verify["source"], "127.0.0.1:11123", "{}", applied.context());
    assert_eq!(verify["stratum"], 9, "{}", applied.context());
    let offset = verify["offset_seconds"].as_f64().expect("offset");
    assert!(offset.abs() < 0.1, "{}", applied.context());
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn embedded_replaces_running_chrony() {
    let c = boot(false);
    let _peer = loopback_peer(&c);
    chrony_running_by_hand(&c);
    let spec = put_spec(&c, "engine", &engine_spec(""));

    let (code, stdout, stderr) = plan(&c, &spec);
    assert_eq!(code, 2, "{stdout}{stderr}");
    let steps = summaries(&plan_json(&c, &spec));
    assert_eq!(steps.len(), 8, "{steps:?}");
    assert_eq!(
        &steps[..2],
        ["stop chrony.service", "disable chrony.service"]
    );
    assert!(
        steps[2].starts_with(&format!("install {INSTALLED} (timectl ")),
        "{steps:?}"
    );
    assert_eq!(
        &steps[3..],
        [
            "create /etc/timectl/engine.yaml (0644 root:root)",
            "create /etc/systemd/system/timectl-engine.service (0644 root:root)",
            "reload systemd unit files",
            "enable timectl-engine.service",
            "start timectl-engine.service",
        ]
    );

    let reloads_before = systemd_reloads(&c);
    let applied = converge(&c, &spec, "chrony running -> embedded engine");
    assert_verified(&applied);
    // disable, write the unit, enable, start: systemd reloads once, before
    // the start, not after each unit-file change (0.2 s each here). Nothing
    // else reloads systemd in the container meanwhile; journald may take a
    // moment to write the line.
    let reloads = wait_for(
        "systemd's journal to show the apply's reload",
        Duration::from_secs(10),
        || match systemd_reloads(&c) - reloads_before {
            0 => Err("no reload yet".to_string()),
            n => Ok(n),
        },
    );
    assert_eq!(
        reloads,
        1,
        "systemd reloads during the apply: {}",
        applied.context()
    );
    assert_eq!(
        unit(&c, "chrony.service"),
        ("inactive".into(), "disabled".into())
    );
    assert!(
        !c.exec(&["pgrep", "-x", "chronyd"]).status.success(),
        "chronyd still runs"
    );
    assert_eq!(unit(&c, ENGINE), ("active".into(), "enabled".into()));
    assert_engine_synchronised(&c);
    // The installed copy is this very timectl.
    c.exec_ok(&["cmp", INSTALLED, "/opt/timectl/timectl"]);

    // clockControl: false, no serving: the engine holds no capability at
    // all and runs as a dynamic, unprivileged user.
    let p = engine_process(&c);
    assert_eq!(
        (p.cap_eff, p.cap_prm, p.cap_bnd, p.cap_amb),
        (0, 0, 0, 0),
        "capabilities of the engine (pid {})",
        p.pid
    );
    assert!(DYNAMIC_UIDS.contains(&p.uid), "uid {}", p.uid);
    assert!(p.no_new_privs);
    assert_eq!(c.unit_property(ENGINE, "DynamicUser"), "yes");
    assert_syscall_filter(&c);
    assert_eq!(c.unit_property(ENGINE, "Type"), "notify");
    let cmdline = c
        .read_file(&format!("/proc/{}/cmdline", p.pid))
        .replace('\0', " ");
    assert_eq!(
        cmdline.trim(),
        format!("{INSTALLED} daemon --config {ENGINE_CONF}")
    );

    assert_idempotent(&c, &spec);
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn embedded_to_chrony_and_back() {
    let c = boot(false);
    let _peer = loopback_peer(&c);
    let engine = put_spec(&c, "engine", &engine_spec(""));
    let applied = converge(&c, &engine, "fresh host -> embedded engine");
    assert_verified(&applied);
    assert_eq!(unit(&c, ENGINE), ("active".into(), "enabled".into()));
    let status = c.exec_ok(&[INSTALLED, "status"]);
    assert!(status.contains("127.0.0.1:11123"), "{status}");
    assert_idempotent(&c, &engine);

    // chrony takes over: the engine is stopped and disabled first.
    let chrony = put_spec(&c, "chrony", &chrony_spec("127.0.0.1", 11123, ""));
    let steps = summaries(&plan_json(&c, &chrony));
    assert_eq!(
        &steps[..3],
        [
            "stop timectl-engine.service",
            "disable timectl-engine.service",
            "install package chrony",
        ],
        "{steps:?}"
    );
    let applied = converge(&c, &chrony, "embedded engine -> chrony");
    assert_eq!(applied.report["verify"]["source"], "127.0.0.1");
    assert_eq!(unit(&c, ENGINE), ("inactive".into(), "disabled".into()));
    assert_eq!(
        unit(&c, "chrony.service"),
        ("active".into(), "enabled".into())
    );
    assert_idempotent(&c, &chrony);

    // And back: chrony is stopped and disabled before the engine starts;
    // the installed binary, its config and its unit are still right, so
    // nothing of them is rewritten.
    let steps = summaries(&plan_json(&c, &engine));
    let at = |s: &str| {
        steps
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("no step {s:?} in {steps:?}"))
    };
    assert!(at("stop chrony.service") < at("start timectl-engine.service"));
    assert!(at("disable chrony.service") < at("start timectl-engine.service"));
    assert!(at("enable timectl-engine.service") < at("start timectl-engine.service"));
    assert!(
        !steps
            .iter()
            .any(|s| s.contains(INSTALLED) || s.contains(ENGINE_CONF) || s.contains(ENGINE_UNIT)),
        "{steps:?}"
    );
    let applied = converge(&c, &engine, "chrony -> embedded engine (back)");
    assert_verified(&applied);
    assert_eq!(unit(&c, ENGINE), ("active".into(), "enabled".into()));
    assert_eq!(
        unit(&c, "chrony.service"),
        ("inactive".into(), "disabled".into())
    );
    assert_engine_synchronised(&c);
    assert_idempotent(&c, &engine);
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn embedded_serves_ntpdig_through_nftables() {
    let c = boot(true);
    let _peer = loopback_peer(&c);
    // The container's own firewall drops what it does not allow.
    drop_by_default_firewall(&c);
    let spec = put_spec(
        &c,
        "serve",
        &engine_spec("  serve: { allow: [127.0.0.0/8, 192.0.2.0/24] }\n  firewall: nftables\n"),
    );
    let steps = summaries(&plan_json(&c, &spec));
    assert!(
        steps.contains(
            &"open UDP 123 in nftables: nft insert rule inet filter input udp dport 123 accept comment \"timectl: NTP (UDP 123)\"".to_string()
        ),
        "{steps:?}"
    );
    let applied = converge(&c, &spec, "embedded engine serving, nftables rule");
    assert_verified(&applied);
    let unit_file = c.read_file(ENGINE_UNIT);
    assert!(
        unit_file.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n")
            && unit_file.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE\n"),
        "{unit_file}"
    );
    let ruleset = c.netns().nft_ruleset().to_string();
    assert_eq!(ruleset.matches("timectl: NTP (UDP 123)").count(), 1);

    // ntpdig on the container's loopback gets a synchronised answer one
    // stratum below the peer's 8.
    let reply = wait_for(
        "the engine to answer ntpdig on 127.0.0.1:123",
        Duration::from_secs(15),
        || ntpdig(Some(c.netns()), "127.0.0.1"),
    );
    assert_eq!(reply.stratum, 9, "{reply:?}");
    assert_ne!(reply.leap, "unsync", "{reply:?}");
    assert!(reply.offset.abs() < 0.1, "{reply:?}");
    // Through the firewall, from the uplink.
    wait_for(
        "the engine to serve through nftables",
        Duration::from_secs(15),
        || served_upstream(&c),
    );
    let reply = ntpdig(Some(c.uplink().netns()), "192.0.2.1").expect("upstream ntpdig");
    assert_eq!(reply.stratum, 9, "{reply:?}");
    let status = engine_status(&c);
    assert!(
        status["server"]["answered"].as_u64().unwrap_or(0) >= 3,
        "{status}"
    );

    // Serving on port 123: CAP_NET_BIND_SERVICE and nothing else.
    let p = engine_process(&c);
    assert_eq!(p.cap_eff, CAP_NET_BIND_SERVICE, "CapEff {:x}", p.cap_eff);
    assert_eq!(p.cap_bnd, CAP_NET_BIND_SERVICE, "CapBnd {:x}", p.cap_bnd);
    assert_eq!(p.cap_amb, CAP_NET_BIND_SERVICE, "CapAmb {:x}", p.cap_amb);
    assert!(DYNAMIC_UIDS.contains(&p.uid), "uid {}", p.uid);
    assert_syscall_filter(&c);

    assert_idempotent(&c, &spec);
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn embedded_config_drift_is_restored_with_a_restart() {
    let c = boot(false);
    let _peer = loopback_peer(&c);
    let spec = put_spec(&c, "engine", &engine_spec(""));
    converge(&c, &spec, "fresh host -> embedded engine (setup)");
    let desired = c.read_file(ENGINE_CONF);
    let pid_before = c.unit_property(ENGINE, "MainPID");
    let started_before = c.unit_property(ENGINE, "ActiveEnterTimestampMonotonic");

    // Someone edits the engine's config by hand (the running engine still
    // uses the old one).
    let edited = desired.replace("port: 11123", "port: 11124");
    assert_ne!(edited, desired);
    c.write_file(ENGINE_CONF, &edited);
    let (code, stdout, _) = plan(&c, &spec);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stdout.contains(&format!("update {ENGINE_CONF}")),
        "{stdout}"
    );
    assert!(stdout.contains("-    port: 11124"), "{stdout}");
    assert!(stdout.contains("+    port: 11123"), "{stdout}");
    assert!(
        stdout.contains("restart timectl-engine.service")
            && stdout.contains(&format!("{ENGINE_CONF} changed")),
        "{stdout}"
    );
    assert_eq!(
        summaries(&plan_json(&c, &spec)),
        [
            format!("update {ENGINE_CONF}"),
            "restart timectl-engine.service".to_string()
        ]
    );

    let applied = converge(&c, &spec, "restore edited engine.yaml (write + restart)");
    assert_verified(&applied);
    assert_eq!(c.read_file(ENGINE_CONF), desired);
    assert_ne!(
        c.unit_property(ENGINE, "MainPID"),
        pid_before,
        "the engine was not restarted"
    );
    assert_ne!(
        c.unit_property(ENGINE, "ActiveEnterTimestampMonotonic"),
        started_before
    );
    assert_engine_synchronised(&c);
    // The hand edit is kept in the run's backups.
    let backups = applied.report["backups"].as_str().expect("backups dir");
    assert_eq!(c.read_file(&format!("{backups}{ENGINE_CONF}")), edited);
    assert_idempotent(&c, &spec);
}

/// The steps of a rolled-back run: the failed one last, every one before it
/// undone, and the undo actions listed.
fn assert_rolled_back(failed: &Applied, failing_step: &str) {
    assert_eq!(failed.out.status.code(), Some(1), "{}", failed.context());
    assert_eq!(failed.outcome(), "rolled-back", "{}", failed.context());
    assert_eq!(failed.report["not_restored"], serde_json::json!([]));
    let steps = failed.report["steps"].as_array().expect("steps");
    let last = steps.last().expect("a step");
    assert_eq!(last["summary"], failing_step, "{}", failed.context());
    assert_eq!(last["status"], "failed", "{}", failed.context());
    for step in &steps[..steps.len() - 1] {
        assert_eq!(step["status"], "undone", "{}", failed.context());
    }
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn embedded_failing_start_rolls_back_to_chrony() {
    let c = boot(false);
    let _peer = loopback_peer(&c);
    chrony_running_by_hand(&c);
    let before = switch_state(&c);

    // An engine that cannot start for a real reason: it must listen on an
    // address this host does not have, so it exits before READY=1 and
    // systemd fails the start job (Type=notify).
    let broken = put_spec(
        &c,
        "broken",
        &engine_spec(
            "  serve: { allow: [192.0.2.0/24], listen: [192.0.2.99] }\n  firewall: none\n",
        ),
    );
    let failed = apply(&c, &broken);
    record_timing(
        "apply failing engine start + rollback to chrony",
        failed.took,
    );
    assert_rolled_back(&failed, "start timectl-engine.service");
    let error = failed.report["error"].as_str().unwrap_or("");
    assert!(error.contains("start timectl-engine.service"), "{error}");
    assert!(error.contains("Result=exit-code"), "{error}");
    assert!(
        error.contains("listening on 192.0.2.99:123: Cannot assign requested address"),
        "the journal lines say why: {error}"
    );
    let undo = |summary: &str| -> Vec<String> {
        failed.report["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["summary"] == summary)
            .unwrap_or_else(|| panic!("no step {summary}: {}", failed.context()))["undo"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|u| u.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(undo("stop chrony.service"), ["start chrony.service"]);
    assert_eq!(undo("disable chrony.service"), ["enable chrony.service"]);
    assert_eq!(
        undo("create /etc/timectl/engine.yaml (0644 root:root)"),
        ["remove /etc/timectl/engine.yaml (it did not exist before)"]
    );

    // chrony keeps time again, and nothing of the engine is left: not even
    // a unit that systemd keeps restarting (Restart=on-failure, RestartSec=2s).
    assert_eq!(switch_state(&c), before);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(switch_state(&c), before);
    assert_eq!(
        unit(&c, "chrony.service"),
        ("active".into(), "enabled".into())
    );
    wait_for(
        "chronyd to select the peer again",
        Duration::from_secs(15),
        || match chrony_selected(&c) {
            Some(s) if s == "127.0.0.1" => Ok(()),
            other => Err(format!("selected {other:?}")),
        },
    );
    assert!(
        !c.exec(&["pgrep", "-f", "timectl daemon"]).status.success(),
        "an engine process is still running"
    );

    // A running engine whose new config fails: the restart fails, and the
    // rollback brings the engine back with its old config.
    let good = put_spec(&c, "engine", &engine_spec(""));
    converge(&c, &good, "chrony -> embedded engine (setup)");
    let engine_before = switch_state(&c);
    let failed = apply(&c, &broken);
    record_timing("apply failing engine restart + rollback", failed.took);
    assert_rolled_back(&failed, "restart timectl-engine.service");
    // Running again at once (the rollback restarted it once its old files
    // were back), not merely waiting for its next Restart= attempt.
    assert_eq!(c.unit_property(ENGINE, "SubState"), "running");
    assert_eq!(switch_state(&c), engine_before);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(switch_state(&c), engine_before);
    assert_eq!(unit(&c, ENGINE), ("active".into(), "enabled".into()));
    assert_engine_synchronised(&c);
    let (code, stdout, _) = plan(&c, &good);
    assert_eq!(code, 0, "the host is as before:\n{stdout}");
    assert_idempotent(&c, &good);
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn embedded_step_now_without_clock_control() {
    let c = boot(false);
    let _peer = loopback_peer(&c);
    let spec = put_spec(
        &c,
        "step",
        &engine_spec("  step: { threshold: 1s, limit: 3, now: true }\n"),
    );
    // The plan says at once that the step will not happen, and why.
    let (code, stdout, _) = plan(&c, &spec);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stdout.contains("step.now is ignored: clockControl is false"),
        "{stdout}"
    );
    assert!(!stdout.contains("step the clock once"), "{stdout}");
    let applied = converge(&c, &spec, "fresh host -> embedded engine, step.now");
    assert_verified(&applied);
    // Not a failure: the report says why no step was made, and none was
    // asked of the engine.
    assert_step_now_ignored(&applied);
    // Asked directly through its control socket (as root, which the
    // engine's SO_PEERCRED check allows), the engine refuses and says by
    // how much it would have stepped.
    let out = c.exec(&[INSTALLED, "status", "--step-now"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains("clock control is off; would step the clock by"),
        "{said}"
    );
    // The engine never touched the clock.
    let status = engine_status(&c);
    assert_eq!(status["steps"], 0, "{status}");
    assert_eq!(status["clock_control"], false, "{status}");
    assert_idempotent(&c, &spec);
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn embedded_binary_update_restarts_the_engine() {
    require();
    // Another build of timectl: the same executable with one byte appended
    // (the loader ignores it; the binary resource compares bytes).
    let next = support::temp_dir(&support::unique_name(), 0o755);
    let original = std::fs::read(env!("CARGO_BIN_EXE_timectl")).expect("read timectl");
    let mut changed = original.clone();
    changed.push(b'\n');
    let next_binary = next.path().join("timectl");
    std::fs::write(&next_binary, &changed).expect("write the other build");
    std::fs::set_permissions(
        &next_binary,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let c = Container::boot_with(ContainerOptions {
        bind_ro: vec![(next.path().to_path_buf(), "/opt/timectl-next".into())],
        ..ContainerOptions::default()
    });
    let _peer = loopback_peer(&c);
    let spec = put_spec(&c, "engine", &engine_spec(""));
    converge(&c, &spec, "fresh host -> embedded engine (setup)");
    let pid_before = c.unit_property(ENGINE, "MainPID");

    let next_timectl = "/opt/timectl-next/timectl";
    let out = c.exec(&[next_timectl, "plan", &spec, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let p: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    assert_eq!(
        summaries(&p),
        [
            format!(
                "update {INSTALLED} to timectl {} ({} bytes)",
                env!("CARGO_PKG_VERSION"),
                changed.len()
            ),
            "restart timectl-engine.service".to_string(),
        ]
    );
    let applied = expect_converged(
        apply_with(&c, next_timectl, &spec),
        "updated timectl binary (install + restart)",
    );
    assert_verified(&applied);
    c.exec_ok(&["cmp", INSTALLED, next_timectl]);
    assert_ne!(c.unit_property(ENGINE, "MainPID"), pid_before);
    assert_engine_synchronised(&c);

    let again = apply_with(&c, next_timectl, &spec);
    assert_eq!(again.outcome(), "no-changes", "{}", again.context());
    let out = c.exec(&[next_timectl, "plan", &spec, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The first build would now downgrade it, and says so.
    let (code, stdout, _) = plan(&c, &spec);
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.contains(&format!("update {INSTALLED}")), "{stdout}");
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn embedded_metrics_and_journal_fields_under_the_hardened_unit() {
    let c = boot(true);
    let _peer = loopback_peer(&c);
    drop_by_default_firewall(&c);
    let spec = put_spec(
        &c,
        "metrics",
        &engine_spec(
            "  serve: { allow: [127.0.0.0/8, 192.0.2.0/24] }\n  firewall: nftables\n  metrics: { listen: 127.0.0.1:9975 }\n",
        ),
    );
    let steps = summaries(&plan_json(&c, &spec));
    assert!(
        steps
            .iter()
            .all(|s| !s.contains("9975") && !s.contains("tcp")),
        "the plan touches the metrics port: {steps:?}"
    );
    let applied = converge(&c, &spec, "embedded engine with metrics");
    assert_verified(&applied);
    assert!(
        c.read_file(ENGINE_CONF)
            .contains("metrics:\n  listen: 127.0.0.1:9975\n"),
        "{}",
        c.read_file(ENGINE_CONF)
    );
    // The firewall has the NTP rule and nothing for the metrics port.
    let ruleset = c.netns().nft_ruleset().to_string();
    assert_eq!(ruleset.matches("timectl: NTP (UDP 123)").count(), 1);
    assert!(!ruleset.contains("9975"), "{ruleset}");

    // The engine, as the unit runs it (dynamic user, no capability but
    // CAP_NET_BIND_SERVICE), serves its metrics on the container's loopback.
    let url = "http://127.0.0.1:9975/metrics";
    let text = wait_for(
        "the engine's metrics to show the selected loopback peer",
        Duration::from_secs(15),
        || {
            let (code, body) = c.netns().http_get(url)?;
            let selected =
                r#"ntp_source_selected{address="127.0.0.1:11123",id="0",name="127.0.0.1"} 1"#;
            if code == 200 && body.contains(selected) {
                Ok(body)
            } else {
                Err(format!("{code}: {body}"))
            }
        },
    );
    assert!(text.contains("\nntp_system_synchronized 1\n"), "{text}");
    assert!(text.contains("\nntp_system_stratum 9\n"), "{text}");
    assert!(
        text.contains("\nntp_server_accepted_packets_total "),
        "{text}"
    );
    // Loopback only: the uplink cannot reach it.
    let remote = c.uplink().netns().http_get("http://192.0.2.1:9975/metrics");
    assert!(remote.is_err(), "reached from the uplink: {remote:?}");

    // The journal has the engine's events with their fields, sent by the
    // native protocol (not lines read from stderr).
    let entries = wait_for(
        "the journal to hold the engine's synchronisation event",
        Duration::from_secs(10),
        || {
            let out = c.exec_ok(&["journalctl", "--no-pager", "-o", "json", "-u", ENGINE]);
            let entries: Vec<Value> = out
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if entries
                .iter()
                .any(|e| e["MESSAGE"] == "synchronised to 127.0.0.1:11123")
            {
                Ok(entries)
            } else {
                Err(out)
            }
        },
    );
    let event = |message: &str| -> &Value {
        entries
            .iter()
            .find(|e| e["MESSAGE"] == message)
            .unwrap_or_else(|| panic!("no {message:?} in {entries:#?}"))
    };
    let synced = event("synchronised to 127.0.0.1:11123");
    assert_eq!(synced["SOURCE"], "127.0.0.1:11123", "{synced:#}");
    let offset: f64 = synced["OFFSET"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("OFFSET is not a number: {synced:#}"));
    assert!(offset.abs() < 0.1, "{synced:#}");
    assert_eq!(synced["PRIORITY"], "6", "{synced:#}");
    assert_eq!(synced["SYSLOG_IDENTIFIER"], "timectl", "{synced:#}");
    assert_eq!(synced["_TRANSPORT"], "journal", "{synced:#}");
    let added = event("source 127.0.0.1:11123 (127.0.0.1)");
    assert_eq!(added["SOURCE"], "127.0.0.1:11123", "{added:#}");
    let metrics_line = event("serving metrics on http://127.0.0.1:9975/metrics");
    assert_eq!(metrics_line["_TRANSPORT"], "journal");
    assert!(
        entries
            .iter()
            .filter(|e| e["_PID"] == synced["_PID"])
            .all(|e| e["_TRANSPORT"] == "journal"),
        "the engine also wrote to stderr: {entries:#?}"
    );

    // A non-loopback metrics address without allowRemote is refused at
    // its line and column, and nothing changes.
    let bad = put_spec(
        &c,
        "metrics-remote",
        &engine_spec("  metrics:\n    listen: 0.0.0.0:9975\n"),
    );
    let (code, _, stderr) = plan(&c, &bad);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{bad}:11:13: metrics address 0.0.0.0:9975 is not a loopback address"
        )),
        "{stderr}"
    );
    assert_idempotent(&c, &spec);
}

/// The NTS-KE port of the chronyd NTS server on the container's loopback.
const NTS_KE_PORT: u16 = 14460;

/// NTS end to end on the test host (issue 10): the embedded engine takes
/// time only from an NTS source (a chronyd NTS server on the container's
/// loopback, trusted through `ntsTrustedCerts`) and serves NTS itself with
/// a certificate systemd hands it (`LoadCredential=`, the key file readable
/// by root only) behind a drop-by-default nftables firewall, which apply
/// opens for UDP 123 and TCP 4460. A real `chronyd -x` NTS client on the
/// uplink selects the engine and holds NTS cookies from it.
#[test]
#[ignore = "needs root, systemd-nspawn, the test image, chronyd and openssl; run ci/system-tests.sh"]
fn embedded_nts_client_and_server_through_nftables() {
    support::require_root_and(&["openssl", "chronyd"]);
    let c = boot(true);
    let pki = Pki::for_names(
        "embedded",
        &["DNS:localhost", "IP:127.0.0.1", "IP:192.0.2.1"],
    );
    let _nts_peer = ChronyPeer::builder()
        .port(11123)
        .netns(c.netns())
        .nts_server(&pki, NTS_KE_PORT)
        .start();
    c.exec_ok(&["mkdir", "-p", "/etc/timectl"]);
    c.write_file("/etc/timectl/nts-ca.pem", &pki.read("ca.pem"));
    c.exec_ok(&["install", "-d", "-m", "0700", "/etc/ssl/timectl"]);
    c.write_file("/etc/ssl/timectl/server.pem", &pki.read("server.pem"));
    c.write_file("/etc/ssl/timectl/server.key", &pki.read("server.key"));
    c.exec_ok(&["chmod", "0600", "/etc/ssl/timectl/server.key"]);
    drop_by_default_firewall(&c);
    let spec = put_spec(
        &c,
        "nts",
        &format!(
            "timesync:\n  ntsTrustedCerts: /etc/timectl/nts-ca.pem\n  sources:\n    - server: 127.0.0.1\n      nts: true\n      ntsPort: {NTS_KE_PORT}\n      iburst: true\n      minpoll: -2\n      maxpoll: 0\n  clockControl: false\n  verify: {{ synchronized: true, within: 20s, maxOffset: 100ms }}\n  serve:\n    allow: [127.0.0.0/8, 192.0.2.0/24]\n    nts: {{ certificate: /etc/ssl/timectl/server.pem, key: /etc/ssl/timectl/server.key }}\n  firewall: nftables\n"
        ),
    );
    let steps = summaries(&plan_json(&c, &spec));
    for rule in [
        "open UDP 123 in nftables: nft insert rule inet filter input udp dport 123 accept comment \"timectl: NTP (UDP 123)\"",
        "open TCP 4460 (NTS-KE) in nftables: nft insert rule inet filter input tcp dport 4460 accept comment \"timectl: NTS-KE (TCP 4460)\"",
    ] {
        assert!(steps.contains(&rule.to_string()), "{rule} not in {steps:?}");
    }
    let applied = converge(&c, &spec, "embedded engine, NTS source and NTS server");
    // An NTS source is named by its NTS-KE address; the NTP server it polls
    // is the one the key exchange named (status: nts.ntp_address).
    let verify = &applied.report["verify"];
    assert_eq!(verify["synchronized"], true, "{}", applied.context());
    assert_eq!(
        verify["source"],
        format!("127.0.0.1:{NTS_KE_PORT}"),
        "{}",
        applied.context()
    );
    assert_eq!(verify["stratum"], 9, "{}", applied.context());
    let unit_file = c.read_file(ENGINE_UNIT);
    assert!(
        unit_file.contains("LoadCredential=nts-key:/etc/ssl/timectl/server.key\n"),
        "{unit_file}"
    );

    // The engine's own account: synchronised to the NTS source, which is
    // authenticated and holds cookies.
    let status = wait_for(
        "the engine to report itself synchronised over NTS",
        Duration::from_secs(20),
        || {
            let s = engine_status(&c);
            if s["synchronized"] == true && s["sources"][0]["selected"] == true {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    );
    assert_eq!(status["stratum"], 9, "{status}");
    assert_nts_source_status(&status["sources"][0], &status);

    // A chronyd NTS client on the uplink, through the firewall: it selects
    // the engine, whose certificate it verified against the test CA.
    let client = ChronyPeer::client_with("server 192.0.2.1 iburst nts minpoll -2 maxpoll 0")
        .netns(c.uplink().netns())
        .line(&format!("ntstrustedcerts {}", pki.path("ca.pem").display()))
        .start();
    client.wait_selected("192.0.2.1", Duration::from_secs(30));
    let auth = client.authdata();
    let engine = auth
        .iter()
        .find(|a| a.address == "192.0.2.1")
        .unwrap_or_else(|| panic!("no authdata for 192.0.2.1: {auth:?}"));
    assert_eq!(engine.mode, "NTS", "{auth:?}");
    assert!(engine.cookies > 0, "{auth:?}");
    assert_eq!(engine.naks, 0, "{auth:?}");
    // The engine counted the client's key exchange and NTS requests.
    let status = engine_status(&c);
    let served = &status["server"]["nts"];
    assert!(
        served["ke_listen"]
            .as_array()
            .is_some_and(|a| a.contains(&serde_json::json!("0.0.0.0:4460"))),
        "{status}"
    );
    assert!(served["key_exchanges"].as_u64() >= Some(1), "{status}");
    assert!(served["answered"].as_u64() >= Some(1), "{status}");
    assert_eq!(served["naks"], 0, "{status}");
    assert_eq!(
        c.netns()
            .nft_ruleset()
            .to_string()
            .matches("timectl: NTS-KE (TCP 4460)")
            .count(),
        1
    );
    assert_idempotent(&c, &spec);
}

/// An NTS source in `timectl status --json`: keys established, the last
/// reply authenticated, cookies held, nothing dropped, the NTP server the
/// key exchange named (chronyd's Port record: 11123).
fn assert_nts_source_status(source: &Value, status: &Value) {
    let nts = &source["nts"];
    assert_eq!(nts["state"], "established", "{status}");
    assert_eq!(nts["authenticated"], true, "{status}");
    let cookies = nts["cookies"].as_u64().expect("cookies");
    assert!((1..=8).contains(&cookies), "{status}");
    assert_eq!(nts["ntp_address"], "127.0.0.1:11123", "{status}");
    assert!(nts["key_exchanges"].as_u64() >= Some(1), "{status}");
    assert!(nts["authenticated_replies"].as_u64() >= Some(1), "{status}");
    assert_eq!(nts["dropped_unauthenticated"], 0, "{status}");
    assert!(nts["last_key_exchange_error"].is_null(), "{status}");
}
