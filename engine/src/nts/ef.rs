//! NTS extension fields for NTP packets (RFC 8915 section 5), sans-IO.
//!
//! Fields use [`proto::ExtensionField`](crate::proto::ExtensionField) with
//! RFC 7822 framing: a 4-byte header, the body zero-padded so the field is
//! a multiple of 4 bytes and at least 16 bytes long. The NTS Authenticator
//! and Encrypted Extension Fields field carries an AEAD_AES_SIV_CMAC_256
//! (RFC 5297) nonce and ciphertext; its associated data is everything in
//! the packet before it (header and earlier fields). The caller supplies
//! keys, unique identifiers and nonces: nothing here draws random numbers.

use aes_siv::KeyInit;
use aes_siv::siv::Aes128Siv;

use crate::proto::{ExtensionField, HEADER_LEN};

/// Unique Identifier extension field type.
pub const UNIQUE_IDENTIFIER: u16 = 0x0104;
/// NTS Cookie extension field type.
pub const NTS_COOKIE: u16 = 0x0204;
/// NTS Cookie Placeholder extension field type.
pub const NTS_COOKIE_PLACEHOLDER: u16 = 0x0304;
/// NTS Authenticator and Encrypted Extension Fields extension field type.
pub const NTS_AUTHENTICATOR: u16 = 0x0404;
/// Length of the unique identifiers and nonces this client sends.
pub const UID_LEN: usize = 32;
pub const NONCE_LEN: usize = 16;
/// AES-SIV's synthetic IV (tag), the ciphertext's first 16 bytes.
pub const TAG_LEN: usize = 16;
/// Most extension fields accepted inside a decrypted authenticator.
pub const MAX_INNER_FIELDS: usize = 32;
/// An AEAD_AES_SIV_CMAC_256 key (from the TLS exporter, RFC 8915 5.1).
pub type Key = [u8; 32];

const FIELD_HEADER_LEN: usize = 4;
const MIN_FIELD_LEN: usize = 16;
const MAX_FIELD_LEN: usize = u16::MAX as usize & !3;

/// Why fields could not be encoded or sealed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("extension field type {field_type:#06x} would be {len} bytes, at most {MAX_FIELD_LEN}")]
    FieldTooLong { field_type: u16, len: usize },
    #[error("AES-SIV encryption failed")]
    Seal,
}

/// Why an authenticator field could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authenticator offset {0} is not inside the packet after its header")]
    BadOffset(usize),
    #[error("malformed extension field at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    #[error("field at byte {offset} has type {found:#06x}, not the NTS authenticator")]
    NotAuthenticator { offset: usize, found: u16 },
    #[error("authenticator nonce and ciphertext lengths overflow the field")]
    LengthOverflow,
    #[error("authenticator has an empty nonce")]
    EmptyNonce,
    #[error("authenticator ciphertext is shorter than the {TAG_LEN}-byte tag")]
    ShortCiphertext,
    #[error("authentication failed: wrong key or modified packet")]
    TagMismatch,
    #[error("decrypted extension fields are malformed: {0}")]
    BadPlaintext(&'static str),
}

/// Why an NTS reply is refused by the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("NTS reply shorter than the {HEADER_LEN}-byte NTP header")]
    TooShort,
    #[error("NTS reply has no authenticator field")]
    NoAuthenticator,
    #[error("NTS reply has no unique identifier before its authenticator")]
    MissingUid,
    #[error("NTS reply has more than one unique identifier")]
    DuplicateUid,
    #[error("NTS reply's unique identifier is not our request's (replay or stray reply)")]
    UidMismatch,
    #[error(transparent)]
    Auth(#[from] AuthError),
}

fn padded_len(body_len: usize) -> usize {
    (FIELD_HEADER_LEN + body_len)
        .next_multiple_of(4)
        .max(MIN_FIELD_LEN)
}

/// A field whose value is `body` zero-padded to RFC 7822's framing.
pub fn padded_field(field_type: u16, body: &[u8]) -> ExtensionField {
    let mut value = body.to_vec();
    value.resize(padded_len(body.len()) - FIELD_HEADER_LEN, 0);
    ExtensionField { field_type, value }
}

/// A Unique Identifier field (RFC 8915 5.3).
pub fn unique_identifier(uid: &[u8; UID_LEN]) -> ExtensionField {
    padded_field(UNIQUE_IDENTIFIER, uid)
}

/// An NTS Cookie field (RFC 8915 5.4).
pub fn cookie(cookie: &[u8]) -> ExtensionField {
    padded_field(NTS_COOKIE, cookie)
}

/// An NTS Cookie Placeholder field as long as a cookie of `cookie_len`
/// bytes (RFC 8915 5.5): its zero body only asks for one more cookie.
pub fn cookie_placeholder(cookie_len: usize) -> ExtensionField {
    padded_field(NTS_COOKIE_PLACEHOLDER, &vec![0; cookie_len])
}

/// Appends the wire form of `fields`, padding each value as needed.
pub fn encode_fields(fields: &[ExtensionField], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for field in fields {
        let len = padded_len(field.value.len());
        if len > MAX_FIELD_LEN {
            return Err(EncodeError::FieldTooLong {
                field_type: field.field_type,
                len,
            });
        }
        out.extend_from_slice(&field.field_type.to_be_bytes());
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&field.value);
        out.resize(out.len() + len - FIELD_HEADER_LEN - field.value.len(), 0);
    }
    Ok(())
}

