//! NTS Key Establishment records (RFC 8915 section 4), sans-IO.
//!
//! A record is a 4-byte header (critical bit and 15-bit type, then a
//! 16-bit body length) and a body. NTS-KE runs over TLS, so records arrive
//! split across reads at arbitrary points: [`Decoder`] takes bytes as they
//! come and hands out whole records, with hard bounds on record size and
//! count. [`ClientRequest`] builds what a client sends and
//! [`ServerResponse`] checks what a server answers; [`evaluate_request`] and
//! [`server_response`] are the server side. The TLS key export
//! parameters are here too; the TLS connection itself is not.

/// NTS-KE's well-known TCP port (RFC 8915 section 4).
pub const DEFAULT_KE_PORT: u16 = 4460;
/// Next protocol id of NTPv4 (RFC 8915 section 7.7).
pub const PROTOCOL_NTPV4: u16 = 0;
/// AEAD algorithm id of AEAD_AES_SIV_CMAC_256 (RFC 5297, IANA AEAD registry).
pub const AEAD_AES_SIV_CMAC_256: u16 = 15;
/// Largest record body the decoder accepts. Real records are small (a
/// cookie is ~100 bytes); anything larger is refused, not buffered.
pub const MAX_BODY_LEN: usize = 4096;
/// Most records the decoder accepts in one message (End of Message included).
pub const MAX_RECORDS: usize = 64;
/// Most cookies a server response may carry (RFC 8915 suggests 8).
pub const MAX_COOKIES: usize = 16;
/// TLS exporter label for the NTS keys (RFC 8915 section 5.1).
pub const EXPORTER_LABEL: &str = "EXPORTER-network-time-security";

const CRITICAL: u16 = 0x8000;
const HEADER_LEN: usize = 4;

mod record_type {
    pub const END_OF_MESSAGE: u16 = 0;
    pub const NEXT_PROTOCOL: u16 = 1;
    pub const ERROR: u16 = 2;
    pub const WARNING: u16 = 3;
    pub const AEAD_ALGORITHM: u16 = 4;
    pub const NEW_COOKIE: u16 = 5;
    pub const SERVER: u16 = 6;
    pub const PORT: u16 = 7;
}
use record_type as rt;

/// The TLS exporter context for the client-to-server key: protocol NTPv4,
/// AEAD 15, direction 0x00 (RFC 8915 section 5.1).
pub fn c2s_context() -> [u8; 5] {
    exporter_context(PROTOCOL_NTPV4, AEAD_AES_SIV_CMAC_256, 0x00)
}

/// The TLS exporter context for the server-to-client key (direction 0x01).
pub fn s2c_context() -> [u8; 5] {
    exporter_context(PROTOCOL_NTPV4, AEAD_AES_SIV_CMAC_256, 0x01)
}

fn exporter_context(protocol: u16, aead: u16, direction: u8) -> [u8; 5] {
    let [p0, p1] = protocol.to_be_bytes();
    let [a0, a1] = aead.to_be_bytes();
    [p0, p1, a0, a1, direction]
}

/// One NTS-KE record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    EndOfMessage,
    /// Protocol ids; empty in a response means the server refused them all.
    NextProtocol(Vec<u16>),
    Error(u16),
    Warning(u16),
    /// AEAD algorithm ids; empty in a response means none was acceptable.
    AeadAlgorithm(Vec<u16>),
    NewCookie(Vec<u8>),
    /// NTP server name or address (ASCII).
    Server(String),
    /// NTP server UDP port.
    Port(u16),
    /// A type not listed above (an unknown type `0..=7` would decode as
    /// the known record).
    Unknown {
        critical: bool,
        record_type: u16,
        body: Vec<u8>,
    },
}

/// Why NTS-KE bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeError {
    #[error("NTS-KE record type {record_type} has a {len}-byte body, at most {MAX_BODY_LEN}")]
    BodyTooLong { record_type: u16, len: usize },
    #[error("NTS-KE message has more than {MAX_RECORDS} records")]
    TooManyRecords,
    #[error("NTS-KE record type {record_type}: {reason}")]
    BadBody {
        record_type: u16,
        reason: &'static str,
    },
    #[error("NTS-KE data after the End of Message record")]
    DataAfterEnd,
    #[error("NTS-KE stream ended inside a record or before End of Message")]
    Truncated,
}

