//! NTPv4 wire protocol (RFC 5905, RFC 7822): packet codec, NTP timestamps
//! with era handling, and the client-side sanity checks on a server reply.
//!
//! Pure: no I/O, no clock reads. Callers pass in the times they measured.
//! The decoder never panics and never allocates more than a bounded amount,
//! whatever the input (see `fuzz/` and the proptest in this module).

use std::fmt;

/// Seconds between the NTP prime epoch (1900-01-01) and the Unix epoch.
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Length of the fixed NTP header.
pub const HEADER_LEN: usize = 48;
/// Largest datagram the decoder looks at; longer input is rejected, so a
/// hostile peer cannot make us walk megabytes of extension fields.
pub const MAX_PACKET_LEN: usize = 1024;
/// At most this many extension fields are kept.
pub const MAX_EXTENSION_FIELDS: usize = 8;
/// Root distance above which a server is unusable (RFC 5905 MAXDIST, s).
pub const MAX_ROOT_DISTANCE: f64 = 1.5;
/// Stratum value that means "unsynchronised" (RFC 5905 MAXSTRAT).
pub const MAX_STRATUM: u8 = 16;

/// A 64-bit NTP timestamp: 32 bits of seconds since the start of the era,
/// 32 bits of fraction. The era is not on the wire; differences are taken
/// modulo 2^64, which is correct whenever the two times are within 68 years.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    pub const ZERO: NtpTimestamp = NtpTimestamp(0);

    /// Converts Unix time (seconds, nanoseconds) to an NTP timestamp.
    /// Times from 2036-02-07 on fall in era 1 and wrap, as on the wire.
    pub fn from_unix(secs: i64, nanos: u32) -> NtpTimestamp {
        let ntp_secs = (secs as i128 + NTP_UNIX_OFFSET as i128) as u64 as u32;
        let frac = ((nanos as u64) << 32) / 1_000_000_000;
        NtpTimestamp(((ntp_secs as u64) << 32) | frac)
    }

    /// Converts to Unix time in seconds, choosing the era that puts the
    /// result nearest to `pivot_unix_secs` (e.g. the local clock or the build
    /// date): this is how era ambiguity is resolved (RFC 5905 section 6).
    pub fn to_unix_near(self, pivot_unix_secs: i64) -> f64 {
        let pivot = NtpTimestamp::from_unix(pivot_unix_secs, 0);
        let diff = self.diff_seconds(pivot);
        pivot_unix_secs as f64 + diff
    }

    /// Signed difference `self - other` in seconds, era-safe.
    pub fn diff_seconds(self, other: NtpTimestamp) -> f64 {
        let d = self.0.wrapping_sub(other.0) as i64;
        d as f64 / 4_294_967_296.0
    }

    /// This timestamp moved by `seconds` (may be negative), era-safe.
    pub fn add_seconds(self, seconds: f64) -> NtpTimestamp {
        let d = (seconds * 4_294_967_296.0).round() as i64;
        NtpTimestamp(self.0.wrapping_add(d as u64))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// NTP short format (16.16 seconds), used for root delay and dispersion.
pub fn short_to_seconds(v: u32) -> f64 {
    v as f64 / 65536.0
}

/// Seconds to NTP short format, saturating (negative becomes 0).
pub fn seconds_to_short(s: f64) -> u32 {
    if s.is_nan() || s <= 0.0 {
        0
    } else if s >= 65535.0 {
        u32::MAX
    } else {
        (s * 65536.0).round() as u32
    }
}

/// Leap indicator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leap {
    NoWarning,
    InsertSecond,
    DeleteSecond,
    Unsynchronized,
}

impl Leap {
    fn from_bits(b: u8) -> Leap {
        match b & 3 {
            0 => Leap::NoWarning,
            1 => Leap::InsertSecond,
            2 => Leap::DeleteSecond,
            _ => Leap::Unsynchronized,
        }
    }
    fn bits(self) -> u8 {
        match self {
            Leap::NoWarning => 0,
            Leap::InsertSecond => 1,
            Leap::DeleteSecond => 2,
            Leap::Unsynchronized => 3,
        }
    }
}

/// Association mode (RFC 5905 figure 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Reserved,
    SymmetricActive,
    SymmetricPassive,
    Client,
    Server,
    Broadcast,
    Control,
    Private,
}

