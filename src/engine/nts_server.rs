//! NTS-KE server (RFC 8915 section 4) and the cookie master keys.
//!
//! TLS 1.3 only (rustls with `ring`), ALPN `ntske/1` required. A client
//! that offers NTPv4 and AEAD_AES_SIV_CMAC_256 gets 8 cookies holding the
//! keys exported from its TLS session, and a Port record when NTP is not
//! served on 123 (no Server record: NTP is answered on the NTS-KE host).
//! Bounded: allow/deny and the NTP rate limiter per client address before
//! the handshake, at most `max_connections` at once (more are closed at
//! once), and one deadline for handshake and exchange per connection.
//!
//! The master keys (`timectl_engine::nts::cookie::KeySet`) rotate daily;
//! with a key directory they are loaded at start and written atomically
//! (temporary file, mode 0600, then rename) at each rotation, so a restart
//! keeps clients' cookies valid.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use timectl_engine::nts::cookie::{CookieContent, DEFAULT_ROTATION_SECONDS, KeySet};
use timectl_engine::nts::ke::{
    self, AEAD_AES_SIV_CMAC_256, Decoder, EXPORTER_LABEL, Record, ServerDecision,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::clock::Monotonic;
use super::config::{NtsServeConfig, ServeConfig};
use super::nts_ke::ALPN_NTSKE;
use super::server::{Access, CookieKeys, RateDecision, RateLimiter, ServerStats};

/// Cookies in each NTS-KE response (RFC 8915 suggests 8).
pub const COOKIES_PER_RESPONSE: usize = 8;
/// Deadline for one connection: TLS handshake, request and response.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The key file's name in the key directory.
pub const KEY_FILE: &str = "nts-cookie-keys";
/// Most request bytes read from one client (a real request is 16 bytes;
/// the decoder's own bounds would allow 64 records of 4 KiB).
pub const MAX_REQUEST_BYTES: usize = 4096;
/// How often the rotation task looks at the current key's age.
const ROTATION_CHECK: Duration = Duration::from_secs(60);

/// Why the NTS server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NtsServerError {
    #[error("NTS server certificate {}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("NTS server key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("NTS server certificate {} and key {}: {reason}", cert.display(), key.display())]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("NTS key directory {}: {cause}", path.display())]
    KeyDir { path: PathBuf, cause: io::Error },
    #[error("NTS-KE listening on {addr}: {cause}")]
    Listen { addr: SocketAddr, cause: io::Error },
}

/// Default NTS-KE listen addresses.
fn default_listen() -> Vec<SocketAddr> {
    vec![
        SocketAddr::from(([0, 0, 0, 0], ke::DEFAULT_KE_PORT)),
        SocketAddr::from(([0u16; 8], ke::DEFAULT_KE_PORT)),
    ]
}

/// Starts the NTS-KE listeners and the key rotation task (the daemon's
/// part): TLS set up from the configured files, every listen address
/// bound (an unbindable default `[::]` is skipped, like NTP's). Returns
/// the tasks and the addresses NTS-KE listens on.
pub fn start(
    serve: &ServeConfig,
    nts: &NtsServeConfig,
    store: KeyStore,
    ntp_port: u16,
    stats: Arc<ServerStats>,
    mono: Monotonic,
) -> Result<(Vec<tokio::task::JoinHandle<()>>, Vec<String>), NtsServerError> {
    let server = Arc::new(KeServer::new(
        serve,
        nts,
        store.keys.clone(),
        ntp_port,
        stats,
        mono,
    )?);
    let defaults = nts.listen.is_empty();
    let listen = if defaults {
        default_listen()
    } else {
        nts.listen.clone()
    };
    let mut tasks = Vec::new();
    let mut listening = Vec::new();
    for addr in listen {
        match bind(addr) {
            Ok(listener) => {
                let bound = listener.local_addr().unwrap_or(addr);
                tracing::info!("serving NTS-KE on {bound}");
                listening.push(bound.to_string());
                tasks.push(tokio::spawn(run(listener, server.clone())));
            }
            Err(e) if defaults && addr.is_ipv6() => {
                tracing::warn!("not serving NTS-KE on {addr}: {e}");
            }
            Err(cause) => {
                tasks
                    .iter()
                    .for_each(|t: &tokio::task::JoinHandle<()>| t.abort());
                return Err(NtsServerError::Listen { addr, cause });
            }
        }
    }
    tasks.push(tokio::spawn(rotate_keys(store)));
    Ok((tasks, listening))
}

