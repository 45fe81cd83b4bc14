//! The NTS-KE client against a real chronyd NTS-KE server (issue 10): a
//! throw-away CA and `localhost` certificate made with openssl, chronyd
//! (`-x`: never touches the clock) with ntsservercert/ntsserverkey on free
//! loopback ports, then `key_exchange` and one NTS-protected NTP request
//! sealed with `timectl_engine::nts::ef`. Needs root, chronyd and openssl:
//! run `ci/system-tests.sh`.

mod support;

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::{ChronyPeer, check_ok, require_root_and, temp_dir, unique_name, wait_for};
use timectl::engine::nts_ke::{KeError, KeyExchange, Trust, key_exchange};
use timectl_engine::nts::ef;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A CA and a server certificate for `localhost` signed by it, in a temp
/// dir removed on Drop.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(label: &str) -> Pki {
        let dir = temp_dir(&format!("{}-{label}", unique_name()), 0o700);
        let pki = Pki { dir };
        // Each CA its own name: another CA is then an unknown issuer.
        let subject = format!("/CN=timectl test CA {label}");
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
            &subject,
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
        check_ok(&format!("openssl {}", args.join(" ")), &out);
    }
}

fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind TCP");
    listener.local_addr().expect("local addr").port()
}

fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    socket.local_addr().expect("local addr").port()
}

/// chronyd as NTS-KE server on `ke_port` and NTP server on `ntp_port`.
fn chronyd_nts(pki: &Pki, ke_port: u16, ntp_port: u16) -> ChronyPeer {
    let dump = pki.path("ntsdump");
    std::fs::create_dir(&dump).expect("create ntsdumpdir");
    let peer = ChronyPeer::builder()
        .port(ntp_port)
        .line(&format!(
            "ntsservercert {}",
            pki.path("server.pem").display()
        ))
        .line(&format!(
            "ntsserverkey {}",
            pki.path("server.key").display()
        ))
        .line(&format!("ntsport {ke_port}"))
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
