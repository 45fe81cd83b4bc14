//! A real systemd host: a container booted with systemd-nspawn from the
//! cached Debian 12 test image (ci/testhost/build-image.sh), in its own cgroup
//! (ci/testhost/launch.sh) and its own network namespace, with its system bus
//! reachable from the test through a bind-mounted socket directory and the
//! timectl binary under test bind-mounted read-only at /opt/timectl.
//!
//! `--volatile=overlay` keeps the image read-only: every change a test makes
//! lives in a tmpfs and disappears at power-off, so all tests share one
//! rootfs and several containers can run at once.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{
    NetNs, check_ok, ci_script, describe, leftovers, run, run_ok, temp_dir, unique_name, wait_for,
};

/// Where the timectl binary appears inside containers.
pub const TIMECTL_IN_CONTAINER: &str = "/opt/timectl/timectl";

/// Addresses of the uplink veth pair (TEST-NET-1, never routed anywhere).
pub const UPLINK_CONTAINER_CIDR: &str = "192.0.2.1/24";
pub const UPLINK_UPSTREAM_CIDR: &str = "192.0.2.2/24";

/// How to boot a [`Container`].
#[derive(Debug, Clone)]
pub struct ContainerOptions {
    /// Also create an "upstream" namespace linked to the container by a veth
    /// pair (container 192.0.2.1, upstream 192.0.2.2). Needed for peers that
    /// must listen on port 123 while a daemon in the container also binds
    /// port 123 (ntpd cannot use another port); see [`Uplink`].
    pub uplink: bool,
    /// The binary whose directory is bind-mounted read-only at /opt/timectl.
    /// Default: this package's `timectl` (CARGO_BIN_EXE_timectl).
    pub timectl_binary: PathBuf,
    /// Extra read-only binds: (host path, path in the container).
    pub bind_ro: Vec<(PathBuf, String)>,
    /// Extra systemd-nspawn arguments. Never `--capability=CAP_SYS_TIME`.
    pub extra_args: Vec<String>,
    pub boot_timeout: Duration,
}

impl Default for ContainerOptions {
    fn default() -> Self {
        ContainerOptions {
            uplink: false,
            timectl_binary: PathBuf::from(env!("CARGO_BIN_EXE_timectl")),
            bind_ro: Vec::new(),
            extra_args: Vec::new(),
            boot_timeout: Duration::from_secs(30),
        }
    }
}

/// The upstream side of a container's uplink: a namespace holding `th1`
/// (192.0.2.2/24), linked to the container's `th0` (192.0.2.1/24).
pub struct Uplink {
    netns: NetNs,
}

impl Uplink {
    /// Where upstream peers run (e.g. `ChronyPeer::builder().netns(..)`).
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }
    /// The container's address on the link.
    pub fn container_addr(&self) -> IpAddr {
        IpAddr::from([192, 0, 2, 1])
    }
    /// The upstream namespace's first address on the link.
    pub fn upstream_addr(&self) -> IpAddr {
        IpAddr::from([192, 0, 2, 2])
    }
    /// Adds another upstream address (e.g. "192.0.2.3/24") so several port-123
    /// peers can run side by side.
    pub fn add_address(&self, cidr: &str) {
        self.netns
            .run_ok(&["ip", "addr", "add", cidr, "dev", "th1"]);
    }
}

/// How long the steps of booting and stopping took (for docs/testing.md and
/// for noticing regressions in the CI budget).
#[derive(Debug, Clone, Copy, Default)]
pub struct ContainerTimings {
    /// Getting the image (a cache hit is milliseconds).
    pub image: Duration,
    /// From exec of systemd-nspawn to SystemState running/degraded.
    pub boot: Duration,
    /// From PowerOff to the nspawn process gone and cgroups removed.
    pub poweroff: Option<Duration>,
}

/// A booted container; powered off and cleaned up on Drop (also when the test
/// panics).
pub struct Container {
    name: String,
    nspawn: Child,
    leader: Option<u32>,
    /// setpriv --bounding-set argument matching the container's PID 1.
    bounding_set: String,
    stopped: bool,
    timings: ContainerTimings,
    bus_dir: PathBuf,
    // Dropped after Drop::drop has stopped the container, in this order.
    uplink: Option<Uplink>,
    netns: NetNs,
    dir: tempfile::TempDir,
}

