//! The engine's configuration file (YAML, what the `embedded` provider
//! renders and `timectl daemon --config FILE` reads): types with serde and
//! JSON Schema, loading with file:line:column errors, semantic checks, and
//! the merge of command-line flags over the file. Documented in
//! docs/engine-config.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::source::{MAX_POLL, MIN_POLL};

/// Default control socket (the systemd unit gives it its own directory).
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/timectl/engine.sock";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineConfig {
    /// Servers and pools to synchronise to.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Fewest agreeing sources needed before the clock is updated.
    #[serde(default = "default_min_sources")]
    pub min_sources: usize,
    /// When to step instead of slewing.
    #[serde(default)]
    pub step: StepConfig,
    /// Answer NTP clients; absent: client only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeConfig>,
    /// Whether the engine may change the system clock. `false` computes
    /// everything and never touches the clock (like `chronyd -x`).
    #[serde(default = "default_true")]
    pub clock_control: bool,
    /// Where the frequency estimate is kept across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_file: Option<PathBuf>,
    /// Unix socket answering `timectl status` (and `step_now`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP (docs/metrics.md); absent: no
    /// endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// PEM file of CA certificates trusted for NTS-KE servers (chrony's
    /// `ntstrustedcerts`); absent: the system's CA store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nts_trusted_certs: Option<PathBuf>,
}

/// The Prometheus endpoint: `GET /metrics` on `listen`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ADDR:PORT` to listen on, e.g. `127.0.0.1:9975`.
    pub listen: SocketAddr,
    /// Allow an address other than loopback. The endpoint has no
    /// authentication: only set this with a firewall in front of it.
    #[serde(default)]
    pub allow_remote: bool,
}

/// The default metrics port (the one ntpd-rs's exporter uses).
pub const DEFAULT_METRICS_PORT: u16 = 9975;

/// Why an address is refused for the metrics endpoint. The endpoint has no
/// authentication, so it stays on loopback unless the operator allows more
/// (`allowRemote: true` here and in the desired-state file,
/// `--metrics-allow-remote` on the command line: each caller names its own
/// remedy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsListenProblem {
    PortZero(SocketAddr),
    NotLoopback(SocketAddr),
}

impl std::fmt::Display for MetricsListenProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsListenProblem::PortZero(a) => write!(
                f,
                "metrics address {a} has port 0: expected ADDR:PORT with a port 1..65535, like 127.0.0.1:{DEFAULT_METRICS_PORT}"
            ),
            MetricsListenProblem::NotLoopback(a) => write!(
                f,
                "metrics address {a} is not a loopback address (127.0.0.1, ::1): the endpoint has no authentication"
            ),
        }
    }
}

/// The remedy for [`MetricsListenProblem::NotLoopback`] in a YAML file.
pub const ALLOW_REMOTE_HINT: &str = "set `allowRemote: true` to serve it beyond this host, and restrict who reaches it in the firewall";

/// Checks a metrics address: a port, and loopback unless `allow_remote`.
pub fn check_metrics_listen(
    listen: SocketAddr,
    allow_remote: bool,
) -> Result<(), MetricsListenProblem> {
    if listen.port() == 0 {
        return Err(MetricsListenProblem::PortZero(listen));
    }
    if !listen.ip().is_loopback() && !allow_remote {
        return Err(MetricsListenProblem::NotLoopback(listen));
    }
    Ok(())
}

impl MetricsListenProblem {
    /// The problem followed by `remedy` where one applies.
    pub fn with_remedy(&self, remedy: &str) -> String {
        match self {
            MetricsListenProblem::NotLoopback(_) => format!("{self}; {remedy}"),
            MetricsListenProblem::PortZero(_) => self.to_string(),
        }
    }
}

fn default_min_sources() -> usize {
    1
}
fn default_true() -> bool {
    true
}
fn default_port() -> u16 {
    123
}
fn default_minpoll() -> i8 {
    6
}
fn default_maxpoll() -> i8 {
    10
}
fn default_max_sources() -> usize {
    4
}
fn is_false(b: &bool) -> bool {
    !*b
}
/// The NTS-KE port (RFC 8915).
pub const DEFAULT_NTS_KE_PORT: u16 = 4460;
fn default_nts_port() -> u16 {
    DEFAULT_NTS_KE_PORT
}
fn is_default_nts_port(p: &u16) -> bool {
    *p == DEFAULT_NTS_KE_PORT
}

