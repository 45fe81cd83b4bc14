//! The engine's Prometheus endpoint (`metrics.listen`, `--metrics`): an
//! HTTP/1.1 server (hyper) answering `GET /metrics` with the Prometheus text
//! format (version 0.0.4, encoded by the `prometheus` crate).
//!
//! It reads the engine the way `timectl status` does: a status request
//! through the control channel to the clock task, so the numbers are the
//! status document's, at most [`REFRESH`] old. Scrapes between two refreshes
//! share one answer, so no client can make the clock task do more than one
//! status report per [`REFRESH`].
//!
//! Metric names follow ntpd-rs's exporter (`ntp_system_*`, `ntp_source_*`
//! with `name`, `address` and `id` labels, `ntp_server_*_packets_total`),
//! so dashboards made for it work; the list is in docs/metrics.md. Offsets
//! carry NTP's sign (RFC 5905's θ, as ntpd-rs): reference minus local time,
//! positive when the local clock is behind. That is the opposite of the
//! status document's chrony-style sign.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming as RequestBody;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::control::{
    Connections, ControlRequest, Incoming, NtsServerStatus, ServerStatus, StatusDocument,
};
use super::system::SourceReport;

/// How long one status report serves scrapes.
pub const REFRESH: Duration = Duration::from_secs(1);
/// A client that sends no complete request header for this long is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request header accepted (a scrape's is a few hundred bytes).
const MAX_REQUEST: usize = 8192;
/// The path Prometheus scrapes.
pub const PATH: &str = "/metrics";

/// The last exposition and when it was made.
#[derive(Default)]
struct Cache {
    made: Option<Instant>,
    text: Option<Arc<String>>,
}