impl Record {
    fn type_and_critical(&self) -> (u16, bool) {
        match self {
            Record::EndOfMessage => (rt::END_OF_MESSAGE, true),
            Record::NextProtocol(_) => (rt::NEXT_PROTOCOL, true),
            Record::Error(_) => (rt::ERROR, true),
            Record::Warning(_) => (rt::WARNING, true),
            // Critical MAY be set: a server that ignored it would pick a
            // default we may not support.
            Record::AeadAlgorithm(_) => (rt::AEAD_ALGORITHM, true),
            // Critical MUST NOT be set.
            Record::NewCookie(_) => (rt::NEW_COOKIE, false),
            Record::Server(_) => (rt::SERVER, false),
            Record::Port(_) => (rt::PORT, false),
            Record::Unknown {
                critical,
                record_type,
                ..
            } => (*record_type & !CRITICAL, *critical),
        }
    }

    fn body(&self) -> Vec<u8> {
        match self {
            Record::EndOfMessage => Vec::new(),
            Record::NextProtocol(ids) | Record::AeadAlgorithm(ids) => {
                ids.iter().flat_map(|id| id.to_be_bytes()).collect()
            }
            Record::Error(v) | Record::Warning(v) | Record::Port(v) => v.to_be_bytes().to_vec(),
            Record::NewCookie(b) | Record::Unknown { body: b, .. } => b.clone(),
            Record::Server(s) => s.as_bytes().to_vec(),
        }
    }

    /// Appends the record's wire form to `out`. Fails if the body would
    /// exceed [`MAX_BODY_LEN`] (the decoder would refuse it).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), KeError> {
        let (record_type, critical) = self.type_and_critical();
        let body = self.body();
        if body.len() > MAX_BODY_LEN {
            return Err(KeError::BodyTooLong {
                record_type,
                len: body.len(),
            });
        }
        let head = record_type | if critical { CRITICAL } else { 0 };
        out.extend_from_slice(&head.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(())
    }

    /// Decodes one record body of the given type (critical bit removed).
    fn decode(record_type: u16, critical: bool, body: &[u8]) -> Result<Record, KeError> {
        let bad = |reason| KeError::BadBody {
            record_type,
            reason,
        };
        let exact_u16 = || match body {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(bad("body must be exactly 2 bytes")),
        };
        let u16_list = || {
            if !body.len().is_multiple_of(2) {
                return Err(bad("body length must be even"));
            }
            Ok(body
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect())
        };
        Ok(match record_type {
            rt::END_OF_MESSAGE if body.is_empty() => Record::EndOfMessage,
            rt::END_OF_MESSAGE => return Err(bad("End of Message must have an empty body")),
            rt::NEXT_PROTOCOL => Record::NextProtocol(u16_list()?),
            rt::ERROR => Record::Error(exact_u16()?),
            rt::WARNING => Record::Warning(exact_u16()?),
            rt::AEAD_ALGORITHM => Record::AeadAlgorithm(u16_list()?),
            rt::NEW_COOKIE => Record::NewCookie(body.to_vec()),
            rt::SERVER => {
                Record::Server(decode_server(body).ok_or(bad("server name is not ASCII"))?)
            }
            rt::PORT => Record::Port(exact_u16()?),
            _ => Record::Unknown {
                critical,
                record_type,
                body: body.to_vec(),
            },
        })
    }
}

fn decode_server(body: &[u8]) -> Option<String> {
    body.is_ascii()
        .then(|| String::from_utf8_lossy(body).into_owned())
}

/// Encodes a whole message.
pub fn encode_message(records: &[Record]) -> Result<Vec<u8>, KeError> {
    let mut out = Vec::new();
    for record in records {
        record.encode_into(&mut out)?;
    }
    Ok(out)
}

