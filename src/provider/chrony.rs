//! chrony: chrony.conf (whole or edited), the key file, and, when the
//! clock must not be touched, a unit drop-in that runs `chronyd -x`.

use std::path::PathBuf;

use serde::Serialize;

use super::{SourceLine, config_content, config_file, key_file, render, seconds};
use crate::facts::{DaemonPaths, Facts, Family};
use crate::resource::{FileContent, FileResource};
use crate::spec::{Spec, SpecError};

const TEMPLATE: &str = include_str!("templates/chrony.conf.tera");

#[derive(Serialize)]
pub(super) struct ServeContext {
    pub listen: Vec<String>,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub rate_limit: bool,
    pub local_stratum: Option<u8>,
}

#[derive(Serialize)]
pub(super) struct KeyLine {
    pub id: u32,
    pub kind: &'static str,
    pub secret: String,
}

pub(super) fn serve_context(spec: &Spec) -> Option<ServeContext> {
    spec.timesync.serve.as_ref().map(|s| ServeContext {
        listen: s.listen.iter().map(|a| a.value.to_string()).collect(),
        allow: s.allow.value.iter().map(ToString::to_string).collect(),
        deny: s.deny.iter().map(ToString::to_string).collect(),
        rate_limit: s.rate_limit,
        local_stratum: s.local_stratum.as_ref().map(|l| l.value),
    })
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

fn source_lines(spec: &Spec) -> Vec<SourceLine> {
    spec.timesync
        .sources
        .value
        .iter()
        .map(|s| SourceLine::new(s, true))
        .collect()
}

/// The drop-in that runs chronyd with -x (clockControl: false).
pub(super) fn no_clock_control_drop_in(unit: &str) -> PathBuf {
    PathBuf::from(format!(
        "/etc/systemd/system/{unit}.d/timectl-no-clock-control.conf"
    ))
}

pub(super) fn files(
    spec: &Spec,
    facts: &Facts,
    paths: &DaemonPaths,
) -> Result<(Vec<FileResource>, Vec<String>), SpecError> {
    let ts = &spec.timesync;
    let step = ts.step.as_ref();
    let threshold = step.map_or_else(|| "1".to_string(), |s| seconds(&s.threshold));
    let limit = step.map_or(3, |s| s.limit.value);
    let keys = key_lines(spec);
    let keyfile = (!keys.is_empty()).then(|| paths.keyfile.clone()).flatten();
    let driftfile = ts.driftfile.as_ref().map_or_else(
        || paths.driftfile.display().to_string(),
        |d| d.value.clone(),
    );
    let sources = source_lines(spec);

    let mut context = tera::Context::new();
    context.insert("header", "Managed by timectl.");
    context.insert("spec_path", &spec.path.display().to_string());
    context.insert("sources", &sources);
    context.insert("min_sources", &spec.min_sources());
    context.insert("step_threshold", &threshold);
    context.insert("step_limit", &limit);
    context.insert(
        "step_limit_text",
        &if limit < 0 {
            "at any update".to_string()
        } else if limit == 1 {
            "only in the first update".to_string()
        } else {
            format!("only in the first {limit} updates")
        },
    );
    context.insert("driftfile", &driftfile);
    context.insert("rtcsync", &ts.rtcsync);
    context.insert(
        "keyfile",
        &keyfile.as_ref().map(|k| k.display().to_string()),
    );
    context.insert(
        "nts",
        &ts.sources
            .value
            .iter()
            .any(|s| s.nts.as_ref().is_some_and(|n| n.value)),
    );
    context.insert("serve", &serve_context(spec));
    context.insert(
        "extra_config",
        &ts.extra_config.as_ref().map(|e| e.value.trim_end()),
    );
    let whole = render("chrony.conf", TEMPLATE, &context);

    let content = config_content(ts.config, whole, &sources);
    let mut config = config_file(
        paths.config.clone(),
        content,
        format!("{} configuration", paths.label),
    );
    // chronyd parses a config without starting (-p prints it and exits
    // non-zero on an error), so a broken file is never installed.
    config.validate = Some(vec![
        "chronyd".into(),
        "-p".into(),
        "-f".into(),
        "{}".into(),
    ]);
    let mut files = vec![config];

    if let Some(keyfile) = keyfile {
        let group = match facts.family {
            Family::Debian => "_chrony",
            Family::Rhel => "chrony",
        };
        files.push(key_file(keyfile, &keys, 0o640, group, "chrony key file"));
    }

    // Without clock control chronyd runs with -x, and the unit's
    // ConditionCapability=CAP_SYS_TIME (which skips it in containers) is
    // cleared. Present only when asked for; removed otherwise.
    let drop_in = no_clock_control_drop_in(&paths.unit);
    let drop_in_content = if ts.clock_control {
        FileContent::Absent
    } else {
        let exec = match facts.family {
            Family::Debian => "!/usr/sbin/chronyd $DAEMON_OPTS -x",
            Family::Rhel => "/usr/sbin/chronyd $OPTIONS -x",
        };
        FileContent::Whole(format!(
            "# Managed by timectl: clockControl is false, so chronyd computes and\n# serves time but never adjusts the system clock.\n[Unit]\nConditionCapability=\n\n[Service]\nExecStart=\nExecStart={exec}\n"
        ))
    };
    files.push(FileResource {
        path: drop_in,
        content: drop_in_content,
        mode: 0o644,
        owner: "root".into(),
        group: "root".into(),
        sensitive: false,
        purpose: format!("{} drop-in for clockControl: false", paths.unit),
        unit_file: true,
        validate: None,
    });
    Ok((files, Vec::new()))
}
