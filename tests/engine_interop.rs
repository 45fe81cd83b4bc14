//! The engine against real NTP peers (issue 4, item 7): chronyd as server
//! and as client, ntpdig in a network namespace, and a falseticker made by
//! shifting a real chronyd's timestamps in a relay. Needs root, chrony and
//! ntpsec-ntpdig: run `ci/engine-interop.sh` (CI runs it as root).
//! Every chronyd runs with `-x` and the engine with `--no-clock-control`:
//! nothing here can change the machine's clock.

mod engine_support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use engine_support::{
    Chronyd, EngineProcess, Netns, OffsetRelay, free_udp_port, require_program, require_root,
};
use timectl::engine::system::SourceState;

#[test]
#[ignore = "needs root, chronyd and ntpdig: run ci/engine-interop.sh"]
fn engine_synchronises_to_chronyd_within_10_s() {
    require_root();
    let server = Chronyd::server(free_udp_port());
    let addr = format!("127.0.0.1:{}", server.port);
    let started = Instant::now();
    let mut engine = EngineProcess::start(&["--source", &addr]);
    let status = engine_support::wait_for(
        "engine synchronised with |offset| < 1 ms",
        Duration::from_secs(10),
        || {
            let s = engine.status();
            (s.synchronized && s.offset_seconds.is_some_and(|o| o.abs() < 1e-3)).then_some(s)
        },
    );
    let took = started.elapsed();
    // Same machine, same clock: the true offset is zero.
    let offset = status.offset_seconds.expect("offset");
    assert!(offset.abs() < 1e-3, "offset {offset}");
    assert_eq!(status.stratum, 9, "chronyd serves local stratum 8");
    assert_eq!(status.reference_address.as_deref(), Some(addr.as_str()));
    assert_eq!(status.reference_id, "127.0.0.1");
    let src = &status.sources[0];
    assert!(
        src.report.selected
            && src.report.state == SourceState::Selected
            && src.report.reach & 1 == 1
    );
    assert!(!status.clock_control, "tests never control the clock");
    eprintln!("synchronised after {took:?}, offset {offset:+.9} s");
}

#[test]
#[ignore = "needs root, chronyd and ntpdig: run ci/engine-interop.sh"]
fn chronyd_selects_the_engine_as_its_server() {
    require_root();
    let upstream = Chronyd::server(free_udp_port());
    let serve_port = free_udp_port();
    let mut engine = EngineProcess::start(&[
        "--source",
        &format!("127.0.0.1:{}", upstream.port),
        "--listen",
        &format!("127.0.0.1:{serve_port}"),
    ]);
    engine_support::wait_for("engine synchronised", Duration::from_secs(10), || {
        engine.status().synchronized.then_some(())
    });
    let client = Chronyd::client_of(serve_port);
    let line = engine_support::wait_for(
        "chronyd to select the engine (^*)",
        Duration::from_secs(20),
        || {
            client
                .sources()
                .into_iter()
                .find(|f| f.len() > 5 && f[0] == "^" && f[1] == "*" && f[2] == "127.0.0.1")
        },
    );
    // chronyd sees the engine one stratum below its own upstream.
    assert_eq!(
        line[3], "9",
        "the engine's stratum (upstream 8 + 1) as chronyd sees it: {line:?}"
    );
    let status = engine.status();
    let server = status.server.expect("engine serves");
    assert!(server.answered > 0 && server.denied == 0, "{server:?}");
}

#[test]
#[ignore = "needs root, chronyd and ntpdig: run ci/engine-interop.sh"]
fn chronyd_does_not_select_an_unsynchronised_engine() {
    require_root();
    let serve_port = free_udp_port();
    // No sources and no local stratum: the engine answers LI=3, stratum 16.
    let mut engine = EngineProcess::start(&["--listen", &format!("127.0.0.1:{serve_port}")]);
    let client = Chronyd::client_of(serve_port);
    std::thread::sleep(Duration::from_secs(5));
    let status = engine.status();
    assert!(
        status.server.as_ref().is_some_and(|s| s.answered > 0),
        "chronyd never asked: {status:?}"
    );
    let lines = client.sources();
    let line = lines
        .iter()
        .find(|f| f.len() > 2 && f[2] == "127.0.0.1")
        .expect("chronyd lists the engine");
    assert_ne!(
        line[1], "*",
        "chronyd selected an unsynchronised server: {line:?}"
    );
}