/// A streaming decoder for one NTS-KE message: feed it bytes as TLS reads
/// return them; it yields whole records and stops at End of Message.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
    records: usize,
    finished: bool,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Whether End of Message has been decoded.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Takes the next bytes of the stream and returns the records they
    /// complete. Any error is final for this message.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Record>, KeError> {
        let mut out = Vec::new();
        let mut input = bytes;
        while !input.is_empty() {
            if self.finished {
                return Err(KeError::DataAfterEnd);
            }
            let take = self.wanted()?.min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if let Some(record) = self.complete()? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Checks the stream's end: a message must end with End of Message.
    pub fn finish(&self) -> Result<(), KeError> {
        if self.finished {
            Ok(())
        } else {
            Err(KeError::Truncated)
        }
    }

    /// How many more bytes the record being read needs.
    fn wanted(&self) -> Result<usize, KeError> {
        if self.pending.len() < HEADER_LEN {
            return Ok(HEADER_LEN - self.pending.len());
        }
        let (record_type, len) = self.header();
        if len > MAX_BODY_LEN {
            return Err(KeError::BodyTooLong { record_type, len });
        }
        Ok(HEADER_LEN + len - self.pending.len())
    }

    fn header(&self) -> (u16, usize) {
        let p = &self.pending;
        let head = u16::from_be_bytes([p[0], p[1]]);
        (head & !CRITICAL, u16::from_be_bytes([p[2], p[3]]) as usize)
    }

    /// Decodes the pending record if it is whole.
    fn complete(&mut self) -> Result<Option<Record>, KeError> {
        if self.pending.len() < HEADER_LEN || self.wanted()? > 0 {
            return Ok(None);
        }
        if self.records == MAX_RECORDS {
            return Err(KeError::TooManyRecords);
        }
        let (record_type, _) = self.header();
        let critical = self.pending[0] & 0x80 != 0;
        let record = Record::decode(record_type, critical, &self.pending[HEADER_LEN..])?;
        self.pending.clear();
        self.records += 1;
        self.finished = record == Record::EndOfMessage;
        Ok(Some(record))
    }
}

/// What an NTS-KE client sends: NTPv4 as next protocol, AES-SIV-CMAC-256
/// as AEAD, End of Message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    pub records: Vec<Record>,
}

impl ClientRequest {
    pub fn new() -> ClientRequest {
        ClientRequest {
            records: vec![
                Record::NextProtocol(vec![PROTOCOL_NTPV4]),
                Record::AeadAlgorithm(vec![AEAD_AES_SIV_CMAC_256]),
                Record::EndOfMessage,
            ],
        }
    }

    /// The request's wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for record in &self.records {
            // The request's records are all far below MAX_BODY_LEN.
            let _ = record.encode_into(&mut out);
        }
        out
    }
}

impl Default for ClientRequest {
    fn default() -> ClientRequest {
        ClientRequest::new()
    }
}

/// A server's accepted NTS-KE response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerResponse {
    pub protocol: u16,
    pub aead: u16,
    pub cookies: Vec<Vec<u8>>,
    /// NTP server to use instead of the NTS-KE host, if given.
    pub server: Option<String>,
    /// NTP port to use instead of 123, if given.
    pub port: Option<u16>,
    pub warnings: Vec<u16>,
}

/// Why a server's NTS-KE response is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("NTS-KE server sent error code {0}")]
    ServerError(u16),
    #[error("NTS-KE server refused every next protocol we offered")]
    ProtocolRefused,
    #[error("NTS-KE response has no Next Protocol record")]
    MissingProtocol,
    #[error("NTS-KE server chose protocol {0}, which we did not offer")]
    UnsupportedProtocol(u16),
    #[error("NTS-KE server refused every AEAD algorithm we offered")]
    AeadRefused,
    #[error("NTS-KE response has no AEAD Algorithm record")]
    MissingAead,
    #[error("NTS-KE server chose AEAD algorithm {0}, which we do not support")]
    UnsupportedAead(u16),
    #[error("NTS-KE server listed several choices in record type {0} instead of picking one")]
    NotOneChoice(u16),
    #[error("NTS-KE response has no cookies")]
    NoCookies,
    #[error("NTS-KE response has more than {MAX_COOKIES} cookies")]
    TooManyCookies,
    #[error("NTS-KE response has an empty cookie")]
    EmptyCookie,
    #[error("NTS-KE response repeats record type {0}")]
    Duplicate(u16),
    #[error("NTS-KE response has unknown critical record type {0}")]
    UnknownCritical(u16),
    #[error("NTS-KE response has records after End of Message")]
    RecordsAfterEnd,
    #[error("NTS-KE response does not end with End of Message")]
    MissingEnd,
    #[error(transparent)]
    Decode(#[from] KeError),
}

