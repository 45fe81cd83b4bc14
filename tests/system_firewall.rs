//! timectl's firewall backends against the real thing, without a container:
//! the nftables backend against real nftables in a network namespace, the
//! firewalld backend over D-Bus against a real firewalld on a private bus.
//! Each test proves the opening with real NTP traffic: a chronyd server on
//! port 123 behind the firewall, `ntpdig` from a second namespace linked by
//! a veth pair. It gets no answer before timectl opens UDP 123, gets one
//! after, and none again once timectl has closed what it opened.
//!
//! NTS-KE (TCP 4460) the same way with a TCP connection: a listener on
//! SERVER:4460 inside the firewalled namespace, opened by a thread that
//! joins it, and a connect from a thread in the client namespace.
//!
//! Run as root with `ci/system-tests.sh firewall` (all are #[ignore]d).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use support::{ChronyPeer, NetNs, PrivateFirewalld, ntpdig, require_root_and, wait_for};
use timectl::host::firewall::firewalld::Firewalld;
use timectl::host::firewall::nftables::{COMMENT, NTS_KE_COMMENT, Nftables};
use timectl::host::{Firewall, Port};

const SERVER: &str = "192.0.2.1";
const CLIENT: &str = "192.0.2.2";

/// The rules of the namespace's ruleset, as (chain, comment) pairs.
fn rules(ns: &NetNs) -> Vec<(String, String)> {
    ns.nft_ruleset()["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("rule"))
        .map(|r| {
            (
                r["chain"].as_str().unwrap_or("").to_string(),
                r.get("comment")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

fn ours(ns: &NetNs) -> usize {
    with_comment(ns, COMMENT)
}

fn with_comment(ns: &NetNs, comment: &str) -> usize {
    rules(ns).iter().filter(|(_, c)| c == comment).count()
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &Path) -> Result<(), String> {
    let ns = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {}: {e}", path.display()))
}

const NTS_KE_GREETING: &[u8] = b"nts-ke listener\n";

/// A TCP listener on SERVER:4460 inside a namespace, standing in for an
/// NTS-KE server: it greets every connection and closes it. Stopped on
/// Drop.
struct TcpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    fn start(ns: &NetNs) -> TcpServer {
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let bound = enter(&path).and_then(|()| {
                let listener = TcpListener::bind((SERVER, 4460))
                    .map_err(|e| format!("bind {SERVER}:4460: {e}"))?;
                listener
                    .set_nonblocking(true)
                    .map_err(|e| format!("nonblocking: {e}"))?;
                Ok(listener)
            });
            let listener = match bound {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.write_all(NTS_KE_GREETING);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the listener thread answers")
            .expect("the listener binds");
        TcpServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP connection to SERVER:4460 from `client` that the listener
/// answers (within 2 s): Ok when it got through.
fn tcp_connect(client: &NetNs) -> Result<(), String> {
    let path = client.path();
    std::thread::spawn(move || {
        enter(&path)?;
        let addr: SocketAddr = format!("{SERVER}:4460").parse().expect("address");
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut greeting = Vec::new();
        stream
            .read_to_end(&mut greeting)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if greeting == NTS_KE_GREETING {
            Ok(())
        } else {
            Err(format!("unexpected greeting {greeting:?}"))
        }
    })
    .join()
    .map_err(|_| "the client thread panicked".to_string())?
}

fn tcp_reachable(client: &NetNs) -> bool {
    tcp_connect(client).is_ok()
}

/// A chronyd serving NTP on SERVER:123 inside `ns`.
fn ntp_server(ns: &NetNs) -> ChronyPeer {
    ChronyPeer::builder()
        .port(123)
        .bind(SERVER)
        .allow("192.0.2.0/24")
        .netns(ns)
        .start()
}

/// ntpdig from the client namespace: Ok when the server answered.
fn reachable(client: &NetNs) -> bool {
    ntpdig(Some(client), SERVER).is_ok()
}

#[test]
#[ignore = "needs root, nft, ip, chronyd and ntpdig; run ci/system-tests.sh"]
fn nftables_rule_opens_udp_123_once_and_closes_it() {
    require_root_and(&["ip", "nft", "chronyd", "ntpdig", "setpriv"]);
    let server = NetNs::new();
    let client = NetNs::new();
    server.link(&client, &format!("{SERVER}/24"), &format!("{CLIENT}/24"));
    let _chronyd = ntp_server(&server);
    wait_for(
        "the server to answer ntpdig",
        Duration::from_secs(10),
        || ntpdig(Some(&client), SERVER).map(|_| ()),
    );

    // The administrator's firewall: drop by default, loopback and replies
    // allowed, and an output chain timectl must ignore.
    server.run_ok(&[
        "nft",
        "add table inet filter\n\
         add chain inet filter input { type filter hook input priority filter; policy drop; }\n\
         add rule inet filter input iifname \"lo\" accept\n\
         add rule inet filter input ct state established,related accept\n\
         add chain inet filter output { type filter hook output priority filter; policy accept; }",
    ]);
    let admin_rules = rules(&server).len();
    assert!(!reachable(&client), "policy drop should block NTP");

    let nft = Nftables::with_command(
        ["ip", "netns", "exec", server.name(), "nft"]
            .map(String::from)
            .to_vec(),
    );
    let before = nft.observe().expect("observe");
    assert!(!before.ntp_open, "{before:?}");
    assert!(!before.opened_by_timectl);
    assert!(
        before
            .detail
            .contains("inet filter input (policy drop): drops udp/123")
    );
    assert_eq!(
        nft.rule(),
        "nft insert rule inet filter input udp dport 123 accept comment \"timectl: NTP (UDP 123)\""
    );

    nft.open().expect("open");
    assert_eq!(ours(&server), 1);
    // Inserted first, before the administrator's rules, in the input chain.
    assert_eq!(
        rules(&server)[0],
        ("input".to_string(), COMMENT.to_string())
    );
    let after = nft.observe().expect("observe");
    assert!(after.ntp_open && after.opened_by_timectl, "{after:?}");
    assert!(reachable(&client), "the rule should let NTP in");

    // Idempotent: opening what is open adds nothing.
    nft.open().expect("open again");
    assert_eq!(ours(&server), 1);

    nft.close().expect("close");
    assert_eq!(ours(&server), 0);
    assert_eq!(
        rules(&server).len(),
        admin_rules,
        "the administrator's rules stay"
    );
    let closed = nft.observe().expect("observe");
    assert!(!closed.ntp_open && !closed.opened_by_timectl);
    assert!(!reachable(&client), "closed again");

    // A rule the administrator wrote opens NTP too: timectl adds nothing
    // and never removes it.
    server.run_ok(&[
        "nft",
        "insert rule inet filter input udp dport { 123, 323 } accept",
    ]);
    let admin = nft.observe().expect("observe");
    assert!(admin.ntp_open && !admin.opened_by_timectl, "{admin:?}");
    nft.open().expect("open with the admin rule");
    assert_eq!(ours(&server), 0);
    nft.close().expect("close with the admin rule");
    assert!(reachable(&client), "the admin's rule must survive close");
}

#[test]
#[ignore = "needs root, nft and ip; run ci/system-tests.sh"]
fn nftables_without_a_filtering_chain_changes_nothing() {
    require_root_and(&["ip", "nft"]);
    let ns = NetNs::new();
    let nft = Nftables::with_command(
        ["ip", "netns", "exec", ns.name(), "nft"]
            .map(String::from)
            .to_vec(),
    );
    // Empty ruleset: nothing blocks NTP.
    let state = nft.observe().expect("observe");
    assert!(state.ntp_open, "{state:?}");
    assert_eq!(state.detail, "no input chain drops UDP 123");
    nft.open().expect("open");
    assert!(rules(&ns).is_empty());

    // An accept-policy chain with a conditional drop still lets NTP in; a
    // final reject does not.
    ns.run_ok(&[
        "nft",
        "add table ip fw\n\
         add chain ip fw in { type filter hook input priority 0; policy accept; }\n\
         add rule ip fw in ct state invalid drop",
    ]);
    assert!(nft.observe().expect("observe").ntp_open);
    ns.run_ok(&["nft", "add rule ip fw in reject"]);
    let state = nft.observe().expect("observe");
    assert!(!state.ntp_open, "{state:?}");
    nft.open().expect("open");
    assert_eq!(rules(&ns)[0], ("in".to_string(), COMMENT.to_string()));
    assert!(nft.observe().expect("observe").ntp_open);

    // Not root: nft refuses, and that is a permission problem a plan can
    // report, not a crash.
    let nobody = Nftables::with_command(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "nft",
        ]
        .map(String::from)
        .to_vec(),
    );
    let err = nobody.observe().unwrap_err();
    assert!(
        matches!(err, timectl::host::HostError::Permission(_)),
        "{err:?}"
    );
}

#[test]
#[ignore = "needs root, nft and ip; run ci/system-tests.sh"]
fn nftables_rule_opens_tcp_4460_for_nts_ke_once_and_closes_it() {
    require_root_and(&["ip", "nft"]);
    let server = NetNs::new();
    let client = NetNs::new();
    server.link(&client, &format!("{SERVER}/24"), &format!("{CLIENT}/24"));
    let _listener = TcpServer::start(&server);
    wait_for("the listener to answer", Duration::from_secs(5), || {
        tcp_connect(&client)
    });

    // The administrator's firewall: drop by default, loopback and replies
    // allowed, and an output chain timectl must ignore.
    server.run_ok(&[
        "nft",
        "add table inet filter\n\
         add chain inet filter input { type filter hook input priority filter; policy drop; }\n\
         add rule inet filter input iifname \"lo\" accept\n\
         add rule inet filter input ct state established,related accept\n\
         add chain inet filter output { type filter hook output priority filter; policy accept; }",
    ]);
    let admin_rules = rules(&server).len();
    assert!(!tcp_reachable(&client), "policy drop should block TCP 4460");

    let nft = Nftables::with_command(
        ["ip", "netns", "exec", server.name(), "nft"]
            .map(String::from)
            .to_vec(),
    );
    let before = nft.observe_port(Port::NtsKe).expect("observe");
    assert!(!before.ntp_open && !before.opened_by_timectl, "{before:?}");
    assert!(
        before
            .detail
            .contains("inet filter input (policy drop): drops tcp/4460"),
        "{before:?}"
    );
    assert_eq!(
        nft.rule_for(Port::NtsKe),
        "nft insert rule inet filter input tcp dport 4460 accept comment \"timectl: NTS-KE (TCP 4460)\""
    );

    nft.open_port(Port::NtsKe).expect("open");
    assert_eq!(with_comment(&server, NTS_KE_COMMENT), 1);
    assert_eq!(ours(&server), 0, "opening TCP 4460 leaves UDP 123 alone");
    assert_eq!(
        rules(&server)[0],
        ("input".to_string(), NTS_KE_COMMENT.to_string())
    );
    let after = nft.observe_port(Port::NtsKe).expect("observe");
    assert!(after.ntp_open && after.opened_by_timectl, "{after:?}");
    assert!(
        !nft.observe().expect("observe").ntp_open,
        "UDP 123 is still closed"
    );
    assert!(tcp_reachable(&client), "the rule should let NTS-KE in");

    // Idempotent: opening what is open adds nothing.
    nft.open_port(Port::NtsKe).expect("open again");
    assert_eq!(with_comment(&server, NTS_KE_COMMENT), 1);

    // Both open; closing TCP 4460 keeps UDP 123's rule.
    nft.open().expect("open UDP 123");
    assert_eq!(ours(&server), 1);
    nft.close_port(Port::NtsKe).expect("close");
    assert_eq!(with_comment(&server, NTS_KE_COMMENT), 0);
    assert_eq!(ours(&server), 1);
    let closed = nft.observe_port(Port::NtsKe).expect("observe");
    assert!(!closed.ntp_open && !closed.opened_by_timectl, "{closed:?}");
    assert!(!tcp_reachable(&client), "closed again");
    nft.close().expect("close UDP 123");
    assert_eq!(
        rules(&server).len(),
        admin_rules,
        "the administrator's rules stay"
    );

    // A rule the administrator wrote opens NTS-KE too: timectl adds nothing
    // and never removes it.
    server.run_ok(&[
        "nft",
        "insert rule inet filter input tcp dport { 443, 4460 } accept",
    ]);
    let admin = nft.observe_port(Port::NtsKe).expect("observe");
    assert!(admin.ntp_open && !admin.opened_by_timectl, "{admin:?}");
    nft.open_port(Port::NtsKe)
        .expect("open with the admin rule");
    assert_eq!(with_comment(&server, NTS_KE_COMMENT), 0);
    nft.close_port(Port::NtsKe)
        .expect("close with the admin rule");
    assert!(
        tcp_reachable(&client),
        "the admin's rule must survive close"
    );

    // A drop of the port before the admin's accept closes it again, and
    // timectl's rule goes first.
    server.run_ok(&["nft", "insert rule inet filter input tcp dport 4460 drop"]);
    assert!(!tcp_reachable(&client));
    assert!(!nft.observe_port(Port::NtsKe).expect("observe").ntp_open);
    nft.open_port(Port::NtsKe).expect("open past the drop");
    assert!(tcp_reachable(&client));
    nft.close_port(Port::NtsKe).expect("close");
    assert!(!tcp_reachable(&client));
}

#[test]
#[ignore = "needs root, firewalld, dbus-daemon, chronyd and ntpdig; run ci/system-tests.sh"]
fn firewalld_service_added_runtime_and_permanent_once() {
    require_root_and(&[
        "ip",
        "firewalld",
        "firewall-cmd",
        "dbus-daemon",
        "chronyd",
        "ntpdig",
    ]);
    let fw = PrivateFirewalld::start();
    let client = NetNs::new();
    fw.netns()
        .link(&client, &format!("{SERVER}/24"), &format!("{CLIENT}/24"));
    let _chronyd = ntp_server(fw.netns());
    let state_dir = tempfile::tempdir().expect("state dir");
    let list = |permanent: bool| {
        let mut args = vec!["--list-services"];
        if permanent {
            args.insert(0, "--permanent");
        }
        let out = fw.firewall_cmd(&args);
        assert!(out.status.success(), "firewall-cmd {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // firewalld's public zone rejects NTP.
    assert!(!reachable(&client), "firewalld should block NTP");

    let backend = Firewalld::connect_to(fw.bus_address(), state_dir.path())
        .expect("connect")
        .expect("firewalld runs on that bus");
    assert!(
        backend
            .rule()
            .contains("service ntp (udp/123) in zone public")
    );
    let before = backend.observe().expect("observe");
    assert!(!before.ntp_open && !before.opened_by_timectl, "{before:?}");

    backend.open().expect("open");
    assert!(list(false).split_whitespace().any(|s| s == "ntp"));
    assert!(list(true).split_whitespace().any(|s| s == "ntp"));
    let after = backend.observe().expect("observe");
    assert!(after.ntp_open && after.opened_by_timectl, "{after:?}");
    wait_for("NTP through firewalld", Duration::from_secs(5), || {
        ntpdig(Some(&client), SERVER).map(|_| ())
    });

    // ALREADY_ENABLED is no change, not an error.
    backend.open().expect("open again");
    assert_eq!(
        list(false)
            .split_whitespace()
            .filter(|s| *s == "ntp")
            .count(),
        1
    );

    backend.close().expect("close");
    assert!(!list(false).contains("ntp"));
    assert!(!list(true).contains("ntp"));
    assert!(!reachable(&client), "closed again");

    // The administrator opened it at runtime only: timectl adds the
    // permanent half, and closing removes only that half.
    let out = fw.firewall_cmd(&["--add-service=ntp"]);
    assert!(out.status.success(), "{out:?}");
    let half = backend.observe().expect("observe");
    assert!(!half.ntp_open, "permanent is missing: {half:?}");
    assert!(
        half.detail.contains("runtime yes, permanent no"),
        "{half:?}"
    );
    backend.open().expect("open the permanent half");
    assert!(list(true).contains("ntp"));
    backend.close().expect("close what timectl added");
    assert!(
        list(false).contains("ntp"),
        "the admin's runtime service stays"
    );
    assert!(!list(true).contains("ntp"));

    // No firewalld on a bus: no backend, not an error.
    let nowhere = format!("unix:path={}/none", state_dir.path().display());
    assert!(
        Firewalld::connect_to(&nowhere, state_dir.path())
            .expect("no bus is not an error")
            .is_none()
    );
}

#[test]
#[ignore = "needs root, firewalld, dbus-daemon and ip; run ci/system-tests.sh"]
fn firewalld_port_4460_tcp_added_runtime_and_permanent_once() {
    require_root_and(&["ip", "firewalld", "firewall-cmd", "dbus-daemon"]);
    let fw = PrivateFirewalld::start();
    let client = NetNs::new();
    fw.netns()
        .link(&client, &format!("{SERVER}/24"), &format!("{CLIENT}/24"));
    let _listener = TcpServer::start(fw.netns());
    let state_dir = tempfile::tempdir().expect("state dir");
    let list = |what: &str, permanent: bool| {
        let mut args = vec![what];
        if permanent {
            args.insert(0, "--permanent");
        }
        let out = fw.firewall_cmd(&args);
        assert!(out.status.success(), "firewall-cmd {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ports = |permanent: bool| list("--list-ports", permanent);
    let has_port = |permanent: bool| ports(permanent).split_whitespace().any(|p| p == "4460/tcp");
    // firewalld's public zone rejects it.
    assert!(!tcp_reachable(&client), "firewalld should block TCP 4460");

    let backend = Firewalld::connect_to(fw.bus_address(), state_dir.path())
        .expect("connect")
        .expect("firewalld runs on that bus");
    assert_eq!(
        backend.rule_for(Port::NtsKe),
        "port 4460/tcp (tcp/4460) in zone public, runtime and permanent (firewall-cmd --zone=public --add-port=4460/tcp [--permanent])"
    );
    let before = backend.observe_port(Port::NtsKe).expect("observe");
    assert!(!before.ntp_open && !before.opened_by_timectl, "{before:?}");

    backend.open_port(Port::NtsKe).expect("open");
    assert!(has_port(false) && has_port(true));
    let services = list("--list-services", false);
    assert!(
        !services.split_whitespace().any(|s| s == "ntp"),
        "opening NTS-KE does not add the ntp service: {services}"
    );
    let after = backend.observe_port(Port::NtsKe).expect("observe");
    assert!(after.ntp_open && after.opened_by_timectl, "{after:?}");
    assert!(
        !backend.observe().expect("observe").ntp_open,
        "UDP 123 untouched"
    );
    wait_for("TCP 4460 through firewalld", Duration::from_secs(5), || {
        tcp_connect(&client)
    });

    // ALREADY_ENABLED is no change, not an error.
    backend.open_port(Port::NtsKe).expect("open again");
    assert_eq!(
        ports(false)
            .split_whitespace()
            .filter(|p| *p == "4460/tcp")
            .count(),
        1
    );

    // With the ntp service open too, closing NTS-KE keeps it.
    backend.open().expect("open UDP 123");
    backend.close_port(Port::NtsKe).expect("close");
    assert!(!has_port(false) && !has_port(true));
    assert!(list("--list-services", true).contains("ntp"));
    assert!(!tcp_reachable(&client), "closed again");
    let closed = backend.observe_port(Port::NtsKe).expect("observe");
    assert!(!closed.ntp_open && !closed.opened_by_timectl, "{closed:?}");
    backend.close().expect("close UDP 123");

    // The administrator opened it at runtime only: timectl adds the
    // permanent half, and closing removes only that half.
    let out = fw.firewall_cmd(&["--add-port=4460/tcp"]);
    assert!(out.status.success(), "{out:?}");
    let half = backend.observe_port(Port::NtsKe).expect("observe");
    assert!(!half.ntp_open, "permanent is missing: {half:?}");
    assert_eq!(
        half.detail,
        "port 4460/tcp in zone public: runtime yes, permanent no"
    );
    assert!(
        tcp_reachable(&client),
        "the admin's runtime port lets it in"
    );
    backend
        .open_port(Port::NtsKe)
        .expect("open the permanent half");
    assert!(has_port(true));
    backend
        .close_port(Port::NtsKe)
        .expect("close what timectl added");
    assert!(has_port(false), "the admin's runtime port stays");
    assert!(!has_port(true));
    assert!(tcp_reachable(&client));
}

/// Offline roots get firewalld's permanent configuration, through the real
/// binary, as `firewall-offline-cmd` would write it. Runs in plain
/// `cargo test`: it only needs a temporary directory.
#[test]
fn offline_root_gets_the_permanent_firewalld_zone() {
    use std::process::Command;

    const ZONE: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone>\n  <short>Public</short>\n  <service name=\"ssh\"/>\n</zone>\n";
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    let write = |path: &str, text: &str| {
        let p = r.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write(
        "etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
    );
    write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    write("etc/group", "root:x:0:\n");
    write(
        "var/lib/dpkg/status",
        "Package: chrony\nStatus: install ok installed\nVersion: 4.3-2+deb12u1\n",
    );
    write(
        "lib/systemd/system/chrony.service",
        "[Service]\nExecStart=/usr/sbin/chronyd\n[Install]\nWantedBy=multi-user.target\n",
    );
    write(
        "lib/systemd/system/firewalld.service",
        "[Service]\nExecStart=/usr/sbin/firewalld\n[Install]\nWantedBy=multi-user.target\n",
    );
    write("usr/lib/firewalld/zones/public.xml", ZONE);
    write("etc/firewalld/firewalld.conf", "DefaultZone=public\n");
    let wants = r.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).expect("wants");
    std::os::unix::fs::symlink(
        "/lib/systemd/system/firewalld.service",
        wants.join("firewalld.service"),
    )
    .expect("enable firewalld");
    let spec = r.join("spec.yaml");
    let serving = "timesync:\n  provider: chrony\n  sources:\n    - server: 10.0.0.1\n  serve: { allow: [10.0.0.0/8] }\n";
    std::fs::write(&spec, serving).expect("spec");

    let timectl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_timectl"))
            .args(args)
            .arg("--root")
            .arg(r)
            .output()
            .expect("run timectl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let spec_arg = spec.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = timectl(&["plan", spec_arg]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("open UDP 123 in firewalld permanent configuration")
            && stdout.contains("<service name=\"ntp\"/> (udp/123) in zone public"),
        "{stdout}"
    );
    let (code, stdout, stderr) = timectl(&["apply", spec_arg, "--yes"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let etc_zone =
        std::fs::read_to_string(r.join("etc/firewalld/zones/public.xml")).expect("zone in /etc");
    assert!(etc_zone.contains("<service name=\"ntp\"/>"), "{etc_zone}");
    assert!(etc_zone.contains("<service name=\"ssh\"/>"), "{etc_zone}");
    // The shipped zone is left as it is.
    assert_eq!(
        std::fs::read_to_string(r.join("usr/lib/firewalld/zones/public.xml")).expect("zone"),
        ZONE
    );
    let (code, stdout, _) = timectl(&["plan", spec_arg, "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "second plan: {stdout}");

    // No longer serving: timectl removes the service it added.
    std::fs::write(
        &spec,
        "timesync:\n  provider: chrony\n  sources:\n    - server: 10.0.0.1\n",
    )
    .expect("spec");
    let (code, stdout, stderr) = timectl(&["apply", spec_arg, "--yes"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("close UDP 123"), "{stdout}");
    let etc_zone = std::fs::read_to_string(r.join("etc/firewalld/zones/public.xml")).expect("zone");
    assert!(!etc_zone.contains("ntp"), "{etc_zone}");
}
