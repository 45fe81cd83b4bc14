//! Shared fixtures for timectl's system tests: real network namespaces, real
//! chronyd and ntpdig peers, real firewalld, and real systemd in nspawn
//! containers booted from the cached Debian 12 test image (ci/testhost/).
//!
//! Use from an integration test with `mod support;`. Every test that needs
//! these is `#[ignore = "..."]`d and run as root by `ci/system-tests.sh`;
//! call [`require_root_and`] first so that a machine without the tools fails
//! with a message that says what to install instead of passing silently.
//!
//! Everything created here is named `timectl-<pid>-<seq>...` (pid = the test
//! process): Drop guards remove it, and `ci/cleanup.sh` removes what a killed
//! run left behind (it can tell from the pid that the owner is gone).
//!
//! Safety: no fixture ever changes this machine's clock. chronyd peers always
//! run with `-x`; containers never get CAP_SYS_TIME, and commands run inside
//! them get the container's capability bounding set, not ours.
#![allow(dead_code, unused_imports)]

pub mod chrony;
pub mod container;
pub mod firewalld;
pub mod fleet;
pub mod live;
pub mod netns;
pub mod ntpdig;
pub mod pki;
pub mod uml;
pub mod uml_fpu;
pub mod uml_host;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use chrony::{ChronyAuth, ChronyPeer, ChronySource, ChronyTracking};
pub use container::{Container, ContainerOptions, Uplink};
pub use firewalld::PrivateFirewalld;
pub use netns::NetNs;
pub use ntpdig::{NtpdigReply, ntpdig};
pub use pki::Pki;
pub use uml::{ConsoleLine, Uml, UmlOptions};

/// Where the repository (and so `ci/`) is.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A script under `ci/`.
pub fn ci_script(relative: &str) -> PathBuf {
    repo_root().join("ci").join(relative)
}

/// A fresh name `timectl-<pid>-<seq>`, unique on this machine while this
/// process lives. ci/cleanup.sh parses the pid back out of it.
pub fn unique_name() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(1);
    format!(
        "timectl-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory named after `name` (so cleanup.sh recognises it),
/// with the given mode.
pub fn temp_dir(name: &str, mode: u32) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir for {name}: {e}"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, dir.path().display()));
    dir
}

/// Which Debian package provides each tool the fixtures use.
const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("systemd-nspawn", "systemd-container"),
    ("mmdebstrap", "mmdebstrap"),
    ("nft", "nftables"),
    ("chronyd", "chrony"),
    ("chronyc", "chrony"),
    ("ntpdig", "ntpsec-ntpdig"),
    ("linux.uml", "user-mode-linux"),
    ("python3", "python3"),
    ("firewalld", "firewalld"),
    ("firewall-cmd", "firewalld"),
    ("dbus-daemon", "dbus"),
    ("busctl", "systemd"),
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    ("pgrep", "procps"),
    ("zstd", "zstd"),
    ("dpkg-scanpackages", "dpkg-dev"),
    ("promtool", "prometheus"),
    ("rpm", "rpm"),
];

/// Everything a [`Container`] needs on the host.
pub const CONTAINER_TOOLS: &[&str] = &[
    "systemd-nspawn",
    "mmdebstrap",
    "busctl",
    "ip",
    "nsenter",
    "setpriv",
    "pgrep",
    "zstd",
    "dpkg-scanpackages",
];

/// Panics unless this process is root and every tool in `tools` is on PATH
/// (or in /usr/sbin, /sbin). The message names what is missing and how to
/// install it, so a system test on an unprepared machine fails loudly.
pub fn require_root_and(tools: &[&str]) {
    let mut problems = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        problems.push("not running as root (system tests need root)".to_string());
    }
    let mut missing = Vec::new();
    for tool in tools {
        if find_in_path(tool).is_none() {
            let package = TOOL_PACKAGES
                .iter()
                .find(|(t, _)| t == tool)
                .map_or("?", |(_, p)| p);
            missing.push(format!("{tool} (Debian package {package})"));
        }
    }
    if !missing.is_empty() {
        problems.push(format!("missing commands: {}", missing.join(", ")));
    }
    if !problems.is_empty() {
        panic!(
            "system test prerequisites not met: {}.\n\
             Install the host tools with `sudo ci/install-deps.sh` and run the system \
             tests with `sudo ci/system-tests.sh` (see docs/testing.md).",
            problems.join("; ")
        );
    }
}