fn siv(key: &Key) -> Aes128Siv {
    Aes128Siv::new(&(*key).into())
}

/// Seals `plaintext_fields` into an NTS Authenticator and Encrypted
/// Extension Fields field with `key` (a client's C2S key; a server seals
/// its reply the same way with the S2C key). `associated_data` is the
/// packet as it will precede the field: the NTP header and every
/// extension field before it. `nonce` must be fresh random bytes.
pub fn seal_request(
    key: &Key,
    associated_data: &[u8],
    plaintext_fields: &[ExtensionField],
    nonce: &[u8; NONCE_LEN],
) -> Result<ExtensionField, EncodeError> {
    let mut plaintext = Vec::new();
    encode_fields(plaintext_fields, &mut plaintext)?;
    let ciphertext = siv(key)
        .encrypt([associated_data, nonce.as_slice()], &plaintext)
        .map_err(|_| EncodeError::Seal)?;
    let len = padded_len(4 + NONCE_LEN + ciphertext.len());
    if len > MAX_FIELD_LEN {
        return Err(EncodeError::FieldTooLong {
            field_type: NTS_AUTHENTICATOR,
            len,
        });
    }
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(&(NONCE_LEN as u16).to_be_bytes());
    body.extend_from_slice(&(ciphertext.len() as u16).to_be_bytes());
    body.extend_from_slice(nonce);
    body.extend_from_slice(&ciphertext);
    Ok(padded_field(NTS_AUTHENTICATOR, &body))
}

/// Reads the extension field header at `offset`: its type and length,
/// checked against RFC 7822's framing and the packet's end.
fn field_at(packet: &[u8], offset: usize) -> Result<(u16, usize), AuthError> {
    let malformed = |reason| AuthError::Malformed { offset, reason };
    let head = packet
        .get(offset..offset + FIELD_HEADER_LEN)
        .ok_or(malformed("truncated header"))?;
    let field_type = u16::from_be_bytes([head[0], head[1]]);
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    if len < MIN_FIELD_LEN || !len.is_multiple_of(4) {
        return Err(malformed("length not a multiple of 4 of at least 16"));
    }
    if len > packet.len() - offset {
        return Err(malformed("length runs past the end of the packet"));
    }
    Ok((field_type, len))
}

/// Splits an authenticator body into nonce and ciphertext.
fn nonce_and_ciphertext(body: &[u8]) -> Result<(&[u8], &[u8]), AuthError> {
    let [n0, n1, c0, c1, rest @ ..] = body else {
        return Err(AuthError::LengthOverflow);
    };
    let nonce_len = u16::from_be_bytes([*n0, *n1]) as usize;
    let ct_len = u16::from_be_bytes([*c0, *c1]) as usize;
    let ct_start = nonce_len.next_multiple_of(4);
    if ct_start + ct_len.next_multiple_of(4) > rest.len() {
        return Err(AuthError::LengthOverflow);
    }
    if nonce_len == 0 {
        return Err(AuthError::EmptyNonce);
    }
    if ct_len < TAG_LEN {
        return Err(AuthError::ShortCiphertext);
    }
    Ok((&rest[..nonce_len], &rest[ct_start..ct_start + ct_len]))
}

/// Verifies and decrypts the authenticator field at `offset` of `packet`
/// with `key` (a client's S2C key), returning the encrypted extension
/// fields. Everything in `packet` before `offset` is authenticated.
pub fn open(key: &Key, packet: &[u8], offset: usize) -> Result<Vec<ExtensionField>, AuthError> {
    with_plaintext(key, packet, offset, decode_encrypted_fields)
}

/// [`open`] for a server, which has no use for the encrypted fields of a
/// request: the same checks (the authenticator verifies with `key`, a
/// client's C2S key, and the plaintext is well-formed extension fields),
/// without allocating.
pub fn verify(key: &Key, packet: &[u8], offset: usize) -> Result<(), AuthError> {
    with_plaintext(key, packet, offset, |plaintext| {
        walk_encrypted_fields(plaintext, |_, _| {})
    })
}

/// Ciphertexts up to this long are decrypted on the stack.
const STACK_PLAINTEXT: usize = 512;

/// Checks and decrypts the authenticator field at `offset` of `packet`,
/// then hands the plaintext to `f`.
fn with_plaintext<R>(
    key: &Key,
    packet: &[u8],
    offset: usize,
    f: impl FnOnce(&[u8]) -> Result<R, AuthError>,
) -> Result<R, AuthError> {
    if offset < HEADER_LEN || offset > packet.len() {
        return Err(AuthError::BadOffset(offset));
    }
    let (field_type, len) = field_at(packet, offset)?;
    if field_type != NTS_AUTHENTICATOR {
        return Err(AuthError::NotAuthenticator {
            offset,
            found: field_type,
        });
    }
    let body = &packet[offset + FIELD_HEADER_LEN..offset + len];
    let (nonce, ciphertext) = nonce_and_ciphertext(body)?;
    let (tag, sealed) = ciphertext.split_at(TAG_LEN);
    let mut stack = [0u8; STACK_PLAINTEXT];
    let mut heap = Vec::new();
    let plaintext = if sealed.len() <= STACK_PLAINTEXT {
        &mut stack[..sealed.len()]
    } else {
        heap.resize(sealed.len(), 0);
        &mut heap[..]
    };
    plaintext.copy_from_slice(sealed);
    siv(key)
        .decrypt_in_place_detached(
            [&packet[..offset], nonce],
            plaintext,
            aes_siv::Tag::from_slice(tag),
        )
        .map_err(|_| AuthError::TagMismatch)?;
    f(plaintext)
}

