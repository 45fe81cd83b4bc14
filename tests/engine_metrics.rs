//! The engine's Prometheus endpoint (`timectl daemon --metrics ADDR:PORT`)
//! over real HTTP on loopback: what it serves agrees with `timectl status`,
//! the server counters move with real NTP traffic, wrong requests and bad
//! addresses are refused. The `#[ignore]`d tests add real outside parts: a
//! chronyd -x peer, a real Prometheus (Debian's `prometheus` package)
//! scraping the engine and answering PromQL, and `promtool check metrics`
//! on the endpoint's output; run them as root with
//! `ci/system-tests.sh metrics`. The engine always runs with
//! `--no-clock-control` (the support code also sets TIMECTL_NO_CLOCK_CONTROL).

mod engine_support;

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use engine_support::{Chronyd, EngineProcess, Guard, free_udp_port, require_program, require_root};
use timectl::engine::proto::{NtpTimestamp, Packet};

/// A free TCP port on 127.0.0.1 (bound then released).
fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// An HTTP client that reports 4xx/5xx as answers and ignores any proxy
/// settings of the environment (everything here is on loopback).
fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET `url`: (status, content type, body).
fn get(url: &str) -> (u16, String, String) {
    let mut r = http()
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = r.body_mut().read_to_string().expect("UTF-8 body");
    (r.status().as_u16(), content_type, body)
}

/// The value of the sample `key` (`name{labels}` exactly as exposed).
fn sample(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(k, _)| *k == key))
        .map(|(_, v)| v.parse().expect("a number"))
}

/// The labels the endpoint puts on a source's samples (sorted by name).
fn source_labels(address: &str, host: &str) -> String {
    format!(r#"{{address="{address}",id="0",name="{host}"}}"#)
}

#[test]
fn metrics_agree_with_status_and_count_served_packets() {
    let ntp_port = free_udp_port();
    let upstream_metrics = free_tcp_port();
    let mut upstream = EngineProcess::start(&[
        "--listen",
        &format!("127.0.0.1:{ntp_port}"),
        "--local-stratum",
        "9",
        "--metrics",
        &format!("127.0.0.1:{upstream_metrics}"),
    ]);
    let metrics_port = free_tcp_port();
    let addr = format!("127.0.0.1:{ntp_port}");
    let mut engine = EngineProcess::start(&[
        "--source",
        &addr,
        "--minpoll",
        "-2",
        "--maxpoll",
        "-2",
        "--metrics",
        &format!("127.0.0.1:{metrics_port}"),
    ]);
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let labels = source_labels(&addr, "127.0.0.1");
    // Wait until the endpoint shows the source selected and at least three
    // answered polls (the scrape is at most a second old).
    let text = engine_support::wait_for(
        "metrics to show a selected source",
        Duration::from_secs(20),
        || {
            let (code, content_type, body) = get(&url);
            assert_eq!(code, 200, "{body}");
            assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
            (sample(&body, &format!("ntp_source_selected{labels}")) == Some(1.0)
                && sample(&body, &format!("ntp_source_reach{labels}")).is_some_and(|r| r >= 7.0))
            .then_some(body)
        },
    );
    let status = engine.status();
    assert!(status.synchronized);
    assert_eq!(sample(&text, "ntp_system_synchronized"), Some(1.0));
    assert_eq!(sample(&text, "ntp_system_clock_control"), Some(0.0));
    assert_eq!(sample(&text, "ntp_system_stratum"), Some(10.0));
    assert_eq!(sample(&text, "ntp_system_leap_indicator"), Some(0.0));
    let offset = sample(&text, "ntp_system_offset_seconds").expect("system offset");
    assert!(offset.abs() < 1e-3, "same clock, offset {offset}");
    assert_eq!(
        sample(&text, &format!("ntp_source_poll_interval_seconds{labels}")),
        Some(0.25)
    );
    // 0, or 1 when the scrape falls between a poll and its reply (seen
    // in CI under load); a counter that never reset would be higher.
    let unanswered = sample(&text, &format!("ntp_source_unanswered_polls{labels}"));
    assert!(
        matches!(unanswered, Some(n) if n <= 1.0),
        "unanswered polls {unanswered:?}"
    );
    let delay = sample(&text, &format!("ntp_source_delay_seconds{labels}")).expect("delay");
    assert!(delay > 0.0 && delay < 0.05, "loopback delay {delay}");
    assert!(sample(&text, &format!("ntp_source_offset_seconds{labels}")).is_some());
    assert!(sample(&text, &format!("ntp_source_uncertainty_seconds{labels}")).is_some());
    let updates = sample(&text, "ntp_system_updates_total").expect("updates");
    assert!(
        updates >= 1.0 && updates <= status.updates as f64,
        "{updates} vs {}",
        status.updates
    );
    assert_eq!(sample(&text, "ntp_system_steps_total"), Some(0.0));
    assert!(
        !text.contains("ntp_server_"),
        "a client-only engine has no server counters:\n{text}"
    );
    // Not under systemd: plain text lines, the message alone (the SOURCE
    // and OFFSET fields of this event are for the journal only).
    let log = engine.guard.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("synchronised to"))
        .unwrap_or_else(|| panic!("no synchronisation line in:\n{log}"));
    assert!(
        line.ends_with(&format!(
            "INFO timectl::engine::daemon: synchronised to {addr}"
        )),
        "{line:?}"
    );
    assert!(
        !log.contains("source=") && !log.contains("offset="),
        "{log}"
    );

    // The upstream engine counts what it served: the client's polls and
    // one malformed datagram of ours.
    let junk = UdpSocket::bind("127.0.0.1:0").expect("bind");
    junk.send_to(b"not ntp", ("127.0.0.1", ntp_port))
        .expect("send");
    let upstream_url = format!("http://127.0.0.1:{upstream_metrics}/metrics");
    let served = engine_support::wait_for(
        "the malformed datagram to be counted",
        Duration::from_secs(5),
        || {
            let (_, _, body) = get(&upstream_url);
            (sample(&body, "ntp_server_ignored_packets_total") == Some(1.0)).then_some(body)
        },
    );
    let answered = sample(&served, "ntp_server_accepted_packets_total").expect("answered");
    let received = sample(&served, "ntp_server_received_packets_total").expect("received");
    assert!(answered >= 3.0, "{served}");
    assert!(received >= answered + 1.0, "{served}");
    assert_eq!(
        sample(&served, "ntp_server_denied_packets_total"),
        Some(0.0)
    );
    let status = upstream.status().server.expect("serving");
    assert!(status.answered as f64 >= answered);
}

