//! The NTS-KE client against a real chronyd NTS-KE server (issue 10): a
//! throw-away CA and `localhost` certificate made with openssl, chronyd
//! (`-x`: never touches the clock) with ntsservercert/ntsserverkey on free
//! loopback ports, then `key_exchange` and one NTS-protected NTP request
//! sealed with `timectl_engine::nts::ef`; then `timectl daemon --nts`
//! against it: synchronised over NTS, another CA's certificate refused (and
//! retried), and a UDP proxy that corrupts or replays chronyd's replies.
//! Needs root, chronyd and openssl: run `ci/system-tests.sh`.

mod engine_support;
mod support;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine_support::{EngineProcess, free_tcp_port, free_udp_port};
use timectl::engine::control::{NtsSourceStatus, StatusDocument};

use support::{ChronyPeer, Pki, check_ok, require_root_and, wait_for};
use timectl::engine::nts_ke::{KeError, KeyExchange, Trust, key_exchange};
use timectl_engine::nts::ef;

const TIMEOUT: Duration = Duration::from_secs(5);

/// chronyd as NTS-KE server on `ke_port` and NTP server on `ntp_port`.
fn chronyd_nts(pki: &Pki, ke_port: u16, ntp_port: u16) -> ChronyPeer {
    chronyd_nts_with(pki, ke_port, ntp_port, None)
}