/// Parses the extension fields of a decrypted authenticator (4-byte
/// aligned, no 16-byte minimum: there is no legacy MAC to tell apart
/// inside the ciphertext), at most [`MAX_INNER_FIELDS`].
pub fn decode_encrypted_fields(bytes: &[u8]) -> Result<Vec<ExtensionField>, AuthError> {
    let mut fields = Vec::new();
    walk_encrypted_fields(bytes, |field_type, value| {
        fields.push(ExtensionField {
            field_type,
            value: value.to_vec(),
        })
    })?;
    Ok(fields)
}

/// Calls `each` with the type and value of every field of a decrypted
/// authenticator, with [`decode_encrypted_fields`]'s checks.
fn walk_encrypted_fields(
    mut bytes: &[u8],
    mut each: impl FnMut(u16, &[u8]),
) -> Result<(), AuthError> {
    let mut count = 0;
    while !bytes.is_empty() {
        if count == MAX_INNER_FIELDS {
            return Err(AuthError::BadPlaintext("too many fields"));
        }
        let [t0, t1, l0, l1, ..] = *bytes else {
            return Err(AuthError::BadPlaintext("truncated field header"));
        };
        let len = u16::from_be_bytes([l0, l1]) as usize;
        if len < FIELD_HEADER_LEN || !len.is_multiple_of(4) || len > bytes.len() {
            return Err(AuthError::BadPlaintext("bad field length"));
        }
        each(u16::from_be_bytes([t0, t1]), &bytes[FIELD_HEADER_LEN..len]);
        count += 1;
        bytes = &bytes[len..];
    }
    Ok(())
}

/// A client's NTS request: the 48-byte NTP header, a Unique Identifier,
/// one cookie, `placeholders` Cookie Placeholders (asking for more
/// cookies) and an authenticator sealed with the C2S key over all of it.
pub fn request_packet(
    header: &[u8; HEADER_LEN],
    c2s_key: &Key,
    uid: &[u8; UID_LEN],
    cookie_bytes: &[u8],
    placeholders: usize,
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, EncodeError> {
    let mut fields = vec![unique_identifier(uid), cookie(cookie_bytes)];
    fields.extend((0..placeholders).map(|_| cookie_placeholder(cookie_bytes.len())));
    let mut packet = header.to_vec();
    encode_fields(&fields, &mut packet)?;
    let auth = seal_request(c2s_key, &packet, &[], nonce)?;
    encode_fields(&[auth], &mut packet)?;
    Ok(packet)
}

/// What an accepted NTS reply carries for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedReply {
    /// New cookies from the encrypted part, padding included.
    pub cookies: Vec<Vec<u8>>,
    /// Offset of the authenticator: the authenticated part ends here.
    pub authenticated_len: usize,
}

/// Finds the authenticator and the unique identifiers before it.
fn scan_reply(packet: &[u8]) -> Result<(usize, Vec<&[u8]>), ReplyError> {
    let mut uids = Vec::new();
    let mut at = HEADER_LEN;
    while at < packet.len() {
        let (field_type, len) = field_at(packet, at)?;
        match field_type {
            NTS_AUTHENTICATOR => return Ok((at, uids)),
            UNIQUE_IDENTIFIER => uids.push(&packet[at + FIELD_HEADER_LEN..at + len]),
            _ => {}
        }
        at += len;
    }
    Err(ReplyError::NoAuthenticator)
}

/// A client's NTS check of a reply datagram (RFC 8915 5.7): the unique
/// identifier must be the request's (`expected_uid`, against replays and
/// stray replies), the authenticator must verify with the S2C key, and
/// the new cookies are taken from the encrypted part only. Fields after
/// the authenticator are unauthenticated and ignored. The NTP header
/// itself is checked by `proto::check_reply`.
pub fn check_reply(
    s2c_key: &Key,
    expected_uid: &[u8; UID_LEN],
    packet: &[u8],
) -> Result<CheckedReply, ReplyError> {
    if packet.len() < HEADER_LEN {
        return Err(ReplyError::TooShort);
    }
    let (auth_at, uids) = scan_reply(packet)?;
    match uids.as_slice() {
        [] => return Err(ReplyError::MissingUid),
        [uid] if *uid == expected_uid.as_slice() => {}
        [_] => return Err(ReplyError::UidMismatch),
        _ => return Err(ReplyError::DuplicateUid),
    }
    let inner = open(s2c_key, packet, auth_at)?;
    let cookies = inner
        .into_iter()
        .filter(|f| f.field_type == NTS_COOKIE)
        .map(|f| f.value)
        .collect();
    Ok(CheckedReply {
        cookies,
        authenticated_len: auth_at,
    })
}