/// Fields collected while walking a response, before validation.
#[derive(Default)]
struct Collected {
    protocols: Option<Vec<u16>>,
    aeads: Option<Vec<u16>>,
    cookies: Vec<Vec<u8>>,
    server: Option<String>,
    port: Option<u16>,
    warnings: Vec<u16>,
}

fn set_once<T>(slot: &mut Option<T>, value: T, record_type: u16) -> Result<(), ResponseError> {
    if slot.is_some() {
        return Err(ResponseError::Duplicate(record_type));
    }
    *slot = Some(value);
    Ok(())
}

impl Collected {
    fn add(&mut self, record: &Record) -> Result<(), ResponseError> {
        match record {
            Record::Error(code) => return Err(ResponseError::ServerError(*code)),
            Record::NextProtocol(p) => set_once(&mut self.protocols, p.clone(), rt::NEXT_PROTOCOL)?,
            Record::AeadAlgorithm(a) => set_once(&mut self.aeads, a.clone(), rt::AEAD_ALGORITHM)?,
            Record::Server(s) => set_once(&mut self.server, s.clone(), rt::SERVER)?,
            Record::Port(p) => set_once(&mut self.port, *p, rt::PORT)?,
            Record::Warning(code) => self.warnings.push(*code),
            Record::NewCookie(c) if c.is_empty() => return Err(ResponseError::EmptyCookie),
            Record::NewCookie(_) if self.cookies.len() == MAX_COOKIES => {
                return Err(ResponseError::TooManyCookies);
            }
            Record::NewCookie(c) => self.cookies.push(c.clone()),
            Record::Unknown {
                critical: true,
                record_type,
                ..
            } => {
                return Err(ResponseError::UnknownCritical(*record_type));
            }
            Record::Unknown { .. } | Record::EndOfMessage => {}
        }
        Ok(())
    }

    fn validate(self) -> Result<ServerResponse, ResponseError> {
        let protocol = match self.protocols.as_deref() {
            None => return Err(ResponseError::MissingProtocol),
            Some([]) => return Err(ResponseError::ProtocolRefused),
            Some([PROTOCOL_NTPV4]) => PROTOCOL_NTPV4,
            Some([other]) => return Err(ResponseError::UnsupportedProtocol(*other)),
            Some(_) => return Err(ResponseError::NotOneChoice(rt::NEXT_PROTOCOL)),
        };
        let aead = match self.aeads.as_deref() {
            None => return Err(ResponseError::MissingAead),
            Some([]) => return Err(ResponseError::AeadRefused),
            Some([AEAD_AES_SIV_CMAC_256]) => AEAD_AES_SIV_CMAC_256,
            Some([other]) => return Err(ResponseError::UnsupportedAead(*other)),
            Some(_) => return Err(ResponseError::NotOneChoice(rt::AEAD_ALGORITHM)),
        };
        if self.cookies.is_empty() {
            return Err(ResponseError::NoCookies);
        }
        let Collected {
            cookies,
            server,
            port,
            warnings,
            ..
        } = self;
        Ok(ServerResponse {
            protocol,
            aead,
            cookies,
            server,
            port,
            warnings,
        })
    }
}

impl ServerResponse {
    /// Validates a decoded response (as the client that sent
    /// [`ClientRequest::new`] must, RFC 8915 section 4.1).
    pub fn from_records(records: &[Record]) -> Result<ServerResponse, ResponseError> {
        let end = records.iter().position(|r| *r == Record::EndOfMessage);
        match end {
            None => return Err(ResponseError::MissingEnd),
            Some(i) if i + 1 != records.len() => return Err(ResponseError::RecordsAfterEnd),
            Some(_) => {}
        }
        let mut collected = Collected::default();
        for record in records {
            collected.add(record)?;
        }
        collected.validate()
    }

    /// Decodes and validates a whole response received as one buffer.
    pub fn parse(bytes: &[u8]) -> Result<ServerResponse, ResponseError> {
        let mut decoder = Decoder::new();
        let records = decoder.feed(bytes)?;
        decoder.finish()?;
        ServerResponse::from_records(&records)
    }
}

