//! The desired-state file: its types (serde + JSON Schema), loading with
//! source positions, and the semantic checks that YAML types alone cannot
//! express. Nothing here touches a host.
//!
//! Every error names the file, line and column, and says what was expected.
//! Per-value checks (durations, addresses, networks) run while the YAML is
//! deserialised, so the loader reports them at the value itself; checks that
//! relate several values run afterwards on positions kept with
//! [`serde_saphyr::Spanned`].

mod checks;
mod error;
pub mod values;

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub use error::{Diagnostic, SpecError};
pub use values::{Cidr, ConfigPath, Duration, HostName, ListenAddr, Secret};

/// The whole file: one `timesync` document.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "timectl desired state")]
pub struct SpecFile {
    /// How this host keeps time.
    pub timesync: TimeSync,
}

/// Which daemon keeps time on this host, from which sources, and how.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeSync {
    /// The time daemon: timectl's own engine (default), chrony, ntpd
    /// (ntpsec on Debian 11 and later and on Fedora, classic ntp elsewhere),
    /// or systemd-timesyncd (a client only, Debian family).
    #[serde(default)]
    #[schemars(with = "Option<ProviderKind>")]
    pub provider: Option<Spanned<ProviderKind>>,

    /// NTP servers and pools to synchronise with.
    #[schemars(with = "Vec<Source>")]
    pub sources: Spanned<Vec<Source>>,

    /// How many sources must agree before the clock is updated (default 1).
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub min_sources: Option<Spanned<u32>>,

    /// When to step the clock instead of slewing it.
    #[serde(default)]
    pub step: Option<Step>,

    /// Serve time to other hosts. Absent: client only.
    #[serde(default)]
    pub serve: Option<Serve>,

    /// Firewall backend for opening UDP 123 (default `auto`: firewalld when it
    /// runs, else nftables when present, else nothing).
    #[serde(default)]
    pub firewall: FirewallMode,

    /// Open UDP 123 in the firewall. Default: open when `serve` is set.
    #[serde(default)]
    pub open_firewall: Option<bool>,

    /// What to do with other time daemons (only one may own the clock):
    /// `disable` (stop and disable, default), `stop` (stop only), `mask`
    /// (stop, disable and mask), `fail` (refuse to plan).
    #[serde(default)]
    pub conflicts: ConflictPolicy,

    /// `managed`: timectl writes the whole config file. `edit`: keep the
    /// existing file, comment out its old server/pool/peer lines and insert
    /// the new sources where the first old one stood.
    #[serde(default)]
    pub config: ConfigMode,

    /// What "synchronised" means after apply; absent: no verification.
    #[serde(default)]
    pub verify: Option<Verify>,

    /// Keep the hardware clock in sync (chrony `rtcsync`). Default true.
    #[serde(default = "default_true")]
    pub rtcsync: bool,

    /// Drift file path (default: the distribution's usual path): absolute,
    /// without whitespace, control characters or `#`.
    #[serde(default)]
    #[schemars(with = "Option<ConfigPath>")]
    pub driftfile: Option<Spanned<ConfigPath>>,

    /// PEM file of the CA certificates trusted for NTS-KE servers
    /// (chrony's `ntstrustedcerts`). Absent: the system's CA store.
    #[serde(default)]
    #[schemars(with = "Option<ConfigPath>")]
    pub nts_trusted_certs: Option<Spanned<ConfigPath>>,

    /// Symmetric keys for authenticated sources. Key material is never shown.
    #[serde(default)]
    pub keys: Vec<Key>,

    /// Lines appended verbatim to the daemon's config file (chrony, ntpd;
    /// for timesyncd, `[Time]` settings at the end of timectl's drop-in):
    /// the one value timectl does not check directive by directive. It may
    /// hold several lines and tabs, but no other control characters.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub extra_config: Option<Spanned<String>>,

    /// Let the daemon adjust the system clock (default true). `false` runs it
    /// like `chronyd -x`: it computes and serves but never touches the clock;
    /// for containers, test hosts and pure servers.
    #[serde(default = "default_true")]
    pub clock_control: bool,

    /// Serve Prometheus metrics from the embedded engine over HTTP
    /// (docs/metrics.md). Absent: no endpoint. The firewall is never
    /// opened for it.
    #[serde(default)]
    pub metrics: Option<Metrics>,
}

