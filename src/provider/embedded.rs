//! The embedded engine: timectl's own NTP daemon (`timectl daemon`) run by
//! a hardened systemd unit, from the timectl package's executable where the
//! host has the package, else from an installed copy of this timectl (see
//! [`crate::resource::binary::choose`]), with its config file
//! (docs/engine-config.md) rendered from the desired state.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::config_file;
use super::shared::{
    Serving, comment_text, driftfile, header_context, render, serving, step_limit,
};
use crate::engine::config::{
    DEFAULT_NTS_KE_PORT, EngineConfig, MetricsConfig, NtsServeConfig, RateLimitConfig, ServeConfig,
    SourceConfig, StepConfig,
};
use crate::facts::DaemonPaths;
use crate::resource::binary::EngineBinary;
use crate::resource::{BinaryResource, FileContent, FileResource, Resource};
use crate::spec::{Source, Spec, SpecError};

const UNIT_TEMPLATE: &str = include_str!("templates/timectl-engine.service.tera");

/// Where the unit runs timectl from on a host without the timectl package:
/// an installed copy, so that the unit does not depend on wherever the
/// admin ran timectl from.
pub const INSTALLED_BINARY: &str = "/usr/local/libexec/timectl/timectl";
/// The engine's control socket (RuntimeDirectory=timectl).
pub const CONTROL_SOCKET: &str = "/run/timectl/engine.sock";

pub(super) fn resources(
    spec: &Spec,
    paths: &DaemonPaths,
    engine: &EngineBinary,
) -> Result<(Vec<Resource>, Vec<String>), SpecError> {
    // Spec validation refuses it; kept here so no config is ever built
    // without it.
    if let Some(extra) = &spec.timesync.extra_config {
        return Err(SpecError::Invalid(vec![spec.diagnostic(
            &extra.referenced,
            crate::spec::EMBEDDED_EXTRA_CONFIG,
        )]));
    }
    let engine_config = engine_config(spec, paths);
    // The engine checks its file again when it starts; a file it would
    // refuse is never written.
    if let Err(why) = engine_config.validate() {
        return Err(SpecError::Invalid(vec![spec.diagnostic(
            &spec.timesync.sources.referenced,
            format!("the embedded engine would refuse this configuration: {why}"),
        )]));
    }
    let config = Resource::File(config_file(
        paths.config.clone(),
        FileContent::Whole(config_text(spec, &engine_config)),
        format!("{} configuration", paths.label),
    ));
    let unit = Resource::File(unit_file(spec, paths, engine));
    let resources = match engine {
        EngineBinary::Copy { path, source } => vec![
            Resource::Binary(BinaryResource {
                path: path.clone(),
                source: Some(source.clone()),
                label: format!("timectl {}", env!("CARGO_PKG_VERSION")),
                purpose: format!("the {} runs from an installed copy of timectl", paths.label),
            }),
            config,
            unit,
        ],
        // A copy left from before the package: removed once the unit no
        // longer runs it.
        EngineBinary::Package { path, .. } => vec![
            config,
            unit,
            Resource::Binary(BinaryResource {
                path: PathBuf::from(INSTALLED_BINARY),
                source: None,
                label: "an earlier copy of timectl".into(),
                purpose: format!("the {} runs the packaged {}", paths.label, path.display()),
            }),
        ],
    };
    Ok((resources, Vec::new()))
}

/// The engine's configuration for this spec, as the engine reads it.
pub(super) fn engine_config(spec: &Spec, paths: &DaemonPaths) -> EngineConfig {
    let ts = &spec.timesync;
    EngineConfig {
        sources: ts.sources.value.iter().map(engine_source).collect(),
        min_sources: spec.min_sources() as usize,
        step: StepConfig {
            threshold: ts.step.as_ref().map_or(1.0, |s| s.threshold.as_secs_f64()),
            limit: step_limit(spec),
        },
        serve: serving(spec).map(engine_serve),
        clock_control: ts.clock_control,
        drift_file: Some(PathBuf::from(driftfile(spec, paths))),
        control_socket: Some(PathBuf::from(CONTROL_SOCKET)),
        // Validation keeps it on loopback unless allowRemote; the engine
        // checks the same rule again when it reads the file.
        metrics: ts.metrics.as_ref().map(|m| MetricsConfig {
            listen: m.listen.value.0,
            allow_remote: m.allow_remote,
        }),
        nts_trusted_certs: ts
            .nts_trusted_certs
            .as_ref()
            .map(|c| PathBuf::from(c.value.as_str())),
    }
}

/// Where systemd hands the unit its NTS certificate and key
/// (`LoadCredential=`): the engine runs as a dynamic user that could not
/// read a root-only key file where the admin keeps it.
pub const NTS_CREDENTIALS: &str = "/run/credentials/timectl-engine.service";
/// The credential names of the certificate and the key.
const NTS_CERT_CREDENTIAL: &str = "nts-certificate";
const NTS_KEY_CREDENTIAL: &str = "nts-key";
/// Where the engine keeps its NTS cookie keys (StateDirectory=timectl-engine).
pub const NTS_KEY_DIR: &str = "/var/lib/timectl-engine/nts";

