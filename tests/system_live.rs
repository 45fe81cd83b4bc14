//! timectl on a running host: real systemd (an nspawn container booted from
//! the test image), real apt-get against the image's offline repository,
//! real chronyd / ntpsec synchronising to chronyd peers, real firewalld and
//! nftables. timectl runs INSIDE the container (the binary is bind-mounted
//! at /opt/timectl), so files, D-Bus, packages and the firewall are the
//! container's own, exactly as on a server.
//!
//! Every scenario ends with a second apply that must change nothing. Apply
//! times are recorded (`timing:` lines, summarised by ci/system-tests.sh).
//!
//! Peers: chronyd in the container talks to a host-side chronyd on
//! 127.0.0.1:11123 in the container's network namespace; ntpd can only use
//! port 123, so ntpd scenarios boot with an uplink and the peer runs at
//! 192.0.2.2:123 upstream. Specs for chrony say `clockControl: false`
//! (timectl's drop-in runs chronyd -x); ntpd has no such mode, so ntpd
//! specs keep the default and the container guarantees the clock is safe:
//! it has no CAP_SYS_TIME (the harness asserts it), and ntpd logs
//! `ntp_adjtime: Operation not permitted` while it serves and reports
//! synchronisation normally.
//!
//! Run as root with `ci/system-tests.sh live` (all are #[ignore]d).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::live::{
    apply, assert_idempotent, assert_step_now_ignored, boot, chrony_selected, chrony_spec,
    converge, drop_by_default_firewall, loopback_peer, plan, plan_json, put_spec, served_upstream,
    summaries, text, unit, upstream_peer,
};
use support::{Container, record_timing, wait_for};