impl Mode {
    fn from_bits(b: u8) -> Mode {
        match b & 7 {
            0 => Mode::Reserved,
            1 => Mode::SymmetricActive,
            2 => Mode::SymmetricPassive,
            3 => Mode::Client,
            4 => Mode::Server,
            5 => Mode::Broadcast,
            6 => Mode::Control,
            _ => Mode::Private,
        }
    }
    fn bits(self) -> u8 {
        match self {
            Mode::Reserved => 0,
            Mode::SymmetricActive => 1,
            Mode::SymmetricPassive => 2,
            Mode::Client => 3,
            Mode::Server => 4,
            Mode::Broadcast => 5,
            Mode::Control => 6,
            Mode::Private => 7,
        }
    }
}

/// One RFC 7822 extension field (type and value, padding included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionField {
    pub field_type: u16,
    pub value: Vec<u8>,
}

/// A decoded NTP packet. `extensions` and `mac` are what followed the
/// 48-byte header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub leap: Leap,
    pub version: u8,
    pub mode: Mode,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    /// Root delay, NTP short format.
    pub root_delay: u32,
    /// Root dispersion, NTP short format.
    pub root_dispersion: u32,
    pub reference_id: [u8; 4],
    pub reference_ts: NtpTimestamp,
    pub origin_ts: NtpTimestamp,
    pub receive_ts: NtpTimestamp,
    pub transmit_ts: NtpTimestamp,
    pub extensions: Vec<ExtensionField>,
    /// Legacy MAC (key id + digest), if present; we never verify it.
    pub mac: Option<Vec<u8>>,
}

/// Why a datagram could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet too short: {0} bytes, need at least 48")]
    TooShort(usize),
    #[error("packet too long: {0} bytes, at most {MAX_PACKET_LEN}")]
    TooLong(usize),
    #[error("unsupported NTP version {0}")]
    BadVersion(u8),
    #[error("malformed extension field at byte {offset}: {reason}")]
    BadExtension { offset: usize, reason: &'static str },
    #[error("more than {MAX_EXTENSION_FIELDS} extension fields")]
    TooManyExtensions,
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    ((be_u32(b, at) as u64) << 32) | be_u32(b, at + 4) as u64
}

impl Packet {
    /// A client request (mode 3, version 4) whose transmit timestamp is the
    /// random nonce `nonce`: the reply must echo it as its origin timestamp,
    /// and the real send time never leaves this host (as chrony does).
    pub fn client_request(nonce: NtpTimestamp, poll: i8) -> Packet {
        Packet {
            leap: Leap::Unsynchronized,
            version: 4,
            mode: Mode::Client,
            stratum: 0,
            poll,
            precision: -20,
            root_delay: 0,
            root_dispersion: 0,
            reference_id: [0; 4],
            reference_ts: NtpTimestamp::ZERO,
            origin_ts: NtpTimestamp::ZERO,
            receive_ts: NtpTimestamp::ZERO,
            transmit_ts: nonce,
            extensions: Vec::new(),
            mac: None,
        }
    }

    /// Decodes a datagram. Versions 1 to 4 are accepted here; which version
    /// is acceptable in which role is decided by the caller.
    pub fn decode(buf: &[u8]) -> Result<Packet, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(buf.len()));
        }
        if buf.len() > MAX_PACKET_LEN {
            return Err(DecodeError::TooLong(buf.len()));
        }
        let version = (buf[0] >> 3) & 7;
        if !(1..=4).contains(&version) {
            return Err(DecodeError::BadVersion(version));
        }
        let (extensions, mac) = if version == 4 {
            decode_trailer(&buf[HEADER_LEN..])?
        } else {
            // Before v4 anything after the header can only be a MAC.
            let rest = &buf[HEADER_LEN..];
            (Vec::new(), (!rest.is_empty()).then(|| rest.to_vec()))
        };
        Ok(Packet {
            leap: Leap::from_bits(buf[0] >> 6),
            version,
            mode: Mode::from_bits(buf[0]),
            stratum: buf[1],
            poll: buf[2] as i8,
            precision: buf[3] as i8,
            root_delay: be_u32(buf, 4),
            root_dispersion: be_u32(buf, 8),
            reference_id: [buf[12], buf[13], buf[14], buf[15]],
            reference_ts: NtpTimestamp(be_u64(buf, 16)),
            origin_ts: NtpTimestamp(be_u64(buf, 24)),
            receive_ts: NtpTimestamp(be_u64(buf, 32)),
            transmit_ts: NtpTimestamp(be_u64(buf, 40)),
            extensions,
            mac,
        })
    }

    /// Encodes the fixed 48-byte header (extension fields and MAC are not
    /// emitted: the engine never sends them).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = (self.leap.bits() << 6) | ((self.version & 7) << 3) | self.mode.bits();
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        b[16..24].copy_from_slice(&self.reference_ts.0.to_be_bytes());
        b[24..32].copy_from_slice(&self.origin_ts.0.to_be_bytes());
        b[32..40].copy_from_slice(&self.receive_ts.0.to_be_bytes());
        b[40..48].copy_from_slice(&self.transmit_ts.0.to_be_bytes());
        b
    }

    /// The kiss code of a kiss-o'-death packet (stratum 0), if any.
    pub fn kiss_code(&self) -> Option<KissCode> {
        (self.stratum == 0).then(|| KissCode::from_bytes(self.reference_id))
    }
}

