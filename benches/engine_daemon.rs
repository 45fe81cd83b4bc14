//! Daemon benchmarks against chronyd in the same run (issue 4, item 8):
//!
//! 1. server requests per second on loopback, the server pinned to CPU 0
//!    and the load generator to CPU 1;
//! 2. resident memory (VmRSS) with four sources;
//! 3. time from start to synchronised with iburst against a loopback peer;
//! 4. NTS: NTS-protected requests per second (server on CPU 0) and NTS-KE
//!    handshakes per second, engine vs chronyd (`ntsprocesses 0`: one
//!    process, like the engine's single-threaded runtime), and start to
//!    synchronised over NTS against chronyd's NTS server.
//!
//! Needs root and chrony; run `ci/engine-bench.sh` (or
//! `cargo bench --bench engine_daemon`). Prints a table; never fails on
//! a missed target (figures only). chronyd always runs with `-x`, the
//! engine without clock control.

#[path = "../tests/engine_support/mod.rs"]
mod engine_support;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use engine_support::{
    Chronyd, EngineProcess, free_tcp_port, free_udp_port, require_program, require_root,
};
use timectl::engine::nts_ke::{KeyExchange, Trust, key_exchange};
use timectl::engine::proto::{NtpTimestamp, Packet};
use timectl_engine::nts::ef;

const LOAD_SECONDS: f64 = 3.0;
const WINDOW: usize = 64;

/// Pins every thread of `pid` to `cpu` with taskset.
fn pin_process(pid: u32, cpu: usize) {
    let taskset = require_program("taskset", "util-linux");
    let _ = Command::new(taskset)
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output();
}

/// Closed-loop load: keeps WINDOW requests outstanding, counts replies.
fn requests_per_second(port: u16) -> (f64, u64) {
    let request = Packet::client_request(NtpTimestamp(0x0123_4567_89ab_cdef), 6).encode();
    load(port, &request, 48)
}

/// Closed-loop load with NTS requests (one cookie, no placeholder,
/// the same datagram each time: the server does the full work for each:
/// open the cookie, check the authenticator, seal a new cookie and the
/// reply). Counts replies of at least `min_reply` bytes (NTS replies).
fn nts_requests_per_second(port: u16, kx: &KeyExchange) -> (f64, u64) {
    let header = Packet::client_request(NtpTimestamp(0x0123_4567_89ab_cdef), 6).encode();
    let request = ef::request_packet(&header, &kx.c2s, &[7; 32], &kx.cookies[0], 0, &[9; 16])
        .expect("NTS request");
    load(port, &request, 48 + 36 + 40)
}

