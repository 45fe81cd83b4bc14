//! What the providers share: config-file lines built from typed, validated
//! values (source lines, serving, keys), the template context every
//! provider starts from, and rendering of the built-in templates.
//!
//! Nothing a user wrote reaches a config file as raw text except
//! `extraConfig` (the deliberate exception, checked for control characters
//! at spec load): host names, networks, addresses, paths, key ids and
//! secrets are typed values that validated themselves when the spec was
//! loaded, and the spec's own path, which is only known at run time, is
//! escaped before it goes into a comment.

use std::fmt;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

use crate::facts::DaemonPaths;
use crate::spec::{Cidr, ConfigPath, HostName, Source, Spec};

/// The config-file dialect a source line is written in: chrony.conf and
/// ntp.conf share the `server`/`pool` syntax, but ntpd has no `port` and
/// no per-pool `maxsources`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    Chrony,
    Ntpd,
}

/// `server` or `pool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Directive {
    Server,
    Pool,
}

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Directive::Server => "server",
            Directive::Pool => "pool",
        })
    }
}

/// One option after the host of a source line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SourceOption {
    Port(u16),
    Iburst,
    Prefer,
    Nts,
    NtsPort(u16),
    Key(u32),
    MinPoll(i8),
    MaxPoll(i8),
    MaxSources(u8),
}

impl fmt::Display for SourceOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceOption::Port(p) => write!(f, "port {p}"),
            SourceOption::Iburst => f.write_str("iburst"),
            SourceOption::Prefer => f.write_str("prefer"),
            SourceOption::Nts => f.write_str("nts"),
            SourceOption::NtsPort(p) => write!(f, "ntsport {p}"),
            SourceOption::Key(k) => write!(f, "key {k}"),
            SourceOption::MinPoll(p) => write!(f, "minpoll {p}"),
            SourceOption::MaxPoll(p) => write!(f, "maxpoll {p}"),
            SourceOption::MaxSources(m) => write!(f, "maxsources {m}"),
        }
    }
}

/// A `server` or `pool` line of chrony.conf or ntp.conf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SourceLine {
    pub directive: Directive,
    pub host: HostName,
    pub options: Vec<SourceOption>,
}

impl SourceLine {
    pub fn new(s: &Source, dialect: Dialect) -> SourceLine {
        let chrony = dialect == Dialect::Chrony;
        let flags = [
            (s.iburst, SourceOption::Iburst),
            (s.prefer, SourceOption::Prefer),
            (s.nts.as_ref().is_some_and(|n| n.value), SourceOption::Nts),
        ];
        let options = s
            .port
            .filter(|_| chrony)
            .map(SourceOption::Port)
            .into_iter()
            .chain(flags.into_iter().filter(|(on, _)| *on).map(|(_, o)| o))
            .chain(
                s.nts_port
                    .as_ref()
                    .filter(|_| chrony)
                    .map(|p| SourceOption::NtsPort(p.value)),
            )
            .chain(s.key.as_ref().map(|k| SourceOption::Key(k.value)))
            .chain(s.minpoll.as_ref().map(|p| SourceOption::MinPoll(p.value)))
            .chain(s.maxpoll.as_ref().map(|p| SourceOption::MaxPoll(p.value)))
            .chain(
                s.max_sources
                    .as_ref()
                    .filter(|_| chrony)
                    .map(|m| SourceOption::MaxSources(m.value)),
            )
            .collect();
        SourceLine {
            directive: if s.is_pool() {
                Directive::Pool
            } else {
                Directive::Server
            },
            host: s.host().clone(),
            options,
        }
    }
}

impl fmt::Display for SourceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.directive, self.host)?;
        self.options.iter().try_for_each(|o| write!(f, " {o}"))
    }
}

/// Templates see a source line as the line itself.
impl Serialize for SourceLine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The spec's sources as lines of `dialect`.
pub(super) fn source_lines(spec: &Spec, dialect: Dialect) -> Vec<SourceLine> {
    spec.timesync
        .sources
        .value
        .iter()
        .map(|s| SourceLine::new(s, dialect))
        .collect()
}

/// Serving time to other hosts, as typed values.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Serving {
    pub listen: Vec<IpAddr>,
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
    pub rate_limit: bool,
    pub local_stratum: Option<u8>,
    /// NTS served with this certificate and key (`serve.nts`).
    pub nts: Option<ServingNts>,
}

/// The certificate and key files of an NTS server.
#[derive(Clone, Debug, Serialize)]
pub(super) struct ServingNts {
    pub certificate: ConfigPath,
    pub key: ConfigPath,
}

