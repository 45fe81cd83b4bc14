//! Network Time Security (RFC 8915), groundwork: sans-IO codecs only.
//!
//! - `ke`: NTS-KE records, a streaming decoder, the client request and
//!   the server response check, and the TLS key export parameters.
//! - `ef`: NTS extension fields for NTP packets and their AEAD
//!   (AES-SIV-CMAC-256): sealing a request and opening a reply, and the
//!   server side (parsing a request, sealing a reply, the NTS NAK).
//!
//! - `cookie`: the server's cookies (the client's keys sealed with a
//!   rotating master key) and the persisted master key set.
//!
//! Nothing here does TLS or I/O; randomness (unique identifiers, nonces,
//! master keys) and time come from the caller.

pub mod cookie;
pub mod ef;
pub mod ke;
