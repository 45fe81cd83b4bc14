//! Where `timectl daemon` logs. Under systemd, whose journal reads the
//! service's stderr (JOURNAL_STREAM names that stream), events go to the
//! journal through its native protocol (tracing-journald), so that their
//! fields become journal fields: `SOURCE` (a source's `IP:PORT`), `OFFSET`
//! (seconds, local minus reference time as `timectl status` shows it),
//! `STEP` (seconds the clock was stepped, positive: forward), next to
//! `MESSAGE` and `PRIORITY`. Anywhere else, plain text on stderr: the
//! message alone after time, level and target, fields left out, as it has
//! always been.

use std::io::IsTerminal;

use tracing::field::Field;
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Writer, debug_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Names the daemon's journal entries carry (SYSLOG_IDENTIFIER).
pub const SYSLOG_IDENTIFIER: &str = "timectl";

/// Whether `journal_stream` (the JOURNAL_STREAM variable, `DEV:INODE` in
/// decimal) names the file with device `dev` and inode `ino`. systemd's
/// documented test for "stderr is the journal": the variable alone may be
/// inherited by a child whose stderr went elsewhere.
pub fn journal_stream_matches(journal_stream: &str, dev: u64, ino: u64) -> bool {
    match journal_stream.split_once(':') {
        Some((d, i)) => d.parse() == Ok(dev) && i.parse() == Ok(ino),
        None => false,
    }
}

/// Whether systemd connected our stderr to the journal.
fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    journal_stream_matches(&var.to_string_lossy(), stat.st_dev, stat.st_ino)
}

/// Installs the daemon's subscriber (level from TIMECTL_LOG, default info).
/// A journal that cannot be reached falls back to text on stderr, which
/// systemd still records.
pub fn init() {
    let filter =
        || EnvFilter::try_from_env("TIMECTL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journal) => {
                // info is syslog's "informational" (6), as systemd files
                // a service's stderr lines; the crate's default is notice.
                let journal = journal
                    .with_field_prefix(None)
                    .with_syslog_identifier(SYSLOG_IDENTIFIER.to_string())
                    .with_priority_mappings(PriorityMappings {
                        error: Priority::Error,
                        warn: Priority::Warning,
                        info: Priority::Informational,
                        debug: Priority::Debug,
                        trace: Priority::Debug,
                    });
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(journal)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("timectl: the journal is not reachable ({e}): logging to stderr"),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .fmt_fields(debug_fn(message_only))
        .try_init();
}

/// Writes an event's message and nothing else: fields are for the
/// journal, and text logs keep their one-sentence lines.
fn message_only(
    writer: &mut Writer<'_>,
    field: &Field,
    value: &dyn std::fmt::Debug,
) -> std::fmt::Result {
    if field.name() == "message" {
        write!(writer, "{value:?}")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(journal_stream_matches("64769:123456", 64769, 123456));
        assert!(!journal_stream_matches("64769:123456", 64769, 123457));
        assert!(!journal_stream_matches("64768:123456", 64769, 123456));
        for bad in ["", "64769", "64769:", ":123456", "a:b", "64769:123456:1"] {
            assert!(!journal_stream_matches(bad, 64769, 123456), "{bad:?}");
        }
    }

    #[test]
    fn text_lines_keep_the_message_alone() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::Error::other("poisoned"))?
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .fmt_fields(debug_fn(message_only))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                source = "192.0.2.1:123",
                offset = 0.25,
                "synchronised to 192.0.2.1:123"
            );
        });
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
        assert!(
            text.ends_with("synchronised to 192.0.2.1:123\n"),
            "{text:?}"
        );
        assert!(
            !text.contains("source=") && !text.contains("0.25"),
            "{text:?}"
        );
    }
}
