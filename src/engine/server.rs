//! The server half: answers NTPv4 and NTPv3 client requests from the
//! engine's own state (stratum, reference ID, root delay and dispersion,
//! leap), filters clients by CIDR, and rate-limits per client address with
//! a kiss-o'-death RATE. A plain reply is the bare 48-byte header, so it
//! is never larger than the request (amplification-safe).
//!
//! With NTS (RFC 8915 section 5) configured, a request carrying NTS
//! extension fields is answered with the header, its Unique Identifier
//! and an authenticator sealed with the client's S2C key holding one new
//! cookie per cookie and placeholder received, as many as fit in the
//! request's size (never larger than the request either). A cookie that
//! does not open gets an NTS NAK (kiss code NTSN); a request whose
//! authenticator fails is dropped.
//!
//! `Responder` is the pure decision for one datagram; `run` is the tokio
//! loop around it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;
use serde::Serialize;
use timectl_engine::nts::cookie::{COOKIE_LEN, CookieCiphers, CookieContent, KeySet};
use timectl_engine::nts::ef;
use timectl_engine::nts::ke::AEAD_AES_SIV_CMAC_256;
use tokio::sync::watch;

use super::config::{RateLimitConfig, ServeConfig};
use super::discipline::LocalClock;
use super::net::{RecvBatch, TimestampedSocket};
use super::proto::{HEADER_LEN, KissCode, Leap, Mode, NtpTimestamp, Packet};
use super::system::ServerState;

/// Client addresses tracked by the rate limiter at most; past that, idle
/// entries are dropped first (bounded memory under a spoofed-source flood).
const MAX_TRACKED_CLIENTS: usize = 65_536;

/// Which client addresses may be answered.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl Access {
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: f64,
    last_kiss: f64,
}

/// Token bucket per client address.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: HashMap<IpAddr, Bucket>,
}

/// What the rate limiter says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    Answer,
    Kiss,
    Drop,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        RateLimiter {
            config,
            buckets: HashMap::new(),
        }
    }

    pub fn check(&mut self, ip: IpAddr, now: f64) -> RateDecision {
        let burst = self.config.burst as f64;
        let interval = self.config.interval;
        if self.buckets.len() >= MAX_TRACKED_CLIENTS && !self.buckets.contains_key(&ip) {
            // Forget clients whose bucket has refilled: they lose nothing.
            self.buckets
                .retain(|_, b| b.tokens + (now - b.updated) / interval < burst);
            if self.buckets.len() >= MAX_TRACKED_CLIENTS {
                self.buckets.clear();
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            updated: now,
            last_kiss: f64::NEG_INFINITY,
        });
        b.tokens = (b.tokens + (now - b.updated) / interval).min(burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            RateDecision::Answer
        } else if now - b.last_kiss >= interval {
            b.last_kiss = now;
            RateDecision::Kiss
        } else {
            RateDecision::Drop
        }
    }
}

/// Counters shown in the status report.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub received: AtomicU64,
    pub answered: AtomicU64,
    pub denied: AtomicU64,
    pub rate_limited: AtomicU64,
    pub kisses: AtomicU64,
    pub malformed: AtomicU64,
    /// Requests with NTS extension fields (while NTS is served).
    pub nts_received: AtomicU64,
    pub nts_answered: AtomicU64,
    /// NTS NAKs sent (cookie unknown, expired or forged).
    pub nts_naks: AtomicU64,
    /// NTS requests dropped: malformed fields or a failed authenticator.
    pub nts_dropped: AtomicU64,
    /// NTS-KE exchanges completed, failed (handshake, timeout, bad
    /// request), and connections refused (access, rate, too many).
    pub ke_handshakes: AtomicU64,
    pub ke_failed: AtomicU64,
    pub ke_refused: AtomicU64,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct ServerStatsReport {
    pub received: u64,
    pub answered: u64,
    pub denied: u64,
    pub rate_limited: u64,
    pub kisses: u64,
    pub malformed: u64,
    pub nts_received: u64,
    pub nts_answered: u64,
    pub nts_naks: u64,
    pub nts_dropped: u64,
    pub ke_handshakes: u64,
    pub ke_failed: u64,
    pub ke_refused: u64,
}

