//! The NTS-KE server in-process, against the NTS-KE client
//! (`nts_ke::key_exchange`), then NTS requests answered by the Responder.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use timectl_engine::nts::cookie::COOKIE_LEN;
use timectl_engine::nts::ef;
use timectl_engine::nts::ke::{self, Decoder, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::*;
use crate::engine::config::{NtsServeConfig, ServeConfig};
use crate::engine::discipline::LocalClock;
use crate::engine::nts_ke::tests::Pki;
use crate::engine::nts_ke::{Trust, client_config, key_exchange};
use crate::engine::proto::{NtpTimestamp, Packet};
use crate::engine::server::{Responder, ServerStats};

fn pki() -> Pki {
    crate::engine::nts_ke::tests::pki("timectl test CA")
}

fn serve_config() -> ServeConfig {
    ServeConfig {
        listen: vec![],
        allow: vec![],
        deny: vec![],
        rate_limit: None,
        local_stratum: Some(1),
        nts: None,
    }
}

fn nts_config(pki: &Pki, max_connections: usize) -> NtsServeConfig {
    NtsServeConfig {
        certificate: pki.cert_file.clone(),
        key: pki.key_file.clone(),
        listen: vec![],
        key_dir: None,
        max_connections,
    }
}

struct Running {
    port: u16,
    keys: CookieKeys,
    stats: Arc<ServerStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(pki: &Pki, max_connections: usize, timeout: Duration) -> Running {
    let store = KeyStore::open(None).expect("keys");
    let stats = Arc::new(ServerStats::default());
    let server = KeServer::new(
        &serve_config(),
        &nts_config(pki, max_connections),
        store.keys.clone(),
        1123,
        stats.clone(),
        Monotonic::start(),
    )
    .expect("KE server")
    .with_timeout(timeout);
    let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(run(listener, Arc::new(server)));
    Running {
        port,
        keys: store.keys,
        stats,
        task,
    }
}

async fn exchange(pki: &Pki, port: u16) -> Result<crate::engine::nts_ke::KeyExchange, String> {
    key_exchange(
        "localhost",
        port,
        &Trust::CaFile(pki.ca_file.clone()),
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| e.to_string())
}

struct FixedClock;
impl LocalClock for FixedClock {
    fn now(&self) -> NtpTimestamp {
        NtpTimestamp::from_unix(1_800_000_000, 0)
    }
}

fn server_state() -> crate::engine::system::ServerState {
    crate::engine::system::ServerState {
        leap: crate::engine::proto::Leap::NoWarning,
        stratum: 1,
        reference_id: *b"LOCL",
        root_delay: 0.0,
        root_dispersion: 0.0,
        reference_time: FixedClock.now(),
        poll: crate::engine::units::PollExponent::saturating(6),
        precision: -20,
    }
}

#[tokio::test]
async fn key_exchange_then_nts_protected_ntp() {
    let pki = pki();
    let server = start(&pki, 10, Duration::from_secs(5)).await;
    let kx = exchange(&pki, server.port).await.expect("key exchange");
    assert_eq!(kx.cookies.len(), COOKIES_PER_RESPONSE);
    assert!(kx.cookies.iter().all(|c| c.len() == COOKIE_LEN));
    assert_eq!(kx.ntp_port, 1123, "Port record: NTP is not on 123");
    assert_eq!(kx.ntp_server, "localhost", "no Server record");
    assert_ne!(kx.c2s, kx.s2c);
    let report = settled(&server.stats, |r| r.ke_handshakes >= 1).await;
    assert_eq!(report.ke_handshakes, 1);

    let mut responder =
        Responder::new(&serve_config(), server.stats.clone()).with_nts(server.keys.clone());
    let uid = [0x5a; ef::UID_LEN];
    let header = Packet::client_request(NtpTimestamp(77), 6).encode();
    let request =
        ef::request_packet(&header, &kx.c2s, &uid, &kx.cookies[0], 2, &[1; 16]).expect("request");
    let reply = responder
        .respond(
            &request,
            "127.0.0.1".parse().expect("ip"),
            FixedClock.now(),
            0.0,
            &server_state(),
            &FixedClock,
        )
        .expect("answered");
    let checked = ef::check_reply(&kx.s2c, &uid, &reply).expect("client accepts the reply");
    assert_eq!(checked.cookies.len(), 3);
    let p = Packet::decode(&reply[..48]).expect("header");
    assert_eq!((p.stratum, p.origin_ts), (1, NtpTimestamp(77)));
    // The other session's keys do not open it.
    let other = exchange(&pki, server.port).await.expect("second exchange");
    assert!(ef::check_reply(&other.s2c, &uid, &reply).is_err());
}

/// Sends raw records over TLS with ALPN ntske/1 and returns the answer.
async fn raw_exchange(pki: &Pki, port: u16, request: &[Record]) -> Vec<Record> {
    raw_exchange_or_reset(pki, port, request)
        .await
        .expect("read the answer")
}

/// As `raw_exchange`, None when the connection is reset before the
/// answer is read (the server closes with request bytes unread).
async fn raw_exchange_or_reset(pki: &Pki, port: u16, request: &[Record]) -> Option<Vec<Record>> {
    let config = client_config(&Trust::CaFile(pki.ca_file.clone())).expect("client config");
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(&ke::encode_message(request).expect("encode"))
        .await
        .ok()?;
    let mut decoder = Decoder::new();
    let mut records = Vec::new();
    let mut buf = [0u8; 4096];
    while !decoder.is_finished() {
        let n = tls.read(&mut buf).await.ok()?;
        assert!(n > 0, "closed before End of Message");
        records.extend(decoder.feed(&buf[..n]).expect("decode"));
    }
    Some(records)
}

/// The stats once `done` holds (or after 2 s).
async fn settled(
    stats: &ServerStats,
    done: impl Fn(&crate::engine::server::ServerStatsReport) -> bool,
) -> crate::engine::server::ServerStatsReport {
    for _ in 0..200 {
        let report = stats.report();
        if done(&report) {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stats.report()
}

#[tokio::test]
async fn bad_requests_get_rfc_errors() {
    let pki = pki();
    let server = start(&pki, 10, Duration::from_secs(5)).await;
    let no_aead = [Record::NextProtocol(vec![0]), Record::EndOfMessage];
    assert_eq!(
        raw_exchange(&pki, server.port, &no_aead).await,
        [Record::Error(ke::ERROR_BAD_REQUEST), Record::EndOfMessage]
    );
    let other_aead = [
        Record::NextProtocol(vec![0]),
        Record::AeadAlgorithm(vec![1]),
        Record::EndOfMessage,
    ];
    assert_eq!(
        raw_exchange(&pki, server.port, &other_aead).await,
        [
            Record::NextProtocol(vec![0]),
            Record::AeadAlgorithm(vec![]),
            Record::EndOfMessage
        ]
    );
    // Too long a request: refused with Bad Request before it is all read.
    let padding = |n| Record::Unknown {
        critical: false,
        record_type: 0x4000,
        body: vec![0; n],
    };
    let long = [
        Record::NextProtocol(vec![0]),
        padding(3000),
        padding(3000),
        Record::AeadAlgorithm(vec![15]),
        Record::EndOfMessage,
    ];
    if let Some(answer) = raw_exchange_or_reset(&pki, server.port, &long).await {
        assert_eq!(
            answer,
            [Record::Error(ke::ERROR_BAD_REQUEST), Record::EndOfMessage]
        );
    }
    // The server task counts after its send: give it a moment.
    let report = settled(&server.stats, |r| r.ke_failed >= 3).await;
    assert_eq!((report.ke_handshakes, report.ke_failed), (0, 3));
}

#[tokio::test]
async fn other_alpn_or_none_is_refused() {
    let pki = pki();
    let server = start(&pki, 10, Duration::from_secs(5)).await;
    for alpn in [vec![b"http/1.1".to_vec()], vec![]] {
        let mut config = client_config(&Trust::CaFile(pki.ca_file.clone())).expect("config");
        config.alpn_protocols = alpn.clone();
        let connector = TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        let outcome = match connector.connect(name, tcp).await {
            Err(_) => true,
            Ok(mut tls) => {
                let _ = tls.write_all(&ke::ClientRequest::new().encode()).await;
                let mut buf = [0u8; 64];
                // No response: closed (0 bytes) or reset.
                !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
            }
        };
        assert!(outcome, "ALPN {alpn:?} was served");
    }
    assert_eq!(server.stats.report().ke_handshakes, 0);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_slots_come_back() {
    let pki = pki();
    let server = start(&pki, 2, Duration::from_millis(500)).await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(
            TcpStream::connect(("127.0.0.1", server.port))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        exchange(&pki, server.port).await.is_err(),
        "both slots are held by idle connections"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    exchange(&pki, server.port)
        .await
        .expect("slots released after the deadline");
    let report = settled(&server.stats, |r| r.ke_handshakes >= 1).await;
    assert!(report.ke_refused >= 4, "{report:?}");
    assert_eq!(report.ke_failed, 2, "{report:?}");
    assert_eq!(report.ke_handshakes, 1);
}

#[test]
fn tls_config_errors_name_the_file() {
    let pki = pki();
    let missing = pki.dir.path().join("missing.pem");
    let err = tls_config(&missing, &pki.key_file).unwrap_err().to_string();
    assert!(
        err.contains("certificate") && err.contains("missing.pem"),
        "{err}"
    );
    let err = tls_config(&pki.cert_file, &missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("key") && err.contains("missing.pem"), "{err}");
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM\n").expect("write");
    let err = tls_config(&garbage, &pki.key_file).unwrap_err().to_string();
    assert!(err.contains("garbage.pem"), "{err}");
    let err = tls_config(&pki.cert_file, &garbage)
        .unwrap_err()
        .to_string();
    assert!(err.contains("garbage.pem"), "{err}");
    // A key that is not the certificate's.
    let other = pki.dir.path().join("other-key.pem");
    std::fs::write(
        &other,
        rcgen::KeyPair::generate().expect("key").serialize_pem(),
    )
    .expect("write");
    let err = tls_config(&pki.cert_file, &other).unwrap_err().to_string();
    assert!(
        err.contains("cert.pem") && err.contains("other-key.pem"),
        "{err}"
    );
    assert!(tls_config(&pki.cert_file, &pki.key_file).is_ok());
}

#[test]
fn keys_persist_across_restarts_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let key_dir = dir.path().join("keys");
    let first = KeyStore::open(Some(&key_dir)).expect("first start");
    let content = CookieContent {
        aead: AEAD_AES_SIV_CMAC_256,
        c2s: [1; 32],
        s2c: [2; 32],
    };
    let cookie = first
        .keys
        .read()
        .expect("lock")
        .seal(&content, &[3; 16])
        .expect("seal");
    let file = key_dir.join(KEY_FILE);
    let mode = std::fs::metadata(&file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!file.with_extension("tmp").exists());
    let second = KeyStore::open(Some(&key_dir)).expect("restart");
    assert_eq!(second.keys.read().expect("lock").open(&cookie), Ok(content));
    // Rotation writes the file; the old cookie still opens after it.
    let now = unix_now() + DEFAULT_ROTATION_SECONDS;
    assert!(second.rotate_if_due(now).expect("rotate"));
    let third = KeyStore::open(Some(&key_dir)).expect("restart");
    assert!(third.keys.read().expect("lock").keys().len() >= 2);
    assert!(third.keys.read().expect("lock").open(&cookie).is_ok());
    // Without a key directory nothing is written and the keys are new.
    let memory = KeyStore::open(None).expect("in memory");
    assert!(memory.keys.read().expect("lock").open(&cookie).is_err());
}

#[test]
fn unreadable_key_dir_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").expect("write");
    let err = KeyStore::open(Some(&file))
        .err()
        .expect("error")
        .to_string();
    assert!(err.contains("plain-file"), "{err}");
}

#[test]
fn expired_keys_in_the_file_are_dropped_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let mut old = KeySet::new(DEFAULT_ROTATION_SECONDS);
    let long_ago = unix_now() - 3 * DEFAULT_ROTATION_SECONDS - 10;
    old.rotate(long_ago, 0x0bad, [9; 32]);
    let content = CookieContent {
        aead: AEAD_AES_SIV_CMAC_256,
        c2s: [1; 32],
        s2c: [2; 32],
    };
    let cookie = old.seal(&content, &[3; 16]).expect("seal");
    std::fs::write(dir.path().join(KEY_FILE), old.serialize()).expect("write");
    let store = KeyStore::open(Some(dir.path())).expect("start");
    let keys = store.keys.read().expect("lock");
    assert_eq!(
        keys.open(&cookie),
        Err(timectl_engine::nts::cookie::CookieError::UnknownKey(0x0bad))
    );
    assert_eq!(keys.keys().len(), 1, "a fresh current key");
    let persisted = std::fs::read_to_string(dir.path().join(KEY_FILE)).expect("read");
    assert!(!persisted.contains("00000bad"), "{persisted}");
    // A malformed file is replaced, not fatal.
    std::fs::write(dir.path().join(KEY_FILE), "garbage\n").expect("write");
    drop(keys);
    let store = KeyStore::open(Some(dir.path())).expect("start over a bad file");
    assert_eq!(store.keys.read().expect("lock").keys().len(), 1);
}

/// The daemon's `start` with an IPv6 listen address: NTS-KE is served on
/// `[::1]` (a v6-only socket), the bound address is reported with its
/// real port, and a key exchange over IPv6 gets cookies and the NTP port.
#[tokio::test]
async fn ke_listens_on_ipv6_and_reports_the_bound_address() {
    let pki = pki();
    let mut nts = nts_config(&pki, 10);
    nts.listen = vec!["[::1]:0".parse().expect("addr")];
    let store = KeyStore::open(None).expect("keys");
    let (tasks, listening) = super::start(
        &serve_config(),
        &nts,
        store,
        1123,
        Arc::new(ServerStats::default()),
        Monotonic::start(),
    )
    .expect("start");
    assert_eq!(listening.len(), 1, "{listening:?}");
    let bound: std::net::SocketAddr = listening[0].parse().expect("bound address");
    assert_eq!(bound.ip(), "::1".parse::<std::net::IpAddr>().expect("ip"));
    assert_ne!(bound.port(), 0);
    let kx = crate::engine::nts_ke::key_exchange_at(
        "localhost",
        bound,
        &Trust::CaFile(pki.ca_file.clone()),
        Duration::from_secs(5),
    )
    .await;
    tasks.iter().for_each(|t| t.abort());
    let kx = kx.expect("key exchange over IPv6");
    assert_eq!(kx.cookies.len(), 8);
    assert_eq!(kx.ntp_port, 1123);
}