/// One `server` (a single host) or `pool` (a name resolving to several).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceConfig {
    /// Address or host name of one server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Host name of a pool; up to `maxSources` of its addresses are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Send a burst of four requests at start (and after unreachability).
    #[serde(default = "default_true")]
    pub iburst: bool,
    /// Shortest poll interval, as a power of two seconds (-4..=17).
    #[serde(default = "default_minpoll")]
    pub minpoll: i8,
    /// Longest poll interval, as a power of two seconds (-4..=17).
    #[serde(default = "default_maxpoll")]
    pub maxpoll: i8,
    /// Prefer this source as system peer when it is a truechimer.
    #[serde(default)]
    pub prefer: bool,
    /// For a pool: how many of its addresses to use.
    #[serde(default = "default_max_sources")]
    pub max_sources: usize,
    /// Authenticate this source with NTS (RFC 8915): keys and cookies come
    /// from an NTS-KE exchange over TLS on `ntsPort`; the NTP port is the
    /// one the KE server names (else `port`). Replies that do not
    /// authenticate are dropped.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nts: bool,
    /// TCP port of the NTS-KE server (chrony's `ntsport`).
    #[serde(
        default = "default_nts_port",
        skip_serializing_if = "is_default_nts_port"
    )]
    pub nts_port: u16,
}

impl SourceConfig {
    pub fn server(host: &str, port: u16) -> SourceConfig {
        SourceConfig {
            server: Some(host.to_owned()),
            pool: None,
            port,
            iburst: true,
            minpoll: default_minpoll(),
            maxpoll: default_maxpoll(),
            prefer: false,
            max_sources: default_max_sources(),
            nts: false,
            nts_port: default_nts_port(),
        }
    }

    /// The host name or address, whichever kind this is.
    pub fn host(&self) -> &str {
        self.server
            .as_deref()
            .or(self.pool.as_deref())
            .unwrap_or("")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepConfig {
    /// Step when the offset exceeds this many seconds.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Only during the first `limit` clock updates; -1: at any update.
    #[serde(default = "default_limit")]
    pub limit: i32,
}

fn default_threshold() -> f64 {
    1.0
}
fn default_limit() -> i32 {
    3
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            threshold: default_threshold(),
            limit: default_limit(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServeConfig {
    /// Addresses to answer on (default `0.0.0.0:123` and `[::]:123`).
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Client networks allowed; empty: every address.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allow: Vec<IpNet>,
    /// Client networks refused (wins over `allow`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub deny: Vec<IpNet>,
    /// Per-client rate limit; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// Stratum to serve while unsynchronised (e.g. 10 for an isolated
    /// network); absent: unsynchronised replies (LI=3, stratum 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_stratum: Option<u8>,
    /// Serve NTS (RFC 8915): an NTS-KE server over TLS and NTS-protected
    /// replies on the NTP `listen` addresses; absent: plain NTP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nts: Option<NtsServeConfig>,
}

/// The NTS server: TLS certificate and key, where NTS-KE listens, and
/// where the cookie keys are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NtsServeConfig {
    /// PEM certificate chain, the server's own certificate first
    /// (chrony's `ntsservercert`).
    pub certificate: PathBuf,
    /// PEM private key of that certificate (chrony's `ntsserverkey`).
    pub key: PathBuf,
    /// TCP addresses for NTS-KE (default `0.0.0.0:4460` and `[::]:4460`).
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Directory where the cookie keys are kept, so a restart does not
    /// invalidate clients' cookies (chrony's `ntsdumpdir`); absent: keys
    /// live in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_dir: Option<PathBuf>,
    /// NTS-KE connections handled at once; more are closed at once
    /// (each connection has 5 s for handshake and exchange).
    #[serde(default = "default_nts_max_connections")]
    pub max_connections: usize,
}

fn default_nts_max_connections() -> usize {
    100
}

/// Token bucket per client address: on average one request per
/// `interval` seconds, bursts of up to `burst`. Excess requests get a
/// kiss-o'-death RATE (at most one per interval), the rest are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default = "default_interval")]
    pub interval: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_interval() -> f64 {
    2.0
}
fn default_burst() -> u32 {
    8
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            interval: default_interval(),
            burst: default_burst(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl EngineConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<EngineConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        EngineConfig::parse(&text, path)
    }

    /// Parses and checks YAML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<EngineConfig, ConfigError> {
        let config: EngineConfig = if text.trim().is_empty() {
            EngineConfig {
                min_sources: 1,
                clock_control: true,
                ..EngineConfig::default()
            }
        } else {
            serde_saphyr::from_str(text).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                ConfigError::Parse {
                    path: path.to_owned(),
                    line,
                    column,
                    message: first_line(&e.to_string()),
                }
            })?
        };
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Semantic checks serde cannot express. Messages name the field.
    pub fn validate(&self) -> Result<(), String> {
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("sources[{i}]");
            match (&s.server, &s.pool) {
                (Some(_), Some(_)) => {
                    return Err(format!("{at}: give either `server` or `pool`, not both"));
                }
                (None, None) => {
                    return Err(format!("{at}: expected `server: HOST` or `pool: HOST`"));
                }
                _ => {}
            }
            if s.host().trim().is_empty() {
                return Err(format!("{at}: empty host name"));
            }
            for (name, v) in [("minpoll", s.minpoll), ("maxpoll", s.maxpoll)] {
                if !(MIN_POLL..=MAX_POLL).contains(&v) {
                    return Err(format!(
                        "{at}.{name}: {v} is outside {MIN_POLL}..={MAX_POLL}"
                    ));
                }
            }
            if s.minpoll > s.maxpoll {
                return Err(format!(
                    "{at}: minpoll {} is above maxpoll {}",
                    s.minpoll, s.maxpoll
                ));
            }
            if s.port == 0 {
                return Err(format!("{at}.port: 0 is not a port"));
            }
            if s.nts_port == 0 {
                return Err(format!("{at}.ntsPort: 0 is not a port"));
            }
            if s.max_sources == 0 || s.max_sources > 16 {
                return Err(format!(
                    "{at}.maxSources: expected 1..=16, found {}",
                    s.max_sources
                ));
            }
        }
        if self.min_sources == 0 {
            return Err("minSources: expected at least 1".into());
        }
        if self.step.threshold.is_nan()
            || self.step.threshold <= 0.0
            || !self.step.threshold.is_finite()
        {
            return Err(format!(
                "step.threshold: expected a positive number of seconds, found {}",
                self.step.threshold
            ));
        }
        if let Some(serve) = &self.serve {
            if let Some(s) = serve.local_stratum
                && !(1..=15).contains(&s)
            {
                return Err(format!("serve.localStratum: expected 1..=15, found {s}"));
            }
            if let Some(r) = serve.rate_limit
                && (r.interval.is_nan() || r.interval <= 0.0 || r.burst == 0)
            {
                return Err(
                    "serve.rateLimit: interval must be positive and burst at least 1".into(),
                );
            }
            if let Some(nts) = &serve.nts {
                if nts.max_connections == 0 {
                    return Err("serve.nts.maxConnections: expected at least 1".into());
                }
                if let Some(a) = nts.listen.iter().find(|a| a.port() == 0) {
                    return Err(format!("serve.nts.listen: {a} has port 0"));
                }
            }
        }
        if let Some(m) = &self.metrics
            && let Err(problem) = check_metrics_listen(m.listen, m.allow_remote)
        {
            return Err(format!(
                "metrics.listen: {}",
                problem.with_remedy(ALLOW_REMOTE_HINT)
            ));
        }
        Ok(())
    }

