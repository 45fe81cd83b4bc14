//! NTS client of one source (RFC 8915): the NTS-KE, the cookie store, the
//! request's extension fields and the reply check, around the plain NTP
//! exchange the sans-IO `Engine` drives.
//!
//! The `Engine` never sees NTS: it builds the usual 48-byte request, the
//! source's task (`run`) appends a fresh Unique Identifier, one cookie,
//! placeholders to refill the store to `MAX_COOKIES` and the authenticator
//! (sealed with the C2S key); of a reply only the first 48 bytes of one that
//! authenticates with the S2C key and echoes the outstanding request's
//! identifier reach the engine. Everything else is dropped and counted.
//! The engine keeps the same source index across key exchanges.
//!
//! Key exchange happens at start, when the store runs empty, after
//! `MAX_UNANSWERED` requests in a row got no authenticated answer, on an
//! NTS NAK and after `KEY_REFRESH`; a failed one is retried with
//! exponential backoff (`Backoff`), forever.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timectl_engine::nts::ef::{self, Key, NONCE_LEN, ReplyError, UID_LEN};
use timectl_engine::proto::{HEADER_LEN, NtpTimestamp};
use tokio::sync::mpsc;

use super::control::NtsSourceStatus;
use super::daemon::{Outgoing, ReplyEvent};
use super::discipline::LocalClock;
use super::net::TimestampedSocket;
use super::nts_ke::{KeyExchange, Trust, key_exchange_at};

/// Cookies kept per source (RFC 8915 suggests 8; chrony keeps 8).
pub const MAX_COOKIES: usize = 8;
/// Requests in a row without an authenticated reply before a new key
/// exchange (chrony: 8 polls).
pub const MAX_UNANSWERED: u32 = 8;
/// Keys older than this are replaced by a new key exchange (chrony's
/// `ntsrefresh` default: 2 weeks; we take one).
pub const KEY_REFRESH: Duration = Duration::from_secs(7 * 24 * 3600);
/// Limit for one whole key exchange (connect, TLS, records).
pub const KE_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay after a failed key exchange; it doubles per failure.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(4);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// At most `MAX_COOKIES` cookies, each handed out once, oldest first.
#[derive(Default)]
pub struct CookieStore {
    cookies: VecDeque<Vec<u8>>,
}

impl CookieStore {
    pub fn new(cookies: Vec<Vec<u8>>) -> CookieStore {
        let mut store = CookieStore::default();
        for c in cookies {
            store.add(c);
        }
        store
    }

    /// Adds a cookie; a full store drops its oldest.
    pub fn add(&mut self, cookie: Vec<u8>) {
        if cookie.is_empty() {
            return;
        }
        if self.cookies.len() >= MAX_COOKIES {
            self.cookies.pop_front();
        }
        self.cookies.push_back(cookie);
    }

    /// Takes the oldest cookie out: it is never handed out again.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        self.cookies.pop_front()
    }

    pub fn len(&self) -> usize {
        self.cookies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    /// Placeholders for a request sent after `take`: the server returns one
    /// cookie per cookie and placeholder, so the reply refills the store.
    pub fn placeholders(&self) -> usize {
        (MAX_COOKIES - 1).saturating_sub(self.cookies.len())
    }
}

/// Delays between failed key exchanges: `BACKOFF_FIRST` doubling up to
/// `BACKOFF_MAX`, each scaled by a jitter factor in [0.75, 1.25).
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The delay before the next attempt after one more failure; `jitter`
    /// in [0, 1) (random in the daemon).
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let base = BACKOFF_FIRST
            .saturating_mul(1u32 << self.failures.min(20))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What became of one reply.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyCheck {
    /// Authenticated: the NTP header for the engine; new cookies stored.
    Authenticated { header: [u8; HEADER_LEN] },
    /// An NTS NAK (kiss code NTSN) for our outstanding request: the server
    /// no longer takes our cookies; keys and cookies must be replaced.
    Nak,
    /// The identifier is not the outstanding request's (a replay, a
    /// duplicate, or no request outstanding).
    Replayed,
    /// Did not authenticate (modified, forged, malformed or unprotected).
    Unauthenticated(ReplyError),
}

/// The keys and cookies of one key exchange and the request outstanding.
pub struct Session {
    c2s: Key,
    s2c: Key,
    pub cookies: CookieStore,
    /// Unique identifier of the request awaiting its reply.
    outstanding: Option<[u8; UID_LEN]>,
    unanswered: u32,
    /// Whether any reply authenticated with these keys.
    answered: bool,
    established: Instant,
}

