//! NTS cookies (RFC 8915 section 6), server side, sans-IO.
//!
//! A cookie carries what the server needs to answer a client's NTS
//! request without keeping per-client state: the AEAD algorithm and the
//! C2S and S2C keys exported from the client's NTS-KE session. It is
//! sealed with a server master key:
//!
//! ```text
//! key id (4, clear) | nonce (16) | AES-SIV(master, ad = key id, nonce)(aead (2) | zero (2) | c2s (32) | s2c (32)) + tag (16)
//! ```
//!
//! 104 bytes in all, a multiple of 4 so that the extension field needs no
//! padding and the cookie comes back exactly as it was issued. Master keys rotate (a new one every
//! [`KeySet::rotation_interval`], the previous [`KEPT_KEYS`]` - 1` kept, like
//! chrony's three keys) so cookies stay valid across a rotation and for
//! `KEPT_KEYS` intervals at most. The caller supplies key material, key
//! ids, nonces and the time.

use aes_siv::KeyInit;
use aes_siv::siv::Aes128Siv;

use super::ef::{Key, NONCE_LEN, TAG_LEN};

/// Master keys kept: the current one and the previous ones.
pub const KEPT_KEYS: usize = 3;
/// Default master key rotation interval: one day.
pub const DEFAULT_ROTATION_SECONDS: u64 = 86_400;
/// Length of the plaintext: AEAD id, two zero bytes and the two keys.
const PLAINTEXT_LEN: usize = 4 + 32 + 32;
/// Length of every cookie this server issues.
pub const COOKIE_LEN: usize = 4 + NONCE_LEN + PLAINTEXT_LEN + TAG_LEN;
/// First line of the persisted key set.
const FILE_MAGIC: &str = "timectl-nts-cookie-keys 1";

/// What a cookie holds.
#[derive(Clone, PartialEq, Eq)]
pub struct CookieContent {
    pub aead: u16,
    pub c2s: Key,
    pub s2c: Key,
}

impl std::fmt::Debug for CookieContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieContent")
            .field("aead", &self.aead)
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// One master key.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    pub id: u32,
    /// Unix seconds when it became the current key.
    pub created: u64,
    pub key: Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why a cookie cannot be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    #[error("cookie is {0} bytes, not {COOKIE_LEN}")]
    BadLength(usize),
    #[error("cookie key id {0:#010x} is unknown or expired")]
    UnknownKey(u32),
    #[error("cookie does not authenticate (tampered or forged)")]
    TagMismatch,
    #[error("no master key yet")]
    NoKey,
    #[error("AES-SIV encryption failed")]
    Seal,
}

/// Why a persisted key set cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("not a timectl NTS key file (first line is not {FILE_MAGIC:?})")]
    Magic,
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: &'static str },
    #[error("more than {KEPT_KEYS} keys")]
    TooMany,
    #[error("key id {0:#010x} appears twice")]
    DuplicateId(u32),
}

/// The server's master keys, oldest first, the current (newest) last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<MasterKey>,
    rotation_interval: u64,
}

fn siv(key: &Key) -> Aes128Siv {
    Aes128Siv::new(&(*key).into())
}

impl KeySet {
    /// An empty set rotating every `rotation_interval` seconds (at least 1).
    pub fn new(rotation_interval: u64) -> KeySet {
        KeySet {
            keys: Vec::new(),
            rotation_interval: rotation_interval.max(1),
        }
    }

    pub fn rotation_interval(&self) -> u64 {
        self.rotation_interval
    }

    /// The keys, oldest first.
    pub fn keys(&self) -> &[MasterKey] {
        &self.keys
    }

    /// The key new cookies are sealed with.
    pub fn current(&self) -> Option<&MasterKey> {
        self.keys.last()
    }

    /// How long a key opens cookies after it became current.
    pub fn lifetime(&self) -> u64 {
        self.rotation_interval.saturating_mul(KEPT_KEYS as u64)
    }

    /// Whether a new key is due at unix time `now` (none yet, or the
    /// current one is a rotation interval old; a key from the future, after
    /// the clock was stepped back, is replaced too).
    pub fn needs_rotation(&self, now: u64) -> bool {
        match self.current() {
            None => true,
            Some(k) => now >= k.created.saturating_add(self.rotation_interval) || now < k.created,
        }
    }