/// Looks `tool` up in PATH plus the sbin directories (a normal user's PATH
/// often lacks them).
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The argument vector prefix that runs `program` without CAP_SYS_TIME:
/// `setpriv --bounding-set=-sys_time --inh-caps=-all -- program`. Peers run
/// as root on a machine whose real clock must never move; with the
/// capability gone from the bounding set, nothing they exec can set it.
pub fn without_clock_caps(program: &str) -> Vec<String> {
    [
        "setpriv",
        "--bounding-set=-sys_time",
        "--inh-caps=-all",
        "--",
        program,
    ]
    .map(String::from)
    .to_vec()
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion; panics only if it cannot be started.
/// A string property read with busctl from the bus at `address`
/// (`busctl` prints `s "running"`; this returns `running`).
pub fn bus_string_property(
    address: &str,
    service: &str,
    path: &str,
    interface: &str,
    property: &str,
) -> Result<String, String> {
    let out = run(Command::new("busctl").args([
        &format!("--address={address}"),
        "--timeout=2",
        "get-property",
        service,
        path,
        interface,
        property,
    ]));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .trim()
        .trim_start_matches("s ")
        .trim_matches('"')
        .to_string())
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)))
}

/// Runs `cmd` and returns its stdout; panics with stdout and stderr when it
/// exits non-zero.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    check_ok(&describe(cmd), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics with the command's output unless it succeeded.
pub fn check_ok(what: &str, out: &Output) {
    if !out.status.success() {
        panic!(
            "`{what}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Polls `probe` every 50 ms until it returns `Ok`, or panics after
/// `timeout` naming `what` and the last `Err` it returned.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Sends SIGTERM to `pid`, waits up to `grace` for `child` to exit, then
/// SIGKILLs it. Only ever used on processes a fixture started itself.
pub fn stop_child(child: &mut std::process::Child, grace: Duration) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(pid, Signal::SIGKILL);
    let _ = child.wait();
}

/// The roots of the cgroup hierarchies where containers get their own
/// `timectl/<name>` directory (see ci/testhost/launch.sh).
pub fn cgroup_roots() -> Vec<PathBuf> {
    let hybrid: Vec<PathBuf> = ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    if hybrid.is_empty() {
        vec![PathBuf::from("/sys/fs/cgroup")]
    } else {
        hybrid
    }
}

/// Reports how long something took: on stderr, and appended to the file
/// named by $TIMECTL_TIMINGS_FILE (ci/system-tests.sh prints those in its
/// summary). Timings are reported, never asserted: tests must not fail on a
/// slow machine, benchmarks measure speed.
pub fn record_timing(label: &str, took: Duration) {
    let line = format!("{label}: {:.3} s", took.as_secs_f64());
    eprintln!("timing: {line}");
    append_to_timings_file(&line);
}

/// Reports a measured figure (a bench result, a judged offset): on stderr
/// and in $TIMECTL_TIMINGS_FILE, like `record_timing`.
pub fn record_figure(line: &str) {
    eprintln!("figure: {line}");
    append_to_timings_file(line);
}

fn append_to_timings_file(line: &str) {
    use std::io::Write;
    if let Some(path) = std::env::var_os("TIMECTL_TIMINGS_FILE")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        // One write: several tests may append at once.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// What is left on this machine of the resources named `name`: a netns, cgroup
/// directories, nspawn's propagation directory. Empty when clean.
pub fn leftovers(name: &str) -> Vec<String> {
    let mut found = Vec::new();
    if Path::new("/run/netns").join(name).exists() {
        found.push(format!("network namespace /run/netns/{name}"));
    }
    for root in cgroup_roots() {
        let dir = root.join("timectl").join(name);
        if dir.exists() {
            found.push(format!("cgroup {}", dir.display()));
        }
    }
    let propagate = Path::new("/run/systemd/nspawn/propagate").join(name);
    if propagate.exists() {
        found.push(format!("{}", propagate.display()));
    }
    found
}