fn default_true() -> bool {
    true
}

/// The time daemon that owns the clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// timectl's own NTP engine (`timectl daemon`).
    #[default]
    Embedded,
    /// chrony (chronyd).
    Chrony,
    /// ntpd (ntpsec or classic ntp, by distribution).
    Ntpd,
    /// systemd-timesyncd: an SNTP client only (no serving, keys or NTS).
    Timesyncd,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Embedded => "embedded",
            ProviderKind::Chrony => "chrony",
            ProviderKind::Ntpd => "ntpd",
            ProviderKind::Timesyncd => "timesyncd",
        }
    }
}

/// One NTP source: exactly one of `server` or `pool`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    /// A single NTP server (host name or address).
    #[serde(default)]
    #[schemars(with = "Option<HostName>")]
    pub server: Option<Spanned<HostName>>,
    /// A DNS pool that resolves to several servers.
    #[serde(default)]
    #[schemars(with = "Option<HostName>")]
    pub pool: Option<Spanned<HostName>>,
    /// UDP port of the server (default 123).
    #[serde(default)]
    pub port: Option<u16>,
    /// Send a burst of requests at start for a quick first sync (default true).
    #[serde(default = "default_true")]
    pub iburst: bool,
    /// Prefer this source over others of similar quality.
    #[serde(default)]
    pub prefer: bool,
    /// Authenticate with Network Time Security, RFC 8915 (embedded,
    /// chrony). Replies that do not authenticate are never used.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub nts: Option<Spanned<bool>>,
    /// TCP port of the NTS-KE server (default 4460; chrony's `ntsport`).
    /// Only with `nts: true`.
    #[serde(default)]
    #[schemars(with = "Option<u16>")]
    pub nts_port: Option<Spanned<u16>>,
    /// Minimum poll interval as a power of two seconds.
    #[serde(default)]
    #[schemars(with = "Option<i8>")]
    pub minpoll: Option<Spanned<i8>>,
    /// Maximum poll interval as a power of two seconds.
    #[serde(default)]
    #[schemars(with = "Option<i8>")]
    pub maxpoll: Option<Spanned<i8>>,
    /// For a pool: how many of its servers to use (default 4).
    #[serde(default)]
    #[schemars(with = "Option<u8>")]
    pub max_sources: Option<Spanned<u8>>,
    /// Symmetric key id (from `keys`) to authenticate this source.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub key: Option<Spanned<u32>>,
}

impl Source {
    /// The host name of the server or pool. Valid only after validation,
    /// which guarantees exactly one of the two.
    pub fn host(&self) -> &HostName {
        let spanned = self.server.as_ref().or(self.pool.as_ref());
        // Invariant: Spec::parse rejects a source with neither key, and no
        // Spec exists without passing it.
        &spanned
            .expect("validated source has a server or a pool")
            .value
    }

    pub fn is_pool(&self) -> bool {
        self.server.is_none() && self.pool.is_some()
    }

    /// How many servers this source contributes at most.
    pub fn max_count(&self) -> u32 {
        if self.is_pool() {
            self.max_sources.as_ref().map_or(4, |m| u32::from(m.value))
        } else {
            1
        }
    }
}

/// When the clock may be stepped.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    /// Step when the offset is larger than this (default 1s).
    #[serde(default = "default_step_threshold")]
    pub threshold: Duration,
    /// Step only in the first N updates; -1 means always (default 3).
    #[serde(default = "default_step_limit")]
    #[schemars(with = "i32")]
    pub limit: Spanned<i32>,
    /// Step the clock once during apply ("force a sync").
    #[serde(default)]
    pub now: bool,
}

fn default_step_threshold() -> Duration {
    Duration::from_secs(1)
}

fn default_step_limit() -> Spanned<i32> {
    Spanned::new(3, unknown_location(), unknown_location())
}

fn unknown_location() -> serde_saphyr::Location {
    serde_saphyr::Location::UNKNOWN
}

