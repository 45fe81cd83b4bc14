//! systemd-timesyncd: an SNTP client, configured by timectl's drop-in
//! `/etc/systemd/timesyncd.conf.d/timectl.conf` (`NTP=` and the poll
//! range; `FallbackNTP=` is used only while `NTP=` is empty, and an empty
//! assignment does not clear it in systemd 252), leaving the package's
//! timesyncd.conf alone. What timesyncd cannot do (serve, keys, NTS, ...) is refused when
//! the spec is loaded; here only what depends on the host is: the RHEL
//! family does not ship it.

use serde::Serialize;

use super::shared::{header_context, render};
use super::{config_file, error_at};
use crate::facts::{DaemonPaths, Facts, Family};
use crate::resource::{FileContent, FileResource};
use crate::spec::{ConfigMode, Spec, SpecError};

const TEMPLATE: &str = include_str!("templates/timesyncd.conf.tera");

/// timesyncd's defaults, used for the bound the spec leaves open.
const DEFAULT_MIN_POLL: i8 = 5;
const DEFAULT_MAX_POLL: i8 = 11;

/// `PollIntervalMinSec=` / `PollIntervalMaxSec=`, from minpoll/maxpoll.
#[derive(Serialize)]
struct Poll {
    min_exponent: i8,
    max_exponent: i8,
    min_seconds: u64,
    max_seconds: u64,
}

/// One poll range for all servers (validation makes the sources agree);
/// none when no source sets one.
fn poll(spec: &Spec) -> Option<Poll> {
    let sources = &spec.timesync.sources.value;
    let min = sources
        .iter()
        .find_map(|s| s.minpoll.as_ref())
        .map(|p| p.value);
    let max = sources
        .iter()
        .find_map(|s| s.maxpoll.as_ref())
        .map(|p| p.value);
    if min.is_none() && max.is_none() {
        return None;
    }
    let min = min.unwrap_or(DEFAULT_MIN_POLL);
    // timesyncd falls back to its defaults for both when max < min.
    let max = max.unwrap_or(DEFAULT_MAX_POLL).max(min);
    // Validation keeps both within 4..=17.
    let seconds = |exponent: i8| 1u64 << exponent.clamp(0, 62);
    Some(Poll {
        min_exponent: min,
        max_exponent: max,
        min_seconds: seconds(min),
        max_seconds: seconds(max),
    })
}

/// What timesyncd does differently from what the spec says, as notes.
fn notes(spec: &Spec) -> Vec<String> {
    let ts = &spec.timesync;
    let mut notes = Vec::new();
    if ts.step.is_some() {
        notes.push("systemd-timesyncd steps the clock whenever it is off by more than 0.4 s and slews it otherwise: step.threshold and step.limit are not written".into());
    }
    if ts.config == ConfigMode::Edit {
        notes.push("config: edit does not apply to systemd-timesyncd: timectl writes its own drop-in and leaves timesyncd.conf as it is".into());
    }
    notes
}

pub(super) fn files(
    spec: &Spec,
    facts: &Facts,
    paths: &DaemonPaths,
) -> Result<(Vec<FileResource>, Vec<String>), SpecError> {
    let ts = &spec.timesync;
    if facts.family == Family::Rhel {
        let at = ts
            .provider
            .as_ref()
            .map_or(ts.sources.referenced, |p| p.referenced);
        return Err(SpecError::Invalid(vec![error_at(
            spec,
            &at,
            format!(
                "provider timesyncd is for the Debian family: {} (RHEL and its rebuilds) does not ship systemd-timesyncd; use provider chrony",
                facts.pretty_name
            ),
        )]));
    }
    let mut context = header_context(spec);
    context.insert(
        "servers",
        &ts.sources
            .value
            .iter()
            .map(|s| s.host())
            .collect::<Vec<_>>(),
    );
    context.insert("poll", &poll(spec));
    context.insert(
        "extra_config",
        &ts.extra_config.as_ref().map(|e| e.value.trim_end()),
    );
    let drop_in = config_file(
        paths.config.clone(),
        FileContent::Whole(render("timesyncd.conf", TEMPLATE, &context)),
        format!("{} configuration (drop-in)", paths.label),
    );
    Ok((vec![drop_in], notes(spec)))
}
