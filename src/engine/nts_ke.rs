//! NTS-KE client (RFC 8915 section 4): one key exchange over TLS 1.3.
//!
//! The records, the streaming decoder and the response check are the sans-IO
//! `timectl_engine::nts::ke`; this module adds the TCP connection, TLS 1.3
//! (rustls with the `ring` provider, ALPN `ntske/1`, SNI = the host) and the
//! key export. The cookie store, the retries and the NTP side are in
//! `nts_client`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use timectl_engine::nts::ke::{
    self, ClientRequest, Decoder, EXPORTER_LABEL, Record, ResponseError, ServerResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The ALPN protocol id of NTS-KE (RFC 8915 section 4).
pub const ALPN_NTSKE: &[u8] = b"ntske/1";
/// NTP's port when the server sends no Port record.
pub const DEFAULT_NTP_PORT: u16 = 123;
/// Key length of AEAD_AES_SIV_CMAC_256 (algorithm 15).
pub const KEY_LEN: usize = 32;

/// Which certificate authorities the server's certificate must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The operating system's CA store, read with `rustls-native-certs`
    /// (on Debian/Ubuntu `/etc/ssl/certs`; `SSL_CERT_FILE`/`SSL_CERT_DIR`
    /// override it).
    System,
    /// Only the CAs in this PEM file (like chrony's `ntstrustedcerts`).
    CaFile(PathBuf),
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::System => write!(f, "the system CA store"),
            Trust::CaFile(path) => write!(f, "the CAs in {}", path.display()),
        }
    }
}

/// The result of one successful key exchange.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyExchange {
    /// Client-to-server AEAD key.
    pub c2s: [u8; KEY_LEN],
    /// Server-to-client AEAD key.
    pub s2c: [u8; KEY_LEN],
    pub cookies: Vec<Vec<u8>>,
    /// The Server record, or the NTS-KE host when there is none.
    pub ntp_server: String,
    /// The Port record, or 123 when there is none.
    pub ntp_port: u16,
    /// Whether the server sent a Port record (else the client may use its
    /// configured port instead of 123).
    pub ntp_port_given: bool,
    /// The negotiated AEAD algorithm (15).
    pub aead: u16,
}

/// Keys and cookies are secrets: Debug shows only their count and sizes.
impl fmt::Debug for KeyExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyExchange")
            .field("c2s", &"<redacted>")
            .field("s2c", &"<redacted>")
            .field(
                "cookies",
                &format_args!("<{} redacted>", self.cookies.len()),
            )
            .field("ntp_server", &self.ntp_server)
            .field("ntp_port", &self.ntp_port)
            .field("ntp_port_given", &self.ntp_port_given)
            .field("aead", &self.aead)
            .finish()
    }
}

/// Why a key exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum KeError {
    #[error("NTS-KE trust source: {0}")]
    TrustSource(String),
    #[error("NTS-KE: {host:?} is not a valid TLS server name")]
    ServerName { host: String },
    #[error("NTS-KE {host}:{port}: cannot connect: {source}")]
    Connect {
        host: String,
        port: u16,
        source: io::Error,
    },
    #[error("NTS-KE {host}:{port}: no complete exchange within {timeout:?}")]
    Timeout {
        host: String,
        port: u16,
        timeout: Duration,
    },
    #[error(
        "NTS-KE {host}:{port}: server certificate not trusted by {trust}: {reason}{hint}",
        hint = untrusted_hint(reason)
    )]
    Untrusted {
        host: String,
        port: u16,
        trust: Trust,
        reason: rustls::Error,
    },
    #[error("NTS-KE {host}:{port}: TLS handshake failed: {source}")]
    Handshake {
        host: String,
        port: u16,
        source: io::Error,
    },
    #[error("NTS-KE {host}:{port}: server did not select ALPN protocol \"ntske/1\" (got {got})")]
    Alpn {
        host: String,
        port: u16,
        got: String,
    },
    #[error("NTS-KE {host}:{port}: connection failed: {source}")]
    Io {
        host: String,
        port: u16,
        source: io::Error,
    },
    #[error("NTS-KE {host}:{port}: {source}")]
    Response {
        host: String,
        port: u16,
        source: ResponseError,
    },
    #[error("NTS-KE {host}:{port}: TLS key export failed: {source}")]
    Export {
        host: String,
        port: u16,
        source: rustls::Error,
    },
}