/// Parses what follows the header of a v4 packet (RFC 7822 section 7.5):
/// a bare legacy MAC (20 or 24 bytes), or extension fields, each at least
/// 16 bytes and a multiple of 4 long, optionally followed by a MAC.
#[allow(clippy::type_complexity)]
fn decode_trailer(rest: &[u8]) -> Result<(Vec<ExtensionField>, Option<Vec<u8>>), DecodeError> {
    let mut fields = Vec::new();
    let mut at = 0usize;
    loop {
        let remaining = rest.len() - at;
        if remaining == 0 {
            return Ok((fields, None));
        }
        if remaining == 20 || remaining == 24 {
            return Ok((fields, Some(rest[at..].to_vec())));
        }
        if remaining < 16 {
            return Err(DecodeError::BadExtension {
                offset: HEADER_LEN + at,
                reason: "trailing bytes are neither an extension field nor a MAC",
            });
        }
        let field_type = u16::from_be_bytes([rest[at], rest[at + 1]]);
        let len = u16::from_be_bytes([rest[at + 2], rest[at + 3]]) as usize;
        if len < 16 {
            return Err(DecodeError::BadExtension {
                offset: HEADER_LEN + at,
                reason: "length below the 16-byte minimum",
            });
        }
        if !len.is_multiple_of(4) {
            return Err(DecodeError::BadExtension {
                offset: HEADER_LEN + at,
                reason: "length not a multiple of 4",
            });
        }
        if len > remaining {
            return Err(DecodeError::BadExtension {
                offset: HEADER_LEN + at,
                reason: "length runs past the end of the packet",
            });
        }
        if fields.len() == MAX_EXTENSION_FIELDS {
            return Err(DecodeError::TooManyExtensions);
        }
        fields.push(ExtensionField {
            field_type,
            value: rest[at + 4..at + len].to_vec(),
        });
        at += len;
    }
}

/// Kiss codes that change how a client treats a server (RFC 5905 7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KissCode {
    /// Slow down: poll less often.
    Rate,
    /// Access denied: stop using this server.
    Deny,
    /// Access restricted: stop using this server.
    Restricted,
    /// Any other code: ignored (the packet is dropped).
    Other([u8; 4]),
}

impl KissCode {
    pub fn from_bytes(b: [u8; 4]) -> KissCode {
        match &b {
            b"RATE" => KissCode::Rate,
            b"DENY" => KissCode::Deny,
            b"RSTR" => KissCode::Restricted,
            _ => KissCode::Other(b),
        }
    }
    pub fn bytes(self) -> [u8; 4] {
        match self {
            KissCode::Rate => *b"RATE",
            KissCode::Deny => *b"DENY",
            KissCode::Restricted => *b"RSTR",
            KissCode::Other(b) => b,
        }
    }
}

impl fmt::Display for KissCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes();
        for c in b {
            let c = if c.is_ascii_graphic() { c as char } else { '?' };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// What the client knows about the request a reply answers.
#[derive(Clone, Copy, Debug)]
pub struct PendingRequest {
    /// The random transmit timestamp we sent; the reply's origin must equal it.
    pub nonce: NtpTimestamp,
    /// Local time when the request left (T1).
    pub sent_local: NtpTimestamp,
}

/// A measurement from one good reply (RFC 5905 section 8).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Server time minus local time (theta), seconds.
    pub offset: f64,
    /// Round-trip delay (delta), seconds, never below `MIN_DELAY`.
    pub delay: f64,
    pub stratum: u8,
    pub leap: Leap,
    pub root_delay: f64,
    pub root_dispersion: f64,
    pub reference_id: [u8; 4],
    pub precision: i8,
    /// The server's transmit timestamp, to detect duplicates next time.
    pub server_transmit: NtpTimestamp,
}

