//! In-process NTS-KE servers (tokio-rustls, a throw-away rcgen CA) against
//! `key_exchange`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use timectl_engine::nts::ke::{self, Decoder, Record, ResponseError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::*;

/// A throw-away CA named `ca_name` and a `localhost` server certificate
/// signed by it: as DER for in-process servers, and as PEM files
/// (`ca.pem`, `cert.pem`, `key.pem`) for what reads files. Also used by the
/// NTS-KE server's tests.
pub(crate) struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

pub(crate) fn pki(ca_name: &str) -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    };
    Pki {
        ca_file: write("ca.pem", ca_cert.pem()),
        cert_file: write("cert.pem", cert.pem()),
        key_file: write("key.pem", key.serialize_pem()),
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        dir,
    }
}

/// What the test server does after reading the request.
enum Reply {
    Records(Vec<Record>),
    Stall,
}

type ServerKeys = Result<([u8; KEY_LEN], [u8; KEY_LEN]), String>;

/// Serves one NTS-KE connection on a loopback port; the task returns the
/// server side's exported (c2s, s2c) keys.
async fn serve(pki: &Pki, alpn: bool, reply: Reply) -> (u16, JoinHandle<ServerKeys>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert.clone()],
            PrivateKeyDer::Pkcs8(pki.key.clone_key()),
        )
        .expect("server config");
    if alpn {
        config.alpn_protocols = vec![ALPN_NTSKE.to_vec()];
    }
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        read_request(&mut tls).await?;
        let records = match reply {
            Reply::Records(records) => records,
            Reply::Stall => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return Err("stalled".to_string());
            }
        };
        let message = ke::encode_message(&records).map_err(|e| e.to_string())?;
        tls.write_all(&message).await.map_err(|e| e.to_string())?;
        let conn = tls.get_ref().1;
        let export = |context: [u8; 5]| {
            conn.export_keying_material([0u8; KEY_LEN], EXPORTER_LABEL.as_bytes(), Some(&context))
                .map_err(|e| e.to_string())
        };
        let keys = (export(ke::c2s_context())?, export(ke::s2c_context())?);
        let _ = tls.shutdown().await;
        Ok(keys)
    });
    (port, task)
}