fn load(port: u16, request: &[u8], min_reply: usize) -> (f64, u64) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(("127.0.0.1", port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let mut buf = [0u8; 1500];
    // Warm up (and make sure the server answers at all).
    for _ in 0..100 {
        let _ = sock.send(request);
        let _ = sock.recv(&mut buf);
    }
    let start = Instant::now();
    let mut replies = 0u64;
    let mut sent = 0u64;
    for _ in 0..WINDOW {
        let _ = sock.send(request);
        sent += 1;
    }
    while start.elapsed().as_secs_f64() < LOAD_SECONDS {
        match sock.recv(&mut buf) {
            Ok(n) if n >= min_reply => {
                replies += 1;
                let _ = sock.send(request);
                sent += 1;
            }
            Ok(_) => {}
            Err(_) => {
                // Replies were lost: refill the window.
                for _ in 0..WINDOW {
                    let _ = sock.send(request);
                    sent += 1;
                }
            }
        }
    }
    let _ = sent;
    (replies as f64 / start.elapsed().as_secs_f64(), replies)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // a benchmark has nothing to assert, so it only runs under cargo bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "benchmark: run with `cargo bench --bench {}`",
            env!("CARGO_CRATE_NAME")
        );
        return;
    }
    require_root();
    pin_process(std::process::id(), 1);
    println!("timectl engine vs chronyd (same machine, same run)\n");
    // TIMECTL_BENCH_ONLY=nts: only the NTS figures (section 4).
    if std::env::var("TIMECTL_BENCH_ONLY").as_deref() == Ok("nts") {
        nts_bench();
        return;
    }

    // 1. Server throughput: three alternating rounds each, medians, so
    // that load from elsewhere on the machine hits both alike.
    let engine_port = free_udp_port();
    let mut engine = EngineProcess::start(&[
        "--listen",
        &format!("127.0.0.1:{engine_port}"),
        "--local-stratum",
        "8",
    ]);
    pin_process(engine.guard.pid(), 0);
    let chronyd = Chronyd::server(free_udp_port());
    pin_process(chronyd.guard.pid(), 0);
    let (mut engine_runs, mut chrony_runs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        engine_runs.push(requests_per_second(engine_port).0);
        chrony_runs.push(requests_per_second(chronyd.port).0);
    }
    let served = engine.status().server.map(|s| s.answered).unwrap_or(0);
    drop(engine);
    drop(chronyd);
    let (engine_rps, chrony_rps) = (median(&mut engine_runs), median(&mut chrony_runs));
    println!(
        "server throughput, loopback, server on CPU 0, client on CPU 1, window {WINDOW}, 3 x {LOAD_SECONDS} s each"
    );
    println!(
        "  {:<28} {:>12.0} req/s median  (runs {}; {served} answers)",
        "timectl daemon",
        engine_rps,
        show(&engine_runs)
    );
    println!(
        "  {:<28} {:>12.0} req/s median  (runs {})",
        "chronyd -x",
        chrony_rps,
        show(&chrony_runs)
    );
    println!(
        "  ratio timectl/chronyd: {:.2} (target >= 1)\n",
        engine_rps / chrony_rps.max(1.0)
    );

    // 2. Memory with four sources.
    let servers: Vec<Chronyd> = (0..4).map(|_| Chronyd::server(free_udp_port())).collect();
    let mut args: Vec<String> = Vec::new();
    for s in &servers {
        args.extend(["--source".into(), format!("127.0.0.1:{}", s.port)]);
    }
    args.extend([
        "--minpoll".into(),
        "-2".into(),
        "--maxpoll".into(),
        "0".into(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut engine = EngineProcess::start(&argv);
    let extra: String = servers
        .iter()
        .map(|s| {
            format!(
                "server 127.0.0.1 port {} iburst minpoll -2 maxpoll 0\n",
                s.port
            )
        })
        .collect();
    let client = Chronyd::start(free_udp_port(), &extra, None);
    std::thread::sleep(Duration::from_secs(5));
    let synced = engine.status().synchronized;
    let engine_rss = rss_kib(engine.guard.pid());
    let chrony_rss = rss_kib(client.guard.pid());
    println!("resident memory (VmRSS) with four loopback sources after 5 s");
    println!(
        "  {:<28} {:>9} KiB   (synchronised: {synced})",
        "timectl daemon", engine_rss
    );
    println!("  {:<28} {:>9} KiB", "chronyd -x", chrony_rss);
    println!("  target: timectl < 10240 KiB\n");
    drop(engine);
    drop(client);

    // 3. Start to synchronised, iburst, default poll settings.
    let peer = &servers[0];
    let addr = format!("127.0.0.1:{}", peer.port);
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut e = EngineProcess::start(&["--source", &addr]);
        engine_support::wait_for("engine sync", Duration::from_secs(20), || {
            e.status().synchronized.then_some(())
        });
        times.push(start.elapsed().as_secs_f64());
    }
    let start = Instant::now();
    let c = Chronyd::start(
        free_udp_port(),
        &format!("server 127.0.0.1 port {} iburst\n", peer.port),
        None,
    );
    c.wait_selected("chronyd sync", Duration::from_secs(30));
    let chrony_time = start.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    println!("start to synchronised, one loopback peer, iburst, default minpoll 6");
    println!(
        "  {:<28} median {:>6.3} s  (min {:.3}, max {:.3}, 5 runs; includes process start)",
        "timectl daemon", times[2], times[0], times[4]
    );
    println!(
        "  {:<28} {:>13.3} s  (first ^* seen by chronyc, polled every 50 ms)",
        "chronyd -x", chrony_time
    );
    println!("  target: timectl < 2 s\n");

    nts_bench();
}

/// A throw-away CA and a `localhost`/127.0.0.1 certificate as PEM files.
struct BenchPki {
    dir: tempfile::TempDir,
}

impl BenchPki {
    fn new() -> BenchPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "timectl bench CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let dir = engine_support::state_dir();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("ca.pem");
        std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("server.pem");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("server.key");
        BenchPki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// The median of rounds (sorts them).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Rounds as "1, 2, 3".
fn show(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Key exchanges per second: `parallel` clients in a loop for
/// LOAD_SECONDS (one client thread, pinned to CPU 1 like the process).
fn handshakes_per_second(rt: &tokio::runtime::Runtime, port: u16, trust: &Trust) -> f64 {
    let parallel = 8;
    rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..parallel {
            let trust = trust.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u64;
                while start.elapsed().as_secs_f64() < LOAD_SECONDS {
                    if key_exchange("127.0.0.1", port, &trust, Duration::from_secs(5))
                        .await
                        .is_ok()
                    {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap_or(0);
        }
        total as f64 / start.elapsed().as_secs_f64()
    })
}

fn wait_tcp(port: u16) {
    engine_support::wait_for("NTS-KE port", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

/// 4. NTS throughput and NTS-KE handshakes, engine vs chronyd.
fn nts_bench() {
    let pki = BenchPki::new();
    let trust = Trust::CaFile(pki.path("ca.pem").into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (engine_ntp, engine_ke) = (free_udp_port(), free_tcp_port());
    let mut engine = EngineProcess::start(&[
        "--listen",
        &format!("127.0.0.1:{engine_ntp}"),
        "--local-stratum",
        "8",
        "--nts-cert",
        &pki.path("server.pem"),
        "--nts-key",
        &pki.path("server.key"),
        "--nts-listen",
        &format!("127.0.0.1:{engine_ke}"),
    ]);
    pin_process(engine.guard.pid(), 0);
    wait_tcp(engine_ke);
    let chrony_ke = free_tcp_port();
    let chronyd = Chronyd::start(
        free_udp_port(),
        &format!(
            "ntsservercert {}\nntsserverkey {}\nntsport {chrony_ke}\nntsprocesses 0\n",
            pki.path("server.pem"),
            pki.path("server.key")
        ),
        None,
    );
    pin_process(chronyd.guard.pid(), 0);
    wait_tcp(chrony_ke);
    let kx = |port| {
        rt.block_on(key_exchange(
            "127.0.0.1",
            port,
            &trust,
            Duration::from_secs(5),
        ))
        .expect("key exchange")
    };
    let (engine_kx, chrony_kx) = (kx(engine_ke), kx(chrony_ke));
    let (mut engine_runs, mut chrony_runs) = (Vec::new(), Vec::new());
    let (mut engine_ke_runs, mut chrony_ke_runs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        engine_runs.push(nts_requests_per_second(engine_ntp, &engine_kx).0);
        chrony_runs.push(nts_requests_per_second(chronyd.port, &chrony_kx).0);
    }
    // Server CPU seconds spent in the handshake rounds, per handshake:
    // the client (on one core) may be what limits the rate.
    let (mut engine_cpu, mut chrony_cpu) = (0.0, 0.0);
    let (mut engine_count, mut chrony_count) = (0.0, 0.0);
    for _ in 0..3 {
        let before = cpu_seconds(engine.guard.pid());
        let rate = handshakes_per_second(&rt, engine_ke, &trust);
        engine_cpu += cpu_seconds(engine.guard.pid()) - before;
        engine_count += rate * LOAD_SECONDS;
        engine_ke_runs.push(rate);
        let before = cpu_seconds(chronyd.guard.pid());
        let rate = handshakes_per_second(&rt, chrony_ke, &trust);
        chrony_cpu += cpu_seconds(chronyd.guard.pid()) - before;
        chrony_count += rate * LOAD_SECONDS;
        chrony_ke_runs.push(rate);
    }
    let nts_answered = engine.status().server.map(|s| s.answered).unwrap_or(0);
    drop(engine);
    let sync = nts_sync_times(chrony_ke, &pki);
    drop(chronyd);
    let (e, c) = (median(&mut engine_runs), median(&mut chrony_runs));
    println!(
        "NTS-protected requests (1 cookie, 0 placeholders), loopback, server on CPU 0, client on CPU 1, window {WINDOW}, 3 x {LOAD_SECONDS} s each"
    );
    println!(
        "  {:<28} {:>12.0} req/s median  (runs {}; {nts_answered} answers)",
        "timectl daemon",
        e,
        show(&engine_runs)
    );
    println!(
        "  {:<28} {:>12.0} req/s median  (runs {})",
        "chronyd -x",
        c,
        show(&chrony_runs)
    );
    println!("  ratio timectl/chronyd: {:.2}\n", e / c.max(1.0));
    let (e, c) = (median(&mut engine_ke_runs), median(&mut chrony_ke_runs));
    println!(
        "NTS-KE handshakes (TLS 1.3, P-256 certificate), 8 concurrent clients on CPU 1, server on CPU 0, 3 x {LOAD_SECONDS} s each"
    );
    println!(
        "  {:<28} {:>12.0} /s median  (runs {})",
        "timectl daemon",
        e,
        show(&engine_ke_runs)
    );
    println!(
        "  {:<28} {:>12.0} /s median  (runs {}; ntsprocesses 0)",
        "chronyd -x",
        c,
        show(&chrony_ke_runs)
    );
    println!("  ratio timectl/chronyd: {:.2}", e / c.max(1.0));
    let per = |cpu: f64, n: f64| cpu * 1e6 / n.max(1.0);
    println!(
        "  server CPU per handshake: timectl {:.0} us, chronyd {:.0} us (utime+stime over the rounds)\n",
        per(engine_cpu, engine_count),
        per(chrony_cpu, chrony_count)
    );
    println!("start to synchronised over NTS, chronyd's NTS server on loopback (KE, then iburst)");
    println!(
        "  {:<28} median {:>6.3} s  (min {:.3}, max {:.3}, 5 runs; includes process start)",
        "timectl daemon --nts", sync.engine[2], sync.engine[0], sync.engine[4]
    );
    println!(
        "  {:<28} {:>13.3} s  (first ^* seen by chronyc, polled every 50 ms)",
        "chronyd -x (nts)", sync.chronyd
    );
    println!("  target: timectl < 2 s");
}

/// Start to synchronised over NTS against chronyd's NTS server (KE port
/// `ke_port`): five engine starts (`--nts --nts-ca`), and one chronyd NTS
/// client (`iburst nts`, first `^*`) for comparison.
struct NtsSync {
    engine: Vec<f64>,
    chronyd: f64,
}

fn nts_sync_times(ke_port: u16, pki: &BenchPki) -> NtsSync {
    let mut engine = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut e = EngineProcess::start(&[
            "--source",
            &format!("127.0.0.1:{ke_port}"),
            "--nts",
            "--nts-ca",
            &pki.path("ca.pem"),
        ]);
        engine_support::wait_for("engine NTS sync", Duration::from_secs(20), || {
            e.status().synchronized.then_some(())
        });
        engine.push(start.elapsed().as_secs_f64());
    }
    engine.sort_by(f64::total_cmp);
    let start = Instant::now();
    let c = Chronyd::start(
        free_udp_port(),
        &format!(
            "server 127.0.0.1 iburst nts ntsport {ke_port}\nntstrustedcerts {}\n",
            pki.path("ca.pem")
        ),
        None,
    );
    c.wait_selected("chronyd NTS sync", Duration::from_secs(30));
    NtsSync {
        engine,
        chronyd: start.elapsed().as_secs_f64(),
    }
}

/// User plus system CPU seconds of `pid` so far (/proc/PID/stat).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (ticks(11) + ticks(12)) / hz
}
