//! The test-host image booted with its own systemd in User-Mode Linux: a real
//! kernel clock that is not this machine's, with the shipped units exactly as
//! on a server (the embedded engine's DynamicUser unit with CAP_SYS_TIME,
//! Debian's chrony.service), for the scenarios that must let a daemon control
//! the clock. See docs/testing.md ("The test host in User-Mode Linux").
//!
//! [`UmlHost::boot`] copies the cached image into a temp dir (hostfs writes
//! through, so every boot gets its own copy), adds the test's files and a
//! oneshot unit wanted by multi-user.target that runs one command at boot
//! and then `systemctl poweroff -f`, and boots it with
//! `linux.uml ... rootfstype=hostfs rootflags=COPY init=/lib/systemd/systemd`
//! inside a network namespace holding `tap0` (10.77.0.1/24) and a reference
//! `chronyd -x` on 10.77.0.1:123 (`local stratum 1`, `allow all`) serving
//! this machine's clock: the truth. The guest's eth0 is 10.77.0.2/24.
//!
//! Safety: UML's CLOCK_REALTIME is its own (clock_settime and clock_adjtime
//! inside it leave this machine's clock alone, measured); the reference runs
//! with -x and without CAP_SYS_TIME. Tests still check this machine's clock
//! with [`HostClockMark`]. The UML process carries `umid=<name>` and its
//! rootfs copy lives under `/tmp/<name>-umlhost-*`, so ci/cleanup.sh finds
//! both when a run is killed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::container::image_rootfs;
use super::{
    ChronyPeer, NetNs, check_ok, describe, run, run_ok, stop_child, temp_dir, unique_name,
};

/// Host commands a UML boot needs.
pub const UML_TOOLS: &[&str] = &["linux.uml", "ip", "chronyd", "chronyc", "setpriv"];

/// The reference chronyd's address on tap0 (the namespace side).
pub const REFERENCE_ADDR: &str = "10.77.0.1";
/// The guest's address on its eth0.
pub const GUEST_ADDR: &str = "10.77.0.2";
/// Where the timectl binary under test appears in the guest.
pub const TIMECTL_IN_GUEST: &str = "/opt/timectl/timectl";
/// Where the boot command's stdout and stderr are kept in the guest (also
/// copied to the console).
const OUTPUT_IN_GUEST: &str = "/var/lib/timectl-uml/output.log";
const UNIT: &str = "timectl-uml-boot.service";

/// A file the test puts into the guest before it boots.
pub struct GuestFile {
    /// Absolute path in the guest.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl GuestFile {
    pub fn new(path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> GuestFile {
        assert!(path.starts_with('/'), "guest paths are absolute: {path}");
        GuestFile {
            path: path.to_string(),
            contents: contents.into(),
            mode,
        }
    }
}

/// What one boot produced.
pub struct UmlRun {
    /// The UML process's exit status (it exits when the guest powers off).
    pub exit: ExitStatus,
    /// The boot command's stdout and stderr, read from the guest's disk after
    /// the power-off.
    pub output: String,
    /// Everything on the guest console (kernel, systemd, the command).
    pub console: String,
    /// From starting linux.uml until it exited.
    pub took: Duration,
}

/// One UML boot of a copy of the test image; Drop stops UML (by PID) if it
/// still runs, then the reference, the namespace and the copy go.
pub struct UmlHost {
    name: String,
    uml: Option<(Child, ChildStdin)>,
    reference: Option<ChronyPeer>,
    netns: Option<NetNs>,
    dir: Option<tempfile::TempDir>,
    console_path: PathBuf,
    copy_took: Duration,
}

impl UmlHost {
    /// Prepares a copy of the image with `files` and a unit that runs
    /// `command` (a path in the guest, run with no arguments) once at boot,
    /// then boots it. The copy is the image's own, with two changes besides
    /// the test's files: the test image's chrony.service drop-in (which adds
    /// -x for the containers) is removed, so chrony is Debian's as shipped,
    /// and ntpdig (the judge) is installed from /srv/repo if missing.
    pub fn boot(files: &[GuestFile], command: &str) -> UmlHost {
        let name = unique_name();
        let dir = temp_dir(&format!("{name}-umlhost"), 0o755);
        let root = dir.path().join("root");
        let image = image_rootfs();
        let copy_start = Instant::now();
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&image).arg(&root);
        run_ok(&mut cp);
        let copy_took = copy_start.elapsed();
        prepare_root(&root, files, command);

