//! Real peers for the engine's interop tests and benchmarks: chronyd
//! processes on loopback ports (always `-x`: they never touch the clock),
//! the engine binary itself (always without clock control), network
//! namespaces, and a user-space UDP relay that shifts a real server's
//! timestamps to make an honest falseticker.
//!
//! Everything created is named `timectl-...` and removed by Drop guards,
//! also when a test fails. Processes are ended by the PID we started.
//! When a needed program is missing the helpers panic with what to install.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use timectl::engine::control::{self, StatusDocument};

/// Fails the test clearly when a program is missing.
pub fn require_program(name: &str, package: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} is not installed: run ci/engine-interop.sh (installs {package}) or `apt-get install {package}`"
    );
}

pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this test needs root (network namespaces, chronyd); run ci/engine-interop.sh as root"
        );
    }
}

/// A free UDP port on 127.0.0.1 (bound then released).
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port");
    s.local_addr().expect("local addr").port()
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind TCP");
    listener.local_addr().expect("local addr").port()
}

/// A temporary directory, mode 0750 (chronyd refuses a command socket in
/// a world-accessible directory).
pub fn state_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix("timectl-engine-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o750)).expect("chmod 0750");
    d
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (by its PID) and reaped on drop.
pub struct Guard {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Guard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_logged(mut cmd: Command, name: &str, log: PathBuf) -> Guard {
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Guard {
        child,
        name: name.to_owned(),
        log,
    }
}

/// A chronyd server or client, always with `-x`.
pub struct Chronyd {
    pub guard: Guard,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Chronyd {
    /// A chronyd serving its (undisciplined) system clock on 127.0.0.1:`port`
    /// with `local stratum 8`, as measured in TESTHOST.md.
    pub fn server(port: u16) -> Chronyd {
        Chronyd::start(port, "", None)
    }

    /// A chronyd inside network namespace `netns` (or on the host).
    pub fn start(port: u16, extra: &str, netns: Option<&Netns>) -> Chronyd {
        let chronyd = require_program("chronyd", "chrony");
        let dir = state_dir();
        let d = dir.path().display().to_string();
        let conf = format!(
            "port {port}\nlocal stratum 8\nallow 127.0.0.1\nbindaddress 127.0.0.1\ncmdport 0\n\
             bindcmdaddress {d}/chronyd.sock\npidfile {d}/chronyd.pid\ndriftfile {d}/drift\n{extra}\n"
        );
        Chronyd::launch(chronyd, dir, conf, port, netns)
    }

    /// A chronyd client of `127.0.0.1:server_port`, polling every 0.25-1 s.
    pub fn client_of(server_port: u16) -> Chronyd {
        let chronyd = require_program("chronyd", "chrony");
        let dir = state_dir();
        let d = dir.path().display().to_string();
        let conf = format!(
            "server 127.0.0.1 port {server_port} iburst minpoll -2 maxpoll 0\nport 0\ncmdport 0\n\
             bindcmdaddress {d}/chronyd.sock\npidfile {d}/chronyd.pid\ndriftfile {d}/drift\n"
        );
        Chronyd::launch(chronyd, dir, conf, 0, None)
    }

    fn launch(
        chronyd: PathBuf,
        dir: tempfile::TempDir,
        conf: String,
        port: u16,
        netns: Option<&Netns>,
    ) -> Chronyd {
        let conf_path = dir.path().join("chronyd.conf");
        std::fs::write(&conf_path, conf).expect("write chronyd.conf");
        let mut cmd = match netns {
            Some(ns) => ns.command(&chronyd),
            None => Command::new(&chronyd),
        };
        // -x: never touch the clock. -d: stay in the foreground, log to stderr.
        cmd.args(["-x", "-d", "-u", "root", "-f"]).arg(&conf_path);
        let guard = spawn_logged(cmd, "chronyd", dir.path().join("chronyd.log"));
        let mut c = Chronyd { guard, dir, port };
        let sock = c.socket();
        let start = Instant::now();
        while !sock.exists() {
            c.guard.assert_running();
            if start.elapsed() > Duration::from_secs(10) {
                panic!(
                    "chronyd did not create {}:\n{}",
                    sock.display(),
                    c.guard.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("chronyd.sock")
    }

    /// `chronyc -c sources` lines as fields.
    pub fn sources(&self) -> Vec<Vec<String>> {
        let chronyc = require_program("chronyc", "chrony");
        let out = Command::new(chronyc)
            .arg("-h")
            .arg(self.socket())
            .args(["-c", "-n", "sources"])
            .output()
            .expect("run chronyc");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    }

    /// Waits (up to `timeout`) until chronyd has selected a source (`*`).
    pub fn wait_selected(&self, what: &str, timeout: Duration) {
        wait_for(what, timeout, || {
            self.sources()
                .into_iter()
                .any(|f| f.len() > 2 && f[1] == "*")
                .then_some(())
        });
    }
}

/// The engine binary under test, always with `--no-clock-control` and
/// TIMECTL_NO_CLOCK_CONTROL=1 (the daemon refuses clock control then).
pub struct EngineProcess {
    pub guard: Guard,
    pub dir: tempfile::TempDir,
}

impl EngineProcess {
    pub fn start(args: &[&str]) -> EngineProcess {
        EngineProcess::start_in(args, None)
    }

    pub fn start_in(args: &[&str], netns: Option<&Netns>) -> EngineProcess {
        EngineProcess::start_via(args, |bin| match netns {
            Some(ns) => ns.command(bin),
            None => Command::new(bin),
        })
    }

    /// Starts the daemon through `command(timectl binary)`, a command that
    /// must exec the binary (so the child's PID is the daemon's) with the
    /// arguments appended to it.
    pub fn start_via(args: &[&str], command: impl FnOnce(&Path) -> Command) -> EngineProcess {
        let bin = env!("CARGO_BIN_EXE_timectl");
        let dir = state_dir();
        let mut cmd = command(Path::new(bin));
        cmd.arg("daemon")
            .args(args)
            .arg("--no-clock-control")
            .arg("--control")
            .arg(dir.path().join("engine.sock"));
        cmd.env("TIMECTL_NO_CLOCK_CONTROL", "1");
        let guard = spawn_logged(cmd, "timectl daemon", dir.path().join("engine.log"));
        let mut e = EngineProcess { guard, dir };
        let sock = e.control();
        let start = Instant::now();
        while !sock.exists() {
            e.guard.assert_running();
            if start.elapsed() > Duration::from_secs(10) {
                panic!(
                    "engine did not create its control socket:\n{}",
                    e.guard.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        e
    }

    pub fn control(&self) -> PathBuf {
        self.dir.path().join("engine.sock")
    }

    pub fn status(&mut self) -> StatusDocument {
        self.guard.assert_running();
        control::status(&self.control(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("status: {e}\n{}", self.guard.log_text()))
    }
}

/// A network namespace `timectl-...` with loopback up; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_root();
        let ip = require_program("ip", "iproute2");
        let name = format!("timectl-{tag}-{}", std::process::id());
        let ok = |out: std::io::Result<std::process::Output>, what: &str| {
            let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ok(
            Command::new(&ip).args(["netns", "add", &name]).output(),
            "ip netns add",
        );
        let ns = Netns { name };
        ok(
            Command::new(&ip)
                .args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"])
                .output(),
            "lo up",
        );
        ns
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`
    /// execs it, so the child's PID is the program's).
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(require_program("ip", "iproute2"));
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A UDP relay on 127.0.0.1 in front of a real NTP server that adds a fixed
/// offset to the server's receive, transmit and reference timestamps: a
/// client sees a server whose clock is wrong by exactly that offset, with
/// real packets, real delays and the real server's answers otherwise.
pub struct OffsetRelay {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl OffsetRelay {
    pub fn start(upstream: SocketAddr, offset_seconds: f64) -> OffsetRelay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("relay bind");
        let back = UdpSocket::bind("127.0.0.1:0").expect("relay bind");
        back.connect(upstream).expect("relay connect");
        front
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        back.set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let port = front.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let shift = (offset_seconds * 4_294_967_296.0).round() as i64 as u64;
        let thread = std::thread::spawn(move || {
            let mut client: Option<SocketAddr> = None;
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    client = Some(from);
                    let _ = back.send(&buf[..n]);
                }
                if let Ok(n) = back.recv(&mut buf) {
                    if n >= 48 {
                        for at in [16usize, 32, 40] {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(&buf[at..at + 8]);
                            let v = u64::from_be_bytes(b).wrapping_add(shift);
                            buf[at..at + 8].copy_from_slice(&v.to_be_bytes());
                        }
                    }
                    if let Some(c) = client {
                        let _ = front.send_to(&buf[..n], c);
                    }
                }
            }
        });
        OffsetRelay {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for OffsetRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
