//! Proves the system-test harness (tests/support, ci/testhost) against the
//! real thing: systemd in nspawn containers, apt switching chrony and ntpsec
//! offline, chronyd and ntpdig peers, firewalld on a private bus, nftables in
//! a network namespace, and cleanup that leaves nothing behind.
//!
//! The #[ignore]d tests need root and the host tools: run them with
//! `sudo ci/system-tests.sh`. The others run in plain `cargo test`.

mod support;

use std::time::{Duration, Instant};

use support::{
    ChronyPeer, ChronySource, ChronyTracking, Container, ContainerOptions, NetNs, PrivateFirewalld,
    leftovers, ntpdig, record_timing, require_root_and, wait_for,
};

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// ActiveState of `unit` read over the container's system bus from the host,
/// the way timectl's systemd backend talks to systemd.
async fn active_state_over_dbus(address: &str, unit: &str) -> zbus::Result<String> {
    let conn = zbus::connection::Builder::address(address).build().await?;
    let manager = zbus::Proxy::new(
        &conn,
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
    )
    .await?;
    let path: zbus::OwnedObjectPath = manager.call("LoadUnit", &(unit,)).await?;
    let unit = zbus::Proxy::new(
        &conn,
        "org.freedesktop.systemd1",
        path,
        "org.freedesktop.systemd1.Unit",
    )
    .await?;
    unit.get_property("ActiveState").await
}

/// The effective capability mask of `pid` inside `c`.
fn cap_eff(c: &Container, pid: &str) -> u64 {
    let status = c.read_file(&format!("/proc/{pid}/status"));
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff line");
    u64::from_str_radix(hex.trim(), 16).expect("hex mask")
}

const CAP_SYS_TIME_BIT: u64 = 1 << 25;

