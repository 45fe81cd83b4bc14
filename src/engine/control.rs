//! The control socket: a Unix stream socket speaking one JSON object per
//! line (protocol in docs/engine-control.md). Two requests:
//!
//! - `{"command":"status"}`: the status document (`format_version` 1),
//!   what `timectl status --json` prints. Read-only.
//! - `{"command":"step_now"}`: step the clock once by the current offset
//!   estimate (issue 5's `step.now`). Refused when clock control is off
//!   (the answer says by how much it would have stepped), and refused to
//!   peers other than root or the daemon's own user.
//!
//! This module owns the wire types, the listener loop (which forwards each
//! request to the engine task and writes its answer) and a blocking client.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use super::server::ServerStatsReport;
use super::system::SourceReport;

/// Version of the status and step documents; bumped on incompatible change.
pub const FORMAT_VERSION: u32 = 1;
/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;
/// Connections served at once; a new one beyond this closes the oldest (the
/// socket is open to every local user, who must neither take the daemon's
/// fds nor lock other users out by holding connections).
pub const MAX_CONNECTIONS: usize = 64;
/// A connection that sends no complete request line for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait after a failed accept (EMFILE and the like) before the
/// next: never spin on an error that repeats.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    Status,
    StepNow,
}

/// One source in the status document: where it is, and the engine's own
/// report of it (flattened, so the JSON fields sit side by side).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// `IP:PORT` polled.
    pub address: String,
    /// The `server` or `pool` name it came from.
    pub name: String,
    #[serde(flatten)]
    pub report: SourceReport,
    /// NTS (RFC 8915) state; absent for a source without NTS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nts: Option<NtsSourceStatus>,
}

/// An NTS source's state in the status document (`sources[].nts`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NtsSourceStatus {
    /// "key exchange" (running), "established" (keys and cookies held) or
    /// "retrying" (the last key exchange failed; see the error).
    pub state: String,
    /// The last reply accepted was authenticated, and no key exchange
    /// started since.
    pub authenticated: bool,
    /// Cookies held (at most 8).
    pub cookies: usize,
    /// `IP:PORT` of the NTP server the key exchange named.
    #[serde(default)]
    pub ntp_address: Option<String>,
    /// Successful key exchanges since start.
    #[serde(default)]
    pub key_exchanges: u64,
    /// Failed key exchanges since start.
    #[serde(default)]
    pub key_exchange_failures: u64,
    /// Why the last key exchange failed; cleared by a successful one.
    #[serde(default)]
    pub last_key_exchange_error: Option<String>,
    /// With state "retrying": the delay before the next attempt.
    #[serde(default)]
    pub next_retry_seconds: Option<f64>,
    /// Authenticated replies passed to the engine.
    #[serde(default)]
    pub authenticated_replies: u64,
    /// Replies dropped because they did not authenticate (modified,
    /// forged, unprotected or malformed).
    #[serde(default)]
    pub dropped_unauthenticated: u64,
    /// Replies dropped because their unique identifier was not the
    /// outstanding request's (replays and duplicates).
    #[serde(default)]
    pub dropped_replayed: u64,
    /// NTS NAKs received (each starts a new key exchange).
    #[serde(default)]
    pub naks: u64,
    /// Why the last dropped unauthenticated reply was refused.
    #[serde(default)]
    pub last_drop_reason: Option<String>,
}

/// The server half in the status document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub listen: Vec<String>,
    pub received: u64,
    pub answered: u64,
    pub denied: u64,
    pub rate_limited: u64,
    pub kisses: u64,
    pub malformed: u64,
    /// Serving NTS: its counters; absent when not serving NTS (and from
    /// engines before issue 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nts: Option<NtsServerStatus>,
}

