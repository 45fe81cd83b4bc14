//! systemd readiness notification (sd_notify): the unit is `Type=notify`,
//! so `systemctl start` (and timectl's apply) waits until the engine has
//! bound its sockets, and a start that fails (an address that cannot be
//! bound, a bad config) fails the start job instead of passing unnoticed.
//! A no-op outside systemd (no `NOTIFY_SOCKET`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Send one notification (`READY=1`, `STOPPING=1`, `STATUS=...`).
/// Failures are ignored: without a manager listening there is no one to tell.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_to(&path.to_string_lossy(), state);
    }
}

/// How often to send `WATCHDOG=1`: half of the unit's `WatchdogSec=`
/// (systemd passes it as `WATCHDOG_USEC`), None when no watchdog is set.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid != std::process::id().to_string()
    {
        return None;
    }
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}

/// Send to an explicit socket (`@name` for an abstract one).
pub fn notify_to(path: &str, state: &str) {
    let address = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(path),
    };
    let (Ok(address), Ok(socket)) = (address, UnixDatagram::unbound()) else {
        return;
    };
    if let Err(e) = socket.send_to_addr(state.as_bytes(), &address) {
        tracing::debug!("sd_notify to {path}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1\nSTATUS=serving");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }
}