/// Why a server refuses an NTS request (RFC 8915 5.7): a request it
/// cannot parse is dropped; one whose cookie does not open gets a NAK;
/// one whose authenticator fails is dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("NTS request has no unique identifier")]
    MissingUid,
    #[error("NTS request's unique identifier is shorter than 32 bytes")]
    ShortUid,
    #[error("NTS request has more than one {0}")]
    Duplicate(&'static str),
    #[error("NTS request has no cookie")]
    MissingCookie,
    #[error("NTS request has no authenticator")]
    NoAuthenticator,
    #[error("NTS request has fields after its authenticator")]
    FieldsAfterAuthenticator,
    #[error("NTS request has more than {MAX_PLACEHOLDERS} cookie placeholders")]
    TooManyPlaceholders,
    #[error("NTS request cookie placeholder is shorter than its cookie")]
    ShortPlaceholder,
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Most placeholders honoured (more cookies than a client keeps).
pub const MAX_PLACEHOLDERS: usize = 7;

/// What a server reads from an NTS request before opening the cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedRequest<'a> {
    /// The Unique Identifier field's body, echoed in the reply.
    pub uid: &'a [u8],
    /// The cookie field's body (padding included, as sent).
    pub cookie: &'a [u8],
    pub placeholders: usize,
    /// Offset of the authenticator field (the last field).
    pub auth_at: usize,
}

/// Walks an NTS request's extension fields (RFC 8915 5.7): exactly one
/// Unique Identifier (at least 32 bytes), exactly one cookie, at most
/// [`MAX_PLACEHOLDERS`] placeholders, the authenticator last. Returns
/// `Ok(None)` when there is no NTS field at all (a plain NTP request).
pub fn parse_request(packet: &[u8]) -> Result<Option<ParsedRequest<'_>>, RequestError> {
    let mut uid = None;
    let mut cookie_body = None;
    let mut placeholders = 0;
    let mut shortest_placeholder = usize::MAX;
    let mut auth_at = None;
    let mut at = HEADER_LEN;
    // A trailing legacy MAC (20 or 24 bytes) is not an extension field.
    while packet.len().saturating_sub(at) > 24 {
        let (field_type, len) = field_at(packet, at)?;
        let body = &packet[at + FIELD_HEADER_LEN..at + len];
        match field_type {
            _ if auth_at.is_some() => return Err(RequestError::FieldsAfterAuthenticator),
            UNIQUE_IDENTIFIER if uid.is_some() => return Err(RequestError::Duplicate("UID")),
            UNIQUE_IDENTIFIER => uid = Some(body),
            NTS_COOKIE if cookie_body.is_some() => return Err(RequestError::Duplicate("cookie")),
            NTS_COOKIE => cookie_body = Some(body),
            NTS_COOKIE_PLACEHOLDER if placeholders == MAX_PLACEHOLDERS => {
                return Err(RequestError::TooManyPlaceholders);
            }
            NTS_COOKIE_PLACEHOLDER => {
                placeholders += 1;
                shortest_placeholder = shortest_placeholder.min(body.len());
            }
            NTS_AUTHENTICATOR => auth_at = Some(at),
            _ => {}
        }
        at += len;
    }
    if uid.is_none() && cookie_body.is_none() && auth_at.is_none() && placeholders == 0 {
        return Ok(None);
    }
    let uid = uid.ok_or(RequestError::MissingUid)?;
    if uid.len() < UID_LEN {
        return Err(RequestError::ShortUid);
    }
    let cookie = cookie_body.ok_or(RequestError::MissingCookie)?;
    let auth_at = auth_at.ok_or(RequestError::NoAuthenticator)?;
    if at < packet.len() {
        return Err(RequestError::FieldsAfterAuthenticator);
    }
    if placeholders > 0 && shortest_placeholder < cookie.len() {
        return Err(RequestError::ShortPlaceholder);
    }
    Ok(Some(ParsedRequest {
        uid,
        cookie,
        placeholders,
        auth_at,
    }))
}