/// Like `chronyd_nts`; `ntp_server` is sent as the KE Server record
/// (chrony's `ntsntpserver`), to send the clients elsewhere.
fn chronyd_nts_with(
    pki: &Pki,
    ke_port: u16,
    ntp_port: u16,
    ntp_server: Option<&str>,
) -> ChronyPeer {
    let dump = pki.path("ntsdump");
    std::fs::create_dir(&dump).expect("create ntsdumpdir");
    let mut builder = ChronyPeer::builder();
    if let Some(server) = ntp_server {
        builder = builder.line(&format!("ntsntpserver {server}"));
    }
    let peer = builder
        .port(ntp_port)
        .nts_server(pki, ke_port)
        .line(&format!("ntsdumpdir {}", dump.display()))
        .start();
    wait_for("chronyd's NTS-KE port to accept", TIMEOUT, || {
        TcpStream::connect(("127.0.0.1", ke_port))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    peer
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Sends one NTS request with the first cookie and returns chronyd's
/// authenticated reply's new cookies.
fn nts_ntp_exchange(kx: &KeyExchange) -> Vec<Vec<u8>> {
    let mut header = [0u8; 48];
    header[0] = 0x23; // LI 0, version 4, mode 3 (client)
    header[40..].copy_from_slice(&rand::random::<[u8; 8]>());
    let uid: [u8; ef::UID_LEN] = rand::random();
    let nonce: [u8; ef::NONCE_LEN] = rand::random();
    let packet = ef::request_packet(&header, &kx.c2s, &uid, &kx.cookies[0], 1, &nonce)
        .expect("seal NTS request");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    socket
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    socket
        .send_to(&packet, ("127.0.0.1", kx.ntp_port))
        .expect("send NTS request");
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).expect("chronyd's NTS reply");
    let reply = &buf[..n];
    assert_eq!(&reply[24..32], &header[40..48], "origin timestamp");
    assert_eq!(reply[0] & 0x07, 4, "mode 4 (server)");
    let checked = ef::check_reply(&kx.s2c, &uid, reply).expect("reply authenticates with S2C");
    checked.cookies
}

#[test]
#[ignore = "needs root and chronyd (NTS); run ci/system-tests.sh"]
fn key_exchange_with_chronyd_then_authenticated_ntp() {
    require_root_and(&["chronyd", "openssl"]);
    let pki = Pki::new("nts");
    let (ke_port, ntp_port) = (free_tcp_port(), free_udp_port());
    let chronyd = chronyd_nts(&pki, ke_port, ntp_port);
    let trust = Trust::CaFile(pki.path("ca.pem"));
    let kx = runtime()
        .block_on(key_exchange("localhost", ke_port, &trust, TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}\nchronyd log:\n{}", chronyd.log()));
    println!("{kx:?}");
    assert_eq!(kx.aead, 15);
    assert_eq!(kx.cookies.len(), 8, "chrony sends 8 cookies");
    // chrony sends a Port record when its NTP port is not 123, and no
    // Server record: the NTP server is the KE host.
    assert_eq!(kx.ntp_port, ntp_port);
    assert_eq!(kx.ntp_server, "localhost");
    let cookies = nts_ntp_exchange(&kx);
    assert_eq!(cookies.len(), 2, "one new cookie per cookie + placeholder");
    assert!(cookies.iter().all(|c| c.len() == kx.cookies[0].len()));
}

#[test]
#[ignore = "needs root and chronyd (NTS); run ci/system-tests.sh"]
fn chronyd_certificate_refused_with_another_ca() {
    require_root_and(&["chronyd", "openssl"]);
    let pki = Pki::new("nts");
    let other = Pki::new("other");
    let (ke_port, ntp_port) = (free_tcp_port(), free_udp_port());
    let _chronyd = chronyd_nts(&pki, ke_port, ntp_port);
    let ca = other.path("ca.pem");
    let err = runtime()
        .block_on(key_exchange(
            "localhost",
            ke_port,
            &Trust::CaFile(ca.clone()),
            TIMEOUT,
        ))
        .expect_err("certificate of another CA accepted");
    println!("{err}");
    assert!(matches!(err, KeError::Untrusted { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&ca.display().to_string()), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
}

/// The NTS part of source 0 in the status, if any.
fn nts_of(s: &StatusDocument) -> Option<NtsSourceStatus> {
    s.sources.first().and_then(|src| src.nts.clone())
}

/// `timectl daemon --source 127.0.0.1:KE_PORT --nts --nts-ca CA` (the
/// support code adds --no-clock-control and --control).
fn nts_daemon(ke_port: u16, ca: &std::path::Path) -> EngineProcess {
    EngineProcess::start(&[
        "--source",
        &format!("127.0.0.1:{ke_port}"),
        "--nts",
        "--nts-ca",
        &ca.display().to_string(),
    ])
}

fn status_json(engine: &EngineProcess) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_timectl"))
        .args(["status", "--json", "--control"])
        .arg(engine.control())
        .output()
        .expect("run timectl status");
    check_ok("timectl status --json", &out);
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn status_text(engine: &EngineProcess) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_timectl"))
        .args(["status", "--control"])
        .arg(engine.control())
        .output()
        .expect("run timectl status");
    check_ok("timectl status", &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs root and chronyd (NTS); run ci/system-tests.sh"]
fn daemon_synchronises_over_nts_to_chronyd() {
    require_root_and(&["chronyd", "openssl"]);
    let pki = Pki::new("nts");
    let (ke_port, ntp_port) = (free_tcp_port(), free_udp_port());
    let chronyd = chronyd_nts(&pki, ke_port, ntp_port);
    let start = Instant::now();
    let mut engine = nts_daemon(ke_port, &pki.path("ca.pem"));
    let started = start.elapsed();
    let s = engine_support::wait_for("synchronised over NTS", Duration::from_secs(20), || {
        let s = engine.status();
        s.synchronized.then_some(s)
    });
    let to_sync = start.elapsed();
    println!(
        "time to synchronised over NTS: {:.3} s (daemon up after {:.3} s)",
        to_sync.as_secs_f64(),
        started.as_secs_f64()
    );
    // The KE, one iburst request and its reply: the target is under 2 s.
    assert!(
        to_sync < Duration::from_secs(2),
        "{:.3} s to synchronised over NTS",
        to_sync.as_secs_f64()
    );
    let nts = nts_of(&s).unwrap_or_else(|| panic!("no NTS status: {s:?}"));
    assert_eq!(nts.state, "established", "{nts:?}");
    assert!(nts.authenticated, "{nts:?}");
    assert!(nts.cookies > 0, "{nts:?}");
    assert_eq!(nts.key_exchanges, 1, "{nts:?}");
    assert_eq!(
        nts.ntp_address.as_deref(),
        Some(format!("127.0.0.1:{ntp_port}").as_str()),
        "the Port record's port"
    );
    assert_eq!(
        (nts.dropped_unauthenticated, nts.dropped_replayed),
        (0, 0),
        "{nts:?}\n{}",
        chronyd.log()
    );
    let json = status_json(&engine);
    let j = &json["sources"][0]["nts"];
    assert_eq!(j["authenticated"], true, "{json}");
    assert!(j["cookies"].as_u64().is_some_and(|c| c > 0), "{json}");
    let text = status_text(&engine);
    assert!(
        text.contains(&format!(
            "NTS 127.0.0.1:{ke_port}: established, authenticated"
        )),
        "{text}"
    );
}

#[test]
#[ignore = "needs root and chronyd (NTS); run ci/system-tests.sh"]
fn daemon_refuses_another_cas_certificate_and_keeps_retrying() {
    require_root_and(&["chronyd", "openssl"]);
    let pki = Pki::new("nts");
    let other = Pki::new("other");
    let (ke_port, ntp_port) = (free_tcp_port(), free_udp_port());
    let _chronyd = chronyd_nts(&pki, ke_port, ntp_port);
    let mut engine = nts_daemon(ke_port, &other.path("ca.pem"));
    let nts = engine_support::wait_for("the KE error", Duration::from_secs(10), || {
        nts_of(&engine.status()).filter(|n| n.last_key_exchange_error.is_some())
    });
    println!("{nts:?}");
    let error = nts.last_key_exchange_error.clone().unwrap_or_default();
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(error.contains("--nts-ca"), "says what to do: {error}");
    assert!(
        error.contains(&other.path("ca.pem").display().to_string()),
        "names the trust source: {error}"
    );
    assert_eq!(nts.state, "retrying");
    assert!(!nts.authenticated);
    // The first retry comes after 4 s +- 25 %: a second failure, and no
    // giving up.
    let nts = engine_support::wait_for("a retry", Duration::from_secs(10), || {
        let s = engine.status();
        assert!(!s.synchronized, "synchronised without keys: {s:?}");
        nts_of(&s).filter(|n| n.key_exchange_failures >= 2)
    });
    let next = nts.next_retry_seconds.unwrap_or_default();
    assert!(
        (6.0..=10.0).contains(&next),
        "second delay 8 s +- 25 %: {next}"
    );
    let s = engine.status();
    assert!(!s.synchronized);
    assert_eq!(s.sources[0].report.reach, 0, "no reply ever used");
    let text = status_text(&engine);
    assert!(
        text.contains("key exchange failed") && text.contains("UnknownIssuer"),
        "{text}"
    );
}

/// What the proxy does to chronyd's replies.
#[derive(Clone, Copy, PartialEq)]
enum Tamper {
    /// Flip one byte of the authenticator's ciphertext.
    FlipAuthenticator,
    /// Send the first authenticated reply seen again before each later
    /// reply (which is forwarded untouched).
    ReplayFirst,
}

/// A UDP proxy on `front` (the address the KE Server/Port records name)
/// in front of chronyd's NTP port, tampering with the replies.
struct NtsProxy {
    stop: Arc<AtomicBool>,
    replies: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NtsProxy {
    fn start(front: SocketAddr, upstream: SocketAddr, tamper: Tamper) -> NtsProxy {
        let front = UdpSocket::bind(front).expect("proxy bind");
        let back = UdpSocket::bind("127.0.0.1:0").expect("proxy bind");
        back.connect(upstream).expect("proxy connect");
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(5)))
                .expect("timeout");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(AtomicU64::new(0));
        let (stop2, replies2) = (stop.clone(), replies.clone());
        let thread = std::thread::spawn(move || {
            let mut client = None;
            let mut first: Option<Vec<u8>> = None;
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    client = Some(from);
                    let _ = back.send(&buf[..n]);
                }
                let Ok(n) = back.recv(&mut buf) else { continue };
                let Some(c) = client else { continue };
                let mut reply = buf[..n].to_vec();
                replies2.fetch_add(1, Ordering::Relaxed);
                match tamper {
                    Tamper::FlipAuthenticator => {
                        let at = authenticator_ciphertext(&reply).expect("an NTS reply");
                        reply[at] ^= 0x01;
                    }
                    Tamper::ReplayFirst => match &first {
                        Some(old) => {
                            let _ = front.send_to(old, c);
                        }
                        None => first = Some(reply.clone()),
                    },
                }
                let _ = front.send_to(&reply, c);
            }
        });
        NtsProxy {
            stop,
            replies,
            thread: Some(thread),
        }
    }

    fn replies(&self) -> u64 {
        self.replies.load(Ordering::Relaxed)
    }
}

impl Drop for NtsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Offset of the first ciphertext byte of the reply's NTS authenticator.
fn authenticator_ciphertext(packet: &[u8]) -> Option<usize> {
    let mut at = 48;
    while at + 8 <= packet.len() {
        let t = u16::from_be_bytes([packet[at], packet[at + 1]]);
        let len = u16::from_be_bytes([packet[at + 2], packet[at + 3]]) as usize;
        if t == ef::NTS_AUTHENTICATOR {
            let nonce_len = u16::from_be_bytes([packet[at + 4], packet[at + 5]]) as usize;
            return Some(at + 8 + nonce_len);
        }
        if len < 16 {
            return None;
        }
        at += len;
    }
    None
}

/// chronyd on 127.0.0.1:P names 127.0.0.2 as NTP server in its KE answers;
/// the proxy listens on 127.0.0.2:P.
fn behind_proxy(pki: &Pki, tamper: Tamper) -> (ChronyPeer, NtsProxy, u16) {
    let (ke_port, ntp_port) = (free_tcp_port(), free_udp_port());
    let chronyd = chronyd_nts_with(pki, ke_port, ntp_port, Some("127.0.0.2"));
    let proxy = NtsProxy::start(
        SocketAddr::from(([127, 0, 0, 2], ntp_port)),
        SocketAddr::from(([127, 0, 0, 1], ntp_port)),
        tamper,
    );
    (chronyd, proxy, ke_port)
}

#[test]
#[ignore = "needs root and chronyd (NTS); run ci/system-tests.sh"]
fn replies_with_a_flipped_authenticator_byte_are_never_used() {
    require_root_and(&["chronyd", "openssl"]);
    let pki = Pki::new("nts");
    let (chronyd, proxy, ke_port) = behind_proxy(&pki, Tamper::FlipAuthenticator);
    let metrics = free_tcp_port();
    let mut engine = EngineProcess::start(&[
        "--source",
        &format!("127.0.0.1:{ke_port}"),
        "--nts",
        "--nts-ca",
        &pki.path("ca.pem").display().to_string(),
        "--metrics",
        &format!("127.0.0.1:{metrics}"),
        // Polls every 0.25 s: the 8 cookies are spent within 2-3 s.
        "--minpoll",
        "-2",
        "--maxpoll",
        "-2",
    ]);
    let nts = engine_support::wait_for("3 dropped replies", Duration::from_secs(15), || {
        let s = engine.status();
        assert!(!s.synchronized, "synchronised on tampered replies: {s:?}");
        nts_of(&s).filter(|n| n.dropped_unauthenticated >= 3)
    });
    println!("{nts:?}");
    assert_eq!(
        nts.ntp_address.as_deref(),
        Some(format!("127.0.0.2:{}", chronyd.port()).as_str()),
        "the Server record sends us through the proxy"
    );
    assert!(proxy.replies() >= 3);
    assert!(!nts.authenticated);
    assert_eq!(nts.authenticated_replies, 0);
    assert!(
        nts.last_drop_reason
            .as_deref()
            .is_some_and(|r| r.contains("authentication failed")),
        "{nts:?}"
    );
    let s = engine.status();
    assert!(!s.synchronized);
    assert_eq!(s.sources[0].report.reach, 0, "no reply reached the engine");
    assert_eq!(s.sources[0].report.samples, 0);
    // The same counters on the Prometheus endpoint (refreshed each second).
    let labels = format!(r#"address="127.0.0.1:{ke_port}",id="0",name="127.0.0.1""#);
    let key =
        format!(r#"ntp_source_nts_dropped_replies_total{{{labels},reason="unauthenticated"}}"#);
    let text = engine_support::wait_for("the metrics", Duration::from_secs(5), || {
        let text = scrape(metrics);
        sample(&text, &key)
            .is_some_and(|v| v >= 3.0)
            .then_some(text)
    });
    assert_eq!(
        sample(&text, &format!("ntp_source_nts_authenticated{{{labels}}}")),
        Some(0.0),
        "{text}"
    );
    // Cookies spent without one authenticated answer: the next key
    // exchange waits out the backoff (3-5 s), then comes.
    let nts = engine_support::wait_for(
        "the backoff after unanswered keys",
        Duration::from_secs(10),
        || {
            nts_of(&engine.status()).filter(|n| {
                n.state == "retrying"
                    && n.last_key_exchange_error
                        .as_deref()
                        .is_some_and(|e| e.contains("no authenticated reply"))
            })
        },
    );
    println!("{nts:?}");
    assert_eq!(nts.key_exchanges, 1);
    assert_eq!(nts.key_exchange_failures, 0, "the KE itself worked");
    let nts = engine_support::wait_for("a second key exchange", Duration::from_secs(10), || {
        let s = engine.status();
        assert!(!s.synchronized, "synchronised on tampered replies: {s:?}");
        nts_of(&s).filter(|n| n.key_exchanges >= 2)
    });
    println!("{nts:?}");
    assert_eq!(nts.authenticated_replies, 0);
}

/// The metrics endpoint's text.
fn scrape(port: u16) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}/metrics");
    agent
        .get(&url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .expect("UTF-8 body")
}

/// The value of the sample `key` (`name{labels}` exactly as exposed).
fn sample(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(k, _)| *k == key))
        .map(|(_, v)| v.parse().expect("a number"))
}

#[test]
#[ignore = "needs root and chronyd (NTS); run ci/system-tests.sh"]
fn replayed_replies_are_dropped_and_the_real_ones_used() {
    require_root_and(&["chronyd", "openssl"]);
    let pki = Pki::new("nts");
    let (_chronyd, proxy, ke_port) = behind_proxy(&pki, Tamper::ReplayFirst);
    let mut engine = nts_daemon(ke_port, &pki.path("ca.pem"));
    // The first reply synchronises; the iburst's next ones (2 s apart)
    // each come after a replay of the first.
    let s = engine_support::wait_for(
        "synchronised, two replays dropped",
        Duration::from_secs(20),
        || {
            let s = engine.status();
            let replays = nts_of(&s).map_or(0, |n| n.dropped_replayed);
            (s.synchronized && replays >= 2).then_some(s)
        },
    );
    let nts = nts_of(&s).expect("NTS status");
    println!("{nts:?} after {} replies", proxy.replies());
    assert!(nts.authenticated);
    assert!(nts.dropped_replayed >= 1, "{nts:?}");
    assert!(
        nts.authenticated_replies >= 2,
        "the real replies used: {nts:?}"
    );
    assert!(
        nts.dropped_replayed + 1 >= nts.authenticated_replies,
        "each real reply after the first came with a replay: {nts:?}"
    );
    assert_eq!(nts.dropped_unauthenticated, 0, "{nts:?}");
}

#[test]
#[ignore = "needs root and chronyd (NTS); run ci/system-tests.sh"]
fn nts_nak_after_the_server_forgets_its_keys_starts_a_new_key_exchange() {
    require_root_and(&["chronyd", "openssl"]);
    let pki = Pki::new("nts");
    let (ke_port, ntp_port) = (free_tcp_port(), free_udp_port());
    let chronyd = chronyd_nts(&pki, ke_port, ntp_port);
    let mut engine = EngineProcess::start(&[
        "--source",
        &format!("127.0.0.1:{ke_port}"),
        "--nts",
        "--nts-ca",
        &pki.path("ca.pem").display().to_string(),
        "--minpoll",
        "-1",
        "--maxpoll",
        "-1",
    ]);
    engine_support::wait_for("authenticated", Duration::from_secs(10), || {
        nts_of(&engine.status()).filter(|n| n.authenticated)
    });
    // A new chronyd with new server keys (the dump of the old ones
    // removed): our cookies no longer decrypt, it answers with NTS NAKs.
    drop(chronyd);
    std::fs::remove_dir_all(pki.path("ntsdump")).expect("remove ntsdumpdir");
    let chronyd = chronyd_nts(&pki, ke_port, ntp_port);
    let nts = engine_support::wait_for("a NAK and a new KE", Duration::from_secs(15), || {
        nts_of(&engine.status()).filter(|n| n.naks >= 1 && n.key_exchanges >= 2 && n.authenticated)
    });
    println!("{nts:?}");
    assert_eq!(nts.state, "established");
    assert!(nts.cookies > 0);
    assert!(
        engine.status().synchronized,
        "still synchronised\n{}",
        chronyd.log()
    );
}

#[test]
#[ignore = "needs root and chronyd (NTS); run ci/system-tests.sh"]
fn key_exchange_server_down_at_start_is_retried_until_it_answers() {
    require_root_and(&["chronyd", "openssl"]);
    let pki = Pki::new("nts");
    let (ke_port, ntp_port) = (free_tcp_port(), free_udp_port());
    let mut engine = nts_daemon(ke_port, &pki.path("ca.pem"));
    let nts = engine_support::wait_for("a refused connection", Duration::from_secs(10), || {
        nts_of(&engine.status()).filter(|n| n.key_exchange_failures >= 1)
    });
    println!("{nts:?}");
    let error = nts.last_key_exchange_error.unwrap_or_default();
    assert!(error.contains("cannot connect"), "{error}");
    // The first retry is 3-5 s after the failure: the server is up by then.
    let chronyd = chronyd_nts(&pki, ke_port, ntp_port);
    let s = engine_support::wait_for(
        "synchronised after a retry",
        Duration::from_secs(10),
        || {
            let s = engine.status();
            s.synchronized.then_some(s)
        },
    );
    let nts = nts_of(&s).expect("NTS status");
    println!("{nts:?}");
    assert_eq!(nts.state, "established");
    assert_eq!(nts.key_exchanges, 1);
    assert_eq!(nts.last_key_exchange_error, None, "cleared by the success");
    assert!(nts.authenticated, "{nts:?}\n{}", chronyd.log());
}