    /// Makes `key` the current key (with an id not in the set: `id` is
    /// changed to the next free one if it is), dropping keys beyond
    /// [`KEPT_KEYS`] and expired ones.
    pub fn rotate(&mut self, now: u64, mut id: u32, key: Key) -> u32 {
        while self.keys.iter().any(|k| k.id == id) {
            id = id.wrapping_add(1);
        }
        self.keys.push(MasterKey {
            id,
            created: now,
            key,
        });
        if self.keys.len() > KEPT_KEYS {
            self.keys.drain(..self.keys.len() - KEPT_KEYS);
        }
        self.prune(now);
        id
    }

    /// Drops keys older than their lifetime at `now` (the current key is
    /// dropped too when it is that old: the caller must rotate).
    pub fn prune(&mut self, now: u64) {
        let lifetime = self.lifetime();
        self.keys
            .retain(|k| now < k.created.saturating_add(lifetime) && k.created <= now + lifetime);
    }

    /// Seals `content` with the current key and `nonce` (fresh random bytes).
    pub fn seal(
        &self,
        content: &CookieContent,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, CookieError> {
        let master = self.current().ok_or(CookieError::NoKey)?;
        let mut cookie = vec![0u8; COOKIE_LEN];
        seal_into(
            master.id,
            &mut siv(&master.key),
            content,
            nonce,
            (&mut cookie[..]).try_into().expect("COOKIE_LEN"),
        )?;
        Ok(cookie)
    }

    /// Opens a cookie sealed with any key in the set.
    pub fn open(&self, cookie: &[u8]) -> Result<CookieContent, CookieError> {
        let key_id = cookie_key_id(cookie)?;
        let master = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or(CookieError::UnknownKey(key_id))?;
        open_with(&mut siv(&master.key), cookie)
    }

    /// The set's persisted form (secret: the caller stores it mode 0600).
    pub fn serialize(&self) -> String {
        let mut out = format!("{FILE_MAGIC}\n");
        for k in &self.keys {
            let hex: String = k.key.iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(&format!("{:08x} {} {hex}\n", k.id, k.created));
        }
        out
    }

    /// Reads a persisted set, for a server rotating every
    /// `rotation_interval` seconds.
    pub fn deserialize(text: &str, rotation_interval: u64) -> Result<KeySet, KeyFileError> {
        let mut lines = text.lines();
        if lines.next() != Some(FILE_MAGIC) {
            return Err(KeyFileError::Magic);
        }
        let mut set = KeySet::new(rotation_interval);
        for (i, line) in lines.enumerate() {
            let line_no = i + 2;
            let bad = |reason| KeyFileError::Line {
                line: line_no,
                reason,
            };
            if line.trim().is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [id, created, key] = parts.as_slice() else {
                return Err(bad("expected: id created key"));
            };
            let id = u32::from_str_radix(id, 16).map_err(|_| bad("bad key id"))?;
            let created = created.parse().map_err(|_| bad("bad creation time"))?;
            let key = parse_key(key).ok_or(bad("key is not 64 hex digits"))?;
            if set.keys.iter().any(|k| k.id == id) {
                return Err(KeyFileError::DuplicateId(id));
            }
            if set.keys.len() == KEPT_KEYS {
                return Err(KeyFileError::TooMany);
            }
            set.keys.push(MasterKey { id, created, key });
        }
        set.keys.sort_by_key(|k| k.created);
        Ok(set)
    }
}

/// The key id of a cookie of the right length.
fn cookie_key_id(cookie: &[u8]) -> Result<u32, CookieError> {
    match cookie {
        [a, b, c, d, ..] if cookie.len() == COOKIE_LEN => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(CookieError::BadLength(cookie.len())),
    }
}

/// Seals `content` into `out` with master key `id` (its cipher `siv`).
fn seal_into(
    id: u32,
    siv: &mut Aes128Siv,
    content: &CookieContent,
    nonce: &[u8; NONCE_LEN],
    out: &mut [u8; COOKIE_LEN],
) -> Result<(), CookieError> {
    let id = id.to_be_bytes();
    let (head, sealed) = out.split_at_mut(4 + NONCE_LEN);
    head[..4].copy_from_slice(&id);
    head[4..].copy_from_slice(nonce);
    let (tag, plaintext) = sealed.split_at_mut(TAG_LEN);
    plaintext[..2].copy_from_slice(&content.aead.to_be_bytes());
    plaintext[2..4].fill(0);
    plaintext[4..36].copy_from_slice(&content.c2s);
    plaintext[36..].copy_from_slice(&content.s2c);
    let siv_tag = siv
        .encrypt_in_place_detached([id.as_slice(), nonce.as_slice()], plaintext)
        .map_err(|_| CookieError::Seal)?;
    tag.copy_from_slice(&siv_tag);
    Ok(())
}

/// Opens `cookie` (of [`COOKIE_LEN`] bytes) with its master key's cipher.
fn open_with(siv: &mut Aes128Siv, cookie: &[u8]) -> Result<CookieContent, CookieError> {
    let (id, rest) = cookie.split_at(4);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let (tag, ciphertext) = sealed.split_at(TAG_LEN);
    let mut plaintext = [0u8; PLAINTEXT_LEN];
    plaintext.copy_from_slice(ciphertext);
    siv.decrypt_in_place_detached([id, nonce], &mut plaintext, aes_siv::Tag::from_slice(tag))
        .map_err(|_| CookieError::TagMismatch)?;
    let mut c2s = [0u8; 32];
    let mut s2c = [0u8; 32];
    c2s.copy_from_slice(&plaintext[4..36]);
    s2c.copy_from_slice(&plaintext[36..]);
    Ok(CookieContent {
        aead: u16::from_be_bytes([plaintext[0], plaintext[1]]),
        c2s,
        s2c,
    })
}

/// The master keys' ciphers, built once per key rather than per cookie:
/// a responder's copy of a [`KeySet`], brought up to date with
/// [`CookieCiphers::sync`] (cheap when nothing changed) before use.
#[derive(Default)]
pub struct CookieCiphers {
    /// (id, key, cipher) per master key, in the set's order.
    ciphers: Vec<(u32, Key, Aes128Siv)>,
}

impl std::fmt::Debug for CookieCiphers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u32> = self.ciphers.iter().map(|c| c.0).collect();
        f.debug_struct("CookieCiphers").field("ids", &ids).finish()
    }
}