/// Smallest delay we use, so a zero or negative measured delay (clock
/// resolution, or a reply faster than our own timestamping) cannot give a
/// zero-width correctness interval.
pub const MIN_DELAY: f64 = 1e-6;

/// Why a reply was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("malformed packet")]
    Undecodable,
    #[error("not a server reply (mode {0:?})")]
    WrongMode(Mode),
    #[error("unsupported version {0}")]
    WrongVersion(u8),
    #[error("origin timestamp does not match our request (bogus or replayed)")]
    BogusOrigin,
    #[error("no request outstanding")]
    Unsolicited,
    #[error("duplicate reply (same transmit timestamp as the last one)")]
    Duplicate,
    #[error("zero timestamp in reply")]
    ZeroTimestamp,
    #[error("kiss-o'-death {0}")]
    Kiss(KissCode),
    #[error("server is unsynchronised (leap 3 or stratum {0})")]
    Unsynchronized(u8),
    #[error("root distance above {MAX_ROOT_DISTANCE} s")]
    RootDistance,
    #[error("server receive time is after its transmit time")]
    ServerTimesReversed,
}

/// Runs every client-side test on a reply and computes offset and delay.
///
/// `pending` is the request outstanding for this source (None if none),
/// `last_server_transmit` the transmit timestamp of the previous accepted
/// reply, `received_local` our receive time (T4).
pub fn check_reply(
    packet: &Packet,
    pending: Option<&PendingRequest>,
    last_server_transmit: Option<NtpTimestamp>,
    received_local: NtpTimestamp,
) -> Result<Measurement, Reject> {
    if packet.mode != Mode::Server {
        return Err(Reject::WrongMode(packet.mode));
    }
    if !(3..=4).contains(&packet.version) {
        return Err(Reject::WrongVersion(packet.version));
    }
    let pending = pending.ok_or(Reject::Unsolicited)?;
    if packet.origin_ts.is_zero() || packet.receive_ts.is_zero() || packet.transmit_ts.is_zero() {
        return Err(Reject::ZeroTimestamp);
    }
    if packet.origin_ts != pending.nonce {
        return Err(Reject::BogusOrigin);
    }
    // A kiss is authentic only once the origin matched (else anyone could
    // spoof a DENY), so it is checked after the nonce.
    if let Some(code) = packet.kiss_code() {
        return Err(Reject::Kiss(code));
    }
    if last_server_transmit == Some(packet.transmit_ts) {
        return Err(Reject::Duplicate);
    }
    if packet.leap == Leap::Unsynchronized || packet.stratum >= MAX_STRATUM {
        return Err(Reject::Unsynchronized(packet.stratum));
    }
    let server_processing = packet.transmit_ts.diff_seconds(packet.receive_ts);
    if server_processing < 0.0 {
        return Err(Reject::ServerTimesReversed);
    }
    let root_delay = short_to_seconds(packet.root_delay);
    let root_dispersion = short_to_seconds(packet.root_dispersion);
    if root_delay / 2.0 + root_dispersion > MAX_ROOT_DISTANCE {
        return Err(Reject::RootDistance);
    }
    let t1 = pending.sent_local;
    let t2 = packet.receive_ts;
    let t3 = packet.transmit_ts;
    let t4 = received_local;
    let offset = (t2.diff_seconds(t1) + t3.diff_seconds(t4)) / 2.0;
    let delay = (t4.diff_seconds(t1) - server_processing).max(MIN_DELAY);
    Ok(Measurement {
        offset,
        delay,
        stratum: packet.stratum,
        leap: packet.leap,
        root_delay,
        root_dispersion,
        reference_id: packet.reference_id,
        precision: packet.precision,
        server_transmit: packet.transmit_ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reply_to(req: &PendingRequest, t2: NtpTimestamp, t3: NtpTimestamp) -> Packet {
        Packet {
            leap: Leap::NoWarning,
            version: 4,
            mode: Mode::Server,
            stratum: 2,
            poll: 6,
            precision: -20,
            root_delay: seconds_to_short(0.01),
            root_dispersion: seconds_to_short(0.01),
            reference_id: [127, 0, 0, 1],
            reference_ts: t2,
            origin_ts: req.nonce,
            receive_ts: t2,
            transmit_ts: t3,
            extensions: vec![],
            mac: None,
        }
    }

    fn base() -> NtpTimestamp {
        NtpTimestamp::from_unix(1_800_000_000, 0)
    }

    #[test]
    fn unix_conversion_and_era_rollover() {
        // 2036-02-07 06:28:16 UTC is the end of era 0: the seconds field wraps to 0.
        let end_of_era0 = 2_085_978_496i64;
        let ts = NtpTimestamp::from_unix(end_of_era0, 0);
        assert_eq!(ts.0 >> 32, 0, "era 1 starts at seconds field 0");
        let before = NtpTimestamp::from_unix(end_of_era0 - 1, 500_000_000);
        assert!(
            (ts.diff_seconds(before) - 0.5).abs() < 1e-9,
            "difference across the era boundary"
        );
        assert!((ts.to_unix_near(end_of_era0 - 100) - end_of_era0 as f64).abs() < 1e-6);
        // Same wire value read near 1900 would be 1900-01-01: the pivot picks the era.
        assert!((ts.to_unix_near(-2_208_988_800) - (-2_208_988_800.0)).abs() < 1e-6);
        let half = NtpTimestamp::from_unix(0, 500_000_000);
        assert_eq!(half.0 & 0xffff_ffff, 1 << 31);
    }

    #[test]
    fn add_seconds_round_trip() {
        let t = base();
        let u = t.add_seconds(-1.25);
        assert!((u.diff_seconds(t) + 1.25).abs() < 1e-9);
    }

    #[test]
    fn encode_decode_round_trip() {
        let req = PendingRequest {
            nonce: NtpTimestamp(0x1234_5678_9abc_def0),
            sent_local: base(),
        };
        let p = reply_to(&req, base(), base().add_seconds(0.001));
        let bytes = p.encode();
        assert_eq!(bytes[0], 0b00_100_100);
        let q = Packet::decode(&bytes).expect("decodes");
        assert_eq!(p, q);
    }

    #[test]
    fn decode_rejects_short_long_and_bad_version() {
        assert_eq!(Packet::decode(&[0u8; 47]), Err(DecodeError::TooShort(47)));
        assert_eq!(
            Packet::decode(&[0x23u8; 2000]),
            Err(DecodeError::TooLong(2000))
        );
        let mut b = [0u8; 48];
        b[0] = 5 << 3 | 3;
        assert_eq!(Packet::decode(&b), Err(DecodeError::BadVersion(5)));
    }

    #[test]
    fn extension_fields_and_mac() {
        let mut b = Packet::client_request(NtpTimestamp(1), 6).encode().to_vec();
        // One 16-byte extension field of type 0x0104 (unique identifier).
        b.extend_from_slice(&[0x01, 0x04, 0x00, 0x10]);
        b.extend_from_slice(&[7u8; 12]);
        // Followed by a 20-byte legacy MAC.
        b.extend_from_slice(&[9u8; 20]);
        let p = Packet::decode(&b).expect("decodes");
        assert_eq!(p.extensions.len(), 1);
        assert_eq!(p.extensions[0].field_type, 0x0104);
        assert_eq!(p.extensions[0].value, vec![7u8; 12]);
        assert_eq!(p.mac, Some(vec![9u8; 20]));
    }

    #[test]
    fn malformed_extension_fields_are_errors() {
        let head = Packet::client_request(NtpTimestamp(1), 6).encode().to_vec();
        let mut bad_len = head.clone();
        bad_len.extend_from_slice(&[0, 1, 0, 18]);
        bad_len.extend_from_slice(&[0u8; 14]);
        assert!(matches!(
            Packet::decode(&bad_len),
            Err(DecodeError::BadExtension { .. })
        ));
        let mut overrun = head.clone();
        overrun.extend_from_slice(&[0, 1, 0, 64]);
        overrun.extend_from_slice(&[0u8; 28]);
        assert!(matches!(
            Packet::decode(&overrun),
            Err(DecodeError::BadExtension { .. })
        ));
        let mut tiny = head.clone();
        tiny.extend_from_slice(&[0, 1, 0, 4]);
        tiny.extend_from_slice(&[0u8; 12]);
        assert!(matches!(
            Packet::decode(&tiny),
            Err(DecodeError::BadExtension { .. })
        ));
        let mut many = head.clone();
        for _ in 0..=MAX_EXTENSION_FIELDS {
            many.extend_from_slice(&[0, 1, 0, 16]);
            many.extend_from_slice(&[0u8; 12]);
        }
        assert_eq!(Packet::decode(&many), Err(DecodeError::TooManyExtensions));
    }

    #[test]
    fn good_reply_gives_offset_and_delay() {
        // Local clock 0.5 s behind the server, 20 ms each way, 1 ms in the server.
        let t1 = base();
        let req = PendingRequest {
            nonce: NtpTimestamp(0xdead_beef),
            sent_local: t1,
        };
        let t2 = t1.add_seconds(0.5 + 0.020);
        let t3 = t2.add_seconds(0.001);
        let t4 = t1.add_seconds(0.041);
        let m = check_reply(&reply_to(&req, t2, t3), Some(&req), None, t4).expect("accepted");
        assert!((m.offset - 0.5).abs() < 1e-6, "offset {}", m.offset);
        assert!((m.delay - 0.040).abs() < 1e-6, "delay {}", m.delay);
    }

    #[test]
    fn sanity_checks_reject_bad_replies() {
        let t1 = base();
        let req = PendingRequest {
            nonce: NtpTimestamp(0xdead_beef),
            sent_local: t1,
        };
        let t2 = t1.add_seconds(0.01);
        let t3 = t2.add_seconds(0.001);
        let t4 = t1.add_seconds(0.02);
        let good = reply_to(&req, t2, t3);
        let check = |p: &Packet| check_reply(p, Some(&req), None, t4);
        assert!(check(&good).is_ok());

        let mut p = good.clone();
        p.origin_ts = t1; // the real send time is not the nonce
        assert_eq!(check(&p), Err(Reject::BogusOrigin));
        assert_eq!(check_reply(&good, None, None, t4), Err(Reject::Unsolicited));
        assert_eq!(
            check_reply(&good, Some(&req), Some(t3), t4),
            Err(Reject::Duplicate)
        );

        let mut p = good.clone();
        p.receive_ts = NtpTimestamp::ZERO;
        assert_eq!(check(&p), Err(Reject::ZeroTimestamp));
        let mut p = good.clone();
        p.mode = Mode::Client;
        assert_eq!(check(&p), Err(Reject::WrongMode(Mode::Client)));
        let mut p = good.clone();
        p.version = 2;
        assert_eq!(check(&p), Err(Reject::WrongVersion(2)));
        let mut p = good.clone();
        p.leap = Leap::Unsynchronized;
        assert!(matches!(check(&p), Err(Reject::Unsynchronized(_))));
        let mut p = good.clone();
        p.stratum = 16;
        assert_eq!(check(&p), Err(Reject::Unsynchronized(16)));
        let mut p = good.clone();
        p.root_dispersion = seconds_to_short(1.6);
        assert_eq!(check(&p), Err(Reject::RootDistance));
        let mut p = good.clone();
        p.transmit_ts = t2.add_seconds(-0.001);
        assert_eq!(check(&p), Err(Reject::ServerTimesReversed));
        for (code, want) in [
            (*b"RATE", KissCode::Rate),
            (*b"DENY", KissCode::Deny),
            (*b"RSTR", KissCode::Restricted),
            (*b"XXXX", KissCode::Other(*b"XXXX")),
        ] {
            let mut p = good.clone();
            p.stratum = 0;
            p.reference_id = code;
            assert_eq!(check(&p), Err(Reject::Kiss(want)));
        }
        // A kiss with a wrong origin is just bogus: it must not stop the source.
        let mut p = good.clone();
        p.stratum = 0;
        p.reference_id = *b"DENY";
        p.origin_ts = NtpTimestamp(1);
        assert_eq!(check(&p), Err(Reject::BogusOrigin));
    }

    #[test]
    fn version_3_reply_accepted() {
        let t1 = base();
        let req = PendingRequest {
            nonce: NtpTimestamp(5),
            sent_local: t1,
        };
        let mut p = reply_to(&req, t1.add_seconds(0.01), t1.add_seconds(0.011));
        p.version = 3;
        let decoded = Packet::decode(&p.encode()).expect("decodes");
        assert!(check_reply(&decoded, Some(&req), None, t1.add_seconds(0.02)).is_ok());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            if let Ok(p) = Packet::decode(&bytes) {
                prop_assert!(p.extensions.len() <= MAX_EXTENSION_FIELDS);
                prop_assert_eq!(&p.encode()[..], &bytes[..HEADER_LEN]);
            }
        }

        #[test]
        fn timestamp_diff_is_antisymmetric(a in any::<u64>(), b in any::<u64>()) {
            let (x, y) = (NtpTimestamp(a), NtpTimestamp(b));
            let d1 = x.diff_seconds(y);
            let d2 = y.diff_seconds(x);
            prop_assume!(a.wrapping_sub(b) != 1u64 << 63);
            prop_assert!((d1 + d2).abs() < 1e-6);
        }
    }
}