async fn read_request(
    tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Result<(), String> {
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 1024];
    while !decoder.is_finished() {
        let n = tls.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("client closed before End of Message".to_string());
        }
        decoder.feed(&buf[..n]).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn cookies(n: u8) -> Vec<Record> {
    (0..n).map(|i| Record::NewCookie(vec![i; 100])).collect()
}

fn accept(extra: Vec<Record>) -> Reply {
    let mut records = vec![
        Record::NextProtocol(vec![ke::PROTOCOL_NTPV4]),
        Record::AeadAlgorithm(vec![ke::AEAD_AES_SIV_CMAC_256]),
    ];
    records.extend(extra);
    records.push(Record::EndOfMessage);
    Reply::Records(records)
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn exchange_agrees_on_keys_and_returns_cookies() {
    let pki = pki("timectl test CA");
    let (port, server) = serve(&pki, true, accept(cookies(8))).await;
    let trust = Trust::CaFile(pki.ca_file.clone());
    let kx = key_exchange("localhost", port, &trust, TIMEOUT)
        .await
        .expect("key exchange");
    let (c2s, s2c) = server.await.expect("server task").expect("server");
    assert_eq!(kx.c2s, c2s);
    assert_eq!(kx.s2c, s2c);
    assert_ne!(kx.c2s, kx.s2c);
    assert_eq!(kx.cookies, (0..8).map(|i| vec![i; 100]).collect::<Vec<_>>());
    assert_eq!(kx.aead, 15);
    assert_eq!((kx.ntp_server.as_str(), kx.ntp_port), ("localhost", 123));
    assert!(!kx.ntp_port_given, "no Port record");
    let debug = format!("{kx:?}");
    assert!(debug.contains("<8 redacted>"), "{debug}");
    assert!(!debug.contains(&format!("{:?}", kx.c2s)), "{debug}");
}

#[tokio::test]
async fn server_and_port_records_override_the_defaults() {
    let pki = pki("timectl test CA");
    let extra = vec![
        Record::Server("ntp.example".to_string()),
        Record::Port(11123),
        Record::NewCookie(vec![7; 64]),
    ];
    let (port, _server) = serve(&pki, true, accept(extra)).await;
    let trust = Trust::CaFile(pki.ca_file.clone());
    let kx = key_exchange("localhost", port, &trust, TIMEOUT)
        .await
        .expect("key exchange");
    assert_eq!(
        (kx.ntp_server.as_str(), kx.ntp_port),
        ("ntp.example", 11123)
    );
    assert!(kx.ntp_port_given);
}

#[tokio::test]
async fn certificate_of_another_ca_is_refused() {
    let server_pki = pki("server CA");
    let client_pki = pki("other CA");
    let (port, _server) = serve(&server_pki, true, accept(cookies(1))).await;
    let trust = Trust::CaFile(client_pki.ca_file.clone());
    let err = key_exchange("localhost", port, &trust, TIMEOUT)
        .await
        .expect_err("untrusted certificate accepted");
    assert!(matches!(err, KeError::Untrusted { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("not trusted by the CAs in"), "{message}");
    assert!(
        message.contains(&client_pki.ca_file.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("UnknownIssuer") && message.contains("give the server's CA with --nts-ca"),
        "{message}"
    );
}

#[tokio::test]
async fn certificate_for_another_name_is_refused_with_that_hint() {
    let pki = pki("timectl test CA");
    let (port, _server) = serve(&pki, true, accept(cookies(1))).await;
    let trust = Trust::CaFile(pki.ca_file.clone());
    // The certificate names localhost only; connect to the same server as
    // 127.0.0.1, so the name checked is that IP address.
    let err = key_exchange_at(
        "127.0.0.1",
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        &trust,
        TIMEOUT,
    )
    .await
    .expect_err("certificate for another name accepted");
    let message = err.to_string();
    assert!(matches!(err, KeError::Untrusted { .. }), "{err:?}");
    assert!(
        message.contains("does not name the configured host"),
        "{message}"
    );
}

#[tokio::test]
async fn server_without_ntske_alpn_is_refused() {
    let pki = pki("timectl test CA");
    let (port, _server) = serve(&pki, false, accept(cookies(1))).await;
    let trust = Trust::CaFile(pki.ca_file.clone());
    let err = key_exchange("localhost", port, &trust, TIMEOUT)
        .await
        .expect_err("no ALPN accepted");
    assert!(matches!(err, KeError::Alpn { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("did not select ALPN protocol \"ntske/1\" (got none)"),
        "{err}"
    );
}

#[tokio::test]
async fn error_record_is_surfaced() {
    let pki = pki("timectl test CA");
    let nak = Reply::Records(vec![Record::Error(1), Record::EndOfMessage]);
    let (port, _server) = serve(&pki, true, nak).await;
    let trust = Trust::CaFile(pki.ca_file.clone());
    let err = key_exchange("localhost", port, &trust, TIMEOUT)
        .await
        .expect_err("NAK accepted");
    assert!(
        matches!(
            err,
            KeError::Response {
                source: ResponseError::ServerError(1),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("sent error code 1"), "{err}");
}

#[tokio::test]
async fn stalled_server_hits_the_timeout() {
    let pki = pki("timectl test CA");
    let (port, _server) = serve(&pki, true, Reply::Stall).await;
    let trust = Trust::CaFile(pki.ca_file.clone());
    let timeout = Duration::from_millis(300);
    let err = key_exchange("localhost", port, &trust, timeout)
        .await
        .expect_err("stall accepted");
    assert!(matches!(err, KeError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("no complete exchange within 300ms"),
        "{err}"
    );
}

#[tokio::test]
async fn response_without_end_of_message_is_truncated() {
    let pki = pki("timectl test CA");
    let cut = Reply::Records(vec![Record::NextProtocol(vec![0])]);
    let (port, _server) = serve(&pki, true, cut).await;
    let trust = Trust::CaFile(pki.ca_file.clone());
    let err = key_exchange("localhost", port, &trust, TIMEOUT)
        .await
        .expect_err("truncated response accepted");
    assert!(
        matches!(err, KeError::Response { .. } | KeError::Io { .. }),
        "{err:?}"
    );
}

#[test]
fn ca_file_without_certificates_is_a_trust_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("empty.pem");
    std::fs::write(&path, "not a certificate\n").expect("write");
    let err = client_config(&Trust::CaFile(path)).expect_err("empty CA file accepted");
    assert!(
        err.to_string().contains("holds no usable CA certificate"),
        "{err}"
    );
}
