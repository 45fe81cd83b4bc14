//! Metrics of a converger run for node_exporter's textfile collector
//! (`timectl apply|plan --metrics-textfile PATH`): when the last run
//! finished, how it ended (success, failure, rolled back), how many changes
//! it made, and whether the host had drifted from the desired state (the
//! plan had steps). Fleets alert on these, e.g. `timectl_drift_detected == 1`
//! or `time() - timectl_last_run_timestamp_seconds > 86400`.
//!
//! The file is replaced atomically ([`replace_file`]): a scrape never reads
//! half a file, and the temporary file (`.NAME.timectl-XXXXXX`) does not end
//! in `.prom`, so the collector never reads it either.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunResult {
    /// The host is as desired (converged, or nothing to do; for `plan`, the
    /// plan was made).
    Success,
    /// An error, a refusal, an unsynchronised daemon, or a rollback that
    /// could not undo everything.
    Failure,
    /// A step or the verification failed and everything done was undone.
    RolledBack,
}

impl RunResult {
    const ALL: [RunResult; 3] = [
        RunResult::Success,
        RunResult::Failure,
        RunResult::RolledBack,
    ];

    fn label(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Failure => "failure",
            RunResult::RolledBack => "rolled_back",
        }
    }
}

/// What one run of `plan` or `apply` did.
#[derive(Clone, Debug, PartialEq)]
pub struct RunMetrics {
    /// `plan` or `apply`: a label, so both can write files side by side in
    /// one collector directory.
    pub command: &'static str,
    pub finished: SystemTime,
    pub duration: Duration,
    pub result: RunResult,
    /// Steps the plan had; None when the run failed before a plan was made
    /// (then drift is unknown and not reported).
    pub planned_changes: Option<usize>,
    /// Changes carried out and kept (rolled back ones do not count).
    pub changes_made: usize,
}

/// The Prometheus text exposition of `m`, HELP and TYPE lines included.
pub fn render(m: &RunMetrics) -> String {
    let labels = format!("command=\"{}\"", m.command);
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    };
    let finished = m
        .finished
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    gauge(
        "timectl_last_run_timestamp_seconds",
        "When the last timectl run finished, in seconds since the Unix epoch.",
        vec![(labels.clone(), format!("{finished:.3}"))],
    );
    gauge(
        "timectl_last_run_duration_seconds",
        "How long the last timectl run took.",
        vec![(labels.clone(), format!("{:.3}", m.duration.as_secs_f64()))],
    );
    gauge(
        "timectl_last_run_success",
        "1 if the last timectl run succeeded, else 0.",
        vec![(
            labels.clone(),
            u8::from(m.result == RunResult::Success).to_string(),
        )],
    );
    gauge(
        "timectl_last_run_result",
        "How the last timectl run ended: 1 for its result (success, failure or rolled_back), 0 for the others.",
        RunResult::ALL
            .iter()
            .map(|r| {
                (
                    format!("{labels},result=\"{}\"", r.label()),
                    u8::from(*r == m.result).to_string(),
                )
            })
            .collect(),
    );
    gauge(
        "timectl_last_run_changes",
        "Changes the last timectl run made and kept (always 0 for plan).",
        vec![(labels.clone(), m.changes_made.to_string())],
    );
    if let Some(planned) = m.planned_changes {
        gauge(
            "timectl_last_run_planned_changes",
            "Steps the last timectl run's plan had.",
            vec![(labels.clone(), planned.to_string())],
        );
        gauge(
            "timectl_drift_detected",
            "1 if the host differed from the desired state when the last timectl run planned (the plan had steps), else 0.",
            vec![(labels, u8::from(planned > 0).to_string())],
        );
    }
    out
}

/// Write the metrics of a run to `path`, replacing it atomically.
pub fn write(path: &Path, m: &RunMetrics) -> std::io::Result<()> {
    replace_file(path, render(m).as_bytes(), 0o644)
}

/// Replace `path` (a file of timectl's own, outside any managed root: a
/// saved plan, a metrics textfile) with `content`, atomically: a new
/// temporary file in the same directory with `mode`, fsynced, renamed over
/// it, the directory fsynced. Readers see the old file or the new one.
pub fn replace_file(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    // tempfile creates the file with O_EXCL and mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}{}",
            name.to_string_lossy(),
            crate::host::files::TEMP_INFIX
        ))
        .tempfile_in(dir)?;
    tmp.write_all(content)?;
    tmp.as_file().sync_all()?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(mode),
    )?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(result: RunResult, planned: Option<usize>) -> RunMetrics {
        RunMetrics {
            command: "apply",
            finished: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_275_293_250),
            duration: Duration::from_millis(452),
            result,
            planned_changes: planned,
            changes_made: 3,
        }
    }

    #[test]
    fn renders_every_metric_with_help_and_type() {
        let text = render(&run(RunResult::RolledBack, Some(8)));
        assert_eq!(
            text,
            "# HELP timectl_last_run_timestamp_seconds When the last timectl run finished, in seconds since the Unix epoch.\n\
             # TYPE timectl_last_run_timestamp_seconds gauge\n\
             timectl_last_run_timestamp_seconds{command=\"apply\"} 1764275293.250\n\
             # HELP timectl_last_run_duration_seconds How long the last timectl run took.\n\
             # TYPE timectl_last_run_duration_seconds gauge\n\
             timectl_last_run_duration_seconds{command=\"apply\"} 0.452\n\
             # HELP timectl_last_run_success 1 if the last timectl run succeeded, else 0.\n\
             # TYPE timectl_last_run_success gauge\n\
             timectl_last_run_success{command=\"apply\"} 0\n\
             # HELP timectl_last_run_result How the last timectl run ended: 1 for its result (success, failure or rolled_back), 0 for the others.\n\
             # TYPE timectl_last_run_result gauge\n\
             timectl_last_run_result{command=\"apply\",result=\"success\"} 0\n\
             timectl_last_run_result{command=\"apply\",result=\"failure\"} 0\n\
             timectl_last_run_result{command=\"apply\",result=\"rolled_back\"} 1\n\
             # HELP timectl_last_run_changes Changes the last timectl run made and kept (always 0 for plan).\n\
             # TYPE timectl_last_run_changes gauge\n\
             timectl_last_run_changes{command=\"apply\"} 3\n\
             # HELP timectl_last_run_planned_changes Steps the last timectl run's plan had.\n\
             # TYPE timectl_last_run_planned_changes gauge\n\
             timectl_last_run_planned_changes{command=\"apply\"} 8\n\
             # HELP timectl_drift_detected 1 if the host differed from the desired state when the last timectl run planned (the plan had steps), else 0.\n\
             # TYPE timectl_drift_detected gauge\n\
             timectl_drift_detected{command=\"apply\"} 1\n"
        );
    }

    #[test]
    fn drift_is_left_out_when_no_plan_was_made() {
        let text = render(&run(RunResult::Failure, None));
        assert!(!text.contains("timectl_drift_detected"), "{text}");
        assert!(!text.contains("planned_changes"), "{text}");
        assert!(text.contains("result=\"failure\"} 1\n"), "{text}");
    }

    #[test]
    fn replaces_the_file_atomically_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timectl.prom");
        std::fs::write(&path, "old").unwrap();
        write(&path, &run(RunResult::Success, Some(0))).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("timectl_drift_detected{command=\"apply\"} 0\n"),
            "{text}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["timectl.prom"]);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o644);
        // A directory that does not exist: an error, nothing written.
        let missing = dir.path().join("no/such/dir/timectl.prom");
        assert!(write(&missing, &run(RunResult::Success, Some(0))).is_err());
    }
}
