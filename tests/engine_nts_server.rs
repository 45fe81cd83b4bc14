//! The engine daemon as NTS server (issue 10, part 2) against a real
//! chronyd NTS client: a throw-away openssl CA and a certificate for
//! `localhost`/127.0.0.1, `timectl daemon --listen ... --local-stratum 1
//! --nts-cert/--nts-key/--nts-listen/--nts-key-dir` (always
//! `--no-clock-control`), chronyd `-x` (never touches the clock) with
//! `server 127.0.0.1 ... nts ntsport ...`. Also the NTS-KE listener under
//! 1,000 half-open TLS connections. Needs root, chronyd and openssl: run
//! `ci/system-tests.sh`; without them the tests fail saying so.

mod engine_support;
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use engine_support::{EngineProcess, free_tcp_port, free_udp_port, state_dir, wait_for};
use support::{ChronyAuth, ChronyPeer, ChronySource, Pki, require_root_and};
use timectl::engine::nts_ke::{Trust, key_exchange};
use timectl_engine::nts::cookie::COOKIE_LEN;

/// The engine serving NTP on `ntp` and NTS-KE on `ke`, keys in `key_dir`.
fn engine(pki: &Pki, ntp: u16, ke: u16, key_dir: &Path) -> EngineProcess {
    let listen = format!("127.0.0.1:{ntp}");
    let nts_listen = format!("127.0.0.1:{ke}");
    let cert = pki.path("server.pem").display().to_string();
    let key = pki.path("server.key").display().to_string();
    let key_dir = key_dir.display().to_string();
    let e = EngineProcess::start(&[
        "--listen",
        &listen,
        "--local-stratum",
        "1",
        "--nts-cert",
        &cert,
        "--nts-key",
        &key,
        "--nts-listen",
        &nts_listen,
        "--nts-key-dir",
        &key_dir,
    ]);
    wait_for("the engine's NTS-KE port", Duration::from_secs(5), || {
        TcpStream::connect(("127.0.0.1", ke)).ok()
    });
    e
}

/// chronyd (`-x`) as NTS client of the engine on `ntp`/`ke`, polling
/// every 1/4 s, trusting `pki`'s CA. Each unanswered request uses up one
/// of its 8 cookies: at 1/16 s a restart of the engine that took over half
/// a second on a busy host left it none, and it made a new key exchange.
fn chrony_client(pki: &Pki, ntp: u16, ke: u16) -> ChronyPeer {
    ChronyPeer::client_with(&format!(
        "server 127.0.0.1 port {ntp} iburst nts ntsport {ke} minpoll -2 maxpoll -2"
    ))
    .line(&format!("ntstrustedcerts {}", pki.path("ca.pem").display()))
    .start()
}

/// The engine's row in `chronyc -c -N authdata`.
fn authdata(chrony: &ChronyPeer) -> ChronyAuth {
    let rows = chrony.authdata();
    rows.iter()
        .find(|a| a.address == "127.0.0.1")
        .cloned()
        .unwrap_or_else(|| panic!("no authdata row for the engine: {rows:?}\n{}", chrony.log()))
}

/// The engine's row in `chronyc -c -n sources`.
fn source(chrony: &ChronyPeer) -> Option<ChronySource> {
    chrony
        .try_chronyc(&["-c", "sources"])
        .ok()
        .and_then(|t| ChronySource::parse_csv(&t).ok())?
        .into_iter()
        .find(|s| s.address == "127.0.0.1")
}

#[test]
#[ignore = "needs root, chronyd (NTS) and openssl; run ci/system-tests.sh"]
fn chronyd_syncs_over_nts_and_keeps_its_cookies_across_an_engine_restart() {
    require_root_and(&["chronyd", "chronyc", "openssl"]);
    let pki = Pki::new("server");
    let keys = state_dir();
    let (ntp, ke) = (free_udp_port(), free_tcp_port());
    let mut engine_process = engine(&pki, ntp, ke, keys.path());
    let mut chrony = chrony_client(&pki, ntp, ke);
    chrony.wait_selected("127.0.0.1", Duration::from_secs(30));
    let auth = authdata(&chrony);
    assert_eq!(auth.mode, "NTS", "{auth:?}");
    assert!(auth.cookies > 0, "chronyd holds no cookies: {auth:?}");
    assert_eq!(auth.cookie_length as usize, COOKIE_LEN, "{auth:?}");
    assert_eq!(auth.naks, 0, "{auth:?}");
    let key_file = keys.path().join("nts-cookie-keys");
    assert!(key_file.exists(), "no key file in the key dir");
    engine_process.guard.assert_running();

    // Restart the engine with the same key directory: chronyd's cookies
    // must still open, so no new key exchange.
    let ke_before_restart = Instant::now();
    let last_ke_before = auth.last_ke;
    drop(engine_process);
    std::thread::sleep(Duration::from_millis(500));
    let restarted = Instant::now();
    let mut engine_process = engine(&pki, ntp, ke, keys.path());
    // Wait for fresh samples after the restart (LastRx is column 6).
    wait_for(
        "chronyd to receive NTS replies from the restarted engine",
        Duration::from_secs(20),
        || {
            chrony.assert_running();
            let row = source(&chrony)?;
            let last_rx = row.last_rx? as f64;
            (row.reach != 0 && last_rx < restarted.elapsed().as_secs_f64() - 1.0).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let auth = authdata(&chrony);
    let since = ke_before_restart.elapsed().as_secs();
    assert!(
        auth.last_ke >= last_ke_before + since.saturating_sub(1),
        "chronyd made a new key exchange after the restart: {auth:?} ({since} s since)\n{}",
        chrony.log()
    );
    assert_eq!(
        auth.naks, 0,
        "the restarted engine refused the cookies: {auth:?}"
    );
    assert!(auth.cookies > 0, "{auth:?}");
    chrony.wait_selected("127.0.0.1", Duration::from_secs(10));
    engine_process.guard.assert_running();
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Room for 1000 sockets in this test process (the soft limit is often
/// 1024).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim),
            0,
            "getrlimit"
        );
        lim.rlim_cur = lim.rlim_max.max(4096);
        lim.rlim_max = lim.rlim_cur;
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
            0,
            "raise RLIMIT_NOFILE (needs root)"
        );
    }
}