impl Session {
    pub fn new(kx: &KeyExchange, now: Instant) -> Session {
        Session {
            c2s: kx.c2s,
            s2c: kx.s2c,
            cookies: CookieStore::new(kx.cookies.clone()),
            outstanding: None,
            unanswered: 0,
            answered: false,
            established: now,
        }
    }

    /// Whether any reply authenticated with these keys.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Whether a new key exchange is due before the next request.
    pub fn needs_key_exchange(&self, now: Instant) -> bool {
        self.cookies.is_empty()
            || self.unanswered >= MAX_UNANSWERED
            || now.duration_since(self.established) >= KEY_REFRESH
    }

    /// The NTS request for the engine's `header`, with this unique
    /// identifier and AEAD nonce; None when no cookie is left.
    pub fn request(
        &mut self,
        header: &[u8; HEADER_LEN],
        uid: &[u8; UID_LEN],
        nonce: &[u8; NONCE_LEN],
    ) -> Option<Vec<u8>> {
        let cookie = self.cookies.take()?;
        let placeholders = self.cookies.placeholders();
        match ef::request_packet(header, &self.c2s, uid, &cookie, placeholders, nonce) {
            Ok(packet) => {
                self.outstanding = Some(*uid);
                self.unanswered += 1;
                Some(packet)
            }
            Err(e) => {
                tracing::warn!("NTS request: {e}");
                None
            }
        }
    }

    /// Checks a reply against the outstanding request: only the first
    /// authenticated answer to it is accepted.
    pub fn check(&mut self, packet: &[u8]) -> ReplyCheck {
        let Some(uid) = self.outstanding else {
            return ReplyCheck::Replayed;
        };
        match ef::check_reply(&self.s2c, &uid, packet) {
            Ok(checked) => {
                let mut header = [0u8; HEADER_LEN];
                header.copy_from_slice(&packet[..HEADER_LEN]);
                for c in checked.cookies {
                    self.cookies.add(c);
                }
                self.outstanding = None;
                self.unanswered = 0;
                self.answered = true;
                ReplyCheck::Authenticated { header }
            }
            Err(ReplyError::UidMismatch) => ReplyCheck::Replayed,
            Err(e) if is_nak(packet, &uid) => {
                tracing::debug!("NTS NAK ({e})");
                ReplyCheck::Nak
            }
            Err(e) => ReplyCheck::Unauthenticated(e),
        }
    }
}

/// An NTS NAK (RFC 8915 5.7): a kiss-o'-death with code NTSN that echoes
/// our request's unique identifier (unauthenticated, so the identifier is
/// what ties it to our request).
pub fn is_nak(packet: &[u8], uid: &[u8; UID_LEN]) -> bool {
    if packet.len() < HEADER_LEN || packet[1] != 0 || &packet[12..16] != b"NTSN" {
        return false;
    }
    let mut at = HEADER_LEN;
    while let Some(head) = packet.get(at..at + 4) {
        let field_type = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        if len < 4 || at + len > packet.len() {
            return false;
        }
        if field_type == ef::UNIQUE_IDENTIFIER && packet[at + 4..at + len] == uid[..] {
            return true;
        }
        at += len;
    }
    false
}

/// The source's NTS state as the status document shows it.
pub type SharedStatus = Arc<Mutex<NtsSourceStatus>>;

fn update(status: &SharedStatus, f: impl FnOnce(&mut NtsSourceStatus)) {
    if let Ok(mut s) = status.lock() {
        f(&mut s);
    }
}

/// Where and how to do the key exchange.
pub struct KeTarget {
    /// The configured name: SNI and the certificate's name.
    pub host: String,
    /// The resolved KE address.
    pub address: SocketAddr,
    pub trust: Trust,
    /// The NTP port when the KE names none (the source's `port`).
    pub ntp_port: u16,
}

/// The NTP port: the KE's Port record, else the configured one.
pub fn ntp_port(kx: &KeyExchange, target: &KeTarget) -> u16 {
    if kx.ntp_port_given {
        kx.ntp_port
    } else {
        target.ntp_port
    }
}