/// What a certificate refusal most likely means, for the error message.
fn untrusted_hint(reason: &rustls::Error) -> &'static str {
    use rustls::CertificateError as E;
    match reason {
        rustls::Error::InvalidCertificate(E::UnknownIssuer) => {
            " (not issued by a CA of that trust source: give the server's CA with --nts-ca or ntsTrustedCerts)"
        }
        rustls::Error::InvalidCertificate(
            E::NotValidForName | E::NotValidForNameContext { .. },
        ) => " (the certificate does not name the configured host)",
        rustls::Error::InvalidCertificate(
            E::Expired | E::ExpiredContext { .. } | E::NotValidYet | E::NotValidYetContext { .. },
        ) => " (validity is checked against the system clock: is it far off?)",
        _ => "",
    }
}

/// Runs one NTS-KE exchange with `host:port`, all of it (connect,
/// handshake, request, response) within `timeout`.
pub async fn key_exchange(
    host: &str,
    port: u16,
    trust: &Trust,
    timeout: Duration,
) -> Result<KeyExchange, KeError> {
    exchange_within(host, port, None, trust, timeout).await
}

/// Like `key_exchange`, but connects to the already resolved `address`;
/// `host` is still the TLS server name (SNI) the certificate must match.
pub async fn key_exchange_at(
    host: &str,
    address: SocketAddr,
    trust: &Trust,
    timeout: Duration,
) -> Result<KeyExchange, KeError> {
    exchange_within(host, address.port(), Some(address), trust, timeout).await
}

async fn exchange_within(
    host: &str,
    port: u16,
    address: Option<SocketAddr>,
    trust: &Trust,
    timeout: Duration,
) -> Result<KeyExchange, KeError> {
    let connector = TlsConnector::from(Arc::new(client_config(trust)?));
    let name = ServerName::try_from(host.to_string()).map_err(|_| KeError::ServerName {
        host: host.to_string(),
    })?;
    let peer = Peer {
        host,
        port,
        address,
        trust,
    };
    let exchange = peer.exchange(&connector, name);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(KeError::Timeout {
            host: host.to_string(),
            port,
            timeout,
        }),
    }
}

/// A TLS 1.3-only client configuration with ALPN `ntske/1`.
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, KeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| KeError::TrustSource(format!("TLS 1.3 with ring: {e}")))?
        .with_root_certificates(root_store(trust)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_NTSKE.to_vec()];
    Ok(config)
}

/// Loads the trusted CAs; a source without a single usable CA is an error.
fn root_store(trust: &Trust) -> Result<RootCertStore, KeError> {
    let certs = match trust {
        Trust::System => system_certs()?,
        Trust::CaFile(path) => CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| KeError::TrustSource(format!("{}: {e}", path.display())))?,
    };
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(KeError::TrustSource(format!(
            "{trust} holds no usable CA certificate"
        )));
    }
    Ok(roots)
}

fn system_certs() -> Result<Vec<CertificateDer<'static>>, KeError> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(KeError::TrustSource(format!(
            "no system CA certificates found ({})",
            errors.join("; ")
        )));
    }
    Ok(found.certs)
}

/// The server being talked to, for the error messages.
struct Peer<'a> {
    host: &'a str,
    port: u16,
    /// Where to connect; None: resolve `host`.
    address: Option<SocketAddr>,
    trust: &'a Trust,
}

