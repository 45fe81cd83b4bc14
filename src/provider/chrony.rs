//! chrony: chrony.conf (whole or edited), the key file, and, when the
//! clock must not be touched, a unit drop-in that runs `chronyd -x`.

use std::path::PathBuf;

use super::shared::{
    Dialect, daemon_context, key_lines, render, serving, source_lines, step_limit,
};
use super::{config_content, config_file, key_file};
use crate::facts::{DaemonPaths, Facts, Family};
use crate::resource::{FileContent, FileResource};
use crate::spec::{Spec, SpecError};

const TEMPLATE: &str = include_str!("templates/chrony.conf.tera");

/// The drop-in that runs chronyd with -x (clockControl: false).
pub(super) fn no_clock_control_drop_in(unit: &str) -> PathBuf {
    PathBuf::from(format!(
        "/etc/systemd/system/{unit}.d/timectl-no-clock-control.conf"
    ))
}

/// "only in the first 3 updates", as the comment above `makestep` says it.
fn step_limit_text(limit: i32) -> String {
    match limit {
        n if n < 0 => "at any update".to_string(),
        1 => "only in the first update".to_string(),
        n => format!("only in the first {n} updates"),
    }
}

pub(super) fn files(
    spec: &Spec,
    facts: &Facts,
    paths: &DaemonPaths,
) -> Result<(Vec<FileResource>, Vec<String>), SpecError> {
    let ts = &spec.timesync;
    let keys = key_lines(spec);
    let keyfile = (!keys.is_empty()).then(|| paths.keyfile.clone()).flatten();
    let sources = source_lines(spec, Dialect::Chrony);

    let mut context = daemon_context(spec, paths, &sources, keyfile.as_deref());
    let limit = step_limit(spec);
    context.insert("step_limit", &limit);
    context.insert("step_limit_text", &step_limit_text(limit));
    context.insert("rtcsync", &ts.rtcsync);
    context.insert(
        "nts",
        &(ts.sources
            .value
            .iter()
            .any(|s| s.nts.as_ref().is_some_and(|n| n.value))
            || spec.serves_nts()),
    );
    context.insert("serve", &serving(spec));
    context.insert(
        "nts_trusted_certs",
        &ts.nts_trusted_certs.as_ref().map(|c| c.value.to_string()),
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

    files.push(clock_control_drop_in(spec, facts, paths));
    let mut notes = Vec::new();
    if let Some(nts) = ts.serve.as_ref().and_then(|s| s.nts.as_ref()) {
        let user = match facts.family {
            Family::Debian => "_chrony",
            Family::Rhel => "chrony",
        };
        notes.push(format!(
            "chronyd reads ntsservercert {} and ntsserverkey {} after dropping root privileges: both must be readable by user {user} (e.g. group {user}, mode 0640), or chronyd serves no NTS",
            nts.certificate.value, nts.key.value
        ));
    }
    Ok((files, notes))
}

/// Without clock control chronyd runs with -x, and the unit's
/// ConditionCapability=CAP_SYS_TIME (which skips it in containers) is
/// cleared. Present only when asked for; removed otherwise.
fn clock_control_drop_in(spec: &Spec, facts: &Facts, paths: &DaemonPaths) -> FileResource {
    let ts = &spec.timesync;
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
    FileResource {
        unit_file: true,
        ..config_file(
            drop_in,
            drop_in_content,
            format!("{} drop-in for clockControl: false", paths.unit),
        )
    }
}
