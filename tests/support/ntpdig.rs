//! `ntpdig -j` as an NTP client peer. ntpdig always queries port 123, so the
//! server under test runs in a network namespace (a container's or a
//! [`NetNs`]) and ntpdig runs there too.

use std::process::Command;

use super::{NetNs, run, without_clock_caps};

/// ntpdig's JSON answer for one server.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct NtpdigReply {
    pub time: String,
    /// Seconds the local clock is behind the server (server - local).
    pub offset: f64,
    pub precision: f64,
    pub host: String,
    pub ip: String,
    pub stratum: u8,
    /// "no-leap", "add-leap", "del-leap" or "unsync".
    pub leap: String,
    /// Always false here: ntpdig is never given -s/-S.
    pub adjusted: bool,
}

/// Queries `addr` once (1 s timeout) from inside `netns` (or the host's
/// namespace). Err carries ntpdig's message (e.g. "no eligible servers" for
/// an unsynchronised server) so callers can poll until a server is ready.
///
/// Runs without CAP_SYS_TIME and never with -s/-S: ntpdig cannot set the
/// clock from here.
pub fn ntpdig(netns: Option<&NetNs>, addr: &str) -> Result<NtpdigReply, String> {
    let mut argv = without_clock_caps("ntpdig");
    argv.extend(["-j", "-t", "1", addr].map(String::from));
    let mut cmd = match netns {
        Some(ns) => ns.command(&argv[0]),
        None => Command::new(&argv[0]),
    };
    cmd.args(&argv[1..]);
    let out = run(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("ntpdig {addr}: {}{}", stdout.trim(), stderr.trim()));
    }
    serde_json::from_str(stdout.trim())
        .map_err(|e| format!("ntpdig {addr}: bad JSON ({e}): {stdout}"))
}