impl Peer<'_> {
    async fn exchange(
        &self,
        connector: &TlsConnector,
        name: ServerName<'static>,
    ) -> Result<KeyExchange, KeError> {
        let tcp = match self.address {
            Some(address) => TcpStream::connect(address).await,
            None => TcpStream::connect((self.host, self.port)).await,
        }
        .map_err(|source| KeError::Connect {
            host: self.host.to_string(),
            port: self.port,
            source,
        })?;
        // The exchange is a few small writes, each waiting for the other
        // side: without this, Nagle's algorithm against a delayed ACK can
        // hold a write back for 40 ms.
        let _ = tcp.set_nodelay(true);
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| self.handshake_error(e))?;
        self.check_alpn(&tls)?;
        let io_err = |source| self.io_error(source);
        tls.write_all(&ClientRequest::new().encode())
            .await
            .map_err(io_err)?;
        tls.flush().await.map_err(io_err)?;
        let records = self.read_response(&mut tls).await?;
        let response =
            ServerResponse::from_records(&records).map_err(|e| self.response_error(e))?;
        let result = self.finish(&tls, response)?;
        // Best effort close_notify: the keys are already exported.
        let _ = tls.shutdown().await;
        Ok(result)
    }

    /// Reads records until End of Message, within the decoder's limits.
    async fn read_response(&self, tls: &mut TlsStream<TcpStream>) -> Result<Vec<Record>, KeError> {
        let mut decoder = Decoder::new();
        let mut records = Vec::new();
        let mut buf = [0u8; 4096];
        while !decoder.is_finished() {
            let n = tls.read(&mut buf).await.map_err(|e| self.io_error(e))?;
            if n == 0 {
                let truncated = decoder.finish().err().unwrap_or(ke::KeError::Truncated);
                return Err(self.response_error(truncated.into()));
            }
            let chunk = buf.get(..n).unwrap_or_default();
            let new = decoder
                .feed(chunk)
                .map_err(|e| self.response_error(e.into()))?;
            records.extend(new);
        }
        Ok(records)
    }

    fn check_alpn(&self, tls: &TlsStream<TcpStream>) -> Result<(), KeError> {
        match tls.get_ref().1.alpn_protocol() {
            Some(ALPN_NTSKE) => Ok(()),
            other => Err(KeError::Alpn {
                host: self.host.to_string(),
                port: self.port,
                got: other.map_or("none".to_string(), |p| {
                    format!("{:?}", String::from_utf8_lossy(p))
                }),
            }),
        }
    }

    /// Exports both keys and assembles the result.
    fn finish(
        &self,
        tls: &TlsStream<TcpStream>,
        response: ServerResponse,
    ) -> Result<KeyExchange, KeError> {
        let conn = tls.get_ref().1;
        let export = |context: [u8; 5]| {
            conn.export_keying_material([0u8; KEY_LEN], EXPORTER_LABEL.as_bytes(), Some(&context))
                .map_err(|source| KeError::Export {
                    host: self.host.to_string(),
                    port: self.port,
                    source,
                })
        };
        Ok(KeyExchange {
            c2s: export(ke::c2s_context())?,
            s2c: export(ke::s2c_context())?,
            cookies: response.cookies,
            ntp_server: response.server.unwrap_or_else(|| self.host.to_string()),
            ntp_port: response.port.unwrap_or(DEFAULT_NTP_PORT),
            ntp_port_given: response.port.is_some(),
            aead: response.aead,
        })
    }

    /// A certificate problem names the trust source; anything else is a
    /// plain handshake failure.
    fn handshake_error(&self, e: io::Error) -> KeError {
        let rustls_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(reason @ rustls::Error::InvalidCertificate(_)) = rustls_error {
            return KeError::Untrusted {
                host: self.host.to_string(),
                port: self.port,
                trust: self.trust.clone(),
                reason: reason.clone(),
            };
        }
        KeError::Handshake {
            host: self.host.to_string(),
            port: self.port,
            source: e,
        }
    }

    fn io_error(&self, source: io::Error) -> KeError {
        KeError::Io {
            host: self.host.to_string(),
            port: self.port,
            source,
        }
    }

    fn response_error(&self, source: ResponseError) -> KeError {
        KeError::Response {
            host: self.host.to_string(),
            port: self.port,
            source,
        }
    }
}

#[cfg(test)]
#[path = "nts_ke_tests.rs"]
pub(crate) mod tests;