/// NTS-KE error code: the request has an unknown critical record.
pub const ERROR_UNRECOGNIZED_CRITICAL: u16 = 0;
/// NTS-KE error code: the request is malformed.
pub const ERROR_BAD_REQUEST: u16 = 1;
/// NTS-KE error code: the server failed.
pub const ERROR_INTERNAL: u16 = 2;

/// What a server makes of a client's request (RFC 8915 section 4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerDecision {
    /// NTPv4 with AES-SIV-CMAC-256: export the keys and answer with
    /// [`server_response`].
    Accept,
    /// Answer with these records (an Error record, or an empty Next
    /// Protocol or AEAD Algorithm record when nothing offered is
    /// supported) and no cookies.
    Refuse(Vec<Record>),
}

fn error_response(code: u16) -> ServerDecision {
    ServerDecision::Refuse(vec![Record::Error(code), Record::EndOfMessage])
}

/// Checks a client's request records (as decoded up to End of Message):
/// exactly one Next Protocol and one AEAD Algorithm record, no record a
/// client must not send, no unknown critical record.
pub fn evaluate_request(records: &[Record]) -> ServerDecision {
    if records.last() != Some(&Record::EndOfMessage) {
        return error_response(ERROR_BAD_REQUEST);
    }
    let mut protocols = None;
    let mut aeads = None;
    for record in records {
        match record {
            Record::NextProtocol(p) if protocols.is_none() => protocols = Some(p),
            Record::AeadAlgorithm(a) if aeads.is_none() => aeads = Some(a),
            Record::NextProtocol(_)
            | Record::AeadAlgorithm(_)
            | Record::Error(_)
            | Record::Warning(_)
            | Record::NewCookie(_) => return error_response(ERROR_BAD_REQUEST),
            Record::Unknown { critical: true, .. } => {
                return error_response(ERROR_UNRECOGNIZED_CRITICAL);
            }
            // Server and Port are the client's hints; we ignore them.
            Record::Server(_) | Record::Port(_) | Record::Unknown { .. } | Record::EndOfMessage => {
            }
        }
    }
    let (Some(protocols), Some(aeads)) = (protocols, aeads) else {
        return error_response(ERROR_BAD_REQUEST);
    };
    if !protocols.contains(&PROTOCOL_NTPV4) {
        return ServerDecision::Refuse(vec![Record::NextProtocol(vec![]), Record::EndOfMessage]);
    }
    if !aeads.contains(&AEAD_AES_SIV_CMAC_256) {
        return ServerDecision::Refuse(vec![
            Record::NextProtocol(vec![PROTOCOL_NTPV4]),
            Record::AeadAlgorithm(vec![]),
            Record::EndOfMessage,
        ]);
    }
    ServerDecision::Accept
}