impl Default for Step {
    fn default() -> Self {
        Step {
            threshold: default_step_threshold(),
            limit: default_step_limit(),
            now: false,
        }
    }
}

/// Serving time to other hosts.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Serve {
    /// Networks allowed to query this host.
    #[schemars(with = "Vec<Cidr>")]
    pub allow: Spanned<Vec<Cidr>>,
    /// Networks refused even when inside an allowed one.
    #[serde(default)]
    pub deny: Vec<Cidr>,
    /// Local addresses to serve on (UDP 123). Absent: every address.
    /// chrony takes at most one IPv4 and one IPv6 address.
    #[serde(default)]
    #[schemars(with = "Vec<std::net::IpAddr>")]
    pub listen: Vec<Spanned<std::net::IpAddr>>,
    /// Limit how often one client may query (default true).
    #[serde(default = "default_true")]
    pub rate_limit: bool,
    /// Serve time at this stratum even when not synchronised (an isolated
    /// LAN's reference). Absent: serve only while synchronised.
    #[serde(default)]
    #[schemars(with = "Option<u8>")]
    pub local_stratum: Option<Spanned<u8>>,
    /// Serve NTS (RFC 8915) too: NTS-KE on TCP 4460 with this certificate,
    /// and NTS-protected replies on UDP 123 (embedded, chrony). The
    /// firewall step opens TCP 4460 as well.
    #[serde(default)]
    pub nts: Option<ServeNts>,
}

/// The certificate and key an NTS server presents to its clients.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServeNts {
    /// PEM certificate chain, the server's certificate first (chrony's
    /// `ntsservercert`).
    #[schemars(with = "ConfigPath")]
    pub certificate: Spanned<ConfigPath>,
    /// PEM private key of that certificate (chrony's `ntsserverkey`).
    #[schemars(with = "ConfigPath")]
    pub key: Spanned<ConfigPath>,
}

/// The embedded engine's Prometheus endpoint.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metrics {
    /// `ADDR:PORT` to serve `GET /metrics` on, e.g. `127.0.0.1:9975`. A
    /// loopback address unless `allowRemote` is true.
    #[schemars(with = "ListenAddr")]
    pub listen: Spanned<ListenAddr>,
    /// Allow an address other than loopback (default false). The endpoint
    /// has no authentication: restrict who reaches it in the firewall.
    #[serde(default)]
    pub allow_remote: bool,
}

/// What a successful apply must show.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Verify {
    /// The daemon must report itself synchronised (default true).
    #[serde(default = "default_true")]
    pub synchronized: bool,
    /// How long to wait for it (default 60s).
    #[serde(default = "default_within")]
    pub within: Duration,
    /// Largest acceptable |offset| (default: no bound).
    #[serde(default)]
    pub max_offset: Option<Duration>,
    /// Undo the apply when verification fails (default true: the host is
    /// left as it was). `false` keeps the new configuration and only
    /// reports the failure, e.g. for a first install whose upstream is
    /// slow to answer.
    #[serde(default = "default_true")]
    pub rollback: bool,
}

fn default_within() -> Duration {
    Duration::from_secs(60)
}

/// A symmetric key for authenticated NTP.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Key {
    /// Key number (1 to 65534).
    #[schemars(with = "u32")]
    pub id: Spanned<u32>,
    /// Digest algorithm.
    #[serde(rename = "type", default)]
    pub kind: KeyType,
    /// The key material (ASCII, or HEX:... for hexadecimal).
    pub secret: Secret,
}

/// Digest algorithm of a symmetric key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum KeyType {
    #[default]
    SHA256,
    SHA1,
    SHA512,
    MD5,
    AES128CMAC,
}

