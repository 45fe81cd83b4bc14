//! Network Time Security (RFC 8915), groundwork: sans-IO codecs only.
//!
//! - `ke`: NTS-KE records, a streaming decoder, the client request and
//!   the server response check, and the TLS key export parameters.
//! - `ef`: NTS extension fields for NTP packets and their AEAD
//!   (AES-SIV-CMAC-256): sealing a request and opening a reply.
//!
//! Nothing here does TLS, stores or rotates cookies, or is wired into the
//! daemon; randomness (unique identifiers, nonces) comes from the caller.

pub mod ef;
pub mod ke;
