//! Running other programs: always an argument vector, never a shell string;
//! output captured; a deadline so a hung tool cannot hang an apply.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::HostError;

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The last few lines of stderr (or stdout), for error messages.
    pub fn tail(&self, lines: usize) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Run `argv` with extra environment, waiting at most `timeout`.
pub fn run(argv: &[&str], env: &[(&str, &str)], timeout: Duration) -> Result<Output, HostError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| HostError::msg("empty command"))?;
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                HostError::Unavailable(format!("{program} is not installed"))
            } else {
                HostError::msg(format!("cannot run {program}: {e}"))
            }
        })?;
    // Read both pipes on threads so a chatty program cannot block on a full
    // pipe while we wait for it.
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HostError::msg(format!(
                    "{} did not finish within {}s and was stopped",
                    argv.join(" "),
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(HostError::msg(format!("waiting for {program}: {e}"))),
        }
    };
    Ok(Output {
        status: status.code(),
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    })
}

/// Run and require exit status 0; the error carries the command's last lines.
pub fn run_ok(argv: &[&str], env: &[(&str, &str)], timeout: Duration) -> Result<Output, HostError> {
    let out = run(argv, env, timeout)?;
    if out.success() {
        Ok(out)
    } else {
        Err(HostError::msg(format!(
            "{} failed (exit {}): {}",
            argv.join(" "),
            out.status.map_or("signal".to_string(), |c| c.to_string()),
            out.tail(5)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let out = run(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            &[],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.tail(1), "err");
        let err = run_ok(&["false"], &[], Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("false failed (exit 1)"), "{err}");
    }

    #[test]
    fn missing_program_is_unavailable() {
        let err = run(&["/nonexistent/timectl-tool"], &[], Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, HostError::Unavailable(_)), "{err}");
    }

    #[test]
    fn hung_program_is_stopped() {
        let err = run(&["sleep", "10"], &[], Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
    }
}