/// A server's answer to an accepted request: NTPv4, AES-SIV-CMAC-256,
/// the cookies, the NTP server and port when they are not the NTS-KE
/// host and 123, End of Message.
pub fn server_response(
    cookies: Vec<Vec<u8>>,
    server: Option<String>,
    port: Option<u16>,
) -> Vec<Record> {
    let mut records = vec![
        Record::NextProtocol(vec![PROTOCOL_NTPV4]),
        Record::AeadAlgorithm(vec![AEAD_AES_SIV_CMAC_256]),
    ];
    records.extend(cookies.into_iter().map(Record::NewCookie));
    records.extend(server.map(Record::Server));
    records.extend(port.map(Record::Port));
    records.push(Record::EndOfMessage);
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn response_records() -> Vec<Record> {
        vec![
            Record::NextProtocol(vec![PROTOCOL_NTPV4]),
            Record::AeadAlgorithm(vec![AEAD_AES_SIV_CMAC_256]),
            Record::Warning(7),
            Record::NewCookie(vec![1; 100]),
            Record::NewCookie(vec![2; 100]),
            Record::Server("ntp.example.org".into()),
            Record::Port(1234),
            Record::Unknown {
                critical: false,
                record_type: 0x4000,
                body: vec![9, 9],
            },
            Record::EndOfMessage,
        ]
    }

    fn response_bytes(records: &[Record]) -> Vec<u8> {
        encode_message(records).unwrap()
    }

    fn parse(records: Vec<Record>) -> Result<ServerResponse, ResponseError> {
        ServerResponse::parse(&response_bytes(&records))
    }

    fn replace(index: usize, record: Record) -> Vec<Record> {
        let mut records = response_records();
        records[index] = record;
        records
    }

    #[test]
    fn server_accepts_the_client_request_and_the_client_its_response() {
        let mut decoder = Decoder::new();
        let records = decoder.feed(&ClientRequest::new().encode()).unwrap();
        assert_eq!(evaluate_request(&records), ServerDecision::Accept);
        let response = server_response(vec![vec![1; 118]; 8], None, Some(1123));
        let bytes = encode_message(&response).unwrap();
        let parsed = ServerResponse::parse(&bytes).unwrap();
        assert_eq!(parsed.cookies.len(), 8);
        assert_eq!((parsed.port, parsed.server), (Some(1123), None));
        let plain = server_response(vec![vec![1; 118]], Some("ntp.example".into()), None);
        let parsed = ServerResponse::parse(&encode_message(&plain).unwrap()).unwrap();
        assert_eq!(
            (parsed.port, parsed.server.as_deref()),
            (None, Some("ntp.example"))
        );
    }

    #[test]
    fn server_refuses_bad_requests() {
        let eom = Record::EndOfMessage;
        let np = Record::NextProtocol(vec![PROTOCOL_NTPV4]);
        let aead = Record::AeadAlgorithm(vec![AEAD_AES_SIV_CMAC_256]);
        let refused = |records: Vec<Record>| match evaluate_request(&records) {
            ServerDecision::Refuse(r) => r,
            ServerDecision::Accept => panic!("accepted {records:?}"),
        };
        let error = |code| vec![Record::Error(code), Record::EndOfMessage];
        assert_eq!(
            refused(vec![aead.clone(), eom.clone()]),
            error(ERROR_BAD_REQUEST)
        );
        assert_eq!(
            refused(vec![np.clone(), eom.clone()]),
            error(ERROR_BAD_REQUEST)
        );
        assert_eq!(
            refused(vec![np.clone(), aead.clone()]),
            error(ERROR_BAD_REQUEST)
        );
        assert_eq!(
            refused(vec![np.clone(), np.clone(), aead.clone(), eom.clone()]),
            error(ERROR_BAD_REQUEST)
        );
        assert_eq!(
            refused(vec![
                np.clone(),
                aead.clone(),
                Record::NewCookie(vec![1]),
                eom.clone()
            ]),
            error(ERROR_BAD_REQUEST)
        );
        let critical = Record::Unknown {
            critical: true,
            record_type: 0x1234,
            body: vec![],
        };
        assert_eq!(
            refused(vec![np.clone(), aead.clone(), critical, eom.clone()]),
            error(ERROR_UNRECOGNIZED_CRITICAL)
        );
        assert_eq!(
            refused(vec![
                Record::NextProtocol(vec![5]),
                aead.clone(),
                eom.clone()
            ]),
            vec![Record::NextProtocol(vec![]), eom.clone()]
        );
        assert_eq!(
            refused(vec![
                np.clone(),
                Record::AeadAlgorithm(vec![1, 2]),
                eom.clone()
            ]),
            vec![np.clone(), Record::AeadAlgorithm(vec![]), eom.clone()]
        );
        // Hints and non-critical unknown records are ignored; other offers too.
        let ok = vec![
            Record::NextProtocol(vec![9, PROTOCOL_NTPV4]),
            Record::AeadAlgorithm(vec![1, AEAD_AES_SIV_CMAC_256]),
            Record::Server("x".into()),
            Record::Port(5),
            Record::Unknown {
                critical: false,
                record_type: 0x4000,
                body: vec![],
            },
            eom,
        ];
        assert_eq!(evaluate_request(&ok), ServerDecision::Accept);
    }

    #[test]
    fn client_request_wire_bytes() {
        let bytes = ClientRequest::new().encode();
        assert_eq!(
            bytes,
            [0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 2, 0, 15, 0x80, 0, 0, 0]
        );
    }

    #[test]
    fn critical_bits_follow_the_rfc() {
        let head = |r: Record| response_bytes(&[r])[0] & 0x80 != 0;
        assert!(head(Record::EndOfMessage));
        assert!(head(Record::NextProtocol(vec![0])));
        assert!(head(Record::Error(0)));
        assert!(head(Record::Warning(0)));
        assert!(!head(Record::NewCookie(vec![1])));
    }

    #[test]
    fn exporter_contexts() {
        assert_eq!(c2s_context(), [0, 0, 0, 15, 0]);
        assert_eq!(s2c_context(), [0, 0, 0, 15, 1]);
        assert_eq!(EXPORTER_LABEL, "EXPORTER-network-time-security");
    }

    #[test]
    fn response_round_trip() {
        let response = parse(response_records()).unwrap();
        assert_eq!(response.protocol, PROTOCOL_NTPV4);
        assert_eq!(response.aead, AEAD_AES_SIV_CMAC_256);
        assert_eq!(response.cookies, vec![vec![1; 100], vec![2; 100]]);
        assert_eq!(response.server.as_deref(), Some("ntp.example.org"));
        assert_eq!(response.port, Some(1234));
        assert_eq!(response.warnings, vec![7]);
    }

    #[test]
    fn every_split_point_decodes_the_same() {
        let bytes = response_bytes(&response_records());
        for split in 0..=bytes.len() {
            let mut decoder = Decoder::new();
            let mut records = decoder.feed(&bytes[..split]).unwrap();
            records.extend(decoder.feed(&bytes[split..]).unwrap());
            decoder.finish().unwrap();
            assert_eq!(records, response_records(), "split at {split}");
        }
    }

    #[test]
    fn byte_at_a_time_decodes_the_same() {
        let bytes = response_bytes(&response_records());
        let mut decoder = Decoder::new();
        let mut records = Vec::new();
        for b in &bytes {
            records.extend(decoder.feed(std::slice::from_ref(b)).unwrap());
        }
        assert!(decoder.is_finished());
        assert_eq!(records, response_records());
    }

    #[test]
    fn oversized_body_is_refused_from_its_header() {
        let mut decoder = Decoder::new();
        let len = (MAX_BODY_LEN as u16 + 1).to_be_bytes();
        let err = decoder.feed(&[0, 5, len[0], len[1]]).unwrap_err();
        assert_eq!(
            err,
            KeError::BodyTooLong {
                record_type: 5,
                len: MAX_BODY_LEN + 1
            }
        );
        let big = Record::NewCookie(vec![0; MAX_BODY_LEN + 1]);
        assert!(matches!(
            encode_message(&[big]),
            Err(KeError::BodyTooLong { .. })
        ));
    }

    #[test]
    fn too_many_records() {
        let records = vec![Record::Warning(1); MAX_RECORDS + 1];
        let err = Decoder::new().feed(&response_bytes(&records)).unwrap_err();
        assert_eq!(err, KeError::TooManyRecords);
    }

    #[test]
    fn bad_bodies() {
        let cases: [&[u8]; 6] = [
            &[0x80, 0, 0, 1, 0],       // End of Message with a body
            &[0x80, 1, 0, 1, 0],       // odd protocol list
            &[0x80, 2, 0, 1, 0],       // short error code
            &[0x80, 3, 0, 3, 0, 0, 0], // long warning code
            &[0, 7, 0, 0],             // empty port
            &[0, 6, 0, 1, 0xff],       // non-ASCII server
        ];
        for bytes in cases {
            let err = Decoder::new().feed(bytes).unwrap_err();
            assert!(matches!(err, KeError::BadBody { .. }), "{bytes:?}: {err}");
        }
    }

    #[test]
    fn data_after_end_and_truncation() {
        let mut bytes = response_bytes(&response_records());
        bytes.push(0);
        let err = ServerResponse::parse(&bytes).unwrap_err();
        assert_eq!(err, ResponseError::Decode(KeError::DataAfterEnd));
        bytes.truncate(bytes.len() - 2);
        let err = ServerResponse::parse(&bytes).unwrap_err();
        assert_eq!(err, ResponseError::Decode(KeError::Truncated));
    }

    #[test]
    fn records_after_end_and_missing_end() {
        let mut records = response_records();
        records.push(Record::Warning(1));
        let err = ServerResponse::from_records(&records).unwrap_err();
        assert_eq!(err, ResponseError::RecordsAfterEnd);
        records.truncate(records.len() - 2);
        let err = ServerResponse::from_records(&records).unwrap_err();
        assert_eq!(err, ResponseError::MissingEnd);
    }

    #[test]
    fn server_error_record() {
        assert_eq!(
            parse(replace(2, Record::Error(1))),
            Err(ResponseError::ServerError(1))
        );
    }

    #[test]
    fn protocol_errors() {
        let nak = Record::NextProtocol(vec![]);
        assert_eq!(parse(replace(0, nak)), Err(ResponseError::ProtocolRefused));
        let other = Record::NextProtocol(vec![3]);
        assert_eq!(
            parse(replace(0, other)),
            Err(ResponseError::UnsupportedProtocol(3))
        );
        let missing = replace(0, Record::Warning(0));
        assert_eq!(parse(missing), Err(ResponseError::MissingProtocol));
        let two = Record::NextProtocol(vec![0, 0]);
        assert_eq!(
            parse(replace(0, two)),
            Err(ResponseError::NotOneChoice(rt::NEXT_PROTOCOL))
        );
    }

    #[test]
    fn aead_errors() {
        let nak = Record::AeadAlgorithm(vec![]);
        assert_eq!(parse(replace(1, nak)), Err(ResponseError::AeadRefused));
        let gcm = Record::AeadAlgorithm(vec![1]);
        assert_eq!(
            parse(replace(1, gcm)),
            Err(ResponseError::UnsupportedAead(1))
        );
        let missing = replace(1, Record::Warning(0));
        assert_eq!(parse(missing), Err(ResponseError::MissingAead));
        let two = Record::AeadAlgorithm(vec![15, 15]);
        assert_eq!(
            parse(replace(1, two)),
            Err(ResponseError::NotOneChoice(rt::AEAD_ALGORITHM))
        );
    }

    #[test]
    fn cookie_errors() {
        let mut records = replace(3, Record::Warning(0));
        records[4] = Record::Warning(0);
        assert_eq!(parse(records), Err(ResponseError::NoCookies));
        let empty = Record::NewCookie(vec![]);
        assert_eq!(parse(replace(3, empty)), Err(ResponseError::EmptyCookie));
        let mut records = vec![Record::NewCookie(vec![1]); MAX_COOKIES + 1];
        records.extend(response_records());
        assert_eq!(parse(records), Err(ResponseError::TooManyCookies));
    }

    #[test]
    fn duplicates_and_unknown_critical() {
        let dup = replace(2, Record::Port(1));
        assert_eq!(parse(dup), Err(ResponseError::Duplicate(rt::PORT)));
        let crit = Record::Unknown {
            critical: true,
            record_type: 0x4000,
            body: vec![],
        };
        assert_eq!(
            parse(replace(7, crit)),
            Err(ResponseError::UnknownCritical(0x4000))
        );
    }

    fn any_record() -> impl Strategy<Value = Record> {
        let ids = proptest::collection::vec(any::<u16>(), 0..8);
        let bytes = proptest::collection::vec(any::<u8>(), 0..300);
        prop_oneof![
            Just(Record::EndOfMessage),
            ids.clone().prop_map(Record::NextProtocol),
            any::<u16>().prop_map(Record::Error),
            any::<u16>().prop_map(Record::Warning),
            ids.prop_map(Record::AeadAlgorithm),
            bytes.clone().prop_map(Record::NewCookie),
            "[ -~]{0,64}".prop_map(Record::Server),
            any::<u16>().prop_map(Record::Port),
            (any::<bool>(), 8u16..0x8000, bytes).prop_map(|(critical, record_type, body)| {
                Record::Unknown {
                    critical,
                    record_type,
                    body,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000),
                               split in any::<prop::sample::Index>()) {
            let at = split.index(bytes.len() + 1);
            let mut decoder = Decoder::new();
            let _ = decoder.feed(&bytes[..at]).and_then(|_| decoder.feed(&bytes[at..]));
            let _ = ServerResponse::parse(&bytes);
        }

        #[test]
        fn encode_then_decode_is_identity(mut records in proptest::collection::vec(any_record(), 0..20)) {
            records.retain(|r| *r != Record::EndOfMessage);
            records.push(Record::EndOfMessage);
            let bytes = encode_message(&records).unwrap();
            let mut decoder = Decoder::new();
            prop_assert_eq!(decoder.feed(&bytes).unwrap(), records);
            prop_assert!(decoder.finish().is_ok());
        }
    }
}