/// A TLS 1.3-only server configuration with ALPN `ntske/1` from PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, NtsServerError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| NtsServerError::Certificate {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(NtsServerError::Certificate {
            path: cert.to_path_buf(),
            reason: "no PEM certificate in the file".into(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| NtsServerError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |e: rustls::Error| NtsServerError::Tls {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![ALPN_NTSKE.to_vec()];
    // One exchange per connection: no resumption.
    config.send_tls13_tickets = 0;
    Ok(config)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The master keys and where they are persisted.
#[derive(Clone)]
pub struct KeyStore {
    pub keys: CookieKeys,
    file: Option<PathBuf>,
}

impl KeyStore {
    /// Loads the keys from `key_dir` (created if missing) or starts with
    /// none, then rotates if a key is due (writing the file).
    pub fn open(key_dir: Option<&Path>) -> Result<KeyStore, NtsServerError> {
        let now = unix_now();
        let mut set = KeySet::new(DEFAULT_ROTATION_SECONDS);
        let file = match key_dir {
            Some(dir) => {
                let dir_error = |cause| NtsServerError::KeyDir {
                    path: dir.to_path_buf(),
                    cause,
                };
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(dir_error)?;
                let file = dir.join(KEY_FILE);
                match std::fs::read_to_string(&file) {
                    Ok(text) => match KeySet::deserialize(&text, DEFAULT_ROTATION_SECONDS) {
                        Ok(loaded) => set = loaded,
                        Err(e) => tracing::warn!(
                            "{}: {e}; starting with new keys (clients need a new key exchange)",
                            file.display()
                        ),
                    },
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(dir_error(e)),
                }
                Some(file)
            }
            None => None,
        };
        set.prune(now);
        let store = KeyStore {
            keys: Arc::new(RwLock::new(set)),
            file,
        };
        store.rotate_if_due(now)?;
        Ok(store)
    }

    /// Adds a new current key if one is due, and persists the set.
    pub fn rotate_if_due(&self, now: u64) -> Result<bool, NtsServerError> {
        let text = {
            let mut set = self.keys.write().unwrap_or_else(|e| e.into_inner());
            if !set.needs_rotation(now) {
                return Ok(false);
            }
            let id = set.rotate(now, rand::random(), rand::random());
            tracing::info!("NTS cookie key {id:08x} is now current");
            set.serialize()
        };
        if let Some(file) = &self.file {
            write_private(file, &text).map_err(|cause| NtsServerError::KeyDir {
                path: file.clone(),
                cause,
            })?;
        }
        Ok(true)
    }
}

/// Writes `text` to `path` atomically: a temporary file (mode 0600) in
/// the same directory, synced, then renamed over `path`.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Rotates the keys on a timer, forever.
pub async fn rotate_keys(store: KeyStore) {
    let mut timer = tokio::time::interval(ROTATION_CHECK);
    loop {
        timer.tick().await;
        if let Err(e) = store.rotate_if_due(unix_now()) {
            tracing::warn!("{e}");
        }
    }
}

/// Everything one NTS-KE listener needs.
pub struct KeServer {
    acceptor: TlsAcceptor,
    keys: CookieKeys,
    /// The Port record, when NTP is not served on 123.
    ntp_port: Option<u16>,
    access: Access,
    limiter: Option<Mutex<RateLimiter>>,
    slots: Arc<Semaphore>,
    timeout: Duration,
    mono: Monotonic,
    stats: Arc<ServerStats>,
}

impl KeServer {
    pub fn new(
        serve: &ServeConfig,
        nts: &NtsServeConfig,
        keys: CookieKeys,
        ntp_port: u16,
        stats: Arc<ServerStats>,
        mono: Monotonic,
    ) -> Result<KeServer, NtsServerError> {
        let config = tls_config(&nts.certificate, &nts.key)?;
        Ok(KeServer {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            keys,
            ntp_port: (ntp_port != 123).then_some(ntp_port),
            access: Access {
                allow: serve.allow.clone(),
                deny: serve.deny.clone(),
            },
            limiter: serve.rate_limit.map(|c| Mutex::new(RateLimiter::new(c))),
            slots: Arc::new(Semaphore::new(nts.max_connections.max(1))),
            timeout: CONNECTION_TIMEOUT,
            mono,
            stats,
        })
    }

    /// A shorter connection deadline (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> KeServer {
        self.timeout = timeout;
        self
    }

    fn admits(&self, ip: IpAddr) -> bool {
        if !self.access.permits(ip) {
            return false;
        }
        match &self.limiter {
            Some(l) => {
                let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
                l.check(ip, self.mono.now()) == RateDecision::Answer
            }
            None => true,
        }
    }
}

/// Accepts NTS-KE connections on `listener` until the task is dropped.
pub async fn run(listener: TcpListener, server: Arc<KeServer>) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, typically: back off briefly.
                tracing::debug!("NTS-KE accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let ip = canonical(peer.ip());
        if !server.admits(ip) {
            server.stats.ke_refused.fetch_add(1, Relaxed);
            continue;
        }
        let Ok(permit) = server.slots.clone().try_acquire_owned() else {
            server.stats.ke_refused.fetch_add(1, Relaxed);
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = tokio::time::timeout(server.timeout, exchange(&server, tcp)).await;
            match result {
                Ok(Ok(())) => {
                    server.stats.ke_handshakes.fetch_add(1, Relaxed);
                }
                Ok(Err(e)) => {
                    tracing::debug!("NTS-KE {peer}: {e}");
                    server.stats.ke_failed.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    tracing::debug!("NTS-KE {peer}: no exchange within {:?}", server.timeout);
                    server.stats.ke_failed.fetch_add(1, Relaxed);
                }
            }
        });
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One connection: handshake, request, response.
async fn exchange(server: &KeServer, tcp: TcpStream) -> io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let mut tls = server.acceptor.accept(tcp).await?;
    let conn = tls.get_ref().1;
    if conn.alpn_protocol() != Some(ALPN_NTSKE) {
        return Err(io::Error::other("client did not offer ALPN ntske/1"));
    }
    let mut decoder = Decoder::new();
    let mut records = Vec::new();
    let mut buf = [0u8; 1024];
    let mut total = 0;
    while !decoder.is_finished() {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::other("connection closed inside the request"));
        }
        total += n;
        let fed = if total > MAX_REQUEST_BYTES {
            Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"))
        } else {
            decoder.feed(&buf[..n]).map_err(|e| e.to_string())
        };
        match fed {
            Ok(new) => records.extend(new),
            Err(e) => {
                let reply = [Record::Error(ke::ERROR_BAD_REQUEST), Record::EndOfMessage];
                send(&mut tls, &reply).await?;
                return Err(io::Error::other(e));
            }
        }
    }
    match ke::evaluate_request(&records) {
        ServerDecision::Refuse(reply) => {
            send(&mut tls, &reply).await?;
            Err(io::Error::other(format!("request refused: {reply:?}")))
        }
        ServerDecision::Accept => {
            let conn = tls.get_ref().1;
            let export = |context: [u8; 5]| {
                conn.export_keying_material([0u8; 32], EXPORTER_LABEL.as_bytes(), Some(&context))
                    .map_err(io::Error::other)
            };
            let content = CookieContent {
                aead: AEAD_AES_SIV_CMAC_256,
                c2s: export(ke::c2s_context())?,
                s2c: export(ke::s2c_context())?,
            };
            let cookies = {
                let keys = server.keys.read().unwrap_or_else(|e| e.into_inner());
                (0..COOKIES_PER_RESPONSE)
                    .map(|_| keys.seal(&content, &rand::random()))
                    .collect::<Result<Vec<_>, _>>()
            };
            let reply = match cookies {
                Ok(cookies) => ke::server_response(cookies, None, server.ntp_port),
                Err(e) => {
                    let reply = [Record::Error(ke::ERROR_INTERNAL), Record::EndOfMessage];
                    send(&mut tls, &reply).await?;
                    return Err(io::Error::other(e.to_string()));
                }
            };
            send(&mut tls, &reply).await
        }
    }
}

async fn send(
    tls: &mut tokio_rustls::server::TlsStream<TcpStream>,
    records: &[Record],
) -> io::Result<()> {
    let bytes = ke::encode_message(records).map_err(io::Error::other)?;
    tls.write_all(&bytes).await?;
    tls.flush().await?;
    let _ = tls.shutdown().await;
    Ok(())
}

/// Binds an NTS-KE listener; an IPv6 one is IPv6-only, so `0.0.0.0:4460`
/// and `[::]:4460` can be bound side by side.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use nix::sys::socket::{Backlog, SockType, listen};
    let fd = super::net::bound_socket(addr, SockType::Stream, true)?;
    listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
    TcpListener::from_std(std::net::TcpListener::from(fd))
}

#[cfg(test)]
#[path = "nts_server_tests.rs"]
mod tests;