/// The NTS half of the server (`server.nts`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NtsServerStatus {
    /// Addresses NTS-KE listens on (TCP).
    pub ke_listen: Vec<String>,
    /// Key exchanges completed (cookies handed out).
    pub key_exchanges: u64,
    /// Key exchanges that failed: TLS handshake, protocol errors, the
    /// connection deadline.
    pub key_exchange_failures: u64,
    /// Connections refused before TLS: allow/deny, rate limit, connection cap.
    pub key_exchanges_refused: u64,
    /// NTP requests carrying NTS fields.
    pub requests: u64,
    /// Of those, answered with an authenticated reply.
    pub answered: u64,
    /// Answered with an NTS NAK (a cookie this server cannot open).
    pub naks: u64,
    /// Dropped: the authenticator did not verify, or malformed NTS fields.
    pub dropped: u64,
}

impl ServerStatus {
    pub fn new(
        listen: Vec<String>,
        nts_ke_listen: Option<Vec<String>>,
        s: ServerStatsReport,
    ) -> ServerStatus {
        ServerStatus {
            listen,
            received: s.received,
            answered: s.answered,
            denied: s.denied,
            rate_limited: s.rate_limited,
            kisses: s.kisses,
            malformed: s.malformed,
            nts: nts_ke_listen.map(|ke_listen| NtsServerStatus {
                ke_listen,
                key_exchanges: s.ke_handshakes,
                key_exchange_failures: s.ke_failed,
                key_exchanges_refused: s.ke_refused,
                requests: s.nts_received,
                answered: s.nts_answered,
                naks: s.nts_naks,
                dropped: s.nts_dropped,
            }),
        }
    }
}

/// Answer to `status` (and `timectl status --json`). Field meanings are in
/// docs/engine-control.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    pub format_version: u32,
    pub synchronized: bool,
    pub clock_control: bool,
    /// Local clock minus true time now (positive: the clock is fast).
    pub offset_seconds: Option<f64>,
    /// The offset's error bound (root distance to the reference): the
    /// clock is within `offset_seconds` ± this.
    #[serde(default)]
    pub offset_bound_seconds: Option<f64>,
    pub last_offset_seconds: Option<f64>,
    pub frequency_ppm: f64,
    pub skew_ppm: f64,
    pub stratum: u8,
    pub leap: String,
    pub reference_id: String,
    /// `IP:PORT` of the system peer.
    pub reference_address: Option<String>,
    pub root_delay_seconds: f64,
    pub root_dispersion_seconds: f64,
    pub last_update_age_seconds: Option<f64>,
    pub updates: u64,
    pub steps: u64,
    /// Clock updates since the last step: 0 means the offset is the step's
    /// own estimate, not yet confirmed by a measurement taken after it.
    #[serde(default)]
    pub updates_since_step: Option<u64>,
    /// The leap second armed in the kernel: "insert", "delete" or "none".
    #[serde(default)]
    pub kernel_leap: Option<String>,
    pub uptime_seconds: f64,
    pub sources: Vec<SourceStatus>,
    /// Configured names not resolved yet.
    pub unresolved: Vec<String>,
    pub server: Option<ServerStatus>,
}

/// Answer to `step_now`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepDocument {
    pub format_version: u32,
    pub ok: bool,
    /// Seconds the clock was stepped (positive: forward).
    pub stepped_seconds: Option<f64>,
    /// With clock control off: what the step would have been.
    pub would_step_seconds: Option<f64>,
    pub error: Option<String>,
}

/// Answer to a request the daemon could not parse.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDocument {
    pub format_version: u32,
    pub ok: bool,
    pub error: String,
}

/// A request on its way to the engine task, with who asked.
pub struct Incoming {
    pub request: ControlRequest,
    /// Whether the peer may change the clock (root or our own uid).
    pub privileged: bool,
    pub reply: oneshot::Sender<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("control socket {path}: unexpected answer: {message}")]
    Protocol { path: PathBuf, message: String },
}