/// The spec's `serve`, if any.
pub(super) fn serving(spec: &Spec) -> Option<Serving> {
    spec.timesync.serve.as_ref().map(|s| Serving {
        listen: s.listen.iter().map(|a| a.value).collect(),
        allow: s.allow.value.clone(),
        deny: s.deny.clone(),
        rate_limit: s.rate_limit,
        local_stratum: s.local_stratum.as_ref().map(|l| l.value),
        nts: s.nts.as_ref().map(|n| ServingNts {
            certificate: n.certificate.value.clone(),
            key: n.key.value.clone(),
        }),
    })
}

/// One line of a symmetric key file: `id type secret` (chrony and ntpd).
#[derive(Serialize)]
pub(super) struct KeyLine {
    pub id: u32,
    pub kind: &'static str,
    pub secret: String,
}

pub(super) fn key_lines(spec: &Spec) -> Vec<KeyLine> {
    spec.timesync
        .keys
        .iter()
        .map(|k| KeyLine {
            id: k.id.value,
            kind: k.kind.name(),
            secret: k.secret.expose().to_string(),
        })
        .collect()
}

/// Text for a `#` comment line: control characters (a newline in a file
/// name would end the comment) are written as escapes.
pub(super) fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The context every template starts from: the header line's words and
/// the desired-state file it came from.
pub(super) fn header_context(spec: &Spec) -> tera::Context {
    let mut context = tera::Context::new();
    context.insert("header", "Managed by timectl.");
    context.insert("spec_path", &comment_text(&spec.path.display().to_string()));
    context
}

/// The drift file: the spec's, else the distribution's.
pub(super) fn driftfile(spec: &Spec, paths: &DaemonPaths) -> String {
    spec.timesync.driftfile.as_ref().map_or_else(
        || paths.driftfile.display().to_string(),
        |d| d.value.to_string(),
    )
}

/// The step threshold in seconds as config files write it.
pub(super) fn step_threshold(spec: &Spec) -> String {
    spec.timesync
        .step
        .as_ref()
        .map_or_else(|| "1".to_string(), |s| seconds(&s.threshold))
}

/// The step limit (updates during which a step is allowed; -1: always).
pub(super) fn step_limit(spec: &Spec) -> i32 {
    spec.timesync.step.as_ref().map_or(3, |s| s.limit.value)
}

/// The context chrony.conf and ntp.conf share: header, sources, the
/// agreement and step rules, the drift and key files, and `extraConfig`.
pub(super) fn daemon_context(
    spec: &Spec,
    paths: &DaemonPaths,
    sources: &[SourceLine],
    keyfile: Option<&std::path::Path>,
) -> tera::Context {
    let ts = &spec.timesync;
    let mut context = header_context(spec);
    context.insert("sources", sources);
    context.insert("min_sources", &spec.min_sources());
    context.insert("step_threshold", &step_threshold(spec));
    context.insert("driftfile", &driftfile(spec, paths));
    context.insert("keyfile", &keyfile.map(|k| k.display().to_string()));
    context.insert(
        "extra_config",
        &ts.extra_config.as_ref().map(|e| e.value.trim_end()),
    );
    context
}

/// Render one of the built-in templates.
pub(super) fn render(name: &str, template: &str, context: &tera::Context) -> String {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(Vec::<&str>::new());
    // The templates are part of the binary and covered by tests; a failure
    // here is a programming error, not a user error.
    tera.add_raw_template(name, template)
        .and_then(|()| tera.render(name, context))
        .unwrap_or_else(|e| panic!("built-in template {name} failed: {e:?}"))
}

/// Seconds as config files write them: `1`, `0.5`, `0.128`.
pub(super) fn seconds(d: &crate::spec::Duration) -> String {
    let s = d.as_secs_f64();
    let text = format!("{s:.6}");
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_cannot_be_ended_by_a_file_name() {
        assert_eq!(comment_text("site.yaml"), "site.yaml");
        assert_eq!(
            comment_text("a\nserver evil.example\r\u{0}"),
            "a\\nserver evil.example\\r\\u{0}"
        );
    }

    #[test]
    fn source_lines_write_only_what_the_dialect_has() {
        let spec = Spec::parse(
            std::path::Path::new("s.yaml"),
            "timesync:\n  provider: chrony\n  keys: [{ id: 7, secret: abc }]\n  sources:\n    - server: 192.0.2.1\n      port: 10123\n      prefer: true\n      key: 7\n      minpoll: 4\n      maxpoll: 6\n    - pool: pool.example.org\n      maxSources: 2\n      iburst: false\n".into(),
        )
        .unwrap();
        let lines = |d| {
            source_lines(&spec, d)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            lines(Dialect::Chrony),
            [
                "server 192.0.2.1 port 10123 iburst prefer key 7 minpoll 4 maxpoll 6",
                "pool pool.example.org maxsources 2"
            ]
        );
        assert_eq!(
            lines(Dialect::Ntpd),
            [
                "server 192.0.2.1 iburst prefer key 7 minpoll 4 maxpoll 6",
                "pool pool.example.org"
            ]
        );
    }
}