#[test]
#[ignore = "needs root and openssl; run ci/system-tests.sh"]
fn ke_server_survives_a_thousand_half_open_connections() {
    require_root_and(&["openssl"]);
    raise_fd_limit();
    let pki = Pki::new("server");
    let keys = state_dir();
    let (ntp, ke) = (free_udp_port(), free_tcp_port());
    let mut engine_process = engine(&pki, ntp, ke, keys.path());
    let pid = engine_process.guard.pid();
    let trust = Trust::CaFile(pki.path("ca.pem"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let kx = |timeout| runtime.block_on(key_exchange("localhost", ke, &trust, timeout));
    kx(Duration::from_secs(5)).expect("a key exchange before the flood");
    let rss_before = vm_rss_kib(pid);

    // 1000 connections: half send the start of a ClientHello, half nothing.
    let partial_hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let opened = Instant::now();
    let mut held = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut s = TcpStream::connect(("127.0.0.1", ke)).expect("connect");
        if i % 2 == 0 {
            let _ = s.write_all(&partial_hello);
        }
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    engine_process.guard.assert_running();
    let rss_during = vm_rss_kib(pid);
    assert!(
        rss_during < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_during} KiB under 1000 half-open connections"
    );

    // A proper exchange succeeds while they are open, at the latest once
    // the 5 s connection deadline frees the slots they hold.
    let ok_at = wait_for(
        "a key exchange during the flood",
        Duration::from_secs(10),
        || kx(Duration::from_secs(2)).ok().map(|_| opened.elapsed()),
    );
    assert!(
        ok_at < Duration::from_secs(8),
        "first key exchange only after {ok_at:?}"
    );
    // After the deadline every slot is free again: exchanges succeed at
    // once, repeatedly, with the connections still open.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(opened.elapsed()));
    for _ in 0..20 {
        kx(Duration::from_secs(2)).expect("key exchange after the deadline");
    }
    engine_process.guard.assert_running();
    let rss_after = vm_rss_kib(pid);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS {rss_before} -> {rss_after} KiB"
    );
    drop(held);
    eprintln!(
        "half-open flood: RSS before {rss_before} KiB, during {rss_during} KiB, after {rss_after} KiB; \
         first key exchange {ok_at:?} after opening"
    );
}

#[test]
#[ignore = "needs root, chronyd (NTS) and openssl; run ci/system-tests.sh"]
fn chronyd_recovers_with_a_new_key_exchange_when_the_engine_lost_its_keys() {
    require_root_and(&["chronyd", "chronyc", "openssl"]);
    let pki = Pki::new("server");
    let (first_keys, second_keys) = (state_dir(), state_dir());
    let (ntp, ke) = (free_udp_port(), free_tcp_port());
    let engine_process = engine(&pki, ntp, ke, first_keys.path());
    let mut chrony = chrony_client(&pki, ntp, ke);
    chrony.wait_selected("127.0.0.1", Duration::from_secs(30));
    // Let the first key exchange age, so a new one is visible in "Last".
    std::thread::sleep(Duration::from_secs(4));
    let before = authdata(&chrony);
    assert!(before.last_ke >= 3, "{before:?}");
    drop(engine_process);
    // Other keys: chronyd's cookies no longer open (NTS NAK, RFC 8915 5.7),
    // so it must make a new key exchange and carry on.
    let mut engine_process = engine(&pki, ntp, ke, second_keys.path());
    let restarted = Instant::now();
    let after = wait_for(
        "chronyd's new key exchange with the restarted engine",
        Duration::from_secs(20),
        || {
            chrony.assert_running();
            let auth = authdata(&chrony);
            (auth.last_ke <= restarted.elapsed().as_secs() && auth.cookies > 0).then_some(auth)
        },
    );
    assert_eq!(after.mode, "NTS", "{after:?}");
    chrony.wait_selected("127.0.0.1", Duration::from_secs(20));
    engine_process.guard.assert_running();
}
