//! The embedded NTP engine (RFC 5905): protocol codec, clock algorithm
//! (sans-IO, time and clock injected), and the tokio daemon, server,
//! clock control and control socket around them.
