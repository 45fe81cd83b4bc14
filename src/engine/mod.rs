//! The embedded NTP engine (RFC 5905 client and server).
//!
//! Layers, from pure to I/O:
//! - `proto`: packet codec, timestamps, reply sanity checks (pure).
//! - `source`, `filter`, `select`, `combine`, `discipline`: the clock
//!   algorithm, sans-IO; `system` ties them together. Inputs are samples
//!   and instants, outputs are actions; time and the clock are injected.
//! - `sim`: a simulated clock and network driving the same algorithm.
//! - `config`, `daemon`, `server`, `clock`, `control`, `metrics`, `logging`,
//!   `cli`: the daemon.

mod adjtimex;
pub mod cli;
pub mod clock;
pub mod combine;
pub mod config;
pub mod control;
pub mod daemon;
pub mod discipline;
pub mod drift;
pub mod filter;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod proto;
pub mod select;
pub mod server;
pub mod sim;
pub mod source;
pub mod system;
