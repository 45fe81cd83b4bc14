//! The embedded NTP engine's daemon (RFC 5905 client and server): the I/O
//! on top of the sans-IO `timectl-engine` crate.
//!
//! - `proto`, `source`, `filter`, `select`, `combine`, `discipline`,
//!   `system`, `sim`, `units`: re-exported from `timectl-engine` (the protocol and
//!   the clock algorithm, no I/O), so `timectl::engine::proto` and friends
//!   keep resolving.
//! - `config`, `daemon`, `server`, `net`, `clock`, `adjtimex`, `drift`,
//!   `control`, `metrics`, `logging`, `notify`, `cli`: the daemon (tokio
//!   sockets, kernel timestamps, the kernel clock, files, the control
//!   socket).
//! - `nts_ke`: the NTS-KE client (TLS 1.3, rustls with ring);
//!   `nts_client`: an NTS source's task (cookies, key exchange retries,
//!   request fields, reply check).

mod adjtimex;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod drift;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod nts_client;
pub mod nts_ke;
pub mod nts_server;
pub mod server;

pub use timectl_engine::{combine, discipline, filter, proto, select, sim, source, system, units};
