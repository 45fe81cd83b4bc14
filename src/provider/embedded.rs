//! The embedded engine: timectl's own NTP daemon (`timectl daemon`) run by
//! a hardened systemd unit, from the timectl package's executable where the
//! host has the package, else from an installed copy of this timectl (see
//! [`crate::resource::binary::choose`]), with its config file
//! (docs/engine-config.md) rendered from the desired state.

use std::path::PathBuf;

use serde::Serialize;

use super::chrony::serve_context;
use super::{config_file, render, seconds};
use crate::facts::DaemonPaths;
use crate::resource::binary::EngineBinary;
use crate::resource::{BinaryResource, FileContent, Resource};
use crate::spec::{Spec, SpecError};

const CONFIG_TEMPLATE: &str = include_str!("templates/engine.yaml.tera");
const UNIT_TEMPLATE: &str = include_str!("templates/timectl-engine.service.tera");

/// Where the unit runs timectl from on a host without the timectl package:
/// an installed copy, so that the unit does not depend on wherever the
/// admin ran timectl from.
pub const INSTALLED_BINARY: &str = "/usr/local/libexec/timectl/timectl";
/// The engine's control socket (RuntimeDirectory=timectl).
pub const CONTROL_SOCKET: &str = "/run/timectl/engine.sock";

#[derive(Serialize)]
struct EngineSource {
    directive: &'static str,
    host: String,
    /// `key: value` lines under the source.
    options: Vec<String>,
}

#[derive(Serialize)]
struct EngineMetrics {
    listen: String,
    allow_remote: bool,
}

pub(super) fn resources(
    spec: &Spec,
    paths: &DaemonPaths,
    engine: &EngineBinary,
) -> Result<(Vec<Resource>, Vec<String>), SpecError> {
    let ts = &spec.timesync;
    // Spec validation refuses it; kept here so no config is ever built
    // without it.
    if let Some(extra) = &ts.extra_config {
        return Err(SpecError::Invalid(vec![spec.diagnostic(
            &extra.referenced,
            crate::spec::EMBEDDED_EXTRA_CONFIG,
        )]));
    }
    let sources: Vec<EngineSource> = ts
        .sources
        .value
        .iter()
        .map(|s| {
            let mut options = vec![
                format!("port: {}", s.port.unwrap_or(123)),
                format!("iburst: {}", s.iburst),
            ];
            if s.prefer {
                options.push("prefer: true".into());
            }
            if let Some(p) = &s.minpoll {
                options.push(format!("minpoll: {}", p.value));
            }
            if let Some(p) = &s.maxpoll {
                options.push(format!("maxpoll: {}", p.value));
            }
            if let Some(m) = &s.max_sources {
                options.push(format!("maxSources: {}", m.value));
            }
            EngineSource {
                directive: if s.is_pool() { "pool" } else { "server" },
                host: s.host().to_string(),
                options,
            }
        })
        .collect();
    let step = ts.step.as_ref();
    let limit = step.map_or(3, |s| s.limit.value);
    let driftfile = ts.driftfile.as_ref().map_or_else(
        || paths.driftfile.display().to_string(),
        |d| d.value.clone(),
    );

    let mut context = tera::Context::new();
    context.insert("header", "Managed by timectl.");
    context.insert("spec_path", &spec.path.display().to_string());
    context.insert("sources", &sources);
    context.insert("min_sources", &spec.min_sources());
    context.insert(
        "step_threshold",
        &step.map_or_else(|| "1".to_string(), |s| seconds(&s.threshold)),
    );
    context.insert("step_limit", &limit);
    context.insert(
        "step_limit_text",
        &if limit < 0 {
            "at any update".to_string()
        } else {
            format!("only in the first {limit} update(s)")
        },
    );
    let mut serve = serve_context(spec);
    if let Some(serve) = serve.as_mut() {
        // The engine takes socket addresses; NTP is served on port 123.
        serve.listen = serve
            .listen
            .iter()
            .map(|a| match a.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:123"),
                _ => format!("{a}:123"),
            })
            .collect();
    }
    context.insert("serve", &serve);
    context.insert("clock_control", &ts.clock_control);
    context.insert("driftfile", &driftfile);
    context.insert("control_socket", CONTROL_SOCKET);
    // Validation keeps it on loopback unless allowRemote; the engine
    // checks the same rule again when it reads the file.
    context.insert(
        "metrics",
        &ts.metrics.as_ref().map(|m| EngineMetrics {
            listen: m.listen.value.to_string(),
            allow_remote: m.allow_remote,
        }),
    );
    let config = render("engine.yaml", CONFIG_TEMPLATE, &context);

    let mut caps = Vec::new();
    if ts.clock_control {
        caps.push("CAP_SYS_TIME");
    }
    if ts.serve.is_some() {
        caps.push("CAP_NET_BIND_SERVICE");
    }
    let mut unit_context = tera::Context::new();
    unit_context.insert("header", "Managed by timectl.");
    unit_context.insert("spec_path", &spec.path.display().to_string());
    unit_context.insert("binary", &engine.path().display().to_string());
    unit_context.insert("config", &paths.config.display().to_string());
    unit_context.insert("caps", &caps.join(" "));
    unit_context.insert(
        "caps_text",
        &if caps.is_empty() {
            "none".to_string()
        } else {
            caps.join(", ")
        },
    );
    unit_context.insert("clock_control", &ts.clock_control);
    let unit = render("timectl-engine.service", UNIT_TEMPLATE, &unit_context);

    let mut unit_file = config_file(
        PathBuf::from(format!("/etc/systemd/system/{}", paths.unit)),
        FileContent::Whole(unit),
        format!("the systemd unit of the {}", paths.label),
    );
    unit_file.unit_file = true;
    let config_resource = Resource::File(config_file(
        paths.config.clone(),
        FileContent::Whole(config),
        format!("{} configuration", paths.label),
    ));
    let resources = match engine {
        EngineBinary::Copy { path, source } => vec![
            Resource::Binary(BinaryResource {
                path: path.clone(),
                source: Some(source.clone()),
                label: format!("timectl {}", env!("CARGO_PKG_VERSION")),
                purpose: format!("the {} runs from an installed copy of timectl", paths.label),
            }),
            config_resource,
            Resource::File(unit_file),
        ],
        // A copy left from before the package: removed once the unit no
        // longer runs it.
        EngineBinary::Package { path, .. } => vec![
            config_resource,
            Resource::File(unit_file),
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
