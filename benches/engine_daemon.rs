//! Daemon benchmarks against chronyd in the same run (issue 4, item 8):
//!
//! 1. server requests per second on loopback, the server pinned to CPU 0
//!    and the load generator to CPU 1;
//! 2. resident memory (VmRSS) with four sources;
//! 3. time from start to synchronised with iburst against a loopback peer.
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

use engine_support::{Chronyd, EngineProcess, free_udp_port, require_program, require_root};
use timectl::engine::proto::{NtpTimestamp, Packet};

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
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(("127.0.0.1", port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let request = Packet::client_request(NtpTimestamp(0x0123_4567_89ab_cdef), 6).encode();
    let mut buf = [0u8; 128];
    // Warm up (and make sure the server answers at all).
    for _ in 0..100 {
        let _ = sock.send(&request);
        let _ = sock.recv(&mut buf);
    }
    let start = Instant::now();
    let mut replies = 0u64;
    let mut sent = 0u64;
    for _ in 0..WINDOW {
        let _ = sock.send(&request);
        sent += 1;
    }
    while start.elapsed().as_secs_f64() < LOAD_SECONDS {
        match sock.recv(&mut buf) {
            Ok(n) if n >= 48 => {
                replies += 1;
                let _ = sock.send(&request);
                sent += 1;
            }
            Ok(_) => {}
            Err(_) => {
                // Replies were lost: refill the window.
                for _ in 0..WINDOW {
                    let _ = sock.send(&request);
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
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
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
    engine_support::wait_for("chronyd sync", Duration::from_secs(30), || {
        c.sources()
            .into_iter()
            .any(|f| f.len() > 2 && f[1] == "*")
            .then_some(())
    });
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
    println!("  target: timectl < 2 s");
}
