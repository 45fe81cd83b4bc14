//! NTS benchmarks against chronyd in the same run (issue 10):
//!
//! 1. NTS-protected NTP requests answered per second on loopback, the
//!    server pinned to CPU 0 and the load generator to CPU 1: one key
//!    exchange, then the same sealed request (UID, one cookie, one
//!    placeholder, authenticator) sent with 64 outstanding; the first reply
//!    of each round must authenticate with the S2C key, so NAKs or plain
//!    replies cannot count;
//! 2. NTS-KE handshakes per second: 8 concurrent clients doing whole key
//!    exchanges (TLS 1.3 handshake, ALPN ntske/1, records, key export) in a
//!    loop. The server certificate is RSA-2048: its signature is what a
//!    handshake costs the server, and the client's side (verification) is
//!    cheap, so the server on its one core is the bottleneck, not the load
//!    generator on the other;
//! 3. time from start to synchronised over NTS against the chronyd NTS
//!    server (KE, then the first authenticated reply).
//!
//! Needs root, chrony and openssl; run `ci/engine-bench.sh nts` (or
//! `cargo bench --bench engine_nts`). Prints a table; never fails on a
//! missed target (figures only). chronyd always runs with `-x`, the engine
//! without clock control.

#[path = "../tests/engine_support/mod.rs"]
mod engine_support;

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine_support::{Chronyd, EngineProcess, free_udp_port, require_program, require_root};
use timectl::engine::nts_ke::{KeyExchange, Trust, key_exchange};
use timectl_engine::nts::ef;

const LOAD_SECONDS: f64 = 3.0;
const WINDOW: usize = 64;
const KE_CLIENTS: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Pins every thread of `pid` (and of its child processes: chronyd's NTS-KE
/// helpers) to `cpu` with taskset.
fn pin_process(pid: u32, cpu: usize) {
    let taskset = require_program("taskset", "util-linux");
    let mut pids = vec![pid.to_string()];
    if let Ok(out) = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
    {
        pids.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
    }
    for p in pids {
        let _ = Command::new(&taskset)
            .args(["-a", "-p", "-c", &cpu.to_string(), &p])
            .output();
    }
}

fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind TCP");
    l.local_addr().expect("addr").port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let openssl = require_program("openssl", "openssl");
    let out = Command::new(openssl)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throw-away CA and an RSA-2048 server certificate for 127.0.0.1 and
/// localhost: ca.pem, server.pem, server.key in `dir`.
fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=timectl bench CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext.cnf");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
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
        ],
    );
    // chronyd drops no privileges here (-u root) but reads the key as root.
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn exchange(rt: &tokio::runtime::Runtime, ke_port: u16, trust: &Trust) -> KeyExchange {
    let start = Instant::now();
    loop {
        match rt.block_on(key_exchange("127.0.0.1", ke_port, trust, TIMEOUT)) {
            Ok(kx) => return kx,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("key exchange with 127.0.0.1:{ke_port}: {e}"),
        }
    }
}

/// A sealed NTS request and its UID.
fn nts_request(kx: &KeyExchange) -> (Vec<u8>, [u8; ef::UID_LEN]) {
    let mut header = [0u8; 48];
    header[0] = 0x23;
    header[40..].copy_from_slice(&rand::random::<[u8; 8]>());
    let uid: [u8; ef::UID_LEN] = rand::random();
    let nonce: [u8; ef::NONCE_LEN] = rand::random();
    let packet = ef::request_packet(&header, &kx.c2s, &uid, &kx.cookies[0], 1, &nonce)
        .expect("seal NTS request");
    (packet, uid)
}