/// The root filesystem to boot: $TIMECTL_TESTHOST_ROOTFS if set (system-tests.sh
/// sets it), else whatever ci/testhost/build-image.sh prints (building the
/// image on a cache miss, once per process).
pub fn image_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            if let Some(dir) = std::env::var_os("TIMECTL_TESTHOST_ROOTFS") {
                let dir = PathBuf::from(dir);
                // Relative symlinks only (usr-merged lib -> usr/lib): an
                // absolute one would resolve against the host's root.
                assert!(
                    dir.join("usr/lib/systemd/systemd").is_file(),
                    "TIMECTL_TESTHOST_ROOTFS={} is not a bootable rootfs",
                    dir.display()
                );
                return dir;
            }
            let script = ci_script("testhost/build-image.sh");
            let out = run(Command::new(&script).stderr(Stdio::inherit()));
            check_ok(&script.display().to_string(), &out);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let path = stdout
                .lines()
                .last()
                .unwrap_or_else(|| panic!("{} printed no rootfs path", script.display()));
            PathBuf::from(path.trim())
        })
        .clone()
}

/// Capability names by number, as this machine's setpriv knows them.
fn capability_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        run_ok(Command::new("setpriv").arg("--list-caps"))
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    })
}

const CAP_SYS_TIME: u32 = 25;

/// The `CapBnd` mask of `pid`.
fn bounding_mask(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap_or_else(|| panic!("no CapBnd in /proc/{pid}/status"));
    u64::from_str_radix(hex.trim(), 16).unwrap_or_else(|e| panic!("CapBnd {hex:?}: {e}"))
}

impl Container {
    /// Boots a container with default options.
    pub fn boot() -> Container {
        Self::boot_with(ContainerOptions::default())
    }