impl CookieCiphers {
    /// Rebuilds the ciphers if `set`'s keys differ from the cached ones.
    pub fn sync(&mut self, set: &KeySet) {
        let same = self.ciphers.len() == set.keys.len()
            && self
                .ciphers
                .iter()
                .zip(&set.keys)
                .all(|((id, key, _), k)| *id == k.id && *key == k.key);
        if !same {
            self.ciphers = set
                .keys
                .iter()
                .map(|k| (k.id, k.key, siv(&k.key)))
                .collect();
        }
    }

    /// [`KeySet::open`] with the cached ciphers.
    pub fn open(&mut self, cookie: &[u8]) -> Result<CookieContent, CookieError> {
        let key_id = cookie_key_id(cookie)?;
        let (_, _, siv) = self
            .ciphers
            .iter_mut()
            .find(|c| c.0 == key_id)
            .ok_or(CookieError::UnknownKey(key_id))?;
        open_with(siv, cookie)
    }

    /// [`KeySet::seal`] with the cached current key, into `out`.
    pub fn seal_into(
        &mut self,
        content: &CookieContent,
        nonce: &[u8; NONCE_LEN],
        out: &mut [u8; COOKIE_LEN],
    ) -> Result<(), CookieError> {
        let (id, _, siv) = self.ciphers.last_mut().ok_or(CookieError::NoKey)?;
        seal_into(*id, siv, content, nonce, out)
    }
}

