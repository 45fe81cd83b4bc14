//! A real kernel clock that is not this machine's: User-Mode Linux.
//!
//! [`Uml::launch`] creates a network namespace `timectl-<pid>-<seq>` holding a
//! tap device `tap0` and two references serving the true time (local
//! stratum 1):
//!
//! - the **source** on 10.77.0.1:123, the only server the daemon under test
//!   polls (the holdover scenario drops traffic to it with nft);
//! - the **judge's reference** on 10.77.0.3:123, which only the judge
//!   queries, so the judge keeps working while the source is cut off.
//!
//! With [`Reference::Host`] both are `chronyd -x` on the namespace side of
//! `tap0` serving this machine's clock. With [`Reference::Drifting`] both run
//! (`chronyd -x`) in a second, undisciplined UML kernel on `tap1`, bridged
//! with `tap0`, whose clock runs at a preset frequency: a frequency error
//! the daemon under test has to learn and cannot reset.
//!
//! The judge is `clock.py judge` inside UML: four SNTP exchanges 50 ms
//! apart (up to twelve while none took under 1 ms, on a busy host), the one
//! with the smallest round trip wins (prints local minus reference and the
//! delay); `ntpdig` (`ntpdig_check`) cross-checks it.
//!
//! It then starts `linux.uml` inside that namespace with the host's root as
//! hostfs and a generated init script as PID 1: UML networking comes up as
//! 10.77.0.2/24 on `eth0` (the other end of `tap0`), the fixture's host
//! directory is bind-mounted at [`BENCH_DIR`] inside UML, and the caller's
//! script body runs with the helpers below defined. Everything the script
//! prints on UML's console (PID 1's stdout) is captured with the host time at
//! which it arrived; lines starting with `@@ ` are the script's own.
//!
//! Safety for the host clock, in layers:
//!
//! - UML's CLOCK_REALTIME is its own: clock_settime/clock_adjtime inside UML
//!   are handled by the UML kernel, not by the host's.
//! - The `linux.uml` process itself runs without CAP_SYS_TIME (setpriv drops
//!   it from the bounding set), so the host kernel would refuse a clock
//!   change from it or anything it starts on the host.
//! - Only the generated init script starts a daemon with clock control, and
//!   it refuses to run unless it is PID 1 of a User-Mode Linux kernel
//!   (`/proc/cpuinfo` says so); the clock helper checks the same.
//! - Tests measure CLOCK_REALTIME - CLOCK_MONOTONIC_RAW before and after
//!   ([`host_clock_offset`]) and assert it did not move.
//!
//! Drop (also on panic): SIGTERM to the UML process (by PID), SIGKILL after
//! 3 s, then SIGKILL to any leftover helper process of this UML instance (UML
//! forks host processes; they carry `umid=<name>` on their command line),
//! then the reference chronyds, the temp dir and the namespace.
//! `ci/cleanup.sh` kills linux.uml processes whose `umid=timectl-<pid>-...`
//! names a dead test process.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{
    ChronyPeer, NetNs, describe, find_in_path, stop_child, temp_dir, wait_for, without_clock_caps,
};

/// The tap side's address: the source the daemon under test polls.
pub const SOURCE_ADDR: &str = "10.77.0.1";
/// The judge's reference (a second address on tap0).
pub const JUDGE_ADDR: &str = "10.77.0.3";
/// UML's eth0.
pub const UML_ADDR: &str = "10.77.0.2";
/// Where the fixture's host directory appears inside UML.
pub const BENCH_DIR: &str = "/run/bench";
/// The Python interpreter used inside UML for the clock helper (ntpdig
/// needs the same one).
pub const PYTHON: &str = "/usr/bin/python3";

/// Where the host's /tmp is inside UML (UML mounts its own tmpfs on /tmp).
pub const HOST_TMP_IN_UML: &str = "/run/host-tmp";

/// The path inside UML of a host file: the same (the root is the host's,
/// through hostfs), except under /tmp, which is at [`HOST_TMP_IN_UML`].
/// E.g. a binary built with CARGO_TARGET_DIR under /tmp.
pub fn guest_path(host: &Path) -> PathBuf {
    match host.strip_prefix("/tmp") {
        Ok(rest) => Path::new(HOST_TMP_IN_UML).join(rest),
        Err(_) => host.to_path_buf(),
    }
}