fn chrony_sources_in(c: &Container) -> Result<Vec<ChronySource>, String> {
    let out = c.exec(&["chronyc", "-n", "-c", "sources"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    ChronySource::parse_csv(&String::from_utf8_lossy(&out.stdout))
}

fn wait_selected(c: &Container, address: &str, timeout: Duration) -> ChronySource {
    wait_for(
        &format!("the container's chronyd to select {address} (^*)"),
        timeout,
        || {
            let sources = chrony_sources_in(c)?;
            sources
                .iter()
                .find(|s| s.address == address && s.selected())
                .cloned()
                .ok_or_else(|| format!("{sources:?}"))
        },
    )
}

const CHRONY_CONF: &str = "\
# written by testhost_smoke: one loopback server on the peer's port
server 127.0.0.1 port 11123 iburst minpoll -2 maxpoll 0
driftfile /var/lib/chrony/chrony.drift
makestep 1 3
";

const NTP_CONF: &str = "\
# written by testhost_smoke: the upstream chronyd on the uplink
driftfile /var/lib/ntpsec/ntp.drift
server 192.0.2.2 iburst minpoll 0 maxpoll 1
restrict default kod nomodify nopeer noquery limited
restrict 127.0.0.1
restrict ::1
";

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn container_boots_installs_and_switches_time_daemons() {
    require_root_and(&[
        "systemd-nspawn",
        "mmdebstrap",
        "busctl",
        "nsenter",
        "setpriv",
        "chronyd",
        "chronyc",
        "ntpdig",
    ]);
    let c = Container::boot_with(ContainerOptions {
        uplink: true,
        ..ContainerOptions::default()
    });
    record_timing("image (cache lookup)", c.timings().image);
    record_timing("boot to running", c.timings().boot);

    // A real systemd, up and healthy.
    let state = c.systemctl(&["is-system-running"]);
    let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
    assert!(
        state == "running" || state == "degraded",
        "is-system-running inside: {state}"
    );

    // Its bus from the host, as timectl's systemd backend will use it.
    let dbus_state = tokio_rt()
        .block_on(active_state_over_dbus(&c.bus_address(), "dbus.service"))
        .expect("ActiveState over the container's bus");
    assert_eq!(dbus_state, "active");
    let chrony_state = tokio_rt()
        .block_on(active_state_over_dbus(&c.bus_address(), "chrony.service"))
        .expect("ActiveState of a unit that is not installed");
    assert_eq!(chrony_state, "inactive");

    // A fresh host: no time daemon installed, timesyncd masked, firewalld off.
    assert_eq!(c.package_status("chrony"), "not-installed");
    assert_eq!(c.package_status("ntpsec"), "not-installed");
    assert_eq!(
        c.unit_property("systemd-timesyncd.service", "LoadState"),
        "masked"
    );
    assert_eq!(
        c.unit_property("firewalld.service", "UnitFileState"),
        "disabled"
    );
    assert_eq!(
        c.unit_property("firewalld.service", "ActiveState"),
        "inactive"
    );

    // Commands inside run without CAP_SYS_TIME.
    assert_eq!(
        cap_eff(&c, "self") & CAP_SYS_TIME_BIT,
        0,
        "exec has CAP_SYS_TIME"
    );

    // The bind-mounted binary under test is there and runs.
    let out = c.timectl(&["--help"]);
    assert!(out.status.success(), "/opt/timectl/timectl --help: {out:?}");

    // chrony from the offline repository, started by its package.
    let t = Instant::now();
    c.apt_get(&["install", "chrony"]);
    record_timing("apt-get install chrony", t.elapsed());
    assert_eq!(c.package_status("chrony"), "installed");
    c.wait_unit_state("chrony.service", "active", Duration::from_secs(10));
    let pid = c.unit_property("chrony.service", "MainPID");
    assert_eq!(
        cap_eff(&c, &pid) & CAP_SYS_TIME_BIT,
        0,
        "chronyd has CAP_SYS_TIME"
    );
    let cmdline = c
        .read_file(&format!("/proc/{pid}/cmdline"))
        .replace('\0', " ");
    assert!(
        cmdline.contains(" -x"),
        "chronyd runs without -x: {cmdline}"
    );
    let tracking = ChronyTracking::parse_csv(&c.exec_ok(&["chronyc", "-n", "-c", "tracking"]))
        .expect("chronyc tracking inside");
    assert!(
        !tracking.synchronised(),
        "synchronised with no source: {tracking:?}"
    );

    // A host-side chronyd in the container's namespace is its server on the
    // shared loopback.
    let peer = ChronyPeer::builder().port(11123).netns(c.netns()).start();
    c.write_file("/etc/chrony/chrony.conf", CHRONY_CONF);
    c.exec_ok(&["systemctl", "restart", "chrony.service"]);
    let t = Instant::now();
    let selected = wait_selected(&c, "127.0.0.1", Duration::from_secs(10));
    record_timing("container chronyd selects loopback peer", t.elapsed());
    assert_eq!(selected.stratum, 8);
    let tracking = ChronyTracking::parse_csv(&c.exec_ok(&["chronyc", "-n", "-c", "tracking"]))
        .expect("tracking");
    assert_eq!(tracking.stratum, 9, "{tracking:?}");
    assert!(tracking.synchronised(), "{tracking:?}");
    // The peer saw the container as a client.
    let clients = peer.chronyc(&["-c", "clients"]);
    assert!(clients.contains("127.0.0.1"), "peer clients: {clients}");

    // Switch to ntpsec: the packages conflict, so apt removes chrony.
    let t = Instant::now();
    let apt = c.apt_get(&["install", "ntpsec"]);
    record_timing("apt-get switch chrony -> ntpsec", t.elapsed());
    assert!(
        apt.contains("Removing chrony"),
        "apt did not remove chrony:\n{apt}"
    );
    assert_eq!(c.package_status("chrony"), "config-files");
    assert_eq!(c.package_status("ntpsec"), "installed");
    c.wait_unit_state("ntpsec.service", "active", Duration::from_secs(10));
    assert_eq!(c.unit_property("chrony.service", "ActiveState"), "inactive");

    // ntpd can only talk to port 123, so its server lives upstream.
    let upstream = ChronyPeer::builder()
        .port(123)
        .bind("192.0.2.2")
        .allow("192.0.2.0/24")
        .netns(c.uplink().netns())
        .start();
    c.write_file("/etc/ntpsec/ntp.conf", NTP_CONF);
    c.exec_ok(&["systemctl", "restart", "ntpsec.service"]);
    c.wait_unit_state("ntpsec.service", "active", Duration::from_secs(10));
    let pid = c.unit_property("ntpsec.service", "MainPID");
    assert_eq!(
        cap_eff(&c, &pid) & CAP_SYS_TIME_BIT,
        0,
        "ntpd has CAP_SYS_TIME"
    );

    // ntpdig from the container's namespace gets an answer from ntpd on port
    // 123 once ntpd has synchronised to the upstream peer (stratum 8 + 1).
    let t = Instant::now();
    let reply = wait_for(
        "ntpd in the container to answer ntpdig as a synchronised server",
        Duration::from_secs(40),
        || ntpdig(Some(c.netns()), "127.0.0.1"),
    );
    record_timing("ntpd synchronised and answering ntpdig", t.elapsed());
    assert_eq!(reply.stratum, 9, "{reply:?}");
    assert_eq!(reply.ip, "127.0.0.1");
    assert!(!reply.adjusted);
    assert!(reply.offset.abs() < 0.1, "offset {}", reply.offset);
    // The same server seen from upstream, across the veth link.
    let across = ntpdig(Some(c.uplink().netns()), "192.0.2.1").expect("ntpdig across the uplink");
    assert_eq!(across.stratum, 9);
    drop(upstream);

    // And back: ntpsec -> chrony, the config written earlier is kept.
    let t = Instant::now();
    let apt = c.apt_get(&["install", "chrony"]);
    record_timing("apt-get switch ntpsec -> chrony", t.elapsed());
    assert!(
        apt.contains("Removing ntpsec"),
        "apt did not remove ntpsec:\n{apt}"
    );
    c.wait_unit_state("chrony.service", "active", Duration::from_secs(10));
    wait_selected(&c, "127.0.0.1", Duration::from_secs(10));
    drop(peer);

    let name = c.name().to_string();
    let nspawn_pid = c.nspawn_pid();
    let leader_pid = c.leader_pid();
    let took = c.poweroff();
    record_timing("poweroff and cleanup", took);
    assert_eq!(leftovers(&name), Vec::<String>::new());
    assert!(!std::path::Path::new(&format!("/proc/{nspawn_pid}")).exists());
    assert!(!std::path::Path::new(&format!("/proc/{leader_pid}")).exists());
    assert!(!std::path::Path::new(&format!("/run/netns/{name}-up")).exists());
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn two_containers_run_at_once_without_seeing_each_other() {
    require_root_and(support::CONTAINER_TOOLS);
    let t = Instant::now();
    let a = Container::boot();
    let b = Container::boot();
    record_timing("boot two containers", t.elapsed());
    assert_ne!(a.leader_pid(), b.leader_pid());

    // The same unit name in both: each manager only knows and controls its
    // own. With a shared cgroup, stopping B's unit would kill A's process.
    let run_probe = |c: &Container| {
        c.exec_ok(&[
            "systemd-run",
            "--unit=timectl-probe",
            "--service-type=exec",
            "sleep",
            "600",
        ])
    };
    run_probe(&a);
    assert_eq!(
        b.unit_property("timectl-probe.service", "ActiveState"),
        "inactive"
    );
    run_probe(&b);
    let b_pid = b.unit_property("timectl-probe.service", "MainPID");
    let a_pid = a.unit_property("timectl-probe.service", "MainPID");
    b.exec_ok(&["systemctl", "stop", "timectl-probe.service"]);
    assert_eq!(
        b.unit_property("timectl-probe.service", "ActiveState"),
        "inactive"
    );
    assert_eq!(
        a.unit_property("timectl-probe.service", "ActiveState"),
        "active"
    );
    assert_eq!(a.unit_property("timectl-probe.service", "MainPID"), a_pid);
    assert_ne!(a_pid, "0");
    assert_ne!(b_pid, "0");

    // Each sees only its own processes and has its own loopback.
    let a_sleeps = a.exec(&["pgrep", "-x", "sleep"]);
    assert_eq!(String::from_utf8_lossy(&a_sleeps.stdout).lines().count(), 1);
    let b_sleeps = b.exec(&["pgrep", "-x", "sleep"]);
    assert_eq!(String::from_utf8_lossy(&b_sleeps.stdout).lines().count(), 0);
    let _peer = ChronyPeer::builder().port(11123).netns(a.netns()).start();
    let b_ports = b.netns().run_ok(&["ss", "-Hunl"]);
    assert!(!b_ports.contains(":11123"), "B sees A's port: {b_ports}");
    let a_ports = a.netns().run_ok(&["ss", "-Hunl"]);
    assert!(
        a_ports.contains("127.0.0.1:11123"),
        "A's peer missing: {a_ports}"
    );

    // Both also have their own cgroup subtree on the host.
    for c in [&a, &b] {
        for root in support::cgroup_roots() {
            let dir = root.join("timectl").join(c.name());
            assert!(dir.is_dir(), "{} missing", dir.display());
        }
    }
    let (an, bn) = (a.name().to_string(), b.name().to_string());
    let t = Instant::now();
    drop(a);
    drop(b);
    record_timing("poweroff two containers", t.elapsed());
    assert_eq!(leftovers(&an), Vec::<String>::new());
    assert_eq!(leftovers(&bn), Vec::<String>::new());
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn a_panicking_test_leaves_no_container_behind() {
    require_root_and(support::CONTAINER_TOOLS);
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = Container::boot();
        *seen.lock().expect("lock") = Some((c.name().to_string(), c.nspawn_pid(), c.leader_pid()));
        panic!("deliberate panic while a container is up");
    }));
    assert!(result.is_err());
    let (name, nspawn_pid, leader_pid) = seen.lock().expect("lock").clone().expect("booted");
    assert_eq!(leftovers(&name), Vec::<String>::new());
    assert!(!std::path::Path::new(&format!("/proc/{nspawn_pid}")).exists());
    assert!(!std::path::Path::new(&format!("/proc/{leader_pid}")).exists());
}

#[test]
#[ignore = "needs root, systemd-nspawn and the test image; run ci/system-tests.sh"]
fn firewall_backends_work_inside_a_container() {
    require_root_and(&[support::CONTAINER_TOOLS, &["nft", "firewall-cmd"]].concat());
    let c = Container::boot();

    // nftables inside the container (it needs CAP_NET_ADMIN there), seen from
    // the host through the shared network namespace.
    c.exec_ok(&["nft", "add", "table", "inet", "timectl_probe"]);
    let ruleset = c.netns().nft_ruleset();
    let tables: Vec<&str> = ruleset["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|i| i["table"]["name"].as_str())
        .collect();
    assert!(tables.contains(&"timectl_probe"), "{tables:?}");

    // firewalld is installed but disabled in the image; started, it manages
    // the container's nftables and answers on the container's bus.
    c.exec_ok(&["systemctl", "start", "firewalld.service"]);
    c.wait_unit_state("firewalld.service", "active", Duration::from_secs(15));
    let cmd = |args: &[&str]| {
        support::run(
            std::process::Command::new("firewall-cmd")
                .args(args)
                .env("DBUS_SYSTEM_BUS_ADDRESS", c.bus_address()),
        )
    };
    wait_for(
        "firewalld in the container to run",
        Duration::from_secs(15),
        || {
            let out = cmd(&["--state"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );
    let out = cmd(&["--add-service=ntp"]);
    assert!(
        out.status.success(),
        "firewall-cmd --add-service=ntp: {out:?}"
    );
    assert!(
        has_udp_123_rule(&c.netns().nft_ruleset(), Some("firewalld"), "accept"),
        "no udp dport 123 accept rule from firewalld"
    );
    let journal = c.exec_ok(&["journalctl", "--no-pager", "-u", "firewalld.service"]);
    assert!(
        !journal.contains("ERROR"),
        "firewalld logged errors:\n{journal}"
    );
}

/// firewalld's zone interface over a private system bus.
async fn firewalld_add_ntp(address: &str) -> zbus::Result<(String, Vec<String>, zbus::Error)> {
    let conn = zbus::connection::Builder::address(address).build().await?;
    let zone = zbus::Proxy::new(
        &conn,
        "org.fedoraproject.FirewallD1",
        "/org/fedoraproject/FirewallD1",
        "org.fedoraproject.FirewallD1.zone",
    )
    .await?;
    // "" = the default zone; timeout 0 = until reload.
    let zone_name: String = zone.call("addService", &("", "ntp", 0i32)).await?;
    let services: Vec<String> = zone.call("getServices", &(zone_name.as_str(),)).await?;
    let again = zone
        .call::<_, _, String>("addService", &("", "ntp", 0i32))
        .await
        .expect_err("adding ntp twice must fail with ALREADY_ENABLED");
    Ok((zone_name, services, again))
}

/// Whether an nft JSON ruleset has a rule in `family`/`table` matching
/// `udp dport 123` with the given verdict ("accept" or "drop").
fn has_udp_123_rule(ruleset: &serde_json::Value, table: Option<&str>, verdict: &str) -> bool {
    let items = ruleset["nftables"].as_array().cloned().unwrap_or_default();
    items.iter().filter_map(|i| i.get("rule")).any(|rule| {
        if table.is_some_and(|t| rule["table"] != t) {
            return false;
        }
        let expr = rule["expr"].as_array().cloned().unwrap_or_default();
        let matches_port = expr.iter().any(|e| {
            let m = &e["match"];
            m["left"]["payload"]["protocol"] == "udp"
                && m["left"]["payload"]["field"] == "dport"
                && m["right"] == 123
        });
        matches_port && expr.iter().any(|e| e.get(verdict).is_some())
    })
}

#[test]
#[ignore = "needs root, firewalld and dbus-daemon; run ci/system-tests.sh"]
fn private_firewalld_opens_ntp_over_dbus() {
    require_root_and(&[
        "firewalld",
        "firewall-cmd",
        "dbus-daemon",
        "busctl",
        "nft",
        "ip",
    ]);
    let t = Instant::now();
    let fw = PrivateFirewalld::start();
    record_timing("private firewalld ready", t.elapsed());
    let before = fw.netns().nft_ruleset();
    assert!(
        !has_udp_123_rule(&before, None, "accept"),
        "udp 123 open before adding ntp"
    );

    let (zone, services, again) = tokio_rt()
        .block_on(firewalld_add_ntp(fw.bus_address()))
        .unwrap_or_else(|e| panic!("firewalld over D-Bus: {e}\n{}", fw.log()));
    assert_eq!(zone, "public");
    assert!(services.contains(&"ntp".to_string()), "{services:?}");
    assert!(
        again.to_string().contains("ALREADY_ENABLED"),
        "second addService: {again}"
    );

    // The runtime rule is real nftables in firewalld's namespace.
    let after = fw.netns().nft_ruleset();
    assert!(
        has_udp_123_rule(&after, Some("firewalld"), "accept"),
        "no udp dport 123 accept rule: {after}"
    );

    // Permanent configuration lands in the --system-config directory.
    let out = fw.firewall_cmd(&["--permanent", "--zone=public", "--add-service=ntp"]);
    assert!(out.status.success(), "firewall-cmd --permanent: {out:?}");
    let zone_file = fw.config_dir().join("zones/public.xml");
    let xml = std::fs::read_to_string(&zone_file)
        .unwrap_or_else(|e| panic!("{}: {e}", zone_file.display()));
    assert!(xml.contains(r#"<service name="ntp"/>"#), "{xml}");
    let listed = fw.firewall_cmd(&["--zone=public", "--list-services"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("ntp"));

    let ns = fw.netns().name().to_string();
    drop(fw);
    assert!(!std::path::Path::new("/run/netns").join(&ns).exists());
}

#[test]
#[ignore = "needs root, nft, chronyd and ntpdig; run ci/system-tests.sh"]
fn nftables_rule_in_a_netns_really_filters_ntp() {
    require_root_and(&["nft", "ip", "chronyd", "chronyc", "ntpdig"]);
    let ns = NetNs::new();
    let server = ChronyPeer::builder().port(123).netns(&ns).start();
    let reply = ntpdig(Some(&ns), "127.0.0.1").expect("ntpdig before the rule");
    assert_eq!(reply.stratum, 8);

    ns.run_ok(&["nft", "add", "table", "inet", "timectl_test"]);
    ns.run_ok(&[
        "nft",
        "add",
        "chain",
        "inet",
        "timectl_test",
        "input",
        "{ type filter hook input priority 0 ; policy accept ; }",
    ]);
    ns.run_ok(&[
        "nft",
        "add",
        "rule",
        "inet",
        "timectl_test",
        "input",
        "udp",
        "dport",
        "123",
        "drop",
        "comment",
        "\"timectl-test\"",
    ]);
    let ruleset = ns.nft_ruleset();
    assert!(
        has_udp_123_rule(&ruleset, Some("timectl_test"), "drop"),
        "{ruleset}"
    );
    let handle = ruleset["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|i| i.get("rule"))
        .find(|r| r["comment"] == "timectl-test")
        .and_then(|r| r["handle"].as_u64())
        .expect("the rule, with its comment and a handle");
    let err = ntpdig(Some(&ns), "127.0.0.1").expect_err("ntpdig through a drop rule");
    assert!(!err.is_empty());

    ns.run_ok(&[
        "nft",
        "delete",
        "rule",
        "inet",
        "timectl_test",
        "input",
        "handle",
        &handle.to_string(),
    ]);
    assert!(!has_udp_123_rule(
        &ns.nft_ruleset(),
        Some("timectl_test"),
        "drop"
    ));
    ntpdig(Some(&ns), "127.0.0.1").expect("ntpdig after deleting the rule");
    // The host's own ruleset never saw the table.
    let host = support::run(std::process::Command::new("nft").args(["list", "tables"]));
    assert!(!String::from_utf8_lossy(&host.stdout).contains("timectl_test"));
    drop(server);
}

#[test]
#[ignore = "needs root and chronyd; run ci/system-tests.sh"]
fn chrony_client_peer_selects_a_loopback_server() {
    require_root_and(&["chronyd", "chronyc", "ip"]);
    let ns = NetNs::new();
    let server = ChronyPeer::builder().port(11123).netns(&ns).start();
    let t = Instant::now();
    let client = ChronyPeer::client_of("127.0.0.1", 11123).netns(&ns).start();
    let source = client.wait_selected("127.0.0.1", Duration::from_secs(10));
    record_timing("chronyd client selects loopback server", t.elapsed());
    assert_eq!(source.stratum, 8);
    let tracking = client.tracking();
    assert_eq!(tracking.stratum, 9);
    assert!(tracking.synchronised());
    assert!(tracking.system_offset.abs() < 0.001, "{tracking:?}");
    // The server's own view: unsynchronised but serving at local stratum 8.
    assert_eq!(server.tracking().stratum, 8);
    // Only the server listens for NTP: the client has no server socket.
    let udp = ns.run_ok(&["ss", "-Hunl"]);
    assert_eq!(udp.lines().count(), 1, "{udp}");
    assert!(udp.contains("127.0.0.1:11123"), "{udp}");
}

// ---- plain `cargo test`: no root needed ----------------------------------

#[test]
fn chronyc_csv_parsers_read_real_output() {
    // Captured from chronyc 4.3 (`-c tracking`, `-c sources`) on this host.
    let tracking = ChronyTracking::parse_csv(
        "7F000001,127.0.0.1,9,1795806935.086035066,-0.000000012,0.000000286,0.000001431,\
         -3.123,0.004,0.084,0.000040310,0.000013845,0.5,Normal\n",
    )
    .expect("tracking");
    assert_eq!(tracking.ref_id, "7F000001");
    assert_eq!(tracking.ref_name, "127.0.0.1");
    assert_eq!(tracking.stratum, 9);
    assert_eq!(tracking.frequency_ppm, -3.123);
    assert_eq!(tracking.leap, "Normal");
    assert!(tracking.synchronised());

    let unsynced = ChronyTracking::parse_csv(
        "00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,0.000,0.000,0.000,\
         1.000000000,1.000000000,0.0,Not synchronised\n",
    )
    .expect("unsynced tracking");
    assert!(!unsynced.synchronised());

    let sources = ChronySource::parse_csv(
        "^,*,127.0.0.1,8,-2,17,0,-0.000000192,-0.000000784,0.000009628\n\
         ^,?,192.0.2.9,0,0,0,-,0.000000000,0.000000000,0.000000000\n",
    )
    .expect("sources");
    assert_eq!(sources.len(), 2);
    assert!(sources[0].selected());
    assert_eq!(sources[0].reach, 0o17);
    assert_eq!(sources[0].poll, -2);
    assert_eq!(sources[0].last_rx, Some(0));
    assert!(!sources[1].selected());
    assert_eq!(sources[1].last_rx, None);

    assert!(ChronyTracking::parse_csv("506 Cannot talk to daemon").is_err());
    assert!(ChronySource::parse_csv("^,*,127.0.0.1,x,0,0,0,0,0,0").is_err());
}

#[test]
fn missing_prerequisites_fail_with_the_install_command() {
    let err = std::panic::catch_unwind(|| require_root_and(&["timectl-no-such-tool"]))
        .expect_err("a missing tool must fail the test");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("timectl-no-such-tool"), "{msg}");
    assert!(msg.contains("ci/install-deps.sh"), "{msg}");
}