/// A server's NTS reply (RFC 8915 5.7): `header` (the 48-byte NTP reply),
/// the request's Unique Identifier, and an authenticator sealed with the
/// S2C key whose encrypted part holds `cookies`.
pub fn reply_packet(
    header: &[u8; HEADER_LEN],
    s2c_key: &Key,
    uid: &[u8],
    cookies: &[Vec<u8>],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, EncodeError> {
    let mut packet = header.to_vec();
    encode_fields(&[padded_field(UNIQUE_IDENTIFIER, uid)], &mut packet)?;
    let inner: Vec<_> = cookies.iter().map(|c| cookie(c)).collect();
    let auth = seal_request(s2c_key, &packet, &inner, nonce)?;
    encode_fields(&[auth], &mut packet)?;
    Ok(packet)
}

/// [`reply_packet`] written into `out` (cleared first) without
/// intermediate buffers: `cookie_count` cookies of `cookie_len` bytes
/// each, which `fill_cookie` writes in place (it gets the cookie's bytes,
/// zeroed), encrypted in place with the S2C key. The same bytes as
/// `reply_packet` with those cookies.
#[allow(clippy::too_many_arguments)]
pub fn reply_into(
    out: &mut Vec<u8>,
    header: &[u8; HEADER_LEN],
    s2c_key: &Key,
    uid: &[u8],
    cookie_count: usize,
    cookie_len: usize,
    mut fill_cookie: impl FnMut(&mut [u8]) -> Result<(), EncodeError>,
    nonce: &[u8; NONCE_LEN],
) -> Result<(), EncodeError> {
    out.clear();
    out.extend_from_slice(header);
    push_padded_field(out, UNIQUE_IDENTIFIER, uid)?;
    let auth_at = out.len();
    let cookie_field = padded_len(cookie_len);
    if cookie_field > MAX_FIELD_LEN {
        return Err(EncodeError::FieldTooLong {
            field_type: NTS_COOKIE,
            len: cookie_field,
        });
    }
    let ciphertext_len = TAG_LEN + cookie_count * cookie_field;
    let field_len = padded_len(4 + NONCE_LEN + ciphertext_len);
    if field_len > MAX_FIELD_LEN {
        return Err(EncodeError::FieldTooLong {
            field_type: NTS_AUTHENTICATOR,
            len: field_len,
        });
    }
    out.reserve(field_len);
    out.extend_from_slice(&NTS_AUTHENTICATOR.to_be_bytes());
    out.extend_from_slice(&(field_len as u16).to_be_bytes());
    out.extend_from_slice(&(NONCE_LEN as u16).to_be_bytes());
    out.extend_from_slice(&(ciphertext_len as u16).to_be_bytes());
    out.extend_from_slice(nonce);
    let tag_at = out.len();
    out.resize(tag_at + TAG_LEN, 0);
    for _ in 0..cookie_count {
        let at = out.len();
        out.extend_from_slice(&NTS_COOKIE.to_be_bytes());
        out.extend_from_slice(&(cookie_field as u16).to_be_bytes());
        out.resize(at + cookie_field, 0);
        let body = at + FIELD_HEADER_LEN;
        fill_cookie(&mut out[body..body + cookie_len])?;
    }
    let (associated_data, auth) = out.split_at_mut(auth_at);
    let (tag, plaintext) = auth[tag_at - auth_at..].split_at_mut(TAG_LEN);
    let siv_tag = siv(s2c_key)
        .encrypt_in_place_detached([&*associated_data, nonce.as_slice()], plaintext)
        .map_err(|_| EncodeError::Seal)?;
    tag.copy_from_slice(&siv_tag);
    out.resize(auth_at + field_len, 0);
    Ok(())
}

/// Appends one field, `body` zero-padded to RFC 7822's framing.
fn push_padded_field(out: &mut Vec<u8>, field_type: u16, body: &[u8]) -> Result<(), EncodeError> {
    let len = padded_len(body.len());
    if len > MAX_FIELD_LEN {
        return Err(EncodeError::FieldTooLong { field_type, len });
    }
    let at = out.len();
    out.extend_from_slice(&field_type.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(body);
    out.resize(at + len, 0);
    Ok(())
}

/// The length of [`reply_packet`]'s result for `uid_len` and
/// `cookie_count` cookies of `cookie_len` bytes.
pub fn reply_len(uid_len: usize, cookie_count: usize, cookie_len: usize) -> usize {
    let ciphertext = cookie_count * padded_len(cookie_len) + TAG_LEN;
    HEADER_LEN + padded_len(uid_len) + padded_len(4 + NONCE_LEN + ciphertext)
}

/// An NTS NAK (RFC 8915 5.7): `kiss_header` (a kiss-o'-death with code
/// NTSN) and the request's Unique Identifier, no authenticator.
pub fn nak_packet(kiss_header: &[u8; HEADER_LEN], uid: &[u8]) -> Vec<u8> {
    let mut packet = kiss_header.to_vec();
    // A UID is at most a packet long, far below a field's maximum.
    let _ = encode_fields(&[padded_field(UNIQUE_IDENTIFIER, uid)], &mut packet);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Packet;
    use proptest::prelude::*;

    const C2S: Key = [1; 32];
    const S2C: Key = [2; 32];
    const UID: [u8; UID_LEN] = [7; UID_LEN];
    const NONCE: [u8; NONCE_LEN] = [9; NONCE_LEN];

    fn header() -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = 0x24; // v4, server
        h
    }

    /// A server's reply: header, our UID, an authenticator with cookies.
    fn reply(uid: &[u8; UID_LEN], cookies: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut packet = header().to_vec();
        encode_fields(&[unique_identifier(uid)], &mut packet).unwrap();
        let inner: Vec<_> = cookies.iter().map(|c| cookie(c)).collect();
        let auth = seal_request(&S2C, &packet, &inner, &NONCE).unwrap();
        let auth_at = packet.len();
        encode_fields(&[auth], &mut packet).unwrap();
        (packet, auth_at)
    }

    fn with_fields(fields: &[ExtensionField]) -> Vec<u8> {
        let mut packet = header().to_vec();
        encode_fields(fields, &mut packet).unwrap();
        packet
    }

    #[test]
    fn padding_follows_rfc_7822() {
        assert_eq!(unique_identifier(&UID).value.len() + 4, 36);
        assert_eq!(cookie(&[1; 5]).value, [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(cookie(&[1; 13]).value.len() + 4, 20);
        assert_eq!(cookie_placeholder(100).value, vec![0; 100]);
        let mut out = Vec::new();
        let short = ExtensionField {
            field_type: 0x1234,
            value: vec![5],
        };
        encode_fields(&[short], &mut out).unwrap();
        assert_eq!(out, [0x12, 0x34, 0, 16, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn request_round_trip() {
        let packet = request_packet(&header(), &C2S, &UID, &[3; 100], 2, &NONCE).unwrap();
        let decoded = Packet::decode(&packet).unwrap();
        let types: Vec<u16> = decoded.extensions.iter().map(|f| f.field_type).collect();
        let expected = [
            UNIQUE_IDENTIFIER,
            NTS_COOKIE,
            NTS_COOKIE_PLACEHOLDER,
            NTS_COOKIE_PLACEHOLDER,
        ];
        assert_eq!(types[..4], expected);
        assert_eq!(decoded.extensions[1].value, vec![3; 100]);
        let auth_at = packet.len() - (4 + 4 + NONCE_LEN + TAG_LEN);
        assert_eq!(open(&C2S, &packet, auth_at), Ok(vec![]));
        assert_eq!(open(&S2C, &packet, auth_at), Err(AuthError::TagMismatch));
    }

    #[test]
    fn reply_yields_encrypted_cookies() {
        let (packet, auth_at) = reply(&UID, &[&[4; 100], &[5; 100]]);
        let checked = check_reply(&S2C, &UID, &packet).unwrap();
        assert_eq!(checked.cookies, vec![vec![4; 100], vec![5; 100]]);
        assert_eq!(checked.authenticated_len, auth_at);
    }

    #[test]
    fn fields_after_the_authenticator_are_ignored() {
        let (mut packet, _) = reply(&UID, &[&[4; 100]]);
        encode_fields(&[cookie(&[6; 100])], &mut packet).unwrap();
        assert_eq!(
            check_reply(&S2C, &UID, &packet).unwrap().cookies,
            vec![vec![4; 100]]
        );
    }

    #[test]
    fn wrong_key_is_rejected() {
        let (packet, _) = reply(&UID, &[&[4; 100]]);
        let err = check_reply(&C2S, &UID, &packet).unwrap_err();
        assert_eq!(err, ReplyError::Auth(AuthError::TagMismatch));
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let (packet, auth_at) = reply(&UID, &[&[4; 100]]);
        for i in 0..packet.len() {
            let mut bad = packet.clone();
            bad[i] ^= 0x01;
            assert!(open(&S2C, &bad, auth_at).is_err(), "byte {i}");
            assert!(verify(&S2C, &bad, auth_at).is_err(), "byte {i}");
            assert!(check_reply(&S2C, &UID, &bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn replay_with_another_uid_is_rejected() {
        let (packet, _) = reply(&[8; UID_LEN], &[&[4; 100]]);
        assert_eq!(
            check_reply(&S2C, &UID, &packet),
            Err(ReplyError::UidMismatch)
        );
    }

    #[test]
    fn uid_must_be_present_once() {
        let auth = seal_request(&S2C, &with_fields(&[]), &[], &NONCE).unwrap();
        assert_eq!(
            check_reply(&S2C, &UID, &with_fields(&[auth])),
            Err(ReplyError::MissingUid)
        );
        let uid = unique_identifier(&UID);
        let packet = with_fields(&[uid.clone(), uid]);
        let auth = seal_request(&S2C, &packet, &[], &NONCE).unwrap();
        let mut packet = packet;
        encode_fields(&[auth], &mut packet).unwrap();
        assert_eq!(
            check_reply(&S2C, &UID, &packet),
            Err(ReplyError::DuplicateUid)
        );
    }

    #[test]
    fn missing_authenticator_and_short_packet() {
        let packet = with_fields(&[unique_identifier(&UID)]);
        assert_eq!(
            check_reply(&S2C, &UID, &packet),
            Err(ReplyError::NoAuthenticator)
        );
        assert_eq!(
            check_reply(&S2C, &UID, &packet[..47]),
            Err(ReplyError::TooShort)
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        let (packet, auth_at) = reply(&UID, &[&[4; 100]]);
        for end in auth_at..packet.len() {
            let err = open(&S2C, &packet[..end], auth_at).unwrap_err();
            assert!(
                matches!(err, AuthError::Malformed { .. }),
                "end {end}: {err}"
            );
        }
    }

    #[test]
    fn bad_offsets_and_field_types() {
        let (packet, auth_at) = reply(&UID, &[]);
        assert_eq!(open(&S2C, &packet, 47), Err(AuthError::BadOffset(47)));
        let beyond = packet.len() + 1;
        assert_eq!(
            open(&S2C, &packet, beyond),
            Err(AuthError::BadOffset(beyond))
        );
        let err = open(&S2C, &packet, HEADER_LEN).unwrap_err();
        assert_eq!(
            err,
            AuthError::NotAuthenticator {
                offset: 48,
                found: UNIQUE_IDENTIFIER
            }
        );
        assert!(open(&S2C, &packet, auth_at + 4).is_err());
    }

    fn authenticator(nonce_len: u16, ct_len: u16, rest: &[u8]) -> Vec<u8> {
        let mut body = nonce_len.to_be_bytes().to_vec();
        body.extend_from_slice(&ct_len.to_be_bytes());
        body.extend_from_slice(rest);
        with_fields(&[padded_field(NTS_AUTHENTICATOR, &body)])
    }

    #[test]
    fn length_fields_must_fit_the_field() {
        let open_at = |p: Vec<u8>| open(&S2C, &p, HEADER_LEN);
        assert_eq!(
            open_at(authenticator(16, 16, &[0; 28])),
            Err(AuthError::LengthOverflow)
        );
        // The nonce's padding counts: 13 + 17 bytes would fit, 16 + 20 do not.
        assert_eq!(
            open_at(authenticator(13, 17, &[0; 32])),
            Err(AuthError::LengthOverflow)
        );
        assert_eq!(
            open_at(authenticator(16, 17, &[0; 32])),
            Err(AuthError::LengthOverflow)
        );
        assert_eq!(
            open_at(authenticator(u16::MAX, 16, &[0; 32])),
            Err(AuthError::LengthOverflow)
        );
        assert_eq!(
            open_at(authenticator(16, u16::MAX, &[0; 32])),
            Err(AuthError::LengthOverflow)
        );
        assert_eq!(
            open_at(authenticator(0, 16, &[0; 32])),
            Err(AuthError::EmptyNonce)
        );
        assert_eq!(
            open_at(authenticator(16, 15, &[0; 32])),
            Err(AuthError::ShortCiphertext)
        );
        assert_eq!(
            open_at(authenticator(16, 16, &[0; 32])),
            Err(AuthError::TagMismatch)
        );
    }

    #[test]
    fn malformed_plaintext_is_rejected() {
        let packet = with_fields(&[]);
        let plaintext = [0x02, 0x04, 0, 3, 0, 0, 0, 0];
        let ct = siv(&S2C)
            .encrypt([packet.as_slice(), &NONCE], &plaintext)
            .unwrap();
        let mut body = (NONCE_LEN as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&(ct.len() as u16).to_be_bytes());
        body.extend_from_slice(&NONCE);
        body.extend_from_slice(&ct);
        let mut packet = packet;
        encode_fields(&[padded_field(NTS_AUTHENTICATOR, &body)], &mut packet).unwrap();
        let err = open(&S2C, &packet, HEADER_LEN).unwrap_err();
        assert_eq!(err, AuthError::BadPlaintext("bad field length"));
    }

    #[test]
    fn encrypted_fields_are_bounded() {
        let bad = |reason| Err(AuthError::BadPlaintext(reason));
        assert_eq!(
            decode_encrypted_fields(&[0, 1, 0]),
            bad("truncated field header")
        );
        assert_eq!(
            decode_encrypted_fields(&[0, 1, 0, 8, 0, 0]),
            bad("bad field length")
        );
        assert_eq!(
            decode_encrypted_fields(&[0, 1, 0, 6, 0, 0]),
            bad("bad field length")
        );
        let many = [0, 1, 0, 4].repeat(MAX_INNER_FIELDS);
        assert_eq!(
            decode_encrypted_fields(&many).map(|f| f.len()),
            Ok(MAX_INNER_FIELDS)
        );
        let too_many = [0, 1, 0, 4].repeat(MAX_INNER_FIELDS + 1);
        assert_eq!(decode_encrypted_fields(&too_many), bad("too many fields"));
    }

    #[test]
    fn oversized_fields_are_not_encoded() {
        let big = cookie(&vec![0; 70_000]);
        let err = encode_fields(std::slice::from_ref(&big), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, EncodeError::FieldTooLong { .. }));
        assert!(seal_request(&C2S, &[], &[big], &NONCE).is_err());
    }

    #[test]
    fn server_parses_request_and_client_accepts_its_reply() {
        let packet = request_packet(&header(), &C2S, &UID, &[3; 100], 2, &NONCE).unwrap();
        let parsed = parse_request(&packet).unwrap().unwrap();
        assert_eq!(parsed.uid, UID.as_slice());
        assert_eq!(parsed.cookie, [3; 100].as_slice());
        assert_eq!(parsed.placeholders, 2);
        assert_eq!(open(&C2S, &packet, parsed.auth_at), Ok(vec![]));
        let cookies = vec![vec![4; 100]; 3];
        let reply = reply_packet(&header(), &S2C, parsed.uid, &cookies, &NONCE).unwrap();
        assert_eq!(reply.len(), reply_len(UID_LEN, 3, 100));
        assert!(reply.len() <= packet.len(), "no amplification");
        let checked = check_reply(&S2C, &UID, &reply).unwrap();
        assert_eq!(checked.cookies, cookies);
        let nak = nak_packet(&header(), parsed.uid);
        assert_eq!(nak.len(), HEADER_LEN + 36);
        assert_eq!(
            check_reply(&S2C, &UID, &nak),
            Err(ReplyError::NoAuthenticator)
        );
    }

    #[test]
    fn plain_and_malformed_requests() {
        assert_eq!(parse_request(&header()), Ok(None));
        // A legacy MAC is not NTS.
        let mut mac = header().to_vec();
        mac.extend_from_slice(&[1; 20]);
        assert_eq!(parse_request(&mac), Ok(None));
        let uid = unique_identifier(&UID);
        let ck = cookie(&[3; 100]);
        let auth = || seal_request(&C2S, &header(), &[], &NONCE).unwrap();
        let err = |fields: &[ExtensionField]| parse_request(&with_fields(fields)).unwrap_err();
        assert_eq!(err(&[ck.clone(), auth()]), RequestError::MissingUid);
        assert_eq!(err(&[uid.clone(), auth()]), RequestError::MissingCookie);
        assert_eq!(
            err(&[uid.clone(), ck.clone()]),
            RequestError::NoAuthenticator
        );
        assert_eq!(
            err(&[uid.clone(), uid.clone(), ck.clone(), auth()]),
            RequestError::Duplicate("UID")
        );
        assert_eq!(
            err(&[uid.clone(), ck.clone(), ck.clone(), auth()]),
            RequestError::Duplicate("cookie")
        );
        assert_eq!(
            err(&[uid.clone(), ck.clone(), auth(), uid.clone()]),
            RequestError::FieldsAfterAuthenticator
        );
        assert_eq!(
            err(&[
                padded_field(UNIQUE_IDENTIFIER, &[1; 16]),
                ck.clone(),
                auth()
            ]),
            RequestError::ShortUid
        );
        assert_eq!(
            err(&[uid.clone(), ck.clone(), cookie_placeholder(50), auth()]),
            RequestError::ShortPlaceholder
        );
        let mut many = vec![uid, ck];
        many.extend((0..=MAX_PLACEHOLDERS).map(|_| cookie_placeholder(100)));
        many.push(auth());
        assert_eq!(err(&many), RequestError::TooManyPlaceholders);
    }

    #[test]
    fn reply_into_matches_reply_packet() {
        let mut out = vec![0xee; 7];
        for count in 0..4 {
            for cookie_len in [100, 101, 104] {
                let cookies: Vec<Vec<u8>> =
                    (0..count).map(|i| vec![i as u8 + 1; cookie_len]).collect();
                let expected = reply_packet(&header(), &S2C, &UID, &cookies, &NONCE).unwrap();
                let mut next = 0;
                reply_into(
                    &mut out,
                    &header(),
                    &S2C,
                    &UID,
                    count,
                    cookie_len,
                    |c| {
                        assert!(c.iter().all(|&b| b == 0));
                        c.copy_from_slice(&cookies[next]);
                        next += 1;
                        Ok(())
                    },
                    &NONCE,
                )
                .unwrap();
                assert_eq!(out, expected, "{count} cookies of {cookie_len} bytes");
                assert_eq!(out.len(), reply_len(UID_LEN, count, cookie_len));
            }
        }
        let err = reply_into(
            &mut out,
            &header(),
            &S2C,
            &UID,
            1,
            10,
            |_| Err(EncodeError::Seal),
            &NONCE,
        );
        assert_eq!(err, Err(EncodeError::Seal));
    }

    #[test]
    fn verify_agrees_with_open() {
        let packet = request_packet(&header(), &C2S, &UID, &[3; 100], 2, &NONCE).unwrap();
        let auth_at = parse_request(&packet).unwrap().unwrap().auth_at;
        assert_eq!(verify(&C2S, &packet, auth_at), Ok(()));
        assert_eq!(verify(&S2C, &packet, auth_at), Err(AuthError::TagMismatch));
        for i in 0..packet.len() {
            let mut bad = packet.clone();
            bad[i] ^= 0x01;
            assert!(verify(&C2S, &bad, auth_at).is_err(), "byte {i}");
        }
        // Large encrypted parts (past the stack buffer) too.
        let (packet, auth_at) = reply(&UID, &[&[4; 300], &[5; 300]]);
        assert_eq!(verify(&S2C, &packet, auth_at), Ok(()));
        assert!(open(&S2C, &packet, auth_at).is_ok());
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 5297 appendix A.1 (deterministic AES-SIV, one AD component),
    /// through the same cipher construction `seal_request` uses.
    #[test]
    fn rfc5297_a1_vector() {
        let key: Key =
            hex("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff")
                .try_into()
                .unwrap();
        let ad = hex("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627");
        let plaintext = hex("11223344 55667788 99aabbcc ddee");
        let expected = hex("85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c");
        assert_eq!(siv(&key).encrypt([&ad], &plaintext).unwrap(), expected);
        assert_eq!(siv(&key).decrypt([&ad], &expected).unwrap(), plaintext);
    }

    fn any_inner_field() -> impl Strategy<Value = ExtensionField> {
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(t, mut v)| {
            v.resize(v.len().next_multiple_of(4).max(12), 0);
            ExtensionField {
                field_type: t,
                value: v,
            }
        })
    }

    proptest! {
        #[test]
        fn open_and_check_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                      offset in 0usize..700) {
            let opened = open(&S2C, &bytes, offset);
            prop_assert_eq!(verify(&S2C, &bytes, offset), opened.map(|_| ()));
            let _ = check_reply(&S2C, &UID, &bytes);
        }

        #[test]
        fn parse_request_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_request(&bytes);
        }

        #[test]
        fn encrypted_fields_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_encrypted_fields(&bytes);
        }

        #[test]
        fn seal_then_open_is_identity(fields in proptest::collection::vec(any_inner_field(), 0..8),
                                      nonce in any::<[u8; NONCE_LEN]>()) {
            let mut packet = with_fields(&[unique_identifier(&UID)]);
            let auth = seal_request(&S2C, &packet, &fields, &nonce).unwrap();
            let auth_at = packet.len();
            encode_fields(&[auth], &mut packet).unwrap();
            prop_assert_eq!(open(&S2C, &packet, auth_at).unwrap(), fields.clone());
            prop_assert_eq!(verify(&S2C, &packet, auth_at), Ok(()));
            let decoded = Packet::decode(&packet).unwrap();
            prop_assert_eq!(decoded.extensions[0].clone(), unique_identifier(&UID));
        }
    }
}