    /// The JSON Schema of the file, for editors and the provider.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(EngineConfig)).unwrap_or_default()
    }
}

/// The first line of a serde-saphyr message without its own "error: line
/// N column M:" prefix (we print the location as file:line:column).
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s);
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((loc, rest)) if loc.contains("column") => rest.to_owned(),
        _ => line.to_owned(),
    }
}

/// Splits `HOST[:PORT]` (IPv6 as `[ADDR]:PORT` or a bare address).
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok((s.to_owned(), 123));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return Ok((inner.to_owned(), 123));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{s:?}: expected HOST[:PORT] with a port 1..65535"))?;
            if port == 0 {
                return Err(format!("{s:?}: port 0"));
            }
            Ok((host.to_owned(), port))
        }
        None if !s.is_empty() => Ok((s.to_owned(), 123)),
        _ => Err(format!("{s:?}: expected HOST[:PORT]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../docs/engine-config.example.yaml");

    #[test]
    fn documented_example_parses() {
        let c = EngineConfig::parse(EXAMPLE, Path::new("example.yaml")).expect("example is valid");
        assert_eq!(c.sources.len(), 3);
        assert_eq!(c.sources[0].port, 123);
        assert_eq!(c.sources[1].pool.as_deref(), Some("2.debian.pool.ntp.org"));
        assert_eq!(c.sources[1].max_sources, 4);
        assert_eq!(c.min_sources, 2);
        let serve = c.serve.expect("serves");
        assert_eq!(
            serve.allow,
            vec!["10.0.0.0/8".parse::<IpNet>().expect("net")]
        );
        assert_eq!(
            serve.rate_limit,
            Some(RateLimitConfig {
                interval: 2.0,
                burst: 8
            })
        );
        assert!(c.clock_control);
    }

    #[test]
    fn defaults() {
        let c = EngineConfig::parse("sources:\n  - server: 127.0.0.1\n", Path::new("c.yaml"))
            .expect("valid");
        let s = &c.sources[0];
        assert_eq!(
            (s.port, s.iburst, s.minpoll, s.maxpoll, s.prefer),
            (123, true, 6, 10, false)
        );
        assert_eq!(
            c.step,
            StepConfig {
                threshold: 1.0,
                limit: 3
            }
        );
        assert!(c.clock_control);
        assert_eq!(c.serve, None);
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let text = "sources:\n  - server: a.example\n    ibust: true\n";
        let e = EngineConfig::parse(text, Path::new("/etc/timectl/engine.yaml")).expect_err("typo");
        let msg = e.to_string();
        assert!(msg.starts_with("/etc/timectl/engine.yaml:3:5:"), "{msg}");
        assert!(
            msg.contains("unknown field `ibust`, expected one of"),
            "{msg}"
        );
        assert!(
            !msg.contains("error: line"),
            "location printed twice: {msg}"
        );
    }

    #[test]
    fn wrong_type_is_located() {
        let e = EngineConfig::parse("minSources: many\n", Path::new("c.yaml")).expect_err("type");
        assert!(e.to_string().starts_with("c.yaml:1:"), "{e}");
    }

    #[test]
    fn semantic_errors() {
        let bad = [
            ("sources:\n  - port: 123\n", "expected `server: HOST`"),
            ("sources:\n  - server: a\n    pool: b\n", "not both"),
            (
                "sources:\n  - server: a\n    minpoll: 8\n    maxpoll: 6\n",
                "above maxpoll",
            ),
            (
                "sources:\n  - server: a\n    minpoll: 30\n    maxpoll: 31\n",
                "outside",
            ),
            ("minSources: 0\n", "minSources"),
            ("step: { threshold: -1 }\n", "step.threshold"),
            ("serve: { localStratum: 16 }\n", "localStratum"),
            ("serve: { rateLimit: { burst: 0 } }\n", "rateLimit"),
            (
                "metrics: { listen: \"0.0.0.0:9975\" }\n",
                "metrics.listen: metrics address 0.0.0.0:9975 is not a loopback address",
            ),
            ("metrics: { listen: \"127.0.0.1:0\" }\n", "port 0"),
        ];
        for (text, want) in bad {
            let e = EngineConfig::parse(text, Path::new("c.yaml")).expect_err(text);
            assert!(e.to_string().contains(want), "{text:?} gave {e}");
        }
    }

    #[test]
    fn metrics_endpoint() {
        let c = EngineConfig::parse("metrics: { listen: 127.0.0.1:9975 }\n", Path::new("c.yaml"))
            .expect("loopback is fine");
        assert_eq!(
            c.metrics,
            Some(MetricsConfig {
                listen: "127.0.0.1:9975".parse().expect("addr"),
                allow_remote: false
            })
        );
        let c = EngineConfig::parse("metrics:\n  listen: \"[::1]:9100\"\n", Path::new("c.yaml"))
            .expect("IPv6 loopback");
        assert_eq!(c.metrics.map(|m| m.listen.port()), Some(9100));
        let c = EngineConfig::parse(
            "metrics: { listen: \"[::]:9975\", allowRemote: true }\n",
            Path::new("c.yaml"),
        )
        .expect("remote when asked for");
        assert!(c.metrics.is_some_and(|m| m.allow_remote));
        assert_eq!(
            EngineConfig::parse("", Path::new("c.yaml"))
                .expect("empty")
                .metrics,
            None
        );
        let e = EngineConfig::parse(
            "sources: []\nmetrics:\n  listen: localhost:9975\n",
            Path::new("/etc/timectl/engine.yaml"),
        )
        .expect_err("not an address");
        assert!(
            e.to_string().starts_with("/etc/timectl/engine.yaml:3:"),
            "located: {e}"
        );
        let e = EngineConfig::parse(
            "metrics: { listen: 127.0.0.1:9975, port: 1 }\n",
            Path::new("c.yaml"),
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("unknown field `port`"), "{e}");
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("127.0.0.1:11123"),
            Ok(("127.0.0.1".into(), 11123))
        );
        assert_eq!(
            parse_host_port("ntp.example.com"),
            Ok(("ntp.example.com".into(), 123))
        );
        assert_eq!(
            parse_host_port("ntp.example.com:4123"),
            Ok(("ntp.example.com".into(), 4123))
        );
        assert_eq!(parse_host_port("[::1]:4123"), Ok(("::1".into(), 4123)));
        assert_eq!(parse_host_port("::1"), Ok(("::1".into(), 123)));
        assert!(parse_host_port("host:notaport").is_err());
        assert!(parse_host_port("").is_err());
    }

    #[test]
    fn schema_mentions_fields() {
        let schema = EngineConfig::json_schema().to_string();
        for key in [
            "minSources",
            "clockControl",
            "driftFile",
            "controlSocket",
            "localStratum",
            "maxSources",
            "allowRemote",
        ] {
            assert!(schema.contains(key), "{key} missing from schema");
        }
    }
}