#[test]
#[ignore = "needs root, chronyd and ntpdig: run ci/engine-interop.sh"]
fn ntpdig_gets_a_valid_reply_on_port_123_in_a_netns() {
    require_root();
    let ntpdig = require_program("ntpdig", "ntpsec-ntpdig");
    let ns = Netns::new("ntpdig");
    let mut engine = EngineProcess::start_in(
        &["--listen", "127.0.0.1:123", "--local-stratum", "10"],
        Some(&ns),
    );
    let out = ns
        .command(&ntpdig)
        .args(["-j", "127.0.0.1"])
        .output()
        .expect("run ntpdig");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ntpdig failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("ntpdig JSON {e}: {stdout}"));
    assert_eq!(v["stratum"], 10, "{v}");
    let offset = v["offset"]
        .as_f64()
        .unwrap_or_else(|| panic!("no offset in {v}"));
    assert!(offset.abs() < 0.01, "same clock, offset {offset}");
    let server = engine.status().server.expect("serving");
    assert!(server.answered >= 1);
    // And the engine is not reachable from the host's loopback (isolation).
    assert!(std::net::UdpSocket::bind("127.0.0.1:0").is_ok());
}

#[test]
#[ignore = "needs root, chronyd and ntpdig: run ci/engine-interop.sh"]
fn falseticker_among_real_peers_is_rejected() {
    require_root();
    let good: Vec<Chronyd> = (0..3).map(|_| Chronyd::server(free_udp_port())).collect();
    // The falseticker: a fourth real chronyd seen through a relay that
    // moves its timestamps 100 ms into the future.
    let liar = Chronyd::server(free_udp_port());
    let relay = OffsetRelay::start(SocketAddr::from(([127, 0, 0, 1], liar.port)), 0.100);
    let mut args: Vec<String> = Vec::new();
    for c in &good {
        args.extend(["--source".into(), format!("127.0.0.1:{}", c.port)]);
    }
    let liar_addr = format!("127.0.0.1:{}", relay.port);
    args.extend([
        "--source".into(),
        liar_addr.clone(),
        "--minpoll".into(),
        "-2".into(),
        "--maxpoll".into(),
        "0".into(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut engine = EngineProcess::start(&argv);
    engine_support::wait_for(
        "all four sources answering",
        Duration::from_secs(10),
        || {
            let s = engine.status();
            (s.synchronized
                && s.sources.len() == 4
                && s.sources.iter().all(|x| x.report.reach != 0))
            .then_some(())
        },
    );
    // Watch for a while: the liar is never selected or combined.
    let until = Instant::now() + Duration::from_secs(6);
    let mut checks = 0;
    while Instant::now() < until {
        let s = engine.status();
        let liar_src = s
            .sources
            .iter()
            .find(|x| x.address == liar_addr)
            .expect("liar listed");
        assert!(
            !matches!(
                liar_src.report.state,
                SourceState::Selected | SourceState::Combined
            ),
            "falseticker used: {liar_src:?}"
        );
        if s.updates > 3 {
            assert_eq!(
                liar_src.report.state,
                SourceState::Falseticker,
                "{s:#?}\n{}",
                engine.guard.log_text()
            );
            let offset = s.offset_seconds.expect("offset");
            assert!(offset.abs() < 1e-3, "pulled by the falseticker: {offset}");
            checks += 1;
        }
        // The liar really is 100 ms off (the relay works).
        // (A sample's offset error is bounded by half its round trip: on a
        // loaded machine the user-space relay can add tens of ms.)
        if let Some(o) = liar_src.report.last_offset_seconds {
            let half_delay = liar_src.report.delay_seconds.unwrap_or(0.0) / 2.0;
            assert!(
                (o + 0.100).abs() < 0.01 + half_delay,
                "relay offset seen as {o} (delay {half_delay} s each way)"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(checks > 5, "too few checks after synchronisation");
    drop(relay);
    drop(good);
}

/// The control socket's `step_now` is refused with clock control off and
/// says what it would have done (issue 5's `step.now` relies on it).
#[test]
#[ignore = "needs root, chronyd and ntpdig: run ci/engine-interop.sh"]
fn step_now_is_refused_without_clock_control() {
    require_root();
    let server = Chronyd::server(free_udp_port());
    let mut engine = EngineProcess::start(&["--source", &format!("127.0.0.1:{}", server.port)]);
    engine_support::wait_for("engine synchronised", Duration::from_secs(10), || {
        engine.status().synchronized.then_some(())
    });
    let out = Command::new(env!("CARGO_BIN_EXE_timectl"))
        .args(["status", "--step-now", "--json", "--control"])
        .arg(engine.control())
        .output()
        .expect("run timectl status");
    assert_eq!(out.status.code(), Some(1), "a refused step exits 1");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert!(
        v["would_step_seconds"]
            .as_f64()
            .is_some_and(|s| s.abs() < 1e-3),
        "{v}"
    );
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("clock control is off")),
        "{v}"
    );
    assert_eq!(engine.status().steps, 0);
}
