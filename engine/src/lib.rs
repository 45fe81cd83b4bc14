//! timectl's NTP engine without I/O (RFC 5905 client and server logic).
//!
//! Layers, from pure protocol to the whole algorithm:
//! - `units`: newtypes for time (`Seconds`, `EngineInstant`, `Frequency`,
//!   `PollExponent`) so the APIs say their units.
//! - `proto`: packet codec, timestamps, reply sanity checks.
//! - `source`, `filter`, `select`, `combine`, `discipline`: the clock
//!   algorithm; `system` ties them together. Inputs are samples and
//!   instants, outputs are actions; time and the clock are injected.
//! - `nts`: Network Time Security (RFC 8915) codecs and AEAD, not yet
//!   used by the daemon.
//! - `sim`: a simulated clock and network driving the same algorithm.
//!
//! Nothing here reads a clock, opens a socket or knows about the
//! converger: the daemon (tokio sockets, adjtimex, the control socket)
//! lives in the `timectl` crate's `engine` module on top of this one.

pub mod combine;
pub mod discipline;
pub mod filter;
pub mod nts;
pub mod proto;
pub mod select;
pub mod sim;
pub mod source;
pub mod system;
pub mod units;
