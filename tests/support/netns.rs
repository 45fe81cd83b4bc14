//! Network namespaces named `timectl-<pid>-<seq>[-suffix]` with loopback up:
//! where peers, firewalls and containers live so that no test traffic leaves
//! loopback or touches the host's own network stack.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::{check_ok, run, run_ok, unique_name};

/// A network namespace deleted on Drop. Processes still inside keep it alive
/// in the kernel until they exit, but the name goes away; fixtures that start
/// processes in it stop them in their own Drop first.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `timectl-<pid>-<seq>` with `lo` up.
    pub fn new() -> NetNs {
        Self::named(&unique_name())
    }

    /// Creates a namespace with an exact name (must start with `timectl-`).
    pub fn named(name: &str) -> NetNs {
        assert!(
            name.starts_with("timectl-"),
            "namespace names must start with timectl-: {name}"
        );
        run_ok(Command::new("ip").args(["netns", "add", name]));
        let ns = NetNs {
            name: name.to_string(),
        };
        ns.run_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, for `systemd-nspawn --network-namespace-path`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`
    /// execs it, so the child's PID is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// `GET url` from inside the namespace, by a thread that joins it (so
    /// the namespace needs no HTTP tool): (status, body), or why it failed.
    pub fn http_get(&self, url: &str) -> Result<(u16, String), String> {
        let path = self.path();
        let url = url.to_string();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {}: {e}", path.display()))?;
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .proxy(None)
                .timeout_global(Some(std::time::Duration::from_secs(5)))
                .build()
                .into();
            let mut r = agent
                .get(&url)
                .call()
                .map_err(|e| format!("GET {url}: {e}"))?;
            let body = r
                .body_mut()
                .read_to_string()
                .map_err(|e| format!("GET {url}: {e}"))?;
            Ok((r.status().as_u16(), body))
        })
        .join()
        .map_err(|_| "the HTTP thread panicked".to_string())?
    }

    /// Runs `args` inside the namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("empty command");
        run(self.command(program).args(rest))
    }

    /// Runs `args` inside the namespace; panics with its output on failure.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        check_ok(
            &format!("ip netns exec {} {}", self.name, args.join(" ")),
            &out,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Connects this namespace to `other` with a veth pair: `th0` here with
    /// `cidr_here`, `th1` there with `cidr_there` (e.g. "192.0.2.1/24" and
    /// "192.0.2.2/24"). Deleting either namespace deletes the pair.
    pub fn link(&self, other: &NetNs, cidr_here: &str, cidr_there: &str) {
        run_ok(Command::new("ip").args([
            "-n",
            &self.name,
            "link",
            "add",
            "th0",
            "type",
            "veth",
            "peer",
            "name",
            "th1",
            "netns",
            &other.name,
        ]));
        self.run_ok(&["ip", "addr", "add", cidr_here, "dev", "th0"]);
        self.run_ok(&["ip", "link", "set", "th0", "up"]);
        other.run_ok(&["ip", "addr", "add", cidr_there, "dev", "th1"]);
        other.run_ok(&["ip", "link", "set", "th1", "up"]);
    }

    /// `nft -j list ruleset` inside the namespace, parsed.
    pub fn nft_ruleset(&self) -> serde_json::Value {
        let text = self.run_ok(&["nft", "-j", "list", "ruleset"]);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("nft -j output is not JSON ({e}): {text}"))
    }

    /// PIDs of the processes in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        let out = run(Command::new("ip").args(["netns", "pids", &self.name]));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns delete {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: ip netns delete {}: {e}", self.name),
        }
    }
}