    pub fn boot_with(options: ContainerOptions) -> Container {
        let t_image = Instant::now();
        let rootfs = image_rootfs();
        let image = t_image.elapsed();

        let name = unique_name();
        let netns = NetNs::named(&name);
        let uplink = options.uplink.then(|| {
            let up = NetNs::named(&format!("{name}-up"));
            netns.link(&up, UPLINK_CONTAINER_CIDR, UPLINK_UPSTREAM_CIDR);
            Uplink { netns: up }
        });
        let dir = temp_dir(&name, 0o700);
        // The container's dbus-daemon creates system_bus_socket here; its
        // other users (messagebus, daemons) must reach it.
        let bus_dir = dir.path().join("dbus");
        std::fs::create_dir(&bus_dir).expect("create bus dir");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bus_dir, std::fs::Permissions::from_mode(0o755))
                .expect("chmod bus dir");
        }
        let console = std::fs::File::create(dir.path().join("console.log")).expect("console log");

        let bin_dir = options
            .timectl_binary
            .parent()
            .unwrap_or_else(|| panic!("{} has no directory", options.timectl_binary.display()))
            .to_path_buf();
        let mut cmd = Command::new(ci_script("testhost/launch.sh"));
        cmd.arg(&name)
            .arg(&rootfs)
            .arg(&bus_dir)
            .arg(netns.path())
            .arg(format!("--bind-ro={}:/opt/timectl", bin_dir.display()));
        for (host, inside) in &options.bind_ro {
            cmd.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        for arg in &options.extra_args {
            assert!(
                !arg.to_ascii_lowercase().contains("sys_time"),
                "never give a test container CAP_SYS_TIME: {arg}"
            );
            cmd.arg(arg);
        }
        cmd.stdin(Stdio::null())
            .stdout(console.try_clone().expect("dup console"))
            .stderr(console);
        let t_boot = Instant::now();
        let nspawn = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&cmd)));

        // From here on Drop cleans up, whatever goes wrong while booting.
        let mut container = Container {
            name,
            nspawn,
            leader: None,
            bounding_set: String::new(),
            stopped: false,
            timings: ContainerTimings {
                image,
                ..ContainerTimings::default()
            },
            bus_dir,
            uplink,
            netns,
            dir,
        };
        container.wait_ready(options.boot_timeout);
        container.timings.boot = t_boot.elapsed();
        container.bounding_set = container.leader_bounding_set();
        container
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let what = format!("container {} to boot", self.name);
        wait_for(&what, timeout, || {
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn for {} exited while booting ({status}); console:\n{}",
                    self.name,
                    self.console_log()
                );
            }
            if self.leader.is_none() {
                self.leader = find_leader(self.nspawn.id());
            }
            if self.leader.is_none() {
                return Err("no systemd child of nspawn yet".into());
            }
            let state = self.try_system_state()?;
            match state.as_str() {
                "running" | "degraded" => Ok(()),
                other => Err(format!("SystemState {other}")),
            }
        });
    }

    /// The manager's SystemState over the container's bus, read from the host.
    pub fn try_system_state(&self) -> Result<String, String> {
        if !self.bus_socket().exists() {
            return Err("no system bus socket yet".into());
        }
        super::bus_string_property(
            &self.bus_address(),
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "SystemState",
        )
    }

    fn leader_bounding_set(&self) -> String {
        let mask = bounding_mask(self.leader_pid());
        assert!(
            mask & (1 << CAP_SYS_TIME) == 0,
            "container {} has CAP_SYS_TIME in its bounding set: it could set this \
             machine's clock; refusing to go on",
            self.name
        );
        let mut spec = vec!["-all".to_string()];
        for (bit, name) in capability_names().iter().enumerate() {
            if bit < 64 && mask & (1u64 << bit) != 0 {
                spec.push(format!("+{name}"));
            }
        }
        spec.join(",")
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn nspawn_pid(&self) -> u32 {
        self.nspawn.id()
    }
    /// PID (in the host's namespace) of the container's systemd.
    pub fn leader_pid(&self) -> u32 {
        self.leader.expect("container has no leader: not booted")
    }
    /// The container's network namespace: host-side peers started in it share
    /// the container's loopback (127.0.0.1 is the same address for both).
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }
    /// The upstream side of the uplink, if booted with `uplink: true`.
    pub fn uplink(&self) -> &Uplink {
        self.uplink
            .as_ref()
            .expect("container booted without an uplink (ContainerOptions::uplink)")
    }
    pub fn bus_socket(&self) -> PathBuf {
        self.bus_dir.join("system_bus_socket")
    }
    /// D-Bus address of the container's system bus, for zbus
    /// (`connection::Builder::address`), busctl `--address=` or
    /// `DBUS_SYSTEM_BUS_ADDRESS`.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.bus_socket().display())
    }
    pub fn timings(&self) -> ContainerTimings {
        self.timings
    }
    /// systemd-nspawn's own output.
    pub fn console_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// A command that runs `args` inside the container: all its namespaces
    /// (nsenter into PID 1), its capability bounding set (so no CAP_SYS_TIME),
    /// a clean environment. stdin is /dev/null.
    pub fn command(&self, args: &[&str]) -> Command {
        assert!(!args.is_empty(), "empty command");
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.leader_pid().to_string())
            .args(["-a", "--", "setpriv"])
            .arg(format!("--bounding-set={}", self.bounding_set))
            .args(["--inh-caps=-all", "--"])
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `args` inside the container.
    pub fn exec(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    /// Runs `args` inside; panics with its output unless it exits 0.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        check_ok(&format!("[{}] {}", self.name, args.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the bind-mounted timectl inside the container.
    pub fn timectl(&self, args: &[&str]) -> Output {
        let mut argv = vec![TIMECTL_IN_CONTAINER];
        argv.extend_from_slice(args);
        self.exec(&argv)
    }

    /// `apt-get -y -q ARGS` (non-interactive) against the image's offline
    /// repository; panics with apt's output on failure.
    pub fn apt_get(&self, args: &[&str]) -> String {
        let mut argv = vec![
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "-y",
            "-q",
        ];
        argv.extend_from_slice(args);
        self.exec_ok(&argv)
    }

    /// dpkg's status of `package` ("installed", "config-files", ... or
    /// "not-installed" when dpkg has never heard of it).
    pub fn package_status(&self, package: &str) -> String {
        let out = self.exec(&["dpkg-query", "-W", "-f=${db:Status-Status}", package]);
        let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if status.is_empty() {
            "not-installed".to_string()
        } else {
            status
        }
    }

    /// `systemctl ARGS` inside (exit status not checked).
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut argv = vec!["systemctl"];
        argv.extend_from_slice(args);
        self.exec(&argv)
    }

    /// `systemctl show -P PROPERTY UNIT`, e.g. ActiveState.
    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        let out = self.systemctl(&["show", "-P", property, unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until `unit`'s ActiveState is `state`; on timeout the panic
    /// message carries `systemctl status` and the unit's journal.
    pub fn wait_unit_state(&self, unit: &str, state: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let now = self.unit_property(unit, "ActiveState");
            if now == state {
                return;
            }
            if start.elapsed() >= timeout {
                let status = self.systemctl(&["status", "--no-pager", "-l", unit]);
                let journal = self.exec(&["journalctl", "--no-pager", "-n", "30", "-u", unit]);
                panic!(
                    "[{}] {unit} is {now}, not {state}, after {timeout:?}\n{}\n{}",
                    self.name,
                    String::from_utf8_lossy(&status.stdout),
                    String::from_utf8_lossy(&journal.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes `contents` to `path` inside the container (through `tee` in the
    /// container, so the path resolves in its root, symlinks included).
    pub fn write_file(&self, path: &str, contents: &str) {
        use std::io::Write;
        let mut cmd = self.command(&["tee", path]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&cmd)));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(contents.as_bytes())
            .unwrap_or_else(|e| panic!("write {path} in {}: {e}", self.name));
        let out = child.wait_with_output().expect("wait for tee");
        check_ok(&format!("[{}] tee {path}", self.name), &out);
    }

    /// Reads `path` inside the container.
    pub fn read_file(&self, path: &str) -> String {
        self.exec_ok(&["cat", path])
    }

    /// Powers off (D-Bus PowerOff), waits for nspawn to exit and removes the
    /// container's cgroups; returns how long that took. Drop does the same.
    pub fn poweroff(mut self) -> Duration {
        self.stop()
    }

    fn stop(&mut self) -> Duration {
        let start = Instant::now();
        if self.stopped {
            return Duration::ZERO;
        }
        self.stopped = true;
        if self.nspawn.try_wait().ok().flatten().is_none() {
            let _ = Command::new("busctl")
                .args([
                    &format!("--address={}", self.bus_address()),
                    "--timeout=5",
                    "call",
                    "org.freedesktop.systemd1",
                    "/org/freedesktop/systemd1",
                    "org.freedesktop.systemd1.Manager",
                    "PowerOff",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !wait_exit(&mut self.nspawn, Duration::from_secs(15)) {
                eprintln!(
                    "warning: container {} did not power off; terminating nspawn",
                    self.name
                );
                // nspawn turns SIGTERM into an orderly shutdown of the container.
                super::stop_child(&mut self.nspawn, Duration::from_secs(5));
            }
        }
        kill_cgroup(&self.name);
        remove_cgroups(&self.name);
        let propagate = Path::new("/run/systemd/nspawn/propagate").join(&self.name);
        let _ = std::fs::remove_dir_all(propagate);
        let took = start.elapsed();
        if std::env::var_os("TIMECTL_TESTHOST_DEBUG").is_some() {
            eprintln!("[{}] console:\n{}", self.name, self.console_log());
        }
        self.timings.poweroff = Some(took);
        took
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.stop();
        // netns, uplink and the temp dir go with the fields; report anything
        // else that survived so a leak is visible in the test output.
        let left: Vec<String> = leftovers(&self.name)
            .into_iter()
            .filter(|l| !l.starts_with("network namespace"))
            .collect();
        if !left.is_empty() {
            eprintln!("warning: container {} left {left:?}", self.name);
        }
    }
}

/// The container's systemd: the `systemd` child of the nspawn process.
fn find_leader(nspawn_pid: u32) -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &nspawn_pid.to_string(), "-x", "systemd"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Kills whatever still runs in the container's cgroup (cgroup v2's
/// cgroup.kill covers the whole subtree). Normally nothing is left.
fn kill_cgroup(name: &str) {
    for root in super::cgroup_roots() {
        let kill = root.join("timectl").join(name).join("cgroup.kill");
        if kill.exists() {
            let _ = std::fs::write(kill, "1");
        }
    }
}

/// Removes the container's cgroup directories, deepest first; retries for a
/// moment because the kernel frees a cgroup shortly after its last task exits.
fn remove_cgroups(name: &str) {
    for root in super::cgroup_roots() {
        let top = root.join("timectl").join(name);
        let deadline = Instant::now() + Duration::from_secs(5);
        while top.exists() {
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs);
            // Deepest first.
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in &dirs {
                let _ = std::fs::remove_dir(d);
            }
            if !top.exists() {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!("warning: cannot remove cgroup {}", top.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}