        let netns = NetNs::named(&name);
        netns.run_ok(&["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"]);
        netns.run_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{REFERENCE_ADDR}/24"),
            "dev",
            "tap0",
        ]);
        netns.run_ok(&["ip", "link", "set", "tap0", "up"]);
        let reference = ChronyPeer::builder()
            .netns(&netns)
            .bind(REFERENCE_ADDR)
            .port(123)
            .local_stratum(Some(1))
            .allow("all")
            .start();

        let console_path = dir.path().join("console.log");
        let console = std::fs::File::create(&console_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", console_path.display()));
        let console_err = console.try_clone().expect("dup console log");
        let mut cmd = netns.command("linux.uml");
        cmd.arg(format!("umid={name}"))
            .arg(format!("uml_dir={}", dir.path().display()))
            .arg("mem=768M")
            .arg("rootfstype=hostfs")
            .arg(format!("rootflags={}", root.display()))
            .arg("rw")
            .arg("init=/lib/systemd/systemd")
            .arg("eth0=tuntap,tap0")
            .arg("con=null")
            .arg("con0=fd:0,fd:1");
        super::uml_fpu::prepare(&mut cmd);
        // UML's memory file goes to $TMPDIR (unlinked at once).
        cmd.env_remove("CI")
            .env_remove("TIMECTL_NO_CLOCK_CONTROL")
            .stdin(Stdio::piped())
            .stdout(console)
            .stderr(console_err);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&cmd)));
        // con0 reads fd 0: keep a pipe open that never delivers anything.
        let stdin = child.stdin.take().expect("piped stdin");
        UmlHost {
            name,
            uml: Some((child, stdin)),
            reference: Some(reference),
            netns: Some(netns),
            dir: Some(dir),
            console_path,
            copy_took,
        }
    }

    /// How long copying the image took.
    pub fn copy_took(&self) -> Duration {
        self.copy_took
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The reference chronyd (its log, its own tracking).
    pub fn reference(&self) -> &ChronyPeer {
        self.reference.as_ref().expect("reference runs until Drop")
    }

    /// The console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console_path).unwrap_or_default()).into_owned()
    }

    /// Waits until the guest powers off (UML exits) and returns what it
    /// wrote; panics with the console's tail after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> UmlRun {
        let start = Instant::now();
        let exit = loop {
            let (child, _stdin) = self.uml.as_mut().expect("UML started");
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() > timeout => {
                    let console = self.console();
                    self.stop_uml();
                    panic!(
                        "UML test host {} did not power off within {timeout:?}; console tail:\n{}",
                        self.name,
                        tail(&console, 60)
                    );
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => panic!("waiting for linux.uml: {e}"),
            }
        };
        let took = start.elapsed();
        self.stop_uml();
        let root = self.root();
        let output_path = root.join(OUTPUT_IN_GUEST.trim_start_matches('/'));
        let output = std::fs::read(&output_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        UmlRun {
            exit,
            output,
            console: self.console(),
            took,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("dir lives until Drop")
            .path()
            .join("root")
    }

    /// SIGTERM to the UML kernel process (it kills its guest processes and
    /// exits), SIGKILL after 5 s; then SIGKILL any UML helper still in the
    /// namespace (they all run there: the namespace is this boot's own).
    fn stop_uml(&mut self) {
        let Some((mut child, stdin)) = self.uml.take() else {
            return;
        };
        drop(stdin);
        stop_child(&mut child, Duration::from_secs(5));
        let reference = self.reference.as_ref().map(ChronyPeer::pid);
        if let Some(netns) = &self.netns {
            for pid in netns.pids() {
                if Some(pid) != reference {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

impl Drop for UmlHost {
    fn drop(&mut self) {
        self.stop_uml();
        // Reference, then the namespace, then the copy (in that order).
        self.reference.take();
        self.netns.take();
        self.dir.take();
    }
}

/// Writes the test's files, the boot unit, the binary under test into the
/// copy, and makes the copy's chrony Debian's own.
fn prepare_root(root: &Path, files: &[GuestFile], command: &str) {
    let in_root = |path: &str| root.join(path.trim_start_matches('/'));

    // The containers' drop-in adds -x and clears ConditionCapability (they
    // have no CAP_SYS_TIME). UML's systemd has every capability: chrony runs
    // as shipped, with clock control.
    let drop_in = in_root("/etc/systemd/system/chrony.service.d/timectl-testhost.conf");
    if drop_in.exists() {
        std::fs::remove_file(&drop_in)
            .unwrap_or_else(|e| panic!("remove {}: {e}", drop_in.display()));
    }

    if !in_root("/usr/bin/ntpdig").exists() {
        install_from_offline_repo(root, &["python3-ntp", "ntpsec-ntpdig"]);
    }

    let binary = Path::new(env!("CARGO_BIN_EXE_timectl"));
    let target = in_root(TIMECTL_IN_GUEST);
    write_file(&target, &[], 0o755);
    std::fs::copy(binary, &target)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", binary.display(), target.display()));

    for file in files {
        write_file(&in_root(&file.path), &file.contents, file.mode);
    }

    let output_dir = Path::new(OUTPUT_IN_GUEST)
        .parent()
        .expect("output path has a directory");
    let unit = format!(
        "# The test's command, once at boot (tests/support/uml_host.rs).\n\
         [Unit]\n\
         Description=timectl test in UML\n\
         After=multi-user.target dbus.service\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStartPre=/sbin/ip link set eth0 up\n\
         ExecStartPre=/sbin/ip addr add {GUEST_ADDR}/24 dev eth0\n\
         ExecStartPre=/bin/mkdir -p {dir}\n\
         ExecStart=/bin/sh -c '{command} 2>&1 | tee {OUTPUT_IN_GUEST}'\n\
         ExecStopPost=/bin/systemctl poweroff -f\n\
         StandardOutput=tty\n\
         StandardError=tty\n\
         TTYPath=/dev/console\n\
         TimeoutStartSec=infinity\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        dir = output_dir.display(),
    );
    write_file(
        &in_root(&format!("/etc/systemd/system/{UNIT}")),
        unit.as_bytes(),
        0o644,
    );
    let wants = in_root("/etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap_or_else(|e| panic!("mkdir {}: {e}", wants.display()));
    std::os::unix::fs::symlink(format!("../{UNIT}"), wants.join(UNIT))
        .unwrap_or_else(|e| panic!("enable {UNIT}: {e}"));
}

/// `dpkg -i` of the newest .deb of each package in the copy's /srv/repo,
/// chrooted into the copy (its own dpkg, its own database).
fn install_from_offline_repo(root: &Path, packages: &[&str]) {
    let repo = root.join("srv/repo");
    let mut debs = Vec::new();
    for package in packages {
        let prefix = format!("{package}_");
        let mut found: Vec<String> = std::fs::read_dir(&repo)
            .unwrap_or_else(|e| panic!("read {}: {e}", repo.display()))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            .collect();
        found.sort();
        let deb = found.pop().unwrap_or_else(|| {
            panic!(
                "the test image has no {package} and its offline repository {} has no .deb of it",
                repo.display()
            )
        });
        debs.push(format!("/srv/repo/{deb}"));
    }
    let mut cmd = Command::new("chroot");
    cmd.arg(root)
        .args(["dpkg", "-i"])
        .args(&debs)
        .env("DEBIAN_FRONTEND", "noninteractive");
    let out = run(&mut cmd);
    check_ok(&describe(&cmd), &out);
}

fn write_file(path: &Path, contents: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// This machine's CLOCK_REALTIME against its monotonic clocks, to prove a
/// test left it alone. REALTIME - MONOTONIC moves only when the clock is
/// stepped (settimeofday, ADJ_SETOFFSET); REALTIME - MONOTONIC_RAW also moves
/// with the kernel's frequency correction (a few ppm here, normal drift).
#[derive(Debug, Clone, Copy)]
pub struct HostClockMark {
    realtime_minus_monotonic: f64,
    realtime_minus_raw: f64,
}

impl HostClockMark {
    pub fn take() -> HostClockMark {
        use nix::time::{ClockId, clock_gettime};
        let secs = |id: ClockId| -> f64 {
            let ts = clock_gettime(id).unwrap_or_else(|e| panic!("clock_gettime {id}: {e}"));
            ts.tv_sec() as f64 + ts.tv_nsec() as f64 * 1e-9
        };
        // Bracket the realtime read with monotonic reads; average them.
        let mono_a = secs(ClockId::CLOCK_MONOTONIC);
        let raw_a = secs(ClockId::CLOCK_MONOTONIC_RAW);
        let real = secs(ClockId::CLOCK_REALTIME);
        let raw_b = secs(ClockId::CLOCK_MONOTONIC_RAW);
        let mono_b = secs(ClockId::CLOCK_MONOTONIC);
        HostClockMark {
            realtime_minus_monotonic: real - (mono_a + mono_b) / 2.0,
            realtime_minus_raw: real - (raw_a + raw_b) / 2.0,
        }
    }

    /// Panics unless the host clock was neither stepped (REALTIME -
    /// MONOTONIC within 1 ms) nor slewed beyond normal drift (REALTIME -
    /// MONOTONIC_RAW within `drift`) since `self`. Returns both changes (s).
    pub fn assert_unchanged_since(&self, drift: Duration) -> (f64, f64) {
        let now = HostClockMark::take();
        let stepped = now.realtime_minus_monotonic - self.realtime_minus_monotonic;
        let slewed = now.realtime_minus_raw - self.realtime_minus_raw;
        assert!(
            stepped.abs() < 0.001 && slewed.abs() < drift.as_secs_f64(),
            "THIS MACHINE'S CLOCK CHANGED during the test: REALTIME-MONOTONIC moved by \
             {stepped:+.6} s, REALTIME-MONOTONIC_RAW by {slewed:+.6} s (allowed: 0.001 s and \
             {:.3} s)",
            drift.as_secs_f64()
        );
        (stepped, slewed)
    }
}