/// The task of an NTS source: key exchange (retried with backoff), then
/// the NTS-protected exchange with the NTP server it names, until a new
/// key exchange is due. Requests that arrive while there are no keys are
/// held (the latest one) and sent once there are.
pub(super) async fn run(
    index: usize,
    target: KeTarget,
    mut rx: mpsc::Receiver<Outgoing>,
    replies: mpsc::Sender<ReplyEvent>,
    clock: Arc<dyn LocalClock + Send + Sync>,
    status: SharedStatus,
) {
    let mut backoff = Backoff::default();
    let mut held: Option<Outgoing> = None;
    loop {
        update(&status, |s| {
            s.state = "key exchange".into();
            s.authenticated = false;
            s.cookies = 0;
        });
        match connect(&target).await {
            Ok((kx, socket, ntp)) => {
                update(&status, |s| {
                    s.state = "established".into();
                    s.key_exchanges += 1;
                    s.cookies = kx.cookies.len();
                    s.ntp_address = Some(ntp.to_string());
                    s.last_key_exchange_error = None;
                    s.next_retry_seconds = None;
                });
                tracing::info!(source = %target.address, "NTS-KE with {}: {} cookies, NTP at {ntp}", target.host, kx.cookies.len());
                let mut session = Session::new(&kx, Instant::now());
                let exchange = Exchange {
                    index,
                    socket,
                    ntp,
                    replies: &replies,
                    clock: clock.as_ref(),
                    status: &status,
                };
                match exchange.run(&mut session, &mut rx, held.take()).await {
                    Some(next) => held = next,
                    None => return,
                }
                if session.answered() {
                    backoff.reset();
                    continue;
                }
                // Keys that never got an authenticated answer (NAKs, or
                // silence): the next key exchange waits like after a
                // failed one, so a server whose KE and NTP sides disagree
                // is not asked for keys at every poll.
                let delay = backoff.next_delay(rand::random::<f64>());
                let message = format!(
                    "no authenticated reply from {ntp} with the keys of the last key exchange"
                );
                tracing::warn!(source = %target.address, "{message}; new key exchange in {:.0} s", delay.as_secs_f64());
                update(&status, |s| {
                    s.state = "retrying".into();
                    s.last_key_exchange_error = Some(message);
                    s.next_retry_seconds = Some(delay.as_secs_f64());
                });
                if !hold_requests(delay, &mut rx, &mut held).await {
                    return;
                }
            }
            Err(message) => {
                let delay = backoff.next_delay(rand::random::<f64>());
                tracing::warn!(source = %target.address, "{message}; retrying in {:.0} s", delay.as_secs_f64());
                update(&status, |s| {
                    s.state = "retrying".into();
                    s.key_exchange_failures += 1;
                    s.last_key_exchange_error = Some(message);
                    s.next_retry_seconds = Some(delay.as_secs_f64());
                });
                if !hold_requests(delay, &mut rx, &mut held).await {
                    return;
                }
            }
        }
    }
}

/// Waits `delay`, keeping the latest request that arrives meanwhile in
/// `held`; false when the daemon stopped the source.
async fn hold_requests(
    delay: Duration,
    rx: &mut mpsc::Receiver<Outgoing>,
    held: &mut Option<Outgoing>,
) -> bool {
    let wake = tokio::time::sleep(delay);
    tokio::pin!(wake);
    loop {
        tokio::select! {
            _ = &mut wake => return true,
            out = rx.recv() => match out {
                Some(out) => *held = Some(out),
                None => return false,
            },
        }
    }
}

/// One key exchange, the NTP server's address and a socket connected to it.
async fn connect(
    target: &KeTarget,
) -> Result<(KeyExchange, TimestampedSocket, SocketAddr), String> {
    let kx = key_exchange_at(&target.host, target.address, &target.trust, KE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let ntp = resolve_ntp(&kx, target).await?;
    let bind: SocketAddr = if ntp.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let socket = TimestampedSocket::bind(bind)
        .await
        .map_err(|e| format!("NTP socket for {ntp}: {e}"))?;
    socket
        .connect(ntp)
        .await
        .map_err(|e| format!("NTP socket for {ntp}: {e}"))?;
    Ok((kx, socket, ntp))
}

/// The NTP server the key exchange named (Server record, else the KE host;
/// the KE address itself when that is the host), on `ntp_port`.
async fn resolve_ntp(kx: &KeyExchange, target: &KeTarget) -> Result<SocketAddr, String> {
    let port = ntp_port(kx, target);
    if kx.ntp_server == target.host {
        return Ok(SocketAddr::new(target.address.ip(), port));
    }
    if let Ok(ip) = kx.ntp_server.parse() {
        return Ok(SocketAddr::new(ip, port));
    }
    let found = tokio::net::lookup_host((kx.ntp_server.as_str(), port))
        .await
        .map_err(|e| format!("NTS NTP server {}: {e}", kx.ntp_server))?
        .collect::<Vec<_>>();
    found
        .iter()
        .find(|a| a.is_ipv4() == target.address.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("NTS NTP server {}: no addresses", kx.ntp_server))
}

/// The NTS-protected NTP exchange of one session.
struct Exchange<'a> {
    index: usize,
    socket: TimestampedSocket,
    ntp: SocketAddr,
    replies: &'a mpsc::Sender<ReplyEvent>,
    clock: &'a (dyn LocalClock + Send + Sync),
    status: &'a SharedStatus,
}

