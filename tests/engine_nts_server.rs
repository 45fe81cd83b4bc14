//! The engine daemon as NTS server (issue 10, part 2) against a real
//! chronyd NTS client: a throw-away openssl CA and a certificate for
//! `localhost`/127.0.0.1, `timectl daemon --listen ... --local-stratum 1
//! --nts-cert/--nts-key/--nts-listen/--nts-key-dir` (always
//! `--no-clock-control`), chronyd `-x` (never touches the clock) with
//! `server 127.0.0.1 ... nts ntsport ...`. Also the NTS-KE listener under
//! 1,000 half-open TLS connections. Needs root, chronyd and openssl: run
//! `ci/system-tests.sh`; without them the tests fail saying so.

mod engine_support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use engine_support::{
    EngineProcess, Guard, free_udp_port, require_program, require_root, spawn_logged, state_dir,
    wait_for,
};
use timectl::engine::nts_ke::{Trust, key_exchange};
use timectl_engine::nts::cookie::COOKIE_LEN;

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by
/// it, in a temp dir removed on Drop.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        require_program("openssl", "openssl");
        let pki = Pki { dir: state_dir() };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=timectl NTS server test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        std::fs::write(
            pki.path("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write ext.cnf");
        pki.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        pki.openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind TCP");
    listener.local_addr().expect("local addr").port()
}

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

/// chronyd (`-x`) as NTS client of the engine, polling every 1/16 s.
struct ChronyClient {
    guard: Guard,
    dir: tempfile::TempDir,
}

impl ChronyClient {
    fn start(pki: &Pki, ntp: u16, ke: u16) -> ChronyClient {
        require_root();
        let chronyd = require_program("chronyd", "chrony");
        require_program("chronyc", "chrony");
        let dir = state_dir();
        let d = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join("nts")).expect("ntsdumpdir");
        let conf = format!(
            "server 127.0.0.1 port {ntp} iburst nts ntsport {ke} minpoll -4 maxpoll -4\n\
             ntstrustedcerts {ca}\nntsdumpdir {d}/nts\nport 0\ncmdport 0\n\
             bindcmdaddress {d}/chronyd.sock\npidfile {d}/chronyd.pid\ndriftfile {d}/drift\n",
            ca = pki.path("ca.pem").display()
        );
        let conf_path = dir.path().join("chronyd.conf");
        std::fs::write(&conf_path, conf).expect("write chronyd.conf");
        let mut cmd = Command::new(chronyd);
        // -x: never touch the clock. -d: foreground, log to stderr.
        cmd.args(["-x", "-d", "-u", "root", "-f"]).arg(&conf_path);
        let guard = spawn_logged(cmd, "chronyd", dir.path().join("chronyd.log"));
        let mut c = ChronyClient { guard, dir };
        let sock = c.socket();
        wait_for("chronyd's command socket", Duration::from_secs(10), || {
            c.guard.assert_running();
            sock.exists().then_some(())
        });
        c
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("chronyd.sock")
    }

    /// `chronyc -c <args>` output as CSV rows.
    fn csv(&self, args: &[&str]) -> Vec<Vec<String>> {
        let out = Command::new("chronyc")
            .arg("-h")
            .arg(self.socket())
            .arg("-c")
            .args(args)
            .output()
            .expect("run chronyc");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    }

    /// The engine's row in `chronyc -c -n sources`: mode, state, name,
    /// stratum, poll, reach, last rx, ...
    fn source(&self) -> Option<Vec<String>> {
        self.csv(&["-n", "sources"])
            .into_iter()
            .find(|r| r.get(2).map(String::as_str) == Some("127.0.0.1"))
    }

    /// The engine's row in `chronyc -c -N authdata`: name, mode, key id,
    /// type, key length, last KE (s ago), attempts, NAK, cookies, cookie
    /// length.
    fn authdata(&self) -> AuthData {
        let rows = self.csv(&["-N", "authdata"]);
        let row = rows
            .iter()
            .find(|r| r.first().map(String::as_str) == Some("127.0.0.1"))
            .unwrap_or_else(|| panic!("no authdata row for the engine: {rows:?}\n{}", self.log()));
        let num = |i: usize| -> u64 {
            row.get(i)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("authdata column {i} in {row:?}"))
        };
        AuthData {
            mode: row[1].clone(),
            last_ke: num(5),
            naks: num(7),
            cookies: num(8),
            cookie_len: num(9),
        }
    }

    fn log(&self) -> String {
        self.guard.log_text()
    }

    /// Waits for `^*` on the engine, returning its sources row.
    fn wait_selected(&mut self, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            self.guard.assert_running();
            if let Some(row) = self.source()
                && row[0] == "^"
                && row[1] == "*"
            {
                return row;
            }
            if start.elapsed() > timeout {
                panic!(
                    "chronyd did not select the engine (^*) within {timeout:?}: {:?}\nchronyd log:\n{}",
                    self.source(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[derive(Debug)]
struct AuthData {
    mode: String,
    last_ke: u64,
    naks: u64,
    cookies: u64,
    cookie_len: u64,
}

#[test]
#[ignore = "needs root, chronyd (NTS) and openssl; run ci/system-tests.sh"]
fn chronyd_syncs_over_nts_and_keeps_its_cookies_across_an_engine_restart() {
    require_root();
    let pki = Pki::new();
    let keys = state_dir();
    let (ntp, ke) = (free_udp_port(), free_tcp_port());
    let mut engine_process = engine(&pki, ntp, ke, keys.path());
    let mut chrony = ChronyClient::start(&pki, ntp, ke);
    chrony.wait_selected(Duration::from_secs(30));
    let auth = chrony.authdata();
    assert_eq!(auth.mode, "NTS", "{auth:?}");
    assert!(auth.cookies > 0, "chronyd holds no cookies: {auth:?}");
    assert_eq!(auth.cookie_len, COOKIE_LEN as u64, "{auth:?}");
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
            chrony.guard.assert_running();
            let row = chrony.source()?;
            let last_rx: f64 = row.get(6)?.parse().ok()?;
            (row[5] != "0" && last_rx < restarted.elapsed().as_secs_f64() - 1.0).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let auth = chrony.authdata();
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
    chrony.wait_selected(Duration::from_secs(10));
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
    require_root();
    raise_fd_limit();
    let pki = Pki::new();
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
    require_root();
    let pki = Pki::new();
    let (first_keys, second_keys) = (state_dir(), state_dir());
    let (ntp, ke) = (free_udp_port(), free_tcp_port());
    let engine_process = engine(&pki, ntp, ke, first_keys.path());
    let mut chrony = ChronyClient::start(&pki, ntp, ke);
    chrony.wait_selected(Duration::from_secs(30));
    // Let the first key exchange age, so a new one is visible in "Last".
    std::thread::sleep(Duration::from_secs(4));
    let before = chrony.authdata();
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
            chrony.guard.assert_running();
            let auth = chrony.authdata();
            (auth.last_ke <= restarted.elapsed().as_secs() && auth.cookies > 0).then_some(auth)
        },
    );
    assert_eq!(after.mode, "NTS", "{after:?}");
    chrony.wait_selected(Duration::from_secs(20));
    engine_process.guard.assert_running();
}