/// Accepts connections until the task is dropped: at most
/// `MAX_CONNECTIONS` at once (the oldest is closed to make room), each
/// served by hyper's HTTP/1 connection with keep-alive.
pub async fn serve(listener: TcpListener, engine: mpsc::Sender<Incoming>) {
    let cache = Arc::new(Mutex::new(Cache::default()));
    let mut connections = Connections::new("metrics");
    loop {
        let Some(stream) = connections.accepted(listener.accept().await).await else {
            continue;
        };
        let engine = engine.clone();
        let cache = cache.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let engine = engine.clone();
                let cache = cache.clone();
                async move { Ok::<_, Infallible>(answer(&request, &engine, &cache).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

async fn answer(
    request: &Request<RequestBody>,
    engine: &mpsc::Sender<Incoming>,
    cache: &Mutex<Cache>,
) -> Response<Full<Bytes>> {
    if request.uri().path() != PATH {
        return plain(
            StatusCode::NOT_FOUND,
            format!("not found: metrics are at {PATH}\n"),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match exposition(engine, cache).await {
        Some(text) => {
            let mut r = Response::new(Full::new(Bytes::from(text.as_bytes().to_vec())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(CONTENT_TYPE_TEXT),
            );
            r
        }
        None => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine did not answer\n".into(),
        ),
    }
}

/// The Prometheus text format's content type.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The cached exposition, or a fresh one when it is older than `REFRESH`.
/// The lock is held while asking, so concurrent scrapes wait for one answer.
async fn exposition(engine: &mpsc::Sender<Incoming>, cache: &Mutex<Cache>) -> Option<Arc<String>> {
    let mut cache = cache.lock().await;
    if let (Some(made), Some(text)) = (cache.made, &cache.text)
        && made.elapsed() < REFRESH
    {
        return Some(text.clone());
    }
    let (reply, answer) = oneshot::channel();
    engine
        .send(Incoming {
            request: ControlRequest::Status,
            privileged: false,
            reply,
        })
        .await
        .ok()?;
    let doc: StatusDocument = match serde_json::from_value(answer.await.ok()?) {
        Ok(doc) => doc,
        Err(e) => {
            tracing::error!("metrics: unexpected status document: {e}");
            return None;
        }
    };
    let text = match encode(&doc) {
        Ok(text) => Arc::new(text),
        Err(e) => {
            tracing::error!("metrics: {e}");
            return None;
        }
    };
    cache.made = Some(Instant::now());
    cache.text = Some(text.clone());
    Some(text)
}

/// Labels of every `ntp_source_*` sample, as ntpd-rs names them.
const SOURCE_LABELS: [&str; 3] = ["name", "address", "id"];

/// The families of one exposition.
struct Families(Registry);

impl Families {
    fn add(&self, c: impl Collector + 'static) -> prometheus::Result<()> {
        self.0.register(Box::new(c))
    }

    fn gauge(&self, name: &str, help: &str, value: f64) -> prometheus::Result<()> {
        let g = Gauge::with_opts(Opts::new(name, help))?;
        g.set(value);
        self.add(g)
    }

    fn counter(&self, name: &str, help: &str, value: u64) -> prometheus::Result<()> {
        let c = IntCounter::with_opts(Opts::new(name, help))?;
        c.inc_by(value);
        self.add(c)
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
        let v = GaugeVec::new(Opts::new(name, help), labels)?;
        self.add(v.clone())?;
        Ok(v)
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// NTP's leap indicator (0 none, 1 insert, 2 delete, 3 unsynchronised) for
/// the status document's word.
fn leap_indicator(leap: &str) -> f64 {
    match leap {
        "normal" => 0.0,
        "insert_second" => 1.0,
        "delete_second" => 2.0,
        _ => 3.0,
    }
}

/// Polls since the last answered one (at most 8), from the reach register:
/// its trailing zero bits.
pub fn unanswered_polls(reach: u8) -> u32 {
    reach.trailing_zeros()
}

/// One `ntp_source_*` gauge: name, help, and its value for a source
/// (None: not known yet, the sample is left out).
type SourceGauge = (&'static str, &'static str, fn(&SourceReport) -> Option<f64>);

const SOURCE_GAUGES: [SourceGauge; 8] = [
    (
        "ntp_source_offset_seconds",
        "Offset between the upstream source and system time (positive: the source is ahead)",
        |r| r.last_offset_seconds.map(|o| -o),
    ),
    (
        "ntp_source_delay_seconds",
        "Current round-trip delay to the upstream source",
        |r| r.delay_seconds,
    ),
    (
        "ntp_source_uncertainty_seconds",
        "Estimated error of the source clock (the jitter of its samples)",
        |r| r.jitter_seconds,
    ),
    (
        "ntp_source_poll_interval_seconds",
        "Time between polls of the source",
        |r| Some(r.poll.interval().get()),
    ),
    (
        "ntp_source_unanswered_polls",
        "Number of polls since the last successful poll with a maximum of eight",
        |r| Some(f64::from(unanswered_polls(r.reach))),
    ),
    (
        "ntp_source_reach",
        "Reachability register of the source: one bit per poll of the last eight, 1 answered (255: all answered)",
        |r| Some(f64::from(r.reach)),
    ),
    (
        "ntp_source_selected",
        "Whether the source is the one the clock follows (1) or not (0)",
        |r| Some(flag(r.selected)),
    ),
    ("ntp_source_stratum", "Stratum the source reports", |r| {
        r.stratum.map(f64::from)
    }),
];

/// The Prometheus text exposition of a status document. Absent values
/// (no measurement yet) are left out rather than reported as zero.
pub fn encode(doc: &StatusDocument) -> prometheus::Result<String> {
    let f = Families(Registry::new());
    add_uptime(&f, doc)?;
    for (name, help, value) in system_gauges(doc) {
        if let Some(value) = value {
            f.gauge(name, help, value)?;
        }
    }
    for (name, help, value) in counters(doc) {
        f.counter(name, help, value)?;
    }
    add_source_gauges(&f, doc)?;
    add_nts_metrics(&f, doc)?;
    let mut out = Vec::new();
    TextEncoder::new().encode(&f.0.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// `ntp_uptime_seconds`, labelled with this timectl's version.
fn add_uptime(f: &Families, doc: &StatusDocument) -> prometheus::Result<()> {
    let uptime = GaugeVec::new(
        Opts::new("ntp_uptime_seconds", "Time that the ntp daemon is running"),
        &["version"],
    )?;
    uptime
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(doc.uptime_seconds);
    f.add(uptime)
}

/// One unlabelled gauge: name, help, and its value (None: left out).
type SystemGauge = (&'static str, &'static str, Option<f64>);

/// The `ntp_system_*` gauges of a status document.
fn system_gauges(doc: &StatusDocument) -> [SystemGauge; 8] {
    [
        (
            "ntp_system_synchronized",
            "Whether the clock is synchronised to a selected source (1) or not (0)",
            Some(flag(doc.synchronized)),
        ),
        (
            "ntp_system_clock_control",
            "Whether the engine adjusts the system clock (1) or only estimates (0)",
            Some(flag(doc.clock_control)),
        ),
        (
            "ntp_system_offset_seconds",
            "Estimated offset of the reference time from the local clock (positive: the local clock is behind)",
            doc.offset_seconds.map(|o| -o),
        ),
        (
            "ntp_system_frequency_ppm",
            "Frequency correction the local clock needs, in parts per million (positive: it runs slow)",
            Some(doc.frequency_ppm),
        ),
        (
            "ntp_system_stratum",
            "Stratum of our clock",
            Some(f64::from(doc.stratum)),
        ),
        (
            "ntp_system_root_delay_seconds",
            "Distance to the closest root time source",
            Some(doc.root_delay_seconds),
        ),
        (
            "ntp_system_root_dispersion_seconds",
            "Estimate of how precise our time is",
            Some(doc.root_dispersion_seconds),
        ),
        (
            "ntp_system_leap_indicator",
            "Indicates that a leap second will take place (NTP leap indicator: 0 none, 1 insert, 2 delete, 3 unsynchronised)",
            Some(leap_indicator(&doc.leap)),
        ),
    ]
}

/// One counter: name, help, and its value.
type Counter = (&'static str, &'static str, u64);

/// The system counters, then the server's when it serves.
fn counters(doc: &StatusDocument) -> Vec<Counter> {
    let mut counters = vec![
        (
            "ntp_system_steps_total",
            "Number of times the clock was stepped",
            doc.steps,
        ),
        (
            "ntp_system_updates_total",
            "Number of clock updates from the selected sources",
            doc.updates,
        ),
    ];
    if let Some(server) = &doc.server {
        counters.extend(server_counters(server));
        if let Some(nts) = &server.nts {
            counters.extend(nts_server_counters(nts));
        }
    }
    counters
}

/// The `ntp_server_*_packets_total` counters.
fn server_counters(server: &ServerStatus) -> [Counter; 6] {
    [
        (
            "ntp_server_received_packets_total",
            "Number of incoming packets",
            server.received,
        ),
        (
            "ntp_server_accepted_packets_total",
            "Number of packets accepted and answered",
            server.answered,
        ),
        (
            "ntp_server_denied_packets_total",
            "Number of denied packets (serve.allow and serve.deny)",
            server.denied,
        ),
        (
            "ntp_server_rate_limited_packets_total",
            "Number of rate limited packets (dropped or answered with a kiss-o'-death)",
            server.rate_limited,
        ),
        (
            "ntp_server_kod_packets_total",
            "Number of kiss-o'-death (RATE) replies sent",
            server.kisses,
        ),
        (
            "ntp_server_ignored_packets_total",
            "Number of packets ignored (not an NTPv3 or v4 client request)",
            server.malformed,
        ),
    ]
}

/// The NTS server's counters (only while serving NTS).
fn nts_server_counters(nts: &NtsServerStatus) -> [Counter; 7] {
    [
        (
            "ntp_server_nts_key_exchanges_total",
            "Number of NTS-KE exchanges completed (cookies handed out)",
            nts.key_exchanges,
        ),
        (
            "ntp_server_nts_key_exchange_failures_total",
            "Number of NTS-KE connections that failed (TLS, protocol, deadline)",
            nts.key_exchange_failures,
        ),
        (
            "ntp_server_nts_key_exchanges_refused_total",
            "Number of NTS-KE connections refused before TLS (access, rate limit, connection cap)",
            nts.key_exchanges_refused,
        ),
        (
            "ntp_server_nts_received_packets_total",
            "Number of NTP requests with NTS fields",
            nts.requests,
        ),
        (
            "ntp_server_nts_accepted_packets_total",
            "Number of NTS requests answered with an authenticated reply",
            nts.answered,
        ),
        (
            "ntp_server_nts_nak_packets_total",
            "Number of NTS NAKs sent (cookies that did not open)",
            nts.naks,
        ),
        (
            "ntp_server_nts_dropped_packets_total",
            "Number of NTS requests dropped (authenticator did not verify, malformed fields)",
            nts.dropped,
        ),
    ]
}

/// The `ntp_source_*` families, one sample per source with a value.
fn add_source_gauges(f: &Families, doc: &StatusDocument) -> prometheus::Result<()> {
    for (name, help, value) in SOURCE_GAUGES {
        let family = f.gauges(name, help, &SOURCE_LABELS)?;
        for (id, s) in doc.sources.iter().enumerate() {
            if let Some(v) = value(&s.report) {
                let id = id.to_string();
                family
                    .with_label_values(&[s.name.as_str(), s.address.as_str(), id.as_str()])
                    .set(v);
            }
        }
    }
    Ok(())
}

/// The `ntp_source_nts_*` families, for NTS sources only (none at all
/// without one).
fn add_nts_metrics(f: &Families, doc: &StatusDocument) -> prometheus::Result<()> {
    let nts: Vec<_> = doc
        .sources
        .iter()
        .enumerate()
        .filter_map(|(id, s)| Some((id.to_string(), s, s.nts.as_ref()?)))
        .collect();
    if nts.is_empty() {
        return Ok(());
    }
    let authenticated = f.gauges(
        "ntp_source_nts_authenticated",
        "Whether the last reply accepted from the NTS source was authenticated (1) or not (0)",
        &SOURCE_LABELS,
    )?;
    let cookies = f.gauges(
        "ntp_source_nts_cookies",
        "NTS cookies held for the source (at most 8)",
        &SOURCE_LABELS,
    )?;
    let key_exchanges = IntCounterVec::new(
        Opts::new(
            "ntp_source_nts_key_exchanges_total",
            "NTS-KE exchanges for the source by result",
        ),
        &["name", "address", "id", "result"],
    )?;
    f.add(key_exchanges.clone())?;
    let dropped = IntCounterVec::new(
        Opts::new(
            "ntp_source_nts_dropped_replies_total",
            "Replies from the NTS source dropped, by reason: unauthenticated (failed authentication) or replayed (not for the outstanding request)",
        ),
        &["name", "address", "id", "reason"],
    )?;
    f.add(dropped.clone())?;
    for (id, s, n) in &nts {
        let labels = [s.name.as_str(), s.address.as_str(), id.as_str()];
        authenticated
            .with_label_values(&labels)
            .set(flag(n.authenticated));
        cookies.with_label_values(&labels).set(n.cookies as f64);
        for (result, count) in [
            ("success", n.key_exchanges),
            ("failure", n.key_exchange_failures),
        ] {
            key_exchanges
                .with_label_values(&[labels[0], labels[1], labels[2], result])
                .inc_by(count);
        }
        for (reason, count) in [
            ("unauthenticated", n.dropped_unauthenticated),
            ("replayed", n.dropped_replayed),
        ] {
            dropped
                .with_label_values(&[labels[0], labels[1], labels[2], reason])
                .inc_by(count);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::control::{ServerStatus, SourceStatus};
    use crate::engine::system::{SourceReport, SourceState};

    fn source(name: &str, address: &str, selected: bool) -> SourceStatus {
        SourceStatus {
            address: address.into(),
            name: name.into(),
            report: SourceReport {
                index: 0,
                state: if selected {
                    SourceState::Selected
                } else {
                    SourceState::Combined
                },
                selected,
                reach: 0b1111_1011,
                poll: crate::engine::units::PollExponent::saturating(6),
                stratum: Some(2),
                last_offset_seconds: Some(0.0025),
                delay_seconds: Some(0.012),
                jitter_seconds: Some(0.0003),
                last_sample_age_seconds: Some(3.0),
                samples: 8,
                last_error: None,
            },
            nts: None,
        }
    }

    fn document() -> StatusDocument {
        StatusDocument {
            format_version: 1,
            synchronized: true,
            clock_control: false,
            offset_seconds: Some(0.000_125),
            offset_bound_seconds: Some(0.01),
            last_offset_seconds: Some(0.0001),
            frequency_ppm: -12.5,
            skew_ppm: 0.1,
            stratum: 3,
            leap: "insert_second".into(),
            reference_id: "192.0.2.1".into(),
            reference_address: Some("192.0.2.1:123".into()),
            root_delay_seconds: 0.0125,
            root_dispersion_seconds: 0.0005,
            last_update_age_seconds: Some(2.0),
            updates: 42,
            steps: 1,
            updates_since_step: Some(41),
            kernel_leap: Some("none".into()),
            uptime_seconds: 100.5,
            sources: vec![
                source("time.example.com", "192.0.2.1:123", true),
                source("odd \"name\"\\with\nnewline", "[2001:db8::1]:123", false),
            ],
            unresolved: vec![],
            server: Some(ServerStatus {
                listen: vec!["0.0.0.0:123".into()],
                received: 10,
                answered: 6,
                denied: 1,
                rate_limited: 2,
                kisses: 1,
                malformed: 1,
                nts: None,
            }),
        }
    }

    /// The sample lines of `text` (no comments), as (name{labels}, value).
    fn samples(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect("NAME VALUE");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn value(text: &str, key: &str) -> f64 {
        samples(text)
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no sample {key} in:\n{text}"))
            .1
            .parse()
            .expect("number")
    }

    #[test]
    fn system_metrics_use_ntpd_rs_names_and_ntp_sign() {
        let text = encode(&document()).expect("encodes");
        assert_eq!(value(&text, "ntp_system_synchronized"), 1.0);
        assert_eq!(value(&text, "ntp_system_clock_control"), 0.0);
        assert_eq!(
            value(&text, "ntp_system_offset_seconds"),
            -0.000_125,
            "NTP sign: the status document says the clock is ahead"
        );
        assert_eq!(value(&text, "ntp_system_frequency_ppm"), -12.5);
        assert_eq!(value(&text, "ntp_system_stratum"), 3.0);
        assert_eq!(value(&text, "ntp_system_root_delay_seconds"), 0.0125);
        assert_eq!(value(&text, "ntp_system_root_dispersion_seconds"), 0.0005);
        assert_eq!(value(&text, "ntp_system_leap_indicator"), 1.0);
        assert_eq!(value(&text, "ntp_system_steps_total"), 1.0);
        assert_eq!(value(&text, "ntp_system_updates_total"), 42.0);
        assert_eq!(
            value(
                &text,
                &format!(
                    "ntp_uptime_seconds{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            100.5
        );
        assert!(
            text.contains("# TYPE ntp_system_steps_total counter\n")
                && text.contains("# TYPE ntp_system_offset_seconds gauge\n")
                && text.contains("# HELP ntp_system_stratum Stratum of our clock\n"),
            "{text}"
        );
    }

    #[test]
    fn source_metrics_carry_name_address_and_id() {
        let text = encode(&document()).expect("encodes");
        let first = r#"{address="192.0.2.1:123",id="0",name="time.example.com"}"#;
        assert_eq!(
            value(&text, &format!("ntp_source_offset_seconds{first}")),
            -0.0025
        );
        assert_eq!(
            value(&text, &format!("ntp_source_delay_seconds{first}")),
            0.012
        );
        assert_eq!(
            value(&text, &format!("ntp_source_uncertainty_seconds{first}")),
            0.0003
        );
        assert_eq!(
            value(&text, &format!("ntp_source_poll_interval_seconds{first}")),
            64.0
        );
        assert_eq!(value(&text, &format!("ntp_source_reach{first}")), 251.0);
        assert_eq!(
            value(&text, &format!("ntp_source_unanswered_polls{first}")),
            0.0
        );
        assert_eq!(value(&text, &format!("ntp_source_selected{first}")), 1.0);
        assert_eq!(value(&text, &format!("ntp_source_stratum{first}")), 2.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let text = encode(&document()).expect("encodes");
        // The encoder sorts labels by name.
        let second = r#"{address="[2001:db8::1]:123",id="1",name="odd \"name\"\\with\nnewline"}"#;
        assert_eq!(value(&text, &format!("ntp_source_selected{second}")), 0.0);
        assert!(
            text.lines().all(|l| !l.contains("with\nnewline")),
            "a raw newline would split the sample line"
        );
    }

    #[test]
    fn server_counters_only_when_serving() {
        let text = encode(&document()).expect("encodes");
        for (name, want) in [
            ("ntp_server_received_packets_total", 10.0),
            ("ntp_server_accepted_packets_total", 6.0),
            ("ntp_server_denied_packets_total", 1.0),
            ("ntp_server_rate_limited_packets_total", 2.0),
            ("ntp_server_kod_packets_total", 1.0),
            ("ntp_server_ignored_packets_total", 1.0),
        ] {
            assert_eq!(value(&text, name), want, "{name}");
            assert!(text.contains(&format!("# TYPE {name} counter\n")), "{name}");
        }
        // Not serving NTS: no NTS server counters.
        assert!(!text.contains("ntp_server_nts_"), "{text}");
        let mut doc = document();
        doc.server = None;
        let text = encode(&doc).expect("encodes");
        assert!(!text.contains("ntp_server_"), "{text}");
    }

    #[test]
    fn nts_server_counters_only_when_serving_nts() {
        use crate::engine::server::ServerStatsReport;
        let report = ServerStatsReport {
            received: 20,
            answered: 15,
            ke_handshakes: 3,
            ke_failed: 4,
            ke_refused: 5,
            nts_received: 9,
            nts_answered: 6,
            nts_naks: 2,
            nts_dropped: 1,
            denied: 0,
            rate_limited: 0,
            kisses: 0,
            malformed: 0,
        };
        let mut doc = document();
        doc.server = Some(ServerStatus::new(
            vec!["127.0.0.1:123".into()],
            Some(vec!["127.0.0.1:4460".into()]),
            report,
        ));
        let text = encode(&doc).expect("encodes");
        for (name, want) in [
            ("ntp_server_received_packets_total", 20.0),
            ("ntp_server_nts_key_exchanges_total", 3.0),
            ("ntp_server_nts_key_exchange_failures_total", 4.0),
            ("ntp_server_nts_key_exchanges_refused_total", 5.0),
            ("ntp_server_nts_received_packets_total", 9.0),
            ("ntp_server_nts_accepted_packets_total", 6.0),
            ("ntp_server_nts_nak_packets_total", 2.0),
            ("ntp_server_nts_dropped_packets_total", 1.0),
        ] {
            assert_eq!(value(&text, name), want, "{name}");
            assert!(text.contains(&format!("# TYPE {name} counter\n")), "{name}");
        }
        // The status text says the same.
        let status = crate::engine::control::render_status(&doc);
        assert!(
            status.contains("NTS-KE on 127.0.0.1:4460: 3 key exchanges, 4 failed, 5 refused; NTS requests: 9, 6 answered, 2 NAKs, 1 dropped"),
            "{status}"
        );
    }

    #[test]
    fn unknown_values_are_left_out() {
        let mut doc = document();
        doc.offset_seconds = None;
        doc.sources.truncate(1);
        let r = &mut doc.sources[0].report;
        r.last_offset_seconds = None;
        r.delay_seconds = None;
        r.jitter_seconds = None;
        r.stratum = None;
        r.reach = 0;
        r.selected = false;
        let text = encode(&doc).expect("encodes");
        for absent in [
            "ntp_system_offset_seconds",
            "ntp_source_offset_seconds",
            "ntp_source_delay_seconds",
            "ntp_source_uncertainty_seconds",
            "ntp_source_stratum",
        ] {
            assert!(!text.contains(absent), "{absent} in:\n{text}");
        }
        let first = r#"{address="192.0.2.1:123",id="0",name="time.example.com"}"#;
        assert_eq!(value(&text, &format!("ntp_source_reach{first}")), 0.0);
        assert_eq!(
            value(&text, &format!("ntp_source_unanswered_polls{first}")),
            8.0
        );
    }

    #[test]
    fn nts_metrics_for_nts_sources_only() {
        let text = encode(&document()).expect("encodes");
        assert!(!text.contains("ntp_source_nts_"), "{text}");
        let mut doc = document();
        doc.sources[1].nts = Some(crate::engine::control::NtsSourceStatus {
            state: "established".into(),
            authenticated: true,
            cookies: 7,
            key_exchanges: 2,
            key_exchange_failures: 3,
            dropped_unauthenticated: 4,
            dropped_replayed: 5,
            ..Default::default()
        });
        let text = encode(&doc).expect("encodes");
        let second = r#"address="[2001:db8::1]:123",id="1",name="odd \"name\"\\with\nnewline""#;
        assert_eq!(
            value(&text, &format!("ntp_source_nts_authenticated{{{second}}}")),
            1.0
        );
        assert_eq!(
            value(&text, &format!("ntp_source_nts_cookies{{{second}}}")),
            7.0
        );
        for (key, want) in [
            (
                r#"ntp_source_nts_key_exchanges_total{ID,result="success"}"#,
                2.0,
            ),
            (
                r#"ntp_source_nts_key_exchanges_total{ID,result="failure"}"#,
                3.0,
            ),
            (
                r#"ntp_source_nts_dropped_replies_total{ID,reason="unauthenticated"}"#,
                4.0,
            ),
            (
                r#"ntp_source_nts_dropped_replies_total{ID,reason="replayed"}"#,
                5.0,
            ),
        ] {
            assert_eq!(value(&text, &key.replace("ID", second)), want, "{key}");
        }
        assert!(
            !text.contains(r#"ntp_source_nts_cookies{address="192.0.2.1:123""#),
            "no NTS samples for a source without NTS:\n{text}"
        );
    }

    #[test]
    fn unanswered_polls_count_from_the_newest_poll() {
        assert_eq!(unanswered_polls(0b1111_1111), 0);
        assert_eq!(unanswered_polls(0b1111_1110), 1);
        assert_eq!(unanswered_polls(0b0000_0100), 2);
        assert_eq!(unanswered_polls(0), 8);
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = encode(&document()).expect("encodes");
        let mut described: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                described.push(rest.split(' ').next().unwrap_or("").to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                assert_eq!(described.last().map(String::as_str), Some(name), "{line}");
                assert!(
                    name.starts_with("ntp_")
                        && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{name}"
                );
            }
        }
        assert!(described.len() >= 25, "{described:?}");
    }
}