/// Host commands the fixture needs (check with `require_root_and`).
pub const UML_TOOLS: &[&str] = &[
    "linux.uml",
    "ip",
    "chronyd",
    "chronyc",
    "ntpdig",
    "nft",
    "setpriv",
];

/// One line of UML's console, stamped with the host time it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleLine {
    /// Since [`Uml::launch`] started the UML process.
    pub at: Duration,
    pub text: String,
}

impl ConsoleLine {
    /// For a script line `@@ KIND REST`: `Some((KIND, REST))`.
    pub fn script(&self) -> Option<(&str, &str)> {
        let rest = self.text.strip_prefix("@@ ")?;
        Some(rest.split_once(' ').unwrap_or((rest, "")))
    }
}

/// Where the true time comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reference {
    /// Two `chronyd -x` on the namespace side of `tap0` serve this
    /// machine's clock (the source on 10.77.0.1, the judge's on 10.77.0.3).
    Host,
    /// A second UML kernel (the "reference kernel", on `tap1`, bridged with
    /// `tap0`) owns 10.77.0.1 and 10.77.0.3 and serves its own clock with two
    /// `chronyd -x`. Nothing disciplines that clock: its frequency register
    /// is preset to `ppm` (and its time set to this machine's at boot), so
    /// true time runs `ppm` faster than this machine's clock. The kernel
    /// under test then has a frequency error of `-ppm` that no daemon can
    /// reset, as a real oscillator's (UML's own oscillator is the host's
    /// clock: perfect).
    Drifting { ppm: f64 },
}

/// How to start a [`Uml`].
#[derive(Debug, Clone)]
pub struct UmlOptions {
    /// A short name for messages ("engine", "chronyd").
    pub label: String,
    /// Shell (`/bin/sh`) run as PID 1 after the prelude (mounts, network,
    /// helpers). It may use `$BENCH` (= [`BENCH_DIR`]) and the helpers
    /// `say`, `now_s`, `judge`, `ntpdig_check`, `kernel_show`,
    /// `kernel_freq PPM`, `clock_shift SECONDS`, `clock_set_error SECONDS`;
    /// the epilogue powers UML off.
    pub script: String,
    /// Files written into the host directory before boot (name, contents);
    /// inside UML they are `$BENCH/name`.
    pub files: Vec<(String, String)>,
    pub reference: Reference,
    pub mem_mb: u32,
    /// Echo console lines to stderr as they arrive (`label| line`). Default:
    /// on when `TIMECTL_UML_ECHO` is set.
    pub echo: bool,
}

impl UmlOptions {
    pub fn new(label: &str, script: &str) -> UmlOptions {
        UmlOptions {
            label: label.to_string(),
            script: script.to_string(),
            files: Vec::new(),
            reference: Reference::Host,
            mem_mb: 256,
            echo: std::env::var_os("TIMECTL_UML_ECHO").is_some(),
        }
    }
}

/// The namespace-side address when the reference is a UML kernel: a
/// `chronyd -x` serving this machine's clock, used only to set the
/// reference kernel's clock at boot.
pub const HOST_TRUTH_ADDR: &str = "10.77.0.254";

/// A running User-Mode Linux kernel in its own network namespace with its
/// references; stopped and removed on Drop.
pub struct Uml {
    label: String,
    kernel: Kernel,
    reference_kernel: Option<Kernel>,
    reference: Reference,
    // Dropped in this order after Drop::drop has stopped the kernels.
    _peers: Vec<ChronyPeer>,
    dir: tempfile::TempDir,
    netns: NetNs,
}