/// Binds the control socket: removes a stale socket file (never any other
/// kind of file), creates the parent directory, and makes the socket
/// connectable by any local user (status is harmless; `step_now` checks
/// the peer's credentials).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Accepts connections until the task is dropped: at most
/// `MAX_CONNECTIONS` at once (the oldest is closed to make room, so a
/// client that holds connections cannot lock `timectl status` out), each
/// closed when idle for `IDLE_TIMEOUT` or
/// when a request line exceeds 4096 bytes. The clock loop only computes
/// answers; reading and writing are the connection's own task.
pub async fn serve(listener: UnixListener, engine: mpsc::Sender<Incoming>) {
    let mut connections = Connections::new("control socket");
    loop {
        let Some(stream) = connections.accepted(listener.accept().await).await else {
            continue;
        };
        let engine = engine.clone();
        connections.spawn(async move {
            let privileged = stream
                .peer_cred()
                .map(|c| c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw())
                .unwrap_or(false);
            let (read, mut write) = stream.into_split();
            let mut reader = TokioBufReader::new(read).take(MAX_REQUEST as u64 + 1);
            loop {
                let mut raw = Vec::new();
                reader.set_limit(MAX_REQUEST as u64 + 1);
                match tokio::time::timeout(IDLE_TIMEOUT, reader.read_until(b'\n', &mut raw)).await {
                    Ok(Ok(n)) if n > 0 && raw.len() <= MAX_REQUEST => {}
                    // Idle, closed, an error, or a line over the limit.
                    _ => return,
                }
                let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                let answer = match serde_json::from_str::<ControlRequest>(&line) {
                    Ok(request) => {
                        let (tx, rx) = oneshot::channel();
                        if engine.send(Incoming { request, privileged, reply: tx }).await.is_err() {
                            return;
                        }
                        match rx.await {
                            Ok(v) => v,
                            Err(_) => return,
                        }
                    }
                    Err(e) => serde_json::to_value(ErrorDocument {
                        format_version: FORMAT_VERSION,
                        ok: false,
                        error: format!("bad request: {e}; expected {{\"command\":\"status\"}} or {{\"command\":\"step_now\"}}"),
                    })
                    .unwrap_or_default(),
                };
                let mut text = answer.to_string();
                text.push('\n');
                if write.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The connections a listener serves, each its own task: at most
/// `MAX_CONNECTIONS` at once, the oldest closed to make room (so a client
/// that holds connections cannot lock others out), and a pause after a
/// failed accept (EMFILE and the like) so that an error that repeats is
/// neither spun on nor logged more than once in a row.
pub struct Connections {
    what: &'static str,
    open: std::collections::VecDeque<tokio::task::AbortHandle>,
    accept_error_logged: bool,
}

impl Connections {
    /// `what` names the listener in the log.
    pub fn new(what: &'static str) -> Connections {
        Connections {
            what,
            open: std::collections::VecDeque::new(),
            accept_error_logged: false,
        }
    }

    /// The stream of an accept's result; after a failed accept, None once
    /// the pause is over (the error logged once in a row).
    pub async fn accepted<S, A>(&mut self, result: std::io::Result<(S, A)>) -> Option<S> {
        match result {
            Ok((stream, _)) => Some(stream),
            Err(e) => {
                if !self.accept_error_logged {
                    tracing::warn!("{}: accept failed: {e}; retrying", self.what);
                    self.accept_error_logged = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                None
            }
        }
    }

    /// Serves an accepted connection as its own task, closing the oldest
    /// when the limit is reached.
    pub fn spawn(&mut self, connection: impl std::future::Future<Output = ()> + Send + 'static) {
        self.accept_error_logged = false;
        self.open.retain(|h| !h.is_finished());
        if self.open.len() >= MAX_CONNECTIONS
            && let Some(oldest) = self.open.pop_front()
        {
            oldest.abort();
        }
        self.open.push_back(tokio::spawn(connection).abort_handle());
    }
}

/// Sends one request and returns the raw JSON answer (blocking; for the
/// CLI and the converger, which have no runtime of their own).
pub fn request(
    path: &Path,
    request: ControlRequest,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    let io = |cause| ControlError::Io {
        path: path.to_owned(),
        cause,
    };
    let mut stream = StdUnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(&request).map_err(|e| io(std::io::Error::other(e)))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    let value: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| ControlError::Protocol {
            path: path.to_owned(),
            message: format!("{e}: {answer:?}"),
        })?;
    match value.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v == FORMAT_VERSION as u64 => Ok(value),
        other => Err(ControlError::Protocol {
            path: path.to_owned(),
            message: format!("format_version {other:?}, this timectl understands {FORMAT_VERSION}"),
        }),
    }
}

/// The typed status document.
pub fn status(path: &Path, timeout: Duration) -> Result<StatusDocument, ControlError> {
    let v = request(path, ControlRequest::Status, timeout)?;
    serde_json::from_value(v).map_err(|e| ControlError::Protocol {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Asks for one step; the typed answer says whether it happened.
pub fn step_now(path: &Path, timeout: Duration) -> Result<StepDocument, ControlError> {
    let v = request(path, ControlRequest::StepNow, timeout)?;
    serde_json::from_value(v).map_err(|e| ControlError::Protocol {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Human view of a status document, in the spirit of `chronyc tracking`
/// followed by `chronyc sources`.
pub fn render_status(s: &StatusDocument) -> String {
    let mut out = String::new();
    write_reference(&mut out, s);
    write_discipline(&mut out, s);
    write_sources(&mut out, s);
    if let Some(server) = &s.server {
        write_server(&mut out, server);
    }
    out
}

/// An optional offset in seconds, signed to the nanosecond, or "-".
fn signed_seconds(v: Option<f64>) -> String {
    v.map(|x| format!("{x:+.9} seconds"))
        .unwrap_or_else(|| "-".into())
}

/// The tracking lines about where the time comes from and how far off the
/// clock is: Synchronised to Last offset.
fn write_reference(out: &mut String, s: &StatusDocument) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "Synchronised    : {}",
        if s.synchronized { "yes" } else { "no" }
    );
    let _ = writeln!(
        out,
        "Reference ID    : {}{}",
        s.reference_id,
        s.reference_address
            .as_ref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "Stratum         : {}", s.stratum);
    let _ = writeln!(
        out,
        "System time     : {}{} (local minus true time{})",
        signed_seconds(s.offset_seconds),
        s.offset_bound_seconds
            .map(|b| format!(" ± {b:.6}"))
            .unwrap_or_default(),
        if s.steps > 0 && s.updates_since_step == Some(0) {
            "; just stepped, waiting for a measurement after the step"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "Last offset     : {}",
        signed_seconds(s.last_offset_seconds)
    );
}

/// The tracking lines about the clock discipline: Frequency to Updates /
/// steps, then a blank line.
fn write_discipline(out: &mut String, s: &StatusDocument) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "Frequency       : {:+.3} ppm (correction needed)",
        s.frequency_ppm
    );
    let _ = writeln!(out, "Skew            : {:.3} ppm", s.skew_ppm);
    let _ = writeln!(out, "Root delay      : {:.9} seconds", s.root_delay_seconds);
    let _ = writeln!(
        out,
        "Root dispersion : {:.9} seconds",
        s.root_dispersion_seconds
    );
    let _ = writeln!(
        out,
        "Update age      : {}",
        s.last_update_age_seconds
            .map(|a| format!("{a:.1} seconds"))
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(out, "Leap status     : {}{}", s.leap, kernel_leap_note(s));
    let _ = writeln!(
        out,
        "Clock control   : {}",
        if s.clock_control {
            "on"
        } else {
            "off (estimates only)"
        }
    );
    let _ = writeln!(out, "Updates / steps : {} / {}", s.updates, s.steps);
    let _ = writeln!(out);
}

/// What the kernel has armed for the next midnight, if anything.
fn kernel_leap_note(s: &StatusDocument) -> &'static str {
    match s.kernel_leap.as_deref() {
        Some("insert") => " (kernel: insert a second at midnight UTC)",
        Some("delete") => " (kernel: delete a second at midnight UTC)",
        _ => "",
    }
}

/// The sources table: header, one line per source, then the names not
/// resolved yet.
fn write_sources(out: &mut String, s: &StatusDocument) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "MS Name/IP address              Stratum Poll Reach LastRx Last sample"
    );
    let _ = writeln!(
        out,
        "==============================================================================="
    );
    for src in &s.sources {
        write_source(out, src);
    }
    for name in &s.unresolved {
        let _ = writeln!(out, "^? {name:<30} (not resolved yet)");
    }
    for src in &s.sources {
        if let Some(nts) = &src.nts {
            write_nts(out, &src.address, nts);
        }
    }
}

/// One NTS line per NTS source, and its key exchange error if any.
fn write_nts(out: &mut String, address: &str, nts: &NtsSourceStatus) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "NTS {address}: {}, {}authenticated, {} cookies, {} key exchanges, dropped {} unauthenticated {} replayed",
        nts.state,
        if nts.authenticated { "" } else { "not " },
        nts.cookies,
        nts.key_exchanges,
        nts.dropped_unauthenticated,
        nts.dropped_replayed,
    );
    if let Some(t) = nts.next_retry_seconds {
        let _ = write!(out, ", retry in {t:.0} s");
    }
    let _ = writeln!(out);
    if let Some(e) = &nts.last_key_exchange_error {
        let _ = writeln!(out, "    key exchange failed: {e}");
    }
}

/// One line of the sources table.
fn write_source(out: &mut String, src: &SourceStatus) {
    use std::fmt::Write as _;
    let mark = src.report.state.mark();
    let age = src
        .report
        .last_sample_age_seconds
        .map(|a| format!("{:.0}", a))
        .unwrap_or_else(|| "-".into());
    let off = src
        .report
        .last_offset_seconds
        .map(|o| format!("{:+.0}us", o * 1e6))
        .unwrap_or_else(|| "-".into());
    let delay = src
        .report
        .delay_seconds
        .map(|d| format!("+/- {:.0}us", d * 1e6 / 2.0))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "^{mark} {:<30} {:>7} {:>4} {:>5o} {:>6} {off} {delay}",
        truncate(&src.address, 30),
        src.report
            .stratum
            .map(|x| x.to_string())
            .unwrap_or_else(|| "-".into()),
        src.report.poll,
        src.report.reach,
        age
    );
}

/// The server summary: a blank line, then one line of counters.
fn write_server(out: &mut String, server: &ServerStatus) {
    use std::fmt::Write as _;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Serving on {}: {} requests, {} answered, {} denied, {} rate-limited",
        server.listen.join(", "),
        server.received,
        server.answered,
        server.denied,
        server.rate_limited
    );
    if let Some(nts) = &server.nts {
        let _ = writeln!(
            out,
            "NTS-KE on {}: {} key exchanges, {} failed, {} refused; NTS requests: {}, {} answered, {} NAKs, {} dropped",
            nts.ke_listen.join(", "),
            nts.key_exchanges,
            nts.key_exchange_failures,
            nts.key_exchanges_refused,
            nts.requests,
            nts.answered,
            nts.naks,
            nts.dropped
        );
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::system::SourceState;

    #[test]
    fn request_wire_format() {
        assert_eq!(
            serde_json::to_string(&ControlRequest::Status).expect("json"),
            r#"{"command":"status"}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlRequest::StepNow).expect("json"),
            r#"{"command":"step_now"}"#
        );
        assert!(serde_json::from_str::<ControlRequest>(r#"{"command":"reboot"}"#).is_err());
    }

    #[test]
    fn render_shows_marks_and_reach_in_octal() {
        let doc = StatusDocument {
            format_version: 1,
            synchronized: true,
            clock_control: false,
            offset_seconds: Some(-0.000_012),
            offset_bound_seconds: Some(0.000_5),
            last_offset_seconds: Some(0.0),
            frequency_ppm: 1.5,
            skew_ppm: 0.1,
            stratum: 9,
            leap: "normal".into(),
            reference_id: "127.0.0.1".into(),
            reference_address: Some("127.0.0.1:11123".into()),
            root_delay_seconds: 0.0,
            root_dispersion_seconds: 0.0,
            last_update_age_seconds: Some(1.0),
            updates: 3,
            steps: 0,
            updates_since_step: Some(3),
            kernel_leap: Some("insert".into()),
            uptime_seconds: 5.0,
            sources: vec![SourceStatus {
                address: "127.0.0.1:11123".into(),
                name: "127.0.0.1".into(),
                report: SourceReport {
                    index: 0,
                    state: SourceState::Selected,
                    selected: true,
                    reach: 0o377,
                    poll: crate::engine::units::PollExponent::saturating(6),
                    stratum: Some(8),
                    last_offset_seconds: Some(1e-5),
                    delay_seconds: Some(1e-4),
                    jitter_seconds: Some(1e-6),
                    last_sample_age_seconds: Some(3.0),
                    samples: 8,
                    last_error: None,
                },
                nts: None,
            }],
            unresolved: vec![],
            server: None,
        };
        // The wire format keeps every source field side by side and round-trips.
        let json = serde_json::to_value(&doc).unwrap();
        let source = &json["sources"][0];
        assert_eq!(source["address"], "127.0.0.1:11123");
        assert_eq!(
            (source["reach"].as_u64(), source["selected"].as_bool()),
            (Some(255), Some(true))
        );
        assert_eq!(source["state"], "selected");
        assert!(
            source.get("index").is_none() && source.get("report").is_none(),
            "{source}"
        );
        assert_eq!(serde_json::from_value::<StatusDocument>(json).unwrap(), doc);
        let text = render_status(&doc);
        assert!(text.contains("^* 127.0.0.1:11123"), "{text}");
        assert!(text.contains("  377 "), "{text}");
        assert!(text.contains("-0.000012000 seconds ± 0.000500"), "{text}");
        assert!(text.contains("kernel: insert a second"), "{text}");
        // A status from an engine without the newer fields still parses.
        let mut old = serde_json::to_value(&doc).unwrap();
        for key in ["offset_bound_seconds", "updates_since_step", "kernel_leap"] {
            old.as_object_mut().unwrap().remove(key);
        }
        let parsed = serde_json::from_value::<StatusDocument>(old).unwrap();
        assert_eq!(parsed.updates_since_step, None);
        assert!(
            serde_json::to_value(&doc).unwrap()["sources"][0]
                .get("nts")
                .is_none(),
            "no nts object for a source without NTS"
        );
        assert!(!text.contains("NTS "), "{text}");

        // An NTS source: its object round-trips, a line under the table.
        let mut doc = doc;
        doc.sources[0].nts = Some(NtsSourceStatus {
            state: "retrying".into(),
            key_exchange_failures: 2,
            last_key_exchange_error: Some("NTS-KE 127.0.0.1:4460: UnknownIssuer".into()),
            next_retry_seconds: Some(7.6),
            dropped_unauthenticated: 3,
            dropped_replayed: 1,
            ..NtsSourceStatus::default()
        });
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["sources"][0]["nts"]["state"], "retrying");
        assert_eq!(json["sources"][0]["nts"]["dropped_unauthenticated"], 3);
        assert_eq!(serde_json::from_value::<StatusDocument>(json).unwrap(), doc);
        let text = render_status(&doc);
        assert!(
            text.contains(
                "NTS 127.0.0.1:11123: retrying, not authenticated, 0 cookies, 0 key exchanges, dropped 3 unauthenticated 1 replayed, retry in 8 s\n    key exchange failed: NTS-KE 127.0.0.1:4460: UnknownIssuer\n"
            ),
            "{text}"
        );
    }
}