/// Closed-loop load of NTS requests: WINDOW outstanding, replies counted.
/// Panics unless the first reply authenticates.
fn nts_requests_per_second(kx: &KeyExchange) -> f64 {
    let (request, uid) = nts_request(kx);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(("127.0.0.1", kx.ntp_port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let mut checked = false;
    for _ in 0..100 {
        let _ = sock.send(&request);
        if let Ok(n) = sock.recv(&mut buf)
            && !checked
        {
            ef::check_reply(&kx.s2c, &uid, &buf[..n]).unwrap_or_else(|e| {
                panic!("reply on port {} does not authenticate: {e}", kx.ntp_port)
            });
            checked = true;
        }
    }
    assert!(checked, "no NTS reply from port {}", kx.ntp_port);
    let start = Instant::now();
    let mut replies = 0u64;
    for _ in 0..WINDOW {
        let _ = sock.send(&request);
    }
    while start.elapsed().as_secs_f64() < LOAD_SECONDS {
        match sock.recv(&mut buf) {
            Ok(n) if n > 48 => {
                replies += 1;
                let _ = sock.send(&request);
            }
            Ok(_) => {}
            Err(_) => {
                for _ in 0..WINDOW {
                    let _ = sock.send(&request);
                }
            }
        }
    }
    replies as f64 / start.elapsed().as_secs_f64()
}

/// Whole key exchanges per second, KE_CLIENTS at once.
fn handshakes_per_second(rt: &tokio::runtime::Runtime, ke_port: u16, trust: &Trust) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(LOAD_SECONDS);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..KE_CLIENTS {
            let (done, failed, trust) = (done.clone(), failed.clone(), trust.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    match key_exchange("127.0.0.1", ke_port, &trust, TIMEOUT).await {
                        Ok(kx) if !kx.cookies.is_empty() => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    (
        done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn show(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "benchmark: run with `cargo bench --bench {}`",
            env!("CARGO_CRATE_NAME")
        );
        return;
    }
    require_root();
    let _ = rustls::crypto::ring::default_provider().install_default();
    pin_process(std::process::id(), 1);
    let pki = tempfile::tempdir().expect("temp dir");
    make_pki(pki.path());
    let p = |n: &str| pki.path().join(n).display().to_string();
    let trust = Trust::CaFile(pki.path().join("ca.pem"));
    println!("timectl engine vs chronyd, NTS (same machine, same run)\n");

    let (engine_ntp, engine_ke) = (free_udp_port(), free_tcp_port());
    let mut engine = EngineProcess::start(&[
        "--listen",
        &format!("127.0.0.1:{engine_ntp}"),
        "--local-stratum",
        "8",
        "--nts-cert",
        &p("server.pem"),
        "--nts-key",
        &p("server.key"),
        "--nts-listen",
        &format!("127.0.0.1:{engine_ke}"),
    ]);
    pin_process(engine.guard.pid(), 0);
    let (chrony_ntp, chrony_ke) = (free_udp_port(), free_tcp_port());
    let chronyd = Chronyd::start(
        chrony_ntp,
        &format!(
            "ntsservercert {}\nntsserverkey {}\nntsport {chrony_ke}\n",
            p("server.pem"),
            p("server.key")
        ),
        None,
    );
    std::thread::sleep(Duration::from_millis(300));
    pin_process(chronyd.guard.pid(), 0);

    let rt = runtime(1);
    let engine_kx = exchange(&rt, engine_ke, &trust);
    let chrony_kx = exchange(&rt, chrony_ke, &trust);
    assert_eq!(engine_kx.ntp_port, engine_ntp, "engine's Port record");
    assert_eq!(chrony_kx.ntp_port, chrony_ntp, "chronyd's Port record");

    // 1. NTS-protected requests: three alternating rounds, medians.
    let (mut e_rps, mut c_rps) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        e_rps.push(nts_requests_per_second(&engine_kx));
        c_rps.push(nts_requests_per_second(&chrony_kx));
    }
    // 2. Handshakes: three alternating rounds.
    let (mut e_hs, mut c_hs) = (Vec::new(), Vec::new());
    let (mut e_fail, mut c_fail) = (0, 0);
    for _ in 0..3 {
        let (r, f) = handshakes_per_second(&rt, engine_ke, &trust);
        e_hs.push(r);
        e_fail += f;
        let (r, f) = handshakes_per_second(&rt, chrony_ke, &trust);
        c_hs.push(r);
        c_fail += f;
    }
    let engine_status = engine.status();
    drop(engine);

    let (er, cr) = (median(&mut e_rps), median(&mut c_rps));
    println!("1. NTS-protected requests answered per second (server on one core)");
    println!(
        "  {:<28} {:>10.0} req/s median  (runs {})",
        "timectl daemon",
        er,
        show(&e_rps)
    );
    println!(
        "  {:<28} {:>10.0} req/s median  (runs {})",
        "chronyd -x",
        cr,
        show(&c_rps)
    );
    println!("  ratio timectl/chronyd: {:.2} (target >= 1)\n", er / cr);
    let (eh, ch) = (median(&mut e_hs), median(&mut c_hs));
    println!("2. NTS-KE handshakes per second ({KE_CLIENTS} clients, RSA-2048 certificate)");
    println!(
        "  {:<28} {:>10.0} /s median  (runs {}; failed {e_fail})",
        "timectl daemon",
        eh,
        show(&e_hs)
    );
    println!(
        "  {:<28} {:>10.0} /s median  (runs {}; failed {c_fail})",
        "chronyd -x",
        ch,
        show(&c_hs)
    );
    println!("  ratio timectl/chronyd: {:.2} (target >= 1)\n", eh / ch);
    if let Some(server) = engine_status.server {
        println!("  (engine answered {} requests in all)\n", server.answered);
    }

    // 3. Start to synchronised over NTS against chronyd's NTS server.
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut client = EngineProcess::start(&[
            "--source",
            &format!("127.0.0.1:{chrony_ke}"),
            "--nts",
            "--nts-ca",
            &p("ca.pem"),
        ]);
        let synced = engine_support::wait_for(
            "the NTS client to synchronise",
            Duration::from_secs(30),
            || client.status().synchronized.then(|| start.elapsed()),
        );
        times.push(synced.as_secs_f64());
    }
    drop(chronyd);
    let t = median(&mut times);
    println!("3. start to synchronised over NTS (chronyd NTS server on loopback)");
    println!(
        "  {:<28} {:>10.3} s median  (runs {}; target < 2 s)",
        "timectl daemon",
        t,
        times
            .iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