fn engine_source(s: &Source) -> SourceConfig {
    let host = s.host().to_string();
    let mut source = SourceConfig::server(&host, s.port.unwrap_or(123));
    if s.is_pool() {
        source.server = None;
        source.pool = Some(host);
    }
    source.iburst = s.iburst;
    source.prefer = s.prefer;
    source.nts = s.nts.as_ref().is_some_and(|n| n.value);
    if let Some(p) = &s.nts_port {
        source.nts_port = p.value;
    }
    if let Some(p) = &s.minpoll {
        source.minpoll = p.value;
    }
    if let Some(p) = &s.maxpoll {
        source.maxpoll = p.value;
    }
    if let Some(m) = &s.max_sources {
        source.max_sources = usize::from(m.value);
    }
    source
}

/// The engine takes socket addresses; NTP is served on port 123.
fn engine_serve(s: Serving) -> ServeConfig {
    let listen: Vec<SocketAddr> = s
        .listen
        .into_iter()
        .map(|ip| SocketAddr::new(ip, 123))
        .collect();
    ServeConfig {
        listen: listen.clone(),
        allow: s.allow.into_iter().map(|c| c.0).collect(),
        deny: s.deny.into_iter().map(|c| c.0).collect(),
        rate_limit: s.rate_limit.then(RateLimitConfig::default),
        local_stratum: s.local_stratum,
        nts: s.nts.map(|_| NtsServeConfig {
            certificate: PathBuf::from(format!("{NTS_CREDENTIALS}/{NTS_CERT_CREDENTIAL}")),
            key: PathBuf::from(format!("{NTS_CREDENTIALS}/{NTS_KEY_CREDENTIAL}")),
            listen: listen
                .iter()
                .map(|a| SocketAddr::new(a.ip(), DEFAULT_NTS_KE_PORT))
                .collect(),
            key_dir: Some(PathBuf::from(NTS_KEY_DIR)),
            max_connections: 100,
        }),
    }
}

/// The file: a header, then each section of the serialised config under
/// a comment that says what it is for. Absent sections are left out.
pub(super) fn config_text(spec: &Spec, config: &EngineConfig) -> String {
    let mut text = format!(
        "# Managed by timectl. Desired state: {}\n# Changes made here are overwritten by the next `timectl apply`; edit the\n# desired-state file instead. Format: docs/engine-config.md.\n",
        comment_text(&spec.path.display().to_string())
    );
    for section in sections(&serialise(config)) {
        let key = section.split(':').next().unwrap_or_default();
        if let Some(comment) = section_comment(key, config) {
            text.push('\n');
            text.push_str(&comment);
        }
        text.push_str(&section);
    }
    text
}

fn serialise(config: &EngineConfig) -> String {
    let options = serde_saphyr::ser_options! { compact_list_indent: false };
    // Plain data (strings, numbers, lists, maps) always serialises.
    serde_saphyr::to_string_with_options(config, options)
        .unwrap_or_else(|e| panic!("serialising the engine config failed: {e}"))
}

/// The top-level entries of a YAML mapping: each starts with a key at the
/// line's first column, followed by its indented lines.
fn sections(yaml: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in yaml.lines() {
        match out.last_mut() {
            Some(last) if line.starts_with(' ') => last.push_str(line),
            _ => out.push(line.to_string()),
        }
        if let Some(last) = out.last_mut() {
            last.push('\n');
        }
    }
    out
}

/// The comment above a section, if it has one.
fn section_comment(key: &str, config: &EngineConfig) -> Option<String> {
    Some(match key {
        "sources" => "# Time sources.\n".to_string(),
        "minSources" => "# Update the clock only when this many sources agree.\n".to_string(),
        "step" => format!(
            "# Step when the clock is off by more than threshold seconds, {}.\n",
            if config.step.limit < 0 {
                "at any update".to_string()
            } else {
                format!("only in the first {} update(s)", config.step.limit)
            }
        ),
        "serve" => "# Serve time to these networks.\n".to_string(),
        "clockControl" => {
            "# false: compute and serve, never adjust the system clock (like chronyd -x).\n"
                .to_string()
        }
        "metrics" => format!(
            "# Prometheus metrics at http://{}/metrics (docs/metrics.md).\n# timectl never opens the firewall for them.\n",
            config.metrics.as_ref()?.listen
        ),
        _ => return None,
    })
}

/// The hardened systemd unit that runs the engine.
fn unit_file(spec: &Spec, paths: &DaemonPaths, engine: &EngineBinary) -> FileResource {
    let ts = &spec.timesync;
    let mut caps = Vec::new();
    if ts.clock_control {
        caps.push("CAP_SYS_TIME");
    }
    if ts.serve.is_some() {
        caps.push("CAP_NET_BIND_SERVICE");
    }
    let mut context = header_context(spec);
    context.insert("binary", &engine.path().display().to_string());
    context.insert("config", &paths.config.display().to_string());
    context.insert("caps", &caps.join(" "));
    context.insert(
        "caps_text",
        &if caps.is_empty() {
            "none".to_string()
        } else {
            caps.join(", ")
        },
    );
    context.insert("clock_control", &ts.clock_control);
    let credentials: Vec<String> = ts
        .serve
        .as_ref()
        .and_then(|s| s.nts.as_ref())
        .map(|n| {
            vec![
                format!("{NTS_CERT_CREDENTIAL}:{}", n.certificate.value),
                format!("{NTS_KEY_CREDENTIAL}:{}", n.key.value),
            ]
        })
        .unwrap_or_default();
    context.insert("credentials", &credentials);
    FileResource {
        unit_file: true,
        ..config_file(
            PathBuf::from(format!("/etc/systemd/system/{}", paths.unit)),
            FileContent::Whole(render("timectl-engine.service", UNIT_TEMPLATE, &context)),
            format!("the systemd unit of the {}", paths.label),
        )
    }
}