impl Uml {
    /// Creates the namespace, tap device(s) and references, writes the init
    /// script and boots UML. Returns once the UML process is running; use
    /// [`Uml::wait_line`] / [`Uml::wait_exit`] to follow it.
    pub fn launch(options: UmlOptions) -> Uml {
        let linux = find_in_path("linux.uml").unwrap_or_else(|| {
            panic!(
                "linux.uml not found (Debian package user-mode-linux); run sudo ci/install-deps.sh"
            )
        });
        assert!(
            Path::new(PYTHON).exists(),
            "{PYTHON} not found (Debian package python3); run sudo ci/install-deps.sh"
        );
        let netns = NetNs::new();
        let umid = netns.name().to_string();
        // The host directory: init scripts, helper, files; bind-mounted at
        // BENCH_DIR inside UML (UML mounts its own tmpfs on /tmp, hiding the
        // host's /tmp). 0755 so that unprivileged daemons inside could read.
        let dir = temp_dir(&format!("{umid}-uml"), 0o755);
        for (name, contents) in &options.files {
            write(&dir.path().join(name), contents, 0o644);
        }
        write(&dir.path().join("clock.py"), CLOCK_HELPER, 0o644);
        let peer = |addr: &str| {
            ChronyPeer::builder()
                .netns(&netns)
                .bind(addr)
                .port(123)
                .local_stratum(Some(1))
                .allow("all")
                .start()
        };
        let tap = |name: &str| netns.run_ok(&["ip", "tuntap", "add", "dev", name, "mode", "tap"]);
        let mut peers = Vec::new();
        let mut reference_kernel = None;
        match options.reference {
            Reference::Host => {
                tap("tap0");
                for addr in [SOURCE_ADDR, JUDGE_ADDR] {
                    netns.run_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "tap0"]);
                }
                netns.run_ok(&["ip", "link", "set", "tap0", "up"]);
                // IPv4 addresses bind at once, even while the tap has no
                // carrier (UML not attached yet).
                peers.push(peer(SOURCE_ADDR));
                peers.push(peer(JUDGE_ADDR));
            }
            Reference::Drifting { ppm } => {
                netns.run_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
                netns.run_ok(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("{HOST_TRUTH_ADDR}/24"),
                    "dev",
                    "br0",
                ]);
                for name in ["tap0", "tap1"] {
                    tap(name);
                    netns.run_ok(&["ip", "link", "set", name, "master", "br0"]);
                    netns.run_ok(&["ip", "link", "set", name, "up"]);
                }
                netns.run_ok(&["ip", "link", "set", "br0", "up"]);
                peers.push(peer(HOST_TRUTH_ADDR));
                let script = reference_script(ppm);
                let init = dir.path().join("reference-init.sh");
                write(
                    &init,
                    &init_script(
                        dir.path(),
                        &[SOURCE_ADDR, JUDGE_ADDR],
                        HOST_TRUTH_ADDR,
                        &script,
                    ),
                    0o755,
                );
                let mut kernel = Kernel::launch(
                    &linux,
                    &netns,
                    &format!("{umid}-ref"),
                    dir.path(),
                    "tap1",
                    &init,
                    128,
                    &format!("{}-reference", options.label),
                    options.echo,
                );
                kernel.wait_line(0, Duration::from_secs(60), "the reference kernel", |l| {
                    l.script() == Some(("REFERENCE_READY", ""))
                });
                reference_kernel = Some(kernel);
            }
        }
        let init = dir.path().join("init.sh");
        write(
            &init,
            &init_script(dir.path(), &[UML_ADDR], JUDGE_ADDR, &options.script),
            0o755,
        );
        let kernel = Kernel::launch(
            &linux,
            &netns,
            &umid,
            dir.path(),
            "tap0",
            &init,
            options.mem_mb,
            &options.label,
            options.echo,
        );
        Uml {
            label: options.label,
            kernel,
            reference_kernel,
            reference: options.reference,
            _peers: peers,
            dir,
            netns,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }
    /// The UML instance name of the kernel under test (`umid=` argument).
    pub fn umid(&self) -> &str {
        &self.kernel.umid
    }
    pub fn pid(&self) -> u32 {
        self.kernel.child.id()
    }
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }
    pub fn reference(&self) -> Reference {
        self.reference
    }
    /// The host directory that is [`BENCH_DIR`] inside UML.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn launched(&self) -> Instant {
        self.kernel.launched
    }

    /// The console so far.
    pub fn console(&self) -> Vec<ConsoleLine> {
        self.kernel.console()
    }

    /// The console as text (for failure messages and logs).
    pub fn console_text(&self) -> String {
        self.kernel.console_text()
    }

    /// The reference kernel's console, if there is one.
    pub fn reference_console_text(&self) -> Option<String> {
        self.reference_kernel.as_ref().map(Kernel::console_text)
    }

    /// Whether the UML process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.kernel.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the first console line (index >= `from`) that `pred`
    /// accepts; panics after `timeout` or if UML exits first.
    pub fn wait_line(
        &mut self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&ConsoleLine) -> bool,
    ) -> (usize, ConsoleLine) {
        self.kernel.wait_line(from, timeout, what, pred)
    }

    /// Waits until UML has powered off (and the console reader has seen the
    /// end); panics after `timeout` with the console.
    pub fn wait_exit(&mut self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.exited() {
                if let Some(reader) = self.kernel.reader.take() {
                    let _ = reader.join();
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{}: UML still running after {timeout:?}; console:\n{}",
            self.label,
            self.console_text()
        );
    }

    /// UML's stderr (normally empty or "Aborted").
    pub fn stderr_text(&self) -> String {
        self.kernel.stderr_text()
    }

    /// Drops all traffic to the source (10.77.0.1 udp/123) in the namespace
    /// with an nft table of our own; the judge's reference stays reachable.
    pub fn block_source(&self) {
        // Bridged frames (drifting reference) pass the bridge family's
        // forward hook; frames for the namespace's own addresses the inet
        // family's input hook.
        let (family, hook) = match self.reference {
            Reference::Host => ("inet", "input"),
            Reference::Drifting { .. } => ("bridge", "forward"),
        };
        self.netns.run_ok(&[
            "nft",
            &format!(
                "add table {family} timectl_bench\n\
                 add chain {family} timectl_bench block_source {{ type filter hook {hook} priority 0; policy accept; }}\n\
                 add rule {family} timectl_bench block_source ip daddr {SOURCE_ADDR} udp dport 123 drop"
            ),
        ]);
    }

    /// Removes what [`Uml::block_source`] added.
    pub fn unblock_source(&self) {
        let family = match self.reference {
            Reference::Host => "inet",
            Reference::Drifting { .. } => "bridge",
        };
        self.netns
            .run_ok(&["nft", "delete", "table", family, "timectl_bench"]);
    }
}