impl Exchange<'_> {
    /// Runs until a key exchange is due: Some(the request to send after
    /// it), or None when the daemon stopped the source.
    async fn run(
        &self,
        session: &mut Session,
        rx: &mut mpsc::Receiver<Outgoing>,
        mut first: Option<Outgoing>,
    ) -> Option<Option<Outgoing>> {
        let mut buf = [0u8; 2048];
        let mut last = None;
        loop {
            let out = match first.take() {
                Some(out) => Some(out),
                None => tokio::select! {
                    out = rx.recv() => Some(out?),
                    r = self.socket.recv(&mut buf, self.clock) => {
                        match r {
                            Ok(r) if r.from == self.ntp => {
                                match self.on_reply(session, &buf[..r.len], r.at, last).await {
                                    Ok(()) => {}
                                    Err(Stop::Closed) => return None,
                                    Err(Stop::Nak) => return Some(None),
                                }
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!("receive from {}: {e}", self.ntp),
                        }
                        None
                    }
                },
            };
            let Some(out) = out else { continue };
            if session.needs_key_exchange(Instant::now()) {
                return Some(Some(out));
            }
            let uid: [u8; UID_LEN] = rand::random();
            let nonce: [u8; NONCE_LEN] = rand::random();
            let Some(packet) = session.request(&out.bytes, &uid, &nonce) else {
                return Some(Some(out));
            };
            let sent = self.clock.now();
            match self.socket.send(&packet).await {
                Ok(_) => last = Some((out.nonce, sent)),
                Err(e) => tracing::debug!("send to {}: {e}", self.ntp),
            }
            let cookies = session.cookies.len();
            update(self.status, |s| s.cookies = cookies);
        }
    }

    async fn on_reply(
        &self,
        session: &mut Session,
        packet: &[u8],
        received: NtpTimestamp,
        sent: Option<(NtpTimestamp, NtpTimestamp)>,
    ) -> Result<(), Stop> {
        match session.check(packet) {
            ReplyCheck::Authenticated { header } => {
                let cookies = session.cookies.len();
                update(self.status, |s| {
                    s.authenticated = true;
                    s.cookies = cookies;
                    s.authenticated_replies += 1;
                });
                let ev = ReplyEvent {
                    index: self.index,
                    bytes: header.to_vec(),
                    received,
                    sent,
                };
                self.replies.send(ev).await.map_err(|_| Stop::Closed)
            }
            ReplyCheck::Nak => {
                tracing::warn!("NTS NAK from {}: new key exchange", self.ntp);
                update(self.status, |s| {
                    s.naks += 1;
                    s.authenticated = false;
                });
                Err(Stop::Nak)
            }
            ReplyCheck::Replayed => {
                tracing::debug!("NTS reply from {} not for our request: dropped", self.ntp);
                update(self.status, |s| s.dropped_replayed += 1);
                Ok(())
            }
            ReplyCheck::Unauthenticated(e) => {
                tracing::debug!("NTS reply from {}: {e}: dropped", self.ntp);
                update(self.status, |s| {
                    s.dropped_unauthenticated += 1;
                    s.last_drop_reason = Some(e.to_string());
                });
                Ok(())
            }
        }
    }
}

enum Stop {
    Closed,
    Nak,
}

/// The default NTS status of a source that has not finished a key exchange.
pub fn new_status() -> SharedStatus {
    Arc::new(Mutex::new(NtsSourceStatus {
        state: "key exchange".into(),
        ..NtsSourceStatus::default()
    }))
}

#[cfg(test)]
#[path = "nts_client_tests.rs"]
mod tests;