impl KeyType {
    pub fn name(self) -> &'static str {
        match self {
            KeyType::SHA256 => "SHA256",
            KeyType::SHA1 => "SHA1",
            KeyType::SHA512 => "SHA512",
            KeyType::MD5 => "MD5",
            KeyType::AES128CMAC => "AES128CMAC",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FirewallMode {
    /// firewalld when it runs (or is configured on an offline root), else
    /// nftables when installed, else nothing.
    #[default]
    Auto,
    Firewalld,
    Nftables,
    /// Leave the firewall alone.
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    /// Stop and disable other time daemons.
    #[default]
    Disable,
    /// Stop them but leave their boot-time enablement alone.
    Stop,
    /// Stop, disable and mask them so nothing can start them.
    Mask,
    /// Refuse to plan while another time daemon is present and active or enabled.
    Fail,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConfigMode {
    /// timectl owns the whole config file.
    #[default]
    Managed,
    /// Minimal edit of the existing file.
    Edit,
}

/// A loaded and validated desired-state file.
pub struct Spec {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// The text as read, kept so errors can quote it and saved plans can
    /// carry it.
    pub source: String,
    pub timesync: TimeSync,
}

// The source text may hold key material, so Debug leaves it out.
impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("path", &self.path)
            .field("timesync", &self.timesync)
            .finish_non_exhaustive()
    }
}

impl Spec {
    /// Read, parse and validate a desired-state file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        Spec::parse(path, read_text(path)?)
    }

    /// Parse and validate bytes (a file's content): text that is not UTF-8
    /// is an error at the line and column of its first bad byte.
    pub fn parse_bytes(path: &Path, bytes: Vec<u8>) -> Result<Spec, SpecError> {
        Spec::parse(path, utf8_text(path, bytes)?)
    }

    /// Parse and validate text; `path` is used only in messages.
    pub fn parse(path: &Path, text: String) -> Result<Spec, SpecError> {
        let name = path.display().to_string();
        let file: SpecFile = serde_saphyr::from_str(&text)
            .map_err(|e| SpecError::Invalid(vec![Diagnostic::from_yaml(&name, &text, &e)]))?;
        let spec = Spec {
            path: path.to_path_buf(),
            source: text,
            timesync: file.timesync,
        };
        let problems = spec.check();
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(SpecError::Invalid(problems))
        }
    }

    pub fn provider(&self) -> ProviderKind {
        self.timesync
            .provider
            .as_ref()
            .map(|p| p.value)
            .unwrap_or_default()
    }

    pub fn min_sources(&self) -> u32 {
        self.timesync.min_sources.as_ref().map_or(1, |m| m.value)
    }

    /// Whether UDP 123 must be open.
    pub fn wants_open_port(&self) -> bool {
        self.timesync
            .open_firewall
            .unwrap_or(self.timesync.serve.is_some())
    }

    /// Whether this host serves NTS (`serve.nts`), so TCP 4460 must be open
    /// too when UDP 123 is.
    pub fn serves_nts(&self) -> bool {
        self.timesync
            .serve
            .as_ref()
            .is_some_and(|s| s.nts.is_some())
    }

    /// A diagnostic at a position of this spec's text.
    pub fn diagnostic(
        &self,
        at: &serde_saphyr::Location,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::at(
            &self.path.display().to_string(),
            &self.source,
            at,
            message.into(),
        )
    }
}

/// Why the embedded engine takes no `extraConfig`.
pub const EMBEDDED_EXTRA_CONFIG: &str = "extraConfig is not supported with the embedded engine (its config is a YAML file timectl owns): remove it, or use provider chrony";

/// A file's content as text. Not UTF-8: an error at the line and column
/// of the first bad byte.
pub fn read_text(path: &Path) -> Result<String, SpecError> {
    let bytes = std::fs::read(path).map_err(|e| SpecError::Io {
        path: path.to_path_buf(),
        cause: e,
    })?;
    utf8_text(path, bytes)
}

fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, SpecError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let bad = e.utf8_error().valid_up_to();
        let before = &bytes[..bad];
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        // Valid UTF-8 up to `bad`: the column counts characters.
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count() as u64
            + 1;
        let lossy = String::from_utf8_lossy(bytes);
        SpecError::Invalid(vec![Diagnostic::new(
            &path.display().to_string(),
            &lossy,
            line,
            column,
            format!(
                "invalid UTF-8 (byte 0x{:02x}): expected a UTF-8 text file",
                bytes[bad]
            ),
        )])
    })
}

/// The JSON Schema of the desired-state file, as `timectl schema` prints it.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(SpecFile);
    schema.to_value()
}

#[cfg(test)]
mod tests;