impl Drop for Uml {
    fn drop(&mut self) {
        self.kernel.stop();
        if let Some(reference) = &mut self.reference_kernel {
            reference.stop();
        }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The reference kernel's script: its clock set to this machine's time,
/// its frequency register preset, two `chronyd -x` serving it.
fn reference_script(ppm: f64) -> String {
    let conf = |addr: &str, name: &str| {
        format!(
            "printf '%s\\n' 'port 123' 'bindaddress {addr}' 'local stratum 1' 'allow all' \
             'cmdport 0' 'pidfile /run/{name}.pid' >/run/{name}.conf\n\
             chronyd -x -d -u root -f /run/{name}.conf >/run/{name}.log 2>&1 &\n"
        )
    };
    format!(
        "clock_set_error 0\nkernel_freq {ppm}\n{}{}\
         i=0\n\
         until ntpdig -j -t 1 {SOURCE_ADDR} >/dev/null 2>&1 && ntpdig -j -t 1 {JUDGE_ADDR} >/dev/null 2>&1; do\n\
         \x20   i=$((i + 1)); [ $i -ge 40 ] && {{ say FATAL reference chronyd not answering; cat /run/*.log; break; }}\n\
         \x20   sleep 0.5\n\
         done\n\
         say REFERENCE_READY\n\
         while :; do sleep 3600; done\n",
        conf(SOURCE_ADDR, "source"),
        conf(JUDGE_ADDR, "judge"),
    )
}

/// One UML process (with its helper processes) and its console.
struct Kernel {
    label: String,
    umid: String,
    child: Child,
    console: Arc<Mutex<Vec<ConsoleLine>>>,
    reader: Option<JoinHandle<()>>,
    launched: Instant,
    stderr: PathBuf,
}

impl Kernel {
    #[allow(clippy::too_many_arguments)]
    fn launch(
        linux: &Path,
        netns: &NetNs,
        umid: &str,
        dir: &Path,
        tap: &str,
        init: &Path,
        mem_mb: u32,
        label: &str,
        echo: bool,
    ) -> Kernel {
        let stderr_path = dir.join(format!("{umid}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", stderr_path.display()));
        // ip netns exec execs setpriv, which execs linux.uml: the child's PID
        // is UML's main process.
        let mut argv = without_clock_caps(&linux.to_string_lossy());
        argv.extend([
            format!("umid={umid}"),
            format!("uml_dir={}", dir.join("uml").display()),
            format!("mem={mem_mb}M"),
            "rootfstype=hostfs".to_string(),
            "rootflags=/".to_string(),
            "rw".to_string(),
            format!("init={}", init.display()),
            "quiet".to_string(),
            // Unknown name=value arguments become PID 1's environment: the
            // helper checks for it.
            "TIMECTL_UML_BENCH=1".to_string(),
            format!("eth0=tuntap,{tap}"),
            "con=null".to_string(),
            "con0=fd:0,fd:1".to_string(),
        ]);
        let mut cmd = netns.command(&argv[0]);
        cmd.args(&argv[1..]);
        super::uml_fpu::prepare(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let launched = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&cmd)));
        let console = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = {
            let console = Arc::clone(&console);
            let label = label.to_string();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    if echo {
                        eprintln!("{label}| {text}");
                    }
                    let line = ConsoleLine {
                        at: launched.elapsed(),
                        text,
                    };
                    if let Ok(mut lines) = console.lock() {
                        lines.push(line);
                    }
                }
            })
        };
        Kernel {
            label: label.to_string(),
            umid: umid.to_string(),
            child,
            console,
            reader: Some(reader),
            launched,
            stderr: stderr_path,
        }
    }

    fn console(&self) -> Vec<ConsoleLine> {
        self.console.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn console_text(&self) -> String {
        self.console()
            .iter()
            .map(|l| format!("{:8.3} {}\n", l.at.as_secs_f64(), l.text))
            .collect()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_line(
        &mut self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&ConsoleLine) -> bool,
    ) -> (usize, ConsoleLine) {
        let console = Arc::clone(&self.console);
        let label = self.label.clone();
        let child = &mut self.child;
        let found = wait_for(&format!("{label}: {what}"), timeout, || {
            let lines = console.lock().map_err(|e| e.to_string())?;
            if let Some((i, l)) = lines.iter().enumerate().skip(from).find(|(_, l)| pred(l)) {
                return Ok(Some((i, l.clone())));
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                return Ok(None);
            }
            Err(format!("{} console lines", lines.len()))
        });
        found.unwrap_or_else(|| {
            panic!(
                "{}: UML exited while waiting for {what}; console:\n{}\nstderr:\n{}",
                self.label,
                self.console_text(),
                self.stderr_text()
            )
        })
    }

    /// SIGTERM to UML's main process (by PID), SIGKILL after 3 s, then
    /// SIGKILL to any helper process of this instance still running.
    fn stop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(3));
        kill_instance(&self.umid);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn write(path: &Path, contents: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// SIGKILLs (by PID) every process whose command line carries
/// `umid=<umid>`: the host processes of the UML instance we started.
fn kill_instance(umid: &str) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let marker = format!("umid={umid}");
    for pid in instance_pids(&marker) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn instance_pids(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|arg| arg == marker.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Whether any host process of UML instance `umid` is still running.
pub fn instance_running(umid: &str) -> bool {
    !instance_pids(&format!("umid={umid}")).is_empty()
}

/// This machine's CLOCK_REALTIME minus CLOCK_MONOTONIC_RAW, in seconds. A
/// step of the host clock changes it at once; drift changes it by the
/// host's frequency error only (no NTP daemon runs on the test host).
pub fn host_clock_offset() -> f64 {
    use nix::time::{ClockId, clock_gettime};
    let secs = |id: ClockId| {
        let t = clock_gettime(id).unwrap_or_else(|e| panic!("clock_gettime({id}): {e}"));
        t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9
    };
    let raw1 = secs(ClockId::CLOCK_MONOTONIC_RAW);
    let real = secs(ClockId::CLOCK_REALTIME);
    let raw2 = secs(ClockId::CLOCK_MONOTONIC_RAW);
    real - (raw1 + raw2) / 2.0
}

/// The init script: guard, prelude, the caller's body, power-off.
/// `addrs` go on eth0; `judge` is the server the judge, ntpdig and
/// clock_set_error measure against (and the network is up once it answers).
fn init_script(host_dir: &Path, addrs: &[&str], judge: &str, body: &str) -> String {
    let host_dir = host_dir.display();
    let addrs: String = addrs
        .iter()
        .map(|a| format!("ip addr add {a}/24 dev eth0\n"))
        .collect();
    format!(
        r#"#!/bin/sh
# PID 1 inside User-Mode Linux, generated by timectl's tests/support/uml.rs.
# It sets UML's own clock and starts a daemon with clock control: it must
# never run anywhere else, so it refuses unless it is PID 1 of a UML kernel.
if [ "$$" != 1 ]; then
    echo "refusing: this script only runs as PID 1 inside User-Mode Linux" >&2
    exit 1
fi
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1 LC_ALL=C
mount -t proc proc /proc
if ! grep -q '^vendor_id.*User Mode Linux' /proc/cpuinfo; then
    echo "refusing: not a User-Mode Linux kernel" >&2
    exit 1
fi
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir /run/bench /run/host-tmp
mount --bind {host_dir} /run/bench
# The tmpfs on /tmp hides the host's /tmp: keep it reachable (guest_path).
mount --bind /tmp /run/host-tmp
mount -t tmpfs tmpfs /tmp
BENCH=/run/bench
ip link set lo up
{addrs}ip link set eth0 up
# CI and TIMECTL_NO_CLOCK_CONTROL forbid clock control (the engine refuses
# it): this kernel's clock is the one under test.
unset CI TIMECTL_NO_CLOCK_CONTROL

say() {{ echo "@@ $*"; }}
# Whole seconds since UML booted (no fork).
now_s() {{ read -r up _rest </proc/uptime; NOW=${{up%.*}}; }}
# The judge: best of 4 SNTP exchanges (up to 12 while none is under 1 ms)
# with the judge's reference; prints
# "@@ JUDGE <local - reference, s> <delay, s> <replies>".
judge() {{ {PYTHON} "$BENCH/clock.py" judge {judge} 4; }}
# The same with ntpdig (one exchange; its offset is reference - local), as a
# cross-check of the judge.
ntpdig_check() {{ say NTPDIG "$(ntpdig -j -t 1 {judge} 2>&1 | tr -d '\n')"; }}
kernel_show() {{ {PYTHON} "$BENCH/clock.py" show; }}
kernel_freq() {{ {PYTHON} "$BENCH/clock.py" freq "$1"; }}
clock_shift() {{ {PYTHON} "$BENCH/clock.py" shift "$1"; }}
# Make the clock $1 seconds ahead of the judge's reference (negative: behind).
clock_set_error() {{ {PYTHON} "$BENCH/clock.py" set-error {judge} "$1"; }}

# UML's network is up once the reference answers.
i=0
until ntpdig -j -t 1 {judge} >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -ge 40 ]; then say FATAL "no answer from {judge}"; echo o >/proc/sysrq-trigger; sleep 10; fi
    sleep 0.5
done
say READY
kernel_show

{body}

say END
sync
echo o >/proc/sysrq-trigger
sleep 10
"#
    )
}

/// `clock.py show | freq PPM | shift SECONDS | judge ADDR`: reads or sets
/// UML's kernel clock with clock_adjtime (ctypes), or measures it against an
/// NTP server. Refuses to run outside User-Mode Linux.
const CLOCK_HELPER: &str = r#"# Clock helper for timectl's UML bench; runs only inside User-Mode Linux.
import ctypes, os, socket, struct, sys, time

with open("/proc/cpuinfo") as f:
    if "User Mode Linux" not in f.read() or os.environ.get("TIMECTL_UML_BENCH") != "1":
        sys.exit("clock.py: refusing to run outside timectl's User-Mode Linux bench")

class Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]

class Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long),
                ("tolerance", ctypes.c_long), ("time", Timeval), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("reserved", ctypes.c_int * 11)]

ADJ_FREQUENCY, ADJ_SETOFFSET, ADJ_NANO, ADJ_TICK = 0x2, 0x100, 0x2000, 0x4000
CLOCK_REALTIME = 0
NTP_EPOCH = 2208988800

def adj(tx):
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.clock_adjtime(CLOCK_REALTIME, ctypes.byref(tx)) < 0:
        sys.exit("clock_adjtime: " + os.strerror(ctypes.get_errno()))
    return tx

def show():
    tx = adj(Timex())
    # Total frequency: tick (100 ppm per us at USER_HZ 100) plus freq.
    ppm = (tx.tick - 10000) * 100.0 + tx.freq / 65536.0
    print("@@ KERNEL %.3f %d %d 0x%x" % (ppm, tx.tick, tx.freq, tx.status), flush=True)

def ntp_ns(b):
    sec, frac = struct.unpack("!II", b)
    return (sec - NTP_EPOCH) * 1000000000 + (frac * 1000000000 >> 32)

def measure(addr, count):
    # SNTP against addr:123, `count` requests 50 ms apart; the reply with the
    # smallest round-trip delay wins (UML scheduling adds delay, and with it
    # error, to some exchanges). Returns (local - server, delay, replies) in
    # seconds, or (None, errors, 0).
    # On a busy host every one of the `count` exchanges can be delayed:
    # then up to 3 x count are made, stopping at the first round trip under
    # 1 ms (the bench's MAX_JUDGE_DELAY).
    best, errors, made = None, [], 0
    for i in range(3 * count):
        if i >= count and best is not None and best[1] < 1e6:
            break
        if i:
            time.sleep(0.05)
        made += 1
        # A fresh socket (port) per exchange: a late reply to an earlier
        # request can never be taken for this one's.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.5)
        req = bytearray(48)
        req[0] = (4 << 3) | 3
        t1 = time.time_ns()
        req[40:48] = struct.pack("!II", t1 // 1000000000 + NTP_EPOCH,
                                 ((t1 % 1000000000) << 32) // 1000000000)
        try:
            s.sendto(req, (addr, 123))
            data = s.recv(1024)
        except OSError as e:
            errors.append(str(e))
            continue
        finally:
            t4 = time.time_ns()
            s.close()
        if len(data) < 48 or data[24:32] != bytes(req[40:48]) or data[1] in (0, 16):
            errors.append("bad reply")
            continue
        t2, t3 = ntp_ns(data[32:40]), ntp_ns(data[40:48])
        delay = (t4 - t1) - (t3 - t2)
        error = ((t1 - t2) + (t4 - t3)) / 2
        if best is None or delay < best[1]:
            best = (error, delay)
    if best is None:
        return None, "; ".join(errors), 0
    return best[0] * 1e-9, best[1] * 1e-9, made - len(errors)

def judge(addr, count):
    error, delay, n = measure(addr, count)
    if error is None:
        print("@@ JUDGE_ERR %s" % delay, flush=True)
    else:
        print("@@ JUDGE %.9f %.9f %d" % (error, delay, n), flush=True)
    return error

def shift(seconds):
    ns = int(round(seconds * 1e9))
    tx = Timex()
    tx.modes = ADJ_SETOFFSET | ADJ_NANO
    tx.time.tv_sec = ns // 1000000000
    tx.time.tv_usec = ns % 1000000000
    adj(tx)
    print("@@ SHIFTED %.9f" % seconds, flush=True)

cmd = sys.argv[1] if len(sys.argv) > 1 else "show"
if cmd == "judge":
    judge(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 4)
    sys.exit(0)
if cmd == "freq":
    tx = Timex()
    tx.modes = ADJ_FREQUENCY | ADJ_TICK
    tx.tick = 10000
    tx.freq = int(round(float(sys.argv[2]) * 65536))
    adj(tx)
elif cmd == "shift":
    shift(float(sys.argv[2]))
elif cmd == "set-error":
    # Make the clock `target` seconds ahead of addr's time (UML's clock
    # starts a little off the host's, more so when several boot at once).
    error = judge(sys.argv[2], 4)
    if error is None:
        sys.exit("clock.py set-error: no answer from " + sys.argv[2])
    shift(float(sys.argv[3]) - error)
elif cmd != "show":
    sys.exit("usage: clock.py show | freq PPM | shift SECONDS | set-error ADDR SECONDS | judge ADDR [COUNT]")
show()
"#;
