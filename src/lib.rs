//! timectl: a declarative converger for time synchronisation, with an
//! embedded NTP engine.
//!
//! Data flows one way:
//!
//! ```text
//! spec (YAML) --load+validate--> Spec
//! host --detect--> Facts
//! Spec + Facts --provider::compile--> desired Resources
//! Resources --observe (host backends)--> Plan { ordered Changes, fingerprint }
//! Plan --render--> human text | JSON | markdown
//! Plan --apply (lock, journal, backups)--> Report; re-plan must be empty
//! ```
//!
//! The embedded NTP engine (`engine`) is independent of the converger: its
//! protocol and clock algorithm are pure and run under a simulated clock in
//! tests; its daemon wires them to sockets and the kernel clock.

pub mod apply;
pub mod cli;
pub mod engine;
pub mod facts;
pub mod host;
pub mod manual;
pub mod plan;
pub mod provider;
pub mod render;
pub mod resource;
pub mod spec;
pub mod sync;
pub mod textfile;