impl ServerStats {
    pub fn report(&self) -> ServerStatsReport {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStatsReport {
            received: g(&self.received),
            answered: g(&self.answered),
            denied: g(&self.denied),
            rate_limited: g(&self.rate_limited),
            kisses: g(&self.kisses),
            malformed: g(&self.malformed),
            nts_received: g(&self.nts_received),
            nts_answered: g(&self.nts_answered),
            nts_naks: g(&self.nts_naks),
            nts_dropped: g(&self.nts_dropped),
            ke_handshakes: g(&self.ke_handshakes),
            ke_failed: g(&self.ke_failed),
            ke_refused: g(&self.ke_refused),
        }
    }
}

/// The NTS cookie master keys, shared by the NTS-KE server (which seals
/// cookies and rotates the keys) and the NTP responders.
pub type CookieKeys = Arc<RwLock<KeySet>>;

/// Most cookies one NTS reply carries (a client keeps 8).
const MAX_REPLY_COOKIES: usize = 8;

/// A reply datagram: the bare header, or an NTS reply or NAK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Plain([u8; HEADER_LEN]),
    Nts(Vec<u8>),
}

impl Deref for Reply {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Reply::Plain(b) => b,
            Reply::Nts(v) => v,
        }
    }
}

impl AsRef<[u8]> for Reply {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Decides the reply to each datagram (pure apart from the injected clock
/// and, for NTS, the random nonces).
pub struct Responder {
    access: Access,
    limiter: Option<RateLimiter>,
    nts: Option<CookieKeys>,
    /// The master keys' ciphers, kept in step with `nts` (built once per
    /// key, not per cookie).
    ciphers: CookieCiphers,
    pub stats: Arc<ServerStats>,
}

impl Responder {
    pub fn new(config: &ServeConfig, stats: Arc<ServerStats>) -> Responder {
        Responder {
            access: Access {
                allow: config.allow.clone(),
                deny: config.deny.clone(),
            },
            limiter: config.rate_limit.map(RateLimiter::new),
            nts: None,
            ciphers: CookieCiphers::default(),
            stats,
        }
    }

    /// Also answers NTS requests, with cookies sealed under `keys`.
    pub fn with_nts(mut self, keys: CookieKeys) -> Responder {
        self.nts = Some(keys);
        self
    }

    /// The reply to `request` from `from`, received at local time `received`
    /// (`now` is monotonic seconds for the rate limiter), or None to drop.
    pub fn respond(
        &mut self,
        request: &[u8],
        from: IpAddr,
        received: NtpTimestamp,
        now: f64,
        state: &ServerState,
        clock: &dyn LocalClock,
    ) -> Option<Reply> {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        // NTS fields are walked by the NTS parser (a request may carry a
        // cookie and 7 placeholders: more fields than `Packet` keeps); the
        // header is decoded alone then.
        let nts = match &self.nts {
            Some(_) if request.len() > HEADER_LEN && (request[0] >> 3) & 7 == 4 => {
                match ef::parse_request(request) {
                    Ok(None) => None,
                    parsed => Some(parsed),
                }
            }
            _ => None,
        };
        let decoded = match nts {
            Some(_) => &request[..HEADER_LEN],
            None => request,
        };
        let packet = match Packet::decode(decoded) {
            Ok(p) if p.mode == Mode::Client && (3..=4).contains(&p.version) => p,
            _ => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        if !self.access.permits(from) {
            self.stats.denied.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if let Some(limiter) = &mut self.limiter {
            match limiter.check(from, now) {
                RateDecision::Answer => {}
                RateDecision::Kiss => {
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    self.stats.kisses.fetch_add(1, Ordering::Relaxed);
                    let mut kiss = state.reply(&packet, received, clock.now());
                    kiss.leap = Leap::Unsynchronized;
                    kiss.stratum = 0;
                    kiss.reference_id = KissCode::Rate.bytes();
                    return Some(Reply::Plain(kiss.encode()));
                }
                RateDecision::Drop => {
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        if let (Some(parsed), Some(keys)) = (nts, &self.nts) {
            self.stats.nts_received.fetch_add(1, Ordering::Relaxed);
            let outcome = match parsed {
                Ok(Some(nts)) => nts_reply(
                    keys,
                    &mut self.ciphers,
                    request,
                    &nts,
                    &packet,
                    received,
                    state,
                    clock,
                ),
                Ok(None) => NtsOutcome::Drop,
                Err(e) => {
                    tracing::debug!("NTS request from {from}: {e}");
                    NtsOutcome::Drop
                }
            };
            let counter = match &outcome {
                NtsOutcome::Answer(_) => {
                    self.stats.answered.fetch_add(1, Ordering::Relaxed);
                    &self.stats.nts_answered
                }
                NtsOutcome::Nak(_) => &self.stats.nts_naks,
                NtsOutcome::Drop => &self.stats.nts_dropped,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return match outcome {
                NtsOutcome::Answer(bytes) | NtsOutcome::Nak(bytes) => Some(Reply::Nts(bytes)),
                NtsOutcome::Drop => None,
            };
        }
        let reply = state.reply(&packet, received, clock.now()).encode();
        self.stats.answered.fetch_add(1, Ordering::Relaxed);
        Some(Reply::Plain(reply))
    }
}

enum NtsOutcome {
    Answer(Vec<u8>),
    Nak(Vec<u8>),
    Drop,
}

/// The NTS part of the decision (RFC 8915 section 5.7).
#[allow(clippy::too_many_arguments)]
fn nts_reply(
    keys: &CookieKeys,
    ciphers: &mut CookieCiphers,
    request: &[u8],
    nts: &ef::ParsedRequest<'_>,
    packet: &Packet,
    received: NtpTimestamp,
    state: &ServerState,
    clock: &dyn LocalClock,
) -> NtsOutcome {
    ciphers.sync(&keys.read().unwrap_or_else(|e| e.into_inner()));
    let content = match ciphers.open(nts.cookie) {
        Ok(c) if c.aead == AEAD_AES_SIV_CMAC_256 => c,
        _ => {
            let mut nak = state.reply(packet, received, clock.now());
            nak.leap = Leap::Unsynchronized;
            nak.stratum = 0;
            nak.reference_id = *b"NTSN";
            return NtsOutcome::Nak(ef::nak_packet(&nak.encode(), nts.uid));
        }
    };
    if ef::verify(&content.c2s, request, nts.auth_at).is_err() {
        return NtsOutcome::Drop;
    }
    let fresh = CookieContent {
        aead: content.aead,
        c2s: content.c2s,
        s2c: content.s2c,
    };
    let mut count = (1 + nts.placeholders).min(MAX_REPLY_COOKIES);
    while count > 0 && ef::reply_len(nts.uid.len(), count, COOKIE_LEN) > request.len() {
        count -= 1;
    }
    let mut cookies = [[0u8; COOKIE_LEN]; MAX_REPLY_COOKIES];
    for cookie in &mut cookies[..count] {
        if ciphers.seal_into(&fresh, &rand::random(), cookie).is_err() {
            return NtsOutcome::Drop;
        }
    }
    let header = state.reply(packet, received, clock.now()).encode();
    let mut bytes = Vec::with_capacity(ef::reply_len(nts.uid.len(), count, COOKIE_LEN));
    let mut sealed = cookies[..count].iter();
    let fill = |out: &mut [u8]| {
        out.copy_from_slice(sealed.next().ok_or(ef::EncodeError::Seal)?);
        Ok(())
    };
    match ef::reply_into(
        &mut bytes,
        &header,
        &content.s2c,
        nts.uid,
        count,
        COOKIE_LEN,
        fill,
        &rand::random(),
    ) {
        Ok(()) => NtsOutcome::Answer(bytes),
        Err(_) => NtsOutcome::Drop,
    }
}

/// Serves on `socket` until the task is dropped. Requests are read in
/// batches (recvmmsg) and answered in batches (sendmmsg) under load; at
/// low rates a batch is one datagram.
pub async fn run(
    socket: TimestampedSocket,
    mut responder: Responder,
    state: watch::Receiver<ServerState>,
    clock: Arc<dyn LocalClock + Send + Sync>,
    mono: super::clock::Monotonic,
) {
    let mut batch = RecvBatch::default();
    let mut replies: Vec<(Reply, SocketAddr)> = Vec::with_capacity(super::net::BATCH);
    loop {
        if let Err(e) = socket.recv_batch(&mut batch, clock.as_ref()).await {
            tracing::debug!("server receive: {e}");
            continue;
        }
        let current = *state.borrow();
        let now = mono.now();
        replies.clear();
        for (i, received) in batch.received.iter().enumerate() {
            if received.from.port() == 0 {
                continue;
            }
            if let Some(reply) = responder.respond(
                batch.data(i),
                received.from.ip(),
                received.at,
                now,
                &current,
                clock.as_ref(),
            ) {
                replies.push((reply, received.from));
            }
        }
        if let Err(e) = socket.send_batch(&replies).await {
            tracing::debug!("server send: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::proto::{PendingRequest, Reject, check_reply};

    struct FixedClock(NtpTimestamp);
    impl LocalClock for FixedClock {
        fn now(&self) -> NtpTimestamp {
            self.0
        }
    }

    fn t0() -> NtpTimestamp {
        NtpTimestamp::from_unix(1_800_000_000, 0)
    }

    fn synced() -> ServerState {
        ServerState {
            leap: Leap::NoWarning,
            stratum: 3,
            reference_id: [192, 0, 2, 1],
            root_delay: 0.010,
            root_dispersion: 0.002,
            reference_time: t0().add_seconds(-10.0),
            poll: crate::engine::units::PollExponent::saturating(6),
            precision: -20,
        }
    }

    fn serve(config: ServeConfig) -> Responder {
        Responder::new(&config, Arc::new(ServerStats::default()))
    }

    fn open() -> ServeConfig {
        ServeConfig {
            listen: vec![],
            allow: vec![],
            deny: vec![],
            rate_limit: None,
            local_stratum: None,
            nts: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn answers_v4_with_own_state_and_client_accepts_it() {
        let mut r = serve(open());
        let nonce = NtpTimestamp(0x1111_2222_3333_4444);
        let req = Packet::client_request(nonce, 6).encode();
        let clock = FixedClock(t0().add_seconds(0.000_1));
        let reply = r
            .respond(&req, ip("127.0.0.1"), t0(), 0.0, &synced(), &clock)
            .expect("answered");
        let p = Packet::decode(&reply).expect("decodes");
        assert_eq!(
            (p.mode, p.version, p.stratum, p.leap),
            (Mode::Server, 4, 3, Leap::NoWarning)
        );
        assert_eq!(p.reference_id, [192, 0, 2, 1]);
        assert_eq!(p.origin_ts, nonce);
        assert_eq!(p.receive_ts, t0());
        assert_eq!(p.transmit_ts, t0().add_seconds(0.000_1));
        // Root dispersion grew by PHI over the 10 s since the reference time.
        assert!(
            (crate::engine::proto::short_to_seconds(p.root_dispersion) - 0.002_15).abs() < 2e-5
        );
        let pending = PendingRequest {
            nonce,
            sent_local: t0().add_seconds(-0.001),
        };
        assert!(check_reply(&p, Some(&pending), None, t0().add_seconds(0.001)).is_ok());
    }

    #[test]
    fn answers_v3_in_kind_and_ignores_other_modes_and_versions() {
        let mut r = serve(open());
        let mut req = Packet::client_request(NtpTimestamp(5), 6);
        req.version = 3;
        let reply = r
            .respond(
                &req.encode(),
                ip("127.0.0.1"),
                t0(),
                0.0,
                &synced(),
                &FixedClock(t0()),
            )
            .expect("v3");
        assert_eq!(Packet::decode(&reply).expect("decodes").version, 3);
        req.version = 2;
        assert!(
            r.respond(
                &req.encode(),
                ip("127.0.0.1"),
                t0(),
                0.0,
                &synced(),
                &FixedClock(t0())
            )
            .is_none()
        );
        let mut server_mode = Packet::client_request(NtpTimestamp(5), 6);
        server_mode.mode = Mode::Server;
        assert!(
            r.respond(
                &server_mode.encode(),
                ip("127.0.0.1"),
                t0(),
                0.0,
                &synced(),
                &FixedClock(t0())
            )
            .is_none()
        );
        assert!(
            r.respond(
                &[0u8; 20],
                ip("127.0.0.1"),
                t0(),
                0.0,
                &synced(),
                &FixedClock(t0())
            )
            .is_none()
        );
        assert_eq!(r.stats.report().malformed, 3);
    }

    #[test]
    fn unsynchronised_server_says_so_unless_local_stratum() {
        let mut r = serve(open());
        let req = Packet::client_request(NtpTimestamp(5), 6).encode();
        let state = ServerState::unsynchronized(None);
        let p = Packet::decode(
            &r.respond(&req, ip("127.0.0.1"), t0(), 0.0, &state, &FixedClock(t0()))
                .expect("reply"),
        )
        .expect("decodes");
        assert_eq!((p.leap, p.stratum), (Leap::Unsynchronized, 16));
        let pending = PendingRequest {
            nonce: NtpTimestamp(5),
            sent_local: t0(),
        };
        assert_eq!(
            check_reply(&p, Some(&pending), None, t0()),
            Err(Reject::Unsynchronized(16))
        );
        let local = ServerState::unsynchronized(Some(10));
        let p = Packet::decode(
            &r.respond(&req, ip("127.0.0.1"), t0(), 0.0, &local, &FixedClock(t0()))
                .expect("reply"),
        )
        .expect("decodes");
        assert_eq!(
            (p.leap, p.stratum, p.reference_id),
            (Leap::NoWarning, 10, *b"LOCL")
        );
    }

    #[test]
    fn reply_is_never_larger_than_the_request() {
        let mut r = serve(open());
        let mut req = Packet::client_request(NtpTimestamp(5), 6).encode().to_vec();
        req.extend_from_slice(&[0, 1, 0, 16]);
        req.extend_from_slice(&[0u8; 12]);
        let reply = r
            .respond(
                &req,
                ip("127.0.0.1"),
                t0(),
                0.0,
                &synced(),
                &FixedClock(t0()),
            )
            .expect("answered");
        assert!(reply.len() <= req.len());
        assert_eq!(reply.len(), 48);
    }

    #[test]
    fn allow_and_deny_by_cidr() {
        let mut config = open();
        config.allow = vec![
            "10.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ];
        config.deny = vec!["10.66.0.0/16".parse().expect("net")];
        let mut r = serve(config);
        let req = Packet::client_request(NtpTimestamp(5), 6).encode();
        let mut ask = |a: &str| {
            r.respond(&req, ip(a), t0(), 0.0, &synced(), &FixedClock(t0()))
                .is_some()
        };
        assert!(ask("10.1.2.3"));
        assert!(ask("::1"));
        assert!(!ask("10.66.1.1"), "deny wins over allow");
        assert!(!ask("192.0.2.7"), "not in allow");
        assert_eq!(r.stats.report().denied, 2);
    }

    #[test]
    fn rate_limit_kisses_then_drops_and_recovers() {
        let mut config = open();
        config.rate_limit = Some(RateLimitConfig {
            interval: 2.0,
            burst: 3,
        });
        let mut r = serve(config);
        let req = Packet::client_request(NtpTimestamp(5), 6).encode();
        let mut decisions = vec![];
        for i in 0..6 {
            let out = r.respond(
                &req,
                ip("10.0.0.1"),
                t0(),
                i as f64 * 0.01,
                &synced(),
                &FixedClock(t0()),
            );
            decisions.push(out.map(|b| Packet::decode(&b).expect("decodes")));
        }
        assert!(
            decisions[..3]
                .iter()
                .all(|d| d.as_ref().is_some_and(|p| p.stratum == 3)),
            "burst answered"
        );
        let kiss = decisions[3].as_ref().expect("then a kiss");
        assert_eq!(
            (kiss.stratum, kiss.reference_id, kiss.leap),
            (0, *b"RATE", Leap::Unsynchronized)
        );
        assert!(
            decisions[4].is_none() && decisions[5].is_none(),
            "then silence"
        );
        // Another client is not affected.
        assert!(
            r.respond(
                &req,
                ip("10.0.0.2"),
                t0(),
                0.1,
                &synced(),
                &FixedClock(t0())
            )
            .is_some()
        );
        // After one interval a token is back.
        let later = r
            .respond(
                &req,
                ip("10.0.0.1"),
                t0(),
                2.1,
                &synced(),
                &FixedClock(t0()),
            )
            .expect("recovered");
        assert_eq!(Packet::decode(&later).expect("decodes").stratum, 3);
    }

    #[test]
    fn rate_limiter_memory_is_bounded() {
        let mut l = RateLimiter::new(RateLimitConfig {
            interval: 1.0,
            burst: 2,
        });
        for i in 0..(MAX_TRACKED_CLIENTS as u32 + 10) {
            l.check(IpAddr::from(i.to_be_bytes()), 0.0);
        }
        assert!(l.buckets.len() <= MAX_TRACKED_CLIENTS);
    }

    mod nts {
        use super::*;
        use timectl_engine::nts::cookie::{COOKIE_LEN, DEFAULT_ROTATION_SECONDS};
        use timectl_engine::nts::ef::{self, UID_LEN};

        const C2S: [u8; 32] = [1; 32];
        const S2C: [u8; 32] = [2; 32];
        const UID: [u8; UID_LEN] = [7; UID_LEN];

        fn new_keys() -> CookieKeys {
            let mut set = KeySet::new(DEFAULT_ROTATION_SECONDS);
            set.rotate(1_800_000_000, 1, [0x55; 32]);
            Arc::new(RwLock::new(set))
        }

        fn cookie_for(keys: &CookieKeys) -> Vec<u8> {
            let content = CookieContent {
                aead: AEAD_AES_SIV_CMAC_256,
                c2s: C2S,
                s2c: S2C,
            };
            keys.read().unwrap().seal(&content, &[9; 16]).unwrap()
        }

        fn request(cookie: &[u8], placeholders: usize, c2s: &[u8; 32]) -> Vec<u8> {
            let header = Packet::client_request(NtpTimestamp(42), 6).encode();
            ef::request_packet(&header, c2s, &UID, cookie, placeholders, &[3; 16]).unwrap()
        }

        fn ask(r: &mut Responder, req: &[u8]) -> Option<Reply> {
            r.respond(
                req,
                ip("127.0.0.1"),
                t0(),
                0.0,
                &synced(),
                &FixedClock(t0()),
            )
        }

        #[test]
        fn nts_request_gets_an_authenticated_reply_with_new_cookies() {
            let keys = new_keys();
            let mut r = serve(open()).with_nts(keys.clone());
            for placeholders in [0, 1, 7] {
                let req = request(&cookie_for(&keys), placeholders, &C2S);
                let reply = ask(&mut r, &req).expect("answered");
                assert!(reply.len() <= req.len(), "never larger than the request");
                let checked = ef::check_reply(&S2C, &UID, &reply).expect("client accepts");
                assert_eq!(checked.cookies.len(), 1 + placeholders);
                let p = Packet::decode(&reply[..HEADER_LEN]).expect("header");
                assert_eq!(
                    (p.mode, p.stratum, p.origin_ts),
                    (Mode::Server, 3, NtpTimestamp(42))
                );
                for c in &checked.cookies {
                    assert_eq!(c.len(), COOKIE_LEN);
                    // Each new cookie opens to the same keys and works in turn.
                    let next = ask(&mut r, &request(c, 0, &C2S)).expect("answered");
                    assert!(ef::check_reply(&S2C, &UID, &next).is_ok());
                }
            }
            let s = r.stats.report();
            assert_eq!((s.nts_received, s.nts_answered, s.nts_naks), (14, 14, 0));
        }

        #[test]
        fn unknown_cookie_gets_a_nak_and_bad_authenticator_is_dropped() {
            let keys = new_keys();
            let mut r = serve(open()).with_nts(keys.clone());
            let mut forged = cookie_for(&keys);
            forged[30] ^= 1;
            let other = new_keys();
            other.write().unwrap().rotate(1_800_000_000, 99, [0x66; 32]);
            let foreign = cookie_for(&other);
            for bad in [forged, foreign] {
                let nak = ask(&mut r, &request(&bad, 0, &C2S)).expect("NAK");
                let p = Packet::decode(&nak).expect("decodes");
                assert_eq!((p.stratum, p.reference_id), (0, *b"NTSN"));
                assert_eq!(p.extensions, vec![ef::unique_identifier(&UID)]);
                assert_eq!(
                    ef::check_reply(&S2C, &UID, &nak),
                    Err(ef::ReplyError::NoAuthenticator)
                );
            }
            let wrong_key = request(&cookie_for(&keys), 0, &[8; 32]);
            assert_eq!(ask(&mut r, &wrong_key), None);
            let mut tampered = request(&cookie_for(&keys), 0, &C2S);
            tampered[40] ^= 1; // transmit timestamp, inside the authenticated part
            assert_eq!(ask(&mut r, &tampered), None);
            let s = r.stats.report();
            assert_eq!((s.nts_naks, s.nts_dropped, s.nts_answered), (2, 2, 0));
        }

        #[test]
        fn plain_requests_are_unchanged_and_nts_without_keys_is_plain() {
            let keys = new_keys();
            let mut r = serve(open()).with_nts(keys.clone());
            let plain = Packet::client_request(NtpTimestamp(5), 6).encode();
            assert!(matches!(ask(&mut r, &plain), Some(Reply::Plain(_))));
            let mut no_nts = serve(open());
            let req = request(&cookie_for(&keys), 0, &C2S);
            let reply = ask(&mut no_nts, &req).expect("answered plain");
            assert_eq!(reply.len(), HEADER_LEN);
            assert_eq!(no_nts.stats.report().nts_received, 0);
        }
    }
}