/// An ntpd spec for the upstream peer (ntpd can only use port 123).
fn ntpd_spec(extra: &str) -> String {
    format!(
        "timesync:\n  provider: ntpd\n  sources:\n    - server: 192.0.2.2\n      iburst: true\n      minpoll: 3\n      maxpoll: 4\n  verify: {{ synchronized: true, within: 60s, maxOffset: 100ms }}\n{extra}"
    )
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn fresh_host_to_chrony() {
    let c = boot(false);
    let _peer = loopback_peer(&c);
    let spec = put_spec(
        &c,
        "chrony",
        &chrony_spec(
            "127.0.0.1",
            11123,
            "  step: { threshold: 1s, limit: 3, now: true }\n  firewall: nftables\n",
        ),
    );

    // A normal user may plan: it sees what it can and says what it cannot.
    let out = c.exec(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/opt/timectl/timectl",
        "plan",
        &spec,
        "--json",
    ]);
    assert!(out.status.success(), "plan as nobody: {out:?}");
    let unprivileged: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let blockers = unprivileged["blockers"].to_string();
    assert!(
        blockers.contains("firewall") && blockers.contains("permission denied"),
        "nft as nobody must be a blocker: {blockers}"
    );
    assert!(summaries(&unprivileged).contains(&"install package chrony".to_string()));
    let out = c.exec(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/opt/timectl/timectl",
        "apply",
        &spec,
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(1), "apply as nobody must refuse");
    assert!(
        text(&out.stderr).contains("applying to the running host needs root"),
        "{out:?}"
    );
    assert_eq!(c.package_status("chrony"), "not-installed");

    // As root: the whole procedure.
    let (code, stdout, stderr) = plan(&c, &spec);
    assert_eq!(code, 2, "{stdout}{stderr}");
    let p = plan_json(&c, &spec);
    assert_eq!(p["blockers"], serde_json::json!([]));
    assert_eq!(
        summaries(&p),
        [
            "install package chrony",
            "create /etc/chrony/chrony.conf (0644 root:root)",
            "create /etc/systemd/system/chrony.service.d/timectl-no-clock-control.conf (0644 root:root)",
            "reload systemd unit files",
            "enable chrony.service",
            "start chrony.service",
        ]
    );

    let applied = converge(&c, &spec, "fresh host -> chrony");
    let verify = &applied.report["verify"];
    assert_eq!(verify["synchronized"], true, "{}", applied.context());
    assert_eq!(verify["source"], "127.0.0.1");
    assert_eq!(verify["stratum"], 9);
    // step.now with clockControl: false is dropped with a note (chronyd -x
    // has no clock to step), not a failure.
    assert_step_now_ignored(&applied);

    assert_eq!(c.package_status("chrony"), "installed");
    assert_eq!(
        unit(&c, "chrony.service"),
        ("active".into(), "enabled".into())
    );
    let conf = c.read_file("/etc/chrony/chrony.conf");
    assert!(
        conf.contains("server 127.0.0.1 port 11123 iburst minpoll -2 maxpoll 0"),
        "{conf}"
    );
    // Debian's package started chronyd with its default config; timectl
    // restarted it after writing its own, so the running chronyd uses the
    // peer (which only the new config names) and runs with -x.
    assert_eq!(chrony_selected(&c).as_deref(), Some("127.0.0.1"));
    let pid = c.unit_property("chrony.service", "MainPID");
    let cmdline = c
        .read_file(&format!("/proc/{pid}/cmdline"))
        .replace('\0', " ");
    assert!(cmdline.contains("-x"), "{cmdline}");

    assert_idempotent(&c, &spec);
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn switch_chrony_to_ntpsec_and_back() {
    let c = boot(true);
    let _upstream = upstream_peer(&c);
    let chrony = put_spec(&c, "chrony", &chrony_spec("192.0.2.2", 123, ""));
    let ntpd = put_spec(&c, "ntpd", &ntpd_spec(""));
    let ntpd_fail = put_spec(&c, "ntpd-fail", &ntpd_spec("  conflicts: fail\n"));
    converge(&c, &chrony, "fresh host -> chrony (upstream peer)");
    assert_idempotent(&c, &chrony);

    // conflicts: fail refuses while chrony runs, and changes nothing.
    let (code, _, stderr) = plan(&c, &ntpd_fail);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("chrony.service") && stderr.contains("conflicts: fail"),
        "{stderr}"
    );
    let refused = c.timectl(&["apply", &ntpd_fail, "--yes"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert_eq!(
        unit(&c, "chrony.service"),
        ("active".into(), "enabled".into())
    );

    // The switch: the plan says apt will remove chrony, before it happens,
    // and chrony is stopped and disabled first.
    let p = plan_json(&c, &ntpd);
    let steps = summaries(&p);
    let at = |s: &str| {
        steps
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("no step {s:?} in {steps:?}"))
    };
    let install = at("install package ntpsec (the package manager will REMOVE chrony)");
    assert!(at("stop chrony.service") < install);
    assert!(at("disable chrony.service") < install);
    assert!(install < at("start ntpsec.service"));

    let applied = converge(&c, &ntpd, "chrony -> ntpd (ntpsec), package switch");
    assert_eq!(applied.report["verify"]["source"], "192.0.2.2");
    assert_eq!(c.package_status("ntpsec"), "installed");
    assert_eq!(c.package_status("chrony"), "config-files");
    assert_eq!(
        unit(&c, "ntpsec.service"),
        ("active".into(), "enabled".into())
    );
    assert_ne!(c.unit_property("chrony.service", "ActiveState"), "active");
    let rv = c.exec_ok(&["ntpq", "-c", "rv"]);
    assert!(rv.contains("refid=192.0.2.2"), "{rv}");
    assert_idempotent(&c, &ntpd);

    let applied = converge(&c, &chrony, "ntpd (ntpsec) -> chrony, package switch");
    assert_eq!(applied.report["verify"]["source"], "192.0.2.2");
    assert_eq!(c.package_status("chrony"), "installed");
    assert_eq!(c.package_status("ntpsec"), "config-files");
    assert_eq!(
        unit(&c, "chrony.service"),
        ("active".into(), "enabled".into())
    );
    assert_ne!(c.unit_property("ntpsec.service", "ActiveState"), "active");
    assert_idempotent(&c, &chrony);
}

/// A container converged to chrony with the loopback peer.
fn converged_chrony(c: &Container) -> String {
    let spec = put_spec(c, "chrony", &chrony_spec("127.0.0.1", 11123, ""));
    converge(c, &spec, "fresh host -> chrony (setup)");
    spec
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn edited_chrony_conf_is_shown_and_restored() {
    let c = boot(false);
    let _peer = loopback_peer(&c);
    let spec = converged_chrony(&c);
    let desired = c.read_file("/etc/chrony/chrony.conf");
    let pid_before = c.unit_property("chrony.service", "MainPID");

    // Someone edits the file by hand.
    c.write_file(
        "/etc/chrony/chrony.conf",
        &format!("{desired}server 10.9.9.9 iburst\n"),
    );
    let (code, stdout, _) = plan(&c, &spec);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stdout.contains("update /etc/chrony/chrony.conf"),
        "{stdout}"
    );
    assert!(stdout.contains("-server 10.9.9.9 iburst"), "{stdout}");
    assert!(
        stdout.contains("restart chrony.service")
            && stdout.contains("/etc/chrony/chrony.conf changed"),
        "{stdout}"
    );

    let applied = converge(&c, &spec, "restore edited chrony.conf");
    assert_eq!(c.read_file("/etc/chrony/chrony.conf"), desired);
    assert_ne!(
        c.unit_property("chrony.service", "MainPID"),
        pid_before,
        "chronyd was not restarted"
    );
    // The hand edit is kept in the run's backups.
    let backups = applied.report["backups"].as_str().expect("backups dir");
    let saved = c.read_file(&format!("{backups}/etc/chrony/chrony.conf"));
    assert!(saved.contains("server 10.9.9.9 iburst"), "{saved}");
    assert_idempotent(&c, &spec);
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn stopped_daemon_is_started() {
    let c = boot(false);
    let _peer = loopback_peer(&c);
    let spec = converged_chrony(&c);
    c.exec_ok(&["systemctl", "stop", "chrony.service"]);

    let p = plan_json(&c, &spec);
    assert_eq!(summaries(&p), ["start chrony.service"]);
    converge(&c, &spec, "start a stopped chronyd");
    assert_eq!(
        unit(&c, "chrony.service"),
        ("active".into(), "enabled".into())
    );
    assert_idempotent(&c, &spec);

    // A conflicting daemon's unit name that is only another name of the
    // chosen unit (here timectl-engine.service made an alias of
    // chrony.service; not openntpd.service, which chrony's unit lists in
    // Conflicts=) must not get chrony stopped or disabled.
    c.exec_ok(&[
        "ln",
        "-s",
        "/lib/systemd/system/chrony.service",
        "/etc/systemd/system/timectl-engine.service",
    ]);
    c.exec_ok(&["systemctl", "daemon-reload"]);
    assert_eq!(
        c.unit_property("timectl-engine.service", "Id"),
        "chrony.service"
    );
    let p = plan_json(&c, &spec);
    assert_eq!(summaries(&p), Vec::<String>::new(), "{p}");
    assert!(
        p["notes"]
            .to_string()
            .contains("timectl-engine.service is another name of chrony.service"),
        "{}",
        p["notes"]
    );
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn firewalld_opens_ntp_once_and_closes_it() {
    let c = boot(true);
    let _upstream = upstream_peer(&c);
    c.exec_ok(&["systemctl", "start", "firewalld.service"]);
    let serve = "  serve: { allow: [192.0.2.0/24] }\n  firewall: firewalld\n";
    let spec = put_spec(&c, "serve", &chrony_spec("192.0.2.2", 123, serve));
    let client_only = put_spec(
        &c,
        "client",
        &chrony_spec("192.0.2.2", 123, "  firewall: firewalld\n"),
    );

    let p = plan_json(&c, &spec);
    let open = summaries(&p)
        .into_iter()
        .find(|s| s.starts_with("open UDP 123"))
        .expect("an open step");
    assert!(
        open.contains("firewalld (D-Bus)") && open.contains("service ntp (udp/123) in zone public"),
        "{open}"
    );
    converge(&c, &spec, "serve time, firewalld opens ntp");
    let services = |permanent: bool| {
        let mut args = vec!["firewall-cmd"];
        if permanent {
            args.push("--permanent");
        }
        args.push("--list-services");
        c.exec_ok(&args)
    };
    assert!(services(false).split_whitespace().any(|s| s == "ntp"));
    assert!(services(true).split_whitespace().any(|s| s == "ntp"));
    // Really open: a client upstream gets time from the container.
    wait_for(
        "the container's chronyd to serve through firewalld",
        Duration::from_secs(15),
        || served_upstream(&c),
    );
    assert_idempotent(&c, &spec);

    // Stop serving: timectl closes what it opened, and NTP is blocked again.
    let p = plan_json(&c, &client_only);
    assert!(
        summaries(&p)
            .iter()
            .any(|s| s.starts_with("close UDP 123 in firewalld (D-Bus)")),
        "{:?}",
        summaries(&p)
    );
    converge(&c, &client_only, "stop serving, firewalld closes ntp");
    assert!(!services(false).contains("ntp"));
    assert!(!services(true).contains("ntp"));
    assert!(served_upstream(&c).is_err(), "NTP should be blocked again");
    assert_idempotent(&c, &client_only);

    // An ntp service the administrator added is theirs: not closed.
    c.exec_ok(&["firewall-cmd", "--add-service=ntp"]);
    c.exec_ok(&["firewall-cmd", "--permanent", "--add-service=ntp"]);
    let (code, stdout, _) = plan(&c, &client_only);
    assert_eq!(code, 0, "{stdout}");
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn nftables_backend_in_the_containers_namespace() {
    let c = boot(true);
    let _upstream = upstream_peer(&c);
    // The container's own firewall: drop by default.
    drop_by_default_firewall(&c);
    let serve = "  serve: { allow: [192.0.2.0/24] }\n  firewall: nftables\n";
    let spec = put_spec(&c, "serve", &chrony_spec("192.0.2.2", 123, serve));
    let client_only = put_spec(
        &c,
        "client",
        &chrony_spec("192.0.2.2", 123, "  firewall: nftables\n"),
    );
    let p = plan_json(&c, &spec);
    assert!(
        summaries(&p).contains(
            &"open UDP 123 in nftables: nft insert rule inet filter input udp dport 123 accept comment \"timectl: NTP (UDP 123)\"".to_string()
        ),
        "{:?}",
        summaries(&p)
    );
    converge(&c, &spec, "serve time, nftables rule");
    let ruleset = c.netns().nft_ruleset().to_string();
    assert_eq!(ruleset.matches("timectl: NTP (UDP 123)").count(), 1);
    wait_for(
        "the container's chronyd to serve through nftables",
        Duration::from_secs(15),
        || served_upstream(&c),
    );
    assert_idempotent(&c, &spec);

    converge(&c, &client_only, "stop serving, nftables rule removed");
    let ruleset = c.netns().nft_ruleset().to_string();
    assert!(!ruleset.contains("timectl: NTP"), "{ruleset}");
    assert!(ruleset.contains("\"policy\":\"drop\""), "{ruleset}");
    assert!(served_upstream(&c).is_err(), "NTP should be blocked again");
    assert_idempotent(&c, &client_only);
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn failing_start_rolls_back_to_the_old_daemon() {
    let c = boot(true);
    let _upstream = upstream_peer(&c);
    let ntpd = put_spec(&c, "ntpd", &ntpd_spec(""));
    converge(&c, &ntpd, "fresh host -> ntpd (ntpsec)");
    let ntp_conf = c.read_file("/etc/ntpsec/ntp.conf");

    // chronyd -p accepts this config, chronyd itself cannot start with it.
    let broken = put_spec(
        &c,
        "broken",
        &chrony_spec(
            "192.0.2.2",
            123,
            "  extraConfig: \"pidfile /nonexistent/dir/chronyd.pid\"\n",
        ),
    );
    let failed = apply(&c, &broken);
    record_timing("apply failing chrony start + rollback", failed.took);
    assert_eq!(failed.out.status.code(), Some(1), "{}", failed.context());
    assert_eq!(failed.outcome(), "rolled-back", "{}", failed.context());
    let error = failed.report["error"].as_str().unwrap_or("");
    assert!(error.contains("start chrony.service"), "{error}");
    assert!(error.contains("Result=exit-code"), "{error}");
    assert!(
        error.contains("Could not open /nonexistent/dir/chronyd.pid"),
        "the journal lines say why: {error}"
    );
    assert_eq!(failed.report["not_restored"], serde_json::json!([]));
    let statuses: Vec<&str> = failed.report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses.last(), Some(&"failed"), "{statuses:?}");
    assert!(
        statuses[..statuses.len() - 1]
            .iter()
            .all(|s| *s == "undone"),
        "{statuses:?}"
    );

    // The old daemon runs again, with its config, and its package is back.
    assert_eq!(
        unit(&c, "ntpsec.service"),
        ("active".into(), "enabled".into())
    );
    assert_eq!(c.package_status("ntpsec"), "installed");
    assert_ne!(c.package_status("chrony"), "installed");
    assert_eq!(c.read_file("/etc/ntpsec/ntp.conf"), ntp_conf);
    let (code, stdout, _) = plan(&c, &ntpd);
    assert_eq!(code, 0, "the host is as before:\n{stdout}");

    // A config chronyd's own parser rejects is never installed.
    let invalid = put_spec(
        &c,
        "invalid",
        &chrony_spec("192.0.2.2", 123, "  extraConfig: \"notadirective 1\"\n"),
    );
    let rejected = apply(&c, &invalid);
    assert_eq!(rejected.outcome(), "rolled-back", "{}", rejected.context());
    let error = rejected.report["error"].as_str().unwrap_or("");
    assert!(error.contains("rejected by `chronyd -p -f {}`"), "{error}");
    assert!(error.contains("Invalid directive"), "{error}");
    assert!(
        !error.contains(".timectl-"),
        "the temporary name is not shown: {error}"
    );
    assert_eq!(
        unit(&c, "ntpsec.service"),
        ("active".into(), "enabled".into())
    );
    let (code, stdout, _) = plan(&c, &ntpd);
    assert_eq!(code, 0, "{stdout}");
    assert_idempotent(&c, &ntpd);
}

/// The systemd backend itself, from the host over the container's bus.
#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn systemd_backend_over_the_containers_bus() {
    use timectl::host::systemd::Systemd;
    use timectl::host::{Activity, Enablement, ServiceManager};

    let c = boot(false);
    let systemd = Systemd::connect_to(&c.bus_address()).expect("systemd over D-Bus");
    c.write_file(
        "/etc/systemd/system/timectl-test-condition.service",
        "[Unit]\nConditionPathExists=/nonexistent\n[Service]\nExecStart=/bin/sleep 60\n[Install]\nWantedBy=multi-user.target\n",
    );
    c.write_file(
        "/etc/systemd/system/timectl-test-exit.service",
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 3'\n",
    );
    c.write_file(
        "/usr/lib/systemd/system/timectl-test-ok.service",
        "[Service]\nExecStart=/bin/sleep 600\n[Install]\nWantedBy=multi-user.target\nAlias=timectl-test-alias.service\n",
    );
    systemd.reload().expect("daemon reload");

    // "Started" but not running: the error says which condition failed.
    let err = systemd
        .start("timectl-test-condition.service")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not running"), "{err}");
    assert!(err.contains("ConditionPathExists=/nonexistent"), "{err}");
    let err = systemd
        .start("timectl-test-exit.service")
        .unwrap_err()
        .to_string();
    assert!(err.contains("Result=exit-code, exit status 3"), "{err}");

    // Start, observe, enable through an alias, stop.
    let ok = "timectl-test-ok.service";
    let status = systemd.status(ok).expect("status");
    assert_eq!(status.enablement, Enablement::Disabled);
    assert_eq!(status.activity, Some(Activity::Inactive));
    systemd.start(ok).expect("start");
    assert_eq!(c.unit_property(ok, "ActiveState"), "active");
    systemd.enable(ok).expect("enable");
    // On disk at once; systemd's own view (the UnitFileState property)
    // catches up at the reload owed, before the next job or at the end.
    assert_eq!(is_enabled(&c, ok), "enabled");
    let alias = systemd
        .status("timectl-test-alias.service")
        .expect("alias status");
    assert_eq!(alias.name, ok, "an alias resolves to its unit");
    assert_eq!(alias.enablement, Enablement::Enabled);
    systemd.stop(ok).expect("stop");
    assert_eq!(c.unit_property(ok, "ActiveState"), "inactive");
    systemd.disable(ok).expect("disable");
    assert_eq!(is_enabled(&c, ok), "disabled");

    // Mask and unmask; a masked unit cannot start, and says so.
    systemd.mask(ok).expect("mask");
    assert_eq!(
        systemd.status(ok).expect("status").enablement,
        Enablement::Masked
    );
    assert!(systemd.start(ok).is_err());
    systemd.unmask(ok).expect("unmask");
    assert_eq!(
        systemd.status(ok).expect("status").enablement,
        Enablement::Disabled
    );

    // Units that do not exist: not-found, and stopping one is no change.
    let missing = systemd
        .status("timectl-test-missing.service")
        .expect("status");
    assert_eq!(missing.enablement, Enablement::NotFound);
    systemd
        .stop("timectl-test-missing.service")
        .expect("stopping a missing unit");

    // The reload owed after a unit-file change is made when the backend is
    // dropped (the end of an apply): systemd's own view is current then.
    systemd.enable(ok).expect("enable");
    assert_eq!(
        systemd.status(ok).expect("status").enablement,
        Enablement::Enabled
    );
    drop(systemd);
    assert_eq!(c.unit_property(ok, "UnitFileState"), "enabled");
    assert_eq!(c.unit_property(ok, "NeedDaemonReload"), "no");
}

/// `systemctl is-enabled UNIT` in the container: the unit file's state on
/// disk (it may print "disabled" and exit 1).
fn is_enabled(c: &Container, unit: &str) -> String {
    text(&c.exec(&["systemctl", "is-enabled", unit]).stdout)
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn enabled_timesyncd_is_masked_with_conflicts_mask() {
    let c = boot(false);
    let _peer = loopback_peer(&c);
    // A host where systemd-timesyncd is installed and enabled (it does not
    // run in a container: ConditionVirtualization=!container).
    c.exec_ok(&["systemctl", "unmask", "systemd-timesyncd.service"]);
    c.apt_get(&["install", "systemd-timesyncd"]);
    assert_eq!(
        c.unit_property("systemd-timesyncd.service", "UnitFileState"),
        "enabled"
    );
    let spec = put_spec(
        &c,
        "mask",
        &chrony_spec("127.0.0.1", 11123, "  conflicts: mask\n"),
    );
    let p = plan_json(&c, &spec);
    let steps = summaries(&p);
    assert_eq!(
        &steps[..3],
        [
            "disable systemd-timesyncd.service",
            "mask systemd-timesyncd.service",
            "install package chrony (the package manager will REMOVE systemd-timesyncd)",
        ],
        "{steps:?}"
    );
    converge(&c, &spec, "timesyncd masked -> chrony");
    assert_eq!(
        c.unit_property("systemd-timesyncd.service", "LoadState"),
        "masked"
    );
    assert_ne!(c.package_status("systemd-timesyncd"), "installed");
    assert_eq!(
        unit(&c, "chrony.service"),
        ("active".into(), "enabled".into())
    );
    assert_idempotent(&c, &spec);
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn not_synchronised_in_time_fails_with_the_reason() {
    let c = boot(false);
    // No server answers on this port.
    let spec = put_spec(
        &c,
        "silent",
        &chrony_spec("127.0.0.1", 11124, "").replace("within: 30s", "within: 3s"),
    );
    let failed = apply(&c, &spec);
    record_timing(
        "apply with an unreachable source (verify times out)",
        failed.took,
    );
    assert_eq!(failed.out.status.code(), Some(1), "{}", failed.context());
    let error = failed.report["error"].as_str().unwrap_or("");
    assert!(
        error.contains("not synchronised within 3s") && error.contains("Not synchronised"),
        "{error}"
    );
    assert_eq!(failed.report["verify"]["synchronized"], false);
    assert!(failed.took >= Duration::from_secs(3));
    // Today a failed verification rolls back (docs/live-hosts.md discusses
    // whether it should on a host that had no daemon before).
    assert_eq!(failed.outcome(), "rolled-back", "{}", failed.context());
    assert_eq!(c.package_status("chrony"), "config-files");

    // verify.rollback: false keeps the changes and still exits 1.
    let keep = put_spec(
        &c,
        "silent-keep",
        &chrony_spec("127.0.0.1", 11124, "").replace("within: 30s", "within: 3s, rollback: false"),
    );
    let kept = apply(&c, &keep);
    assert_eq!(kept.out.status.code(), Some(1), "{}", kept.context());
    assert_eq!(kept.outcome(), "verify-failed", "{}", kept.context());
    assert_eq!(c.package_status("chrony"), "installed");
    assert_eq!(
        unit(&c, "chrony.service"),
        ("active".into(), "enabled".into())
    );
    let conf = c.read_file("/etc/chrony/chrony.conf");
    assert!(conf.contains("server 127.0.0.1 port 11124"), "{conf}");
}

/// A `timectl daemon` for the engine probe test; killed on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The embedded engine's probe reads its control socket: synchronised to
/// an upstream engine, with source, stratum and offset, and a forced step
/// that the engine refuses without clock control (saying by how much it
/// would have stepped). Plain test: loopback only, no root, and both
/// engines run with --no-clock-control and TIMECTL_NO_CLOCK_CONTROL=1.
#[test]
fn engine_probe_reads_the_control_socket() {
    use std::process::{Command, Stdio};

    let root = tempfile::tempdir().expect("root");
    let socket = root.path().join("run/timectl/engine.sock");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let daemon = |args: &[&str], control: &std::path::Path| {
        Daemon(
            Command::new(env!("CARGO_BIN_EXE_timectl"))
                .arg("daemon")
                .args(args)
                .arg("--no-clock-control")
                .arg("--control")
                .arg(control)
                .env("TIMECTL_NO_CLOCK_CONTROL", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start timectl daemon"),
        )
    };
    let address = format!("127.0.0.1:{port}");
    let _upstream = daemon(
        &["--listen", &address, "--local-stratum", "9"],
        &root.path().join("upstream.sock"),
    );
    let _engine = daemon(&["--source", &address], &socket);

    let host = timectl::host::Host::offline(root.path());
    let probe =
        timectl::sync::probe_for(&host, timectl::spec::ProviderKind::Embedded).expect("probe");
    // Asked at once, as apply does right after starting the engine: the
    // probe waits for the engine's first estimate, so the refusal is about
    // clock control (and by how much), not "no offset estimate yet".
    let step = probe.step_now().unwrap_err().to_string();
    assert!(
        step.contains("did not step the clock")
            && step.contains("clock control is off; would step the clock by"),
        "{step}"
    );
    let status = wait_for(
        "the engine to synchronise",
        Duration::from_secs(15),
        || match probe.status() {
            Ok(s) if s.synchronized => Ok(s),
            Ok(s) => Err(s.describe()),
            Err(e) => Err(e.to_string()),
        },
    );
    assert_eq!(status.stratum, Some(10));
    assert_eq!(status.source.as_deref(), Some(address.as_str()));
    assert!(
        status.offset_seconds.is_some_and(|o| o.abs() < 0.01),
        "{status:?}"
    );
}