#[test]
fn metrics_endpoint_refuses_other_paths_and_methods() {
    let port = free_tcp_port();
    let _engine = EngineProcess::start(&[
        "--listen",
        &format!("127.0.0.1:{}", free_udp_port()),
        "--metrics",
        &format!("127.0.0.1:{port}"),
    ]);
    let (code, _, body) = get(&format!("http://127.0.0.1:{port}/"));
    assert_eq!(code, 404);
    assert!(body.contains("/metrics"), "{body}");
    let post = http()
        .post(format!("http://127.0.0.1:{port}/metrics"))
        .send_empty()
        .expect("POST");
    assert_eq!(post.status().as_u16(), 405);
    assert_eq!(
        post.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, HEAD")
    );
    let head = http()
        .head(format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .expect("HEAD");
    assert_eq!(head.status().as_u16(), 200);
    // A request header over the limit is refused, and the endpoint still
    // answers the next client.
    let long = "x".repeat(20_000);
    let refused = http()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .header("X-Long", &long)
        .call();
    assert!(
        refused
            .as_ref()
            .map_or(true, |r| r.status().as_u16() >= 400),
        "{refused:?}"
    );
    let (code, _, _) = get(&format!("http://127.0.0.1:{port}/metrics"));
    assert_eq!(code, 200);
}

fn daemon_check(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_timectl"))
        .arg("daemon")
        .args(args)
        .args(["--no-clock-control", "--check"])
        .env("TIMECTL_NO_CLOCK_CONTROL", "1")
        .output()
        .expect("run timectl daemon");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn metrics_addresses_beyond_loopback_need_explicit_consent() {
    let serve = ["--listen", "127.0.0.1:1123"];
    let (code, err) = daemon_check(&[&serve[..], &["--metrics", "0.0.0.0:9975"]].concat());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--metrics: metrics address 0.0.0.0:9975 is not a loopback address")
            && err.contains("--metrics-allow-remote"),
        "{err}"
    );
    let (code, err) = daemon_check(
        &[
            &serve[..],
            &["--metrics", "0.0.0.0:9975", "--metrics-allow-remote"],
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = daemon_check(&[&serve[..], &["--metrics", "localhost:9975"]].concat());
    assert_eq!(code, Some(2), "clap refuses a name: {err}");
    assert!(err.contains("--metrics"), "{err}");

    let dir = engine_support::state_dir();
    let config = dir.path().join("engine.yaml");
    std::fs::write(
        &config,
        "serve: { listen: [\"127.0.0.1:1123\"] }\nmetrics:\n  listen: \"[::]:9975\"\n",
    )
    .expect("write");
    let (code, err) = daemon_check(&["--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("metrics.listen: metrics address [::]:9975 is not a loopback address")
            && err.contains("allowRemote: true"),
        "{err}"
    );
    std::fs::write(
        &config,
        "serve: { listen: [\"127.0.0.1:1123\"] }\nmetrics:\n  listen: 127.0.0.1:99999\n",
    )
    .expect("write");
    let (code, err) = daemon_check(&["--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("{}:3:", config.display())),
        "located at the value: {err}"
    );
}

#[test]
fn a_metrics_port_in_use_fails_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = engine_support::state_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_timectl"))
        .args(["daemon", "--no-clock-control", "--listen"])
        .arg(format!("127.0.0.1:{}", free_udp_port()))
        .arg("--metrics")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--control")
        .arg(dir.path().join("engine.sock"))
        .env("TIMECTL_NO_CLOCK_CONTROL", "1")
        .stdout(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("metrics endpoint 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        !dir.path().join("engine.sock").exists(),
        "no control socket left behind"
    );
}

// --- with real outside parts (root; ci/system-tests.sh metrics) ---

/// A Prometheus server on 127.0.0.1 scraping `target` every second, with
/// its own config and storage in a temp dir; killed by its PID on drop.
struct Prometheus {
    guard: Guard,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let binary = require_program("prometheus", "prometheus");
        let dir = engine_support::state_dir();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: timectl\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_tcp_port();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .current_dir(dir.path());
        let guard =
            engine_support::spawn_logged(cmd, "prometheus", dir.path().join("prometheus.log"));
        let mut p = Prometheus {
            guard,
            port,
            _dir: dir,
        };
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        engine_support::wait_for("Prometheus to be ready", Duration::from_secs(30), || {
            p.guard.assert_running();
            http()
                .get(&ready)
                .call()
                .ok()
                .filter(|r| r.status().as_u16() == 200)
                .map(|_| ())
        });
        p
    }

    /// The result vector of an instant PromQL query through the HTTP API.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let mut r = http()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query("query", promql)
            .call()
            .unwrap_or_else(|e| panic!("query {promql}: {e}"));
        let body = r.body_mut().read_to_string().expect("body");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// The number in one PromQL vector element (`"value": [time, "text"]`).
fn promql_value(element: &serde_json::Value) -> f64 {
    element["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no value in {element}"))
}

/// `promtool check metrics` on `text`: (success, what it printed).
fn promtool_check(text: &str) -> (bool, String) {
    let promtool = require_program("promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
#[ignore = "needs root, chronyd and prometheus (promtool): run ci/system-tests.sh metrics"]
fn metrics_scraped_by_prometheus_from_an_engine_synchronised_to_chronyd() {
    require_root();
    let chronyd = Chronyd::server(free_udp_port());
    let addr = format!("127.0.0.1:{}", chronyd.port);
    let metrics_port = free_tcp_port();
    let serve_port = free_udp_port();
    let mut engine = EngineProcess::start(&[
        "--source",
        &addr,
        "--minpoll",
        "-1",
        "--maxpoll",
        "-1",
        "--listen",
        &format!("127.0.0.1:{serve_port}"),
        "--metrics",
        &format!("127.0.0.1:{metrics_port}"),
    ]);
    engine_support::wait_for(
        "the engine to synchronise to chronyd",
        Duration::from_secs(15),
        || engine.status().synchronized.then_some(()),
    );
    // Some served traffic, so that the server counters have values.
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    client
        .send_to(
            &Packet::client_request(NtpTimestamp(7), 6).encode(),
            ("127.0.0.1", serve_port),
        )
        .expect("send");
    let mut buf = [0u8; 128];
    client.recv(&mut buf).expect("the engine answers");

    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let (code, _, text) = get(&url);
    assert_eq!(code, 200);
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed:\n{said}\non:\n{text}");
    // promtool really checks: a counter without the _total suffix fails.
    let broken = text.replace("ntp_system_steps_total", "ntp_system_steps");
    let (ok, said) = promtool_check(&broken);
    assert!(!ok && said.contains("_total"), "promtool accepted: {said}");

    let prometheus = Prometheus::start(&format!("127.0.0.1:{metrics_port}"));
    let offset = engine_support::wait_for(
        "Prometheus to have the engine's offset",
        Duration::from_secs(30),
        || {
            prometheus
                .query(r#"ntp_system_offset_seconds{job="timectl"}"#)
                .first()
                .map(promql_value)
        },
    );
    let reach = engine_support::wait_for(
        "Prometheus to see the source reached",
        Duration::from_secs(30),
        || {
            prometheus
                .query(&format!(
                    r#"ntp_source_reach{{job="timectl",address="{addr}"}} >= 3"#
                ))
                .first()
                .map(promql_value)
        },
    );
    let up = prometheus.query(r#"up{job="timectl"}"#);
    assert_eq!(up.first().map(promql_value), Some(1.0), "{up:?}");
    let status = engine.status();
    let status_offset = status.offset_seconds.expect("offset");
    assert!(
        offset.abs() < 1e-3 && status_offset.abs() < 1e-3,
        "chronyd shares this clock: metrics {offset}, status {status_offset}"
    );
    assert!(
        (3.0..=255.0).contains(&reach) && reach.fract() == 0.0,
        "reach register {reach}"
    );
    let answered = prometheus.query(r#"ntp_server_accepted_packets_total{job="timectl"}"#);
    assert!(
        answered.first().map(promql_value).is_some_and(|v| v >= 1.0),
        "{answered:?}"
    );
    let selected = prometheus.query(r#"sum(ntp_source_selected{job="timectl"})"#);
    assert_eq!(
        selected.first().map(promql_value),
        Some(1.0),
        "{selected:?}"
    );
    eprintln!(
        "figure: Prometheus saw offset {offset:+.9} s, reach {reach} (status: {status_offset:+.9} s, reach {})",
        status.sources[0].report.reach
    );
}