fn parse_key(hex: &str) -> Option<Key> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: u64 = DEFAULT_ROTATION_SECONDS;
    const T0: u64 = 1_800_000_000;

    fn content() -> CookieContent {
        CookieContent {
            aead: 15,
            c2s: [1; 32],
            s2c: [2; 32],
        }
    }

    fn set_at(now: u64) -> KeySet {
        let mut set = KeySet::new(DAY);
        set.rotate(now, 7, [0x11; 32]);
        set
    }

    #[test]
    fn seal_open_round_trip() {
        let set = set_at(T0);
        let cookie = set.seal(&content(), &[3; NONCE_LEN]).unwrap();
        assert_eq!(cookie.len(), COOKIE_LEN);
        assert_eq!(COOKIE_LEN % 4, 0, "no extension field padding");
        assert_eq!(&cookie[..4], &7u32.to_be_bytes());
        assert_eq!(set.open(&cookie), Ok(content()));
        // Another nonce, another cookie, same content.
        let other = set.seal(&content(), &[4; NONCE_LEN]).unwrap();
        assert_ne!(cookie, other);
        assert_eq!(set.open(&other), Ok(content()));
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let set = set_at(T0);
        let cookie = set.seal(&content(), &[3; NONCE_LEN]).unwrap();
        for i in 0..cookie.len() {
            let mut bad = cookie.clone();
            bad[i] ^= 0x40;
            let err = set.open(&bad).unwrap_err();
            if i < 4 {
                assert!(matches!(err, CookieError::UnknownKey(_)), "byte {i}: {err}");
            } else {
                assert_eq!(err, CookieError::TagMismatch, "byte {i}");
            }
        }
        assert_eq!(
            set.open(&cookie[..COOKIE_LEN - 1]),
            Err(CookieError::BadLength(COOKIE_LEN - 1))
        );
    }

    #[test]
    fn another_servers_key_is_unknown_and_same_id_other_key_fails() {
        let ours = set_at(T0);
        let cookie = ours.seal(&content(), &[3; NONCE_LEN]).unwrap();
        let mut theirs = KeySet::new(DAY);
        theirs.rotate(T0, 8, [0x11; 32]);
        assert_eq!(theirs.open(&cookie), Err(CookieError::UnknownKey(7)));
        let mut same_id = KeySet::new(DAY);
        same_id.rotate(T0, 7, [0x22; 32]);
        assert_eq!(same_id.open(&cookie), Err(CookieError::TagMismatch));
        assert_eq!(
            KeySet::new(DAY).seal(&content(), &[0; NONCE_LEN]),
            Err(CookieError::NoKey)
        );
    }

    #[test]
    fn rotation_keeps_previous_keys_then_expires_them() {
        let mut set = set_at(T0);
        let old = set.seal(&content(), &[3; NONCE_LEN]).unwrap();
        assert!(!set.needs_rotation(T0 + DAY - 1));
        assert!(set.needs_rotation(T0 + DAY));
        assert!(set.needs_rotation(T0 - 10), "key from the future");
        let id = set.rotate(T0 + DAY, 7, [0x22; 32]);
        assert_eq!(id, 8, "a used id is not reused");
        let newer = set.seal(&content(), &[3; NONCE_LEN]).unwrap();
        assert_eq!(&newer[..4], &8u32.to_be_bytes());
        assert_eq!(set.open(&old), Ok(content()));
        set.rotate(T0 + 2 * DAY, 100, [0x33; 32]);
        assert_eq!(set.open(&old), Ok(content()), "three keys kept");
        set.rotate(T0 + 3 * DAY, 101, [0x44; 32]);
        assert_eq!(set.keys().len(), KEPT_KEYS);
        assert_eq!(set.open(&old), Err(CookieError::UnknownKey(7)), "expired");
        assert_eq!(set.open(&newer), Ok(content()));
    }

    #[test]
    fn prune_drops_keys_past_their_lifetime() {
        let mut set = set_at(T0);
        let cookie = set.seal(&content(), &[3; NONCE_LEN]).unwrap();
        set.prune(T0 + 3 * DAY - 1);
        assert_eq!(set.open(&cookie), Ok(content()));
        set.prune(T0 + 3 * DAY);
        assert_eq!(set.open(&cookie), Err(CookieError::UnknownKey(7)));
        assert!(set.current().is_none());
    }

    #[test]
    fn persisted_set_round_trips_and_opens_old_cookies() {
        let mut set = set_at(T0);
        set.rotate(T0 + DAY, 9, [0xab; 32]);
        let cookie = set.seal(&content(), &[5; NONCE_LEN]).unwrap();
        let text = set.serialize();
        assert!(text.starts_with(FILE_MAGIC));
        let back = KeySet::deserialize(&text, DAY).unwrap();
        assert_eq!(back, set);
        assert_eq!(back.open(&cookie), Ok(content()));
    }

    #[test]
    fn bad_key_files_are_refused() {
        let good = set_at(T0).serialize();
        assert_eq!(KeySet::deserialize("", DAY), Err(KeyFileError::Magic));
        let bad_line = |text: &str| KeySet::deserialize(text, DAY).unwrap_err();
        let key = "00".repeat(32);
        assert!(matches!(
            bad_line(&format!("{FILE_MAGIC}\n1 2\n")),
            KeyFileError::Line { line: 2, .. }
        ));
        assert!(matches!(
            bad_line(&format!("{FILE_MAGIC}\nzz 2 {key}\n")),
            KeyFileError::Line { .. }
        ));
        assert!(matches!(
            bad_line(&format!("{FILE_MAGIC}\n1 2 {}\n", &key[..62])),
            KeyFileError::Line { .. }
        ));
        assert_eq!(
            bad_line(&format!("{FILE_MAGIC}\n1 2 {key}\n1 3 {key}\n")),
            KeyFileError::DuplicateId(1)
        );
        let four: String = (1..=4).map(|i| format!("{i} {i} {key}\n")).collect();
        assert_eq!(
            bad_line(&format!("{FILE_MAGIC}\n{four}")),
            KeyFileError::TooMany
        );
        assert!(KeySet::deserialize(&good, DAY).is_ok());
    }

    #[test]
    fn cached_ciphers_match_the_key_set() {
        let mut set = set_at(T0);
        let mut cache = CookieCiphers::default();
        let mut out = [0u8; COOKIE_LEN];
        assert_eq!(
            cache.seal_into(&content(), &[3; NONCE_LEN], &mut out),
            Err(CookieError::NoKey)
        );
        cache.sync(&set);
        cache
            .seal_into(&content(), &[3; NONCE_LEN], &mut out)
            .unwrap();
        let sealed = set.seal(&content(), &[3; NONCE_LEN]).unwrap();
        assert_eq!(
            out.as_slice(),
            sealed.as_slice(),
            "same bytes as KeySet::seal"
        );
        assert_eq!(cache.open(&sealed), Ok(content()));
        let mut bad = sealed.clone();
        bad[50] ^= 1;
        assert_eq!(cache.open(&bad), Err(CookieError::TagMismatch));
        assert_eq!(
            cache.open(&sealed[1..]),
            Err(CookieError::BadLength(COOKIE_LEN - 1))
        );
        // A rotation is picked up by the next sync, old cookies still open.
        set.rotate(T0 + DAY, 8, [0x22; 32]);
        cache.sync(&set);
        cache
            .seal_into(&content(), &[4; NONCE_LEN], &mut out)
            .unwrap();
        assert_eq!(&out[..4], &8u32.to_be_bytes());
        assert_eq!(set.open(&out), Ok(content()));
        assert_eq!(cache.open(&sealed), Ok(content()));
        // Same ids, other key material (a reloaded key file): rebuilt too.
        let mut other = KeySet::new(DAY);
        other.rotate(T0, 7, [0x33; 32]);
        other.rotate(T0 + DAY, 8, [0x44; 32]);
        cache.sync(&other);
        assert_eq!(cache.open(&sealed), Err(CookieError::TagMismatch));
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = set_at(T0).open(&bytes);
            let mut cache = CookieCiphers::default();
            cache.sync(&set_at(T0));
            prop_assert_eq!(cache.open(&bytes), set_at(T0).open(&bytes));
        }

        #[test]
        fn deserialize_never_panics(text in ".{0,300}") {
            let _ = KeySet::deserialize(&text, DAY);
        }
    }
}
