//! A fleet of test hosts driven by Ansible over SSH (tests/system_fleet.rs,
//! ci/ansible-bench.sh's hosts are made the same way).
//!
//! Several [`Container`]s, each with a veth into one controller network
//! namespace (a bridge `br0` there, 198.51.100.1/24; host N is
//! 198.51.100.(10+N), TEST-NET-2, routed nowhere). sshd runs in each
//! container (openssh-server is in the test image, disabled at boot) with a
//! key pair made for this fleet. `ansible-playbook` (ansible-core from the
//! venv ci/install-deps.sh makes) runs inside the controller namespace, so
//! the SSH traffic never leaves namespaces the test created.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Container, ContainerOptions, NetNs, check_ok, run, run_ok, temp_dir, unique_name};

/// Where ci/install-deps.sh installs ansible-core.
pub const ANSIBLE_VENV: &str = "/opt/timectl-ansible/venv";

/// The venv with ansible-playbook: $TIMECTL_ANSIBLE_VENV or [`ANSIBLE_VENV`].
pub fn ansible_venv() -> PathBuf {
    std::env::var_os("TIMECTL_ANSIBLE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(ANSIBLE_VENV))
}

/// Fails (never skips) unless root, the container tools, ssh and
/// ansible-playbook are there.
pub fn require() {
    let mut tools = super::CONTAINER_TOOLS.to_vec();
    tools.extend_from_slice(&["ssh", "ssh-keygen"]);
    super::require_root_and(&tools);
    let playbook = ansible_venv().join("bin/ansible-playbook");
    assert!(
        playbook.is_file(),
        "system test prerequisites not met: {} is missing (ansible-core). Install it with \
         `sudo ci/install-deps.sh` and run the fleet test with `sudo ci/system-tests.sh fleet`.",
        playbook.display()
    );
}

/// The timectl the action plugin copies to the hosts:
/// $TIMECTL_FLEET_BINARY (ci/ansible-bench.sh gives a release build) or
/// the one under test.
pub fn timectl_binary() -> PathBuf {
    std::env::var_os("TIMECTL_FLEET_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_timectl")))
}

/// One host of the fleet.
pub struct FleetHost {
    pub name: String,
    pub addr: String,
    pub container: Container,
}

/// Containers reachable by SSH from a controller namespace; everything is
/// removed on Drop (containers first, then the namespace).
pub struct Fleet {
    pub hosts: Vec<FleetHost>,
    ctl: NetNs,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Boots `n` hosts named host1..hostN, links them to the controller
    /// namespace and starts sshd in each with this fleet's key.
    pub fn boot(n: usize) -> Fleet {
        require();
        let t0 = Instant::now();
        let ctl = NetNs::named(&format!("{}-ctl", unique_name()));
        ctl.run_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        ctl.run_ok(&["ip", "addr", "add", "198.51.100.1/24", "dev", "br0"]);
        ctl.run_ok(&["ip", "link", "set", "br0", "up"]);
        let dir = temp_dir(&format!("{}-fleet", unique_name()), 0o700);
        let key = dir.path().join("id_ed25519");
        run_ok(
            Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "timectl-fleet-test",
                    "-f",
                ])
                .arg(&key),
        );
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");

        let mut fleet = Fleet {
            hosts: Vec::new(),
            ctl,
            dir,
        };
        for i in 1..=n {
            let container = Container::boot_with(ContainerOptions::default());
            let veth = format!("vh{i}");
            run_ok(Command::new("ip").args([
                "-n",
                container.netns().name(),
                "link",
                "add",
                "fleet0",
                "type",
                "veth",
                "peer",
                "name",
                &veth,
                "netns",
                fleet.ctl.name(),
            ]));
            let addr = format!("198.51.100.{}", 10 + i);
            container.netns().run_ok(&[
                "ip",
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "fleet0",
            ]);
            container
                .netns()
                .run_ok(&["ip", "link", "set", "fleet0", "up"]);
            fleet
                .ctl
                .run_ok(&["ip", "link", "set", &veth, "master", "br0"]);
            fleet.ctl.run_ok(&["ip", "link", "set", &veth, "up"]);
            container.exec_ok(&["install", "-d", "-m", "0700", "/root/.ssh"]);
            container.write_file("/root/.ssh/authorized_keys", &public);
            container.exec_ok(&["chmod", "0600", "/root/.ssh/authorized_keys"]);
            container.exec_ok(&["systemctl", "start", "ssh.service"]);
            fleet.hosts.push(FleetHost {
                name: format!("host{i}"),
                addr,
                container,
            });
        }
        for h in &fleet.hosts {
            let what = format!("ssh to {} ({})", h.name, h.addr);
            super::wait_for(&what, Duration::from_secs(20), || {
                let out = fleet.ssh(h, &["true"]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            });
        }
        fleet.write_ansible_config();
        super::record_timing(&format!("fleet: boot {n} hosts with sshd"), t0.elapsed());
        fleet
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    pub fn ctl(&self) -> &NetNs {
        &self.ctl
    }

    pub fn host(&self, name: &str) -> &FleetHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no fleet host {name}"))
    }

    /// `ssh root@HOST ARGS` from the controller namespace.
    pub fn ssh(&self, host: &FleetHost, args: &[&str]) -> Output {
        let mut cmd = self.ctl.command("ssh");
        cmd.args(["-i"])
            .arg(self.key())
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=3",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("root@{}", host.addr))
            .args(args)
            .stdin(Stdio::null());
        run(&mut cmd)
    }

    /// The inventory (group `fleet`) and ansible.cfg in the fleet's
    /// directory; the collection is found through a symlink to ansible/.
    fn write_ansible_config(&self) {
        let d = self.dir.path();
        let mut inv = String::from("[fleet]\n");
        for h in &self.hosts {
            inv.push_str(&format!("{} ansible_host={}\n", h.name, h.addr));
        }
        inv.push_str(&format!(
            "\n[fleet:vars]\nansible_user=root\nansible_ssh_private_key_file={}\n\
             ansible_python_interpreter=/usr/bin/python3\n",
            self.key().display()
        ));
        std::fs::write(d.join("inventory.ini"), inv).expect("write inventory");
        let coll = d.join("collections/ansible_collections/timectl");
        std::fs::create_dir_all(&coll).expect("collections dir");
        std::os::unix::fs::symlink(super::repo_root().join("ansible"), coll.join("timesync"))
            .expect("symlink the collection");
        std::fs::create_dir_all(d.join("cp")).expect("control path dir");
        let cfg = format!(
            "[defaults]\ncollections_path = {collections}\nhost_key_checking = False\n\
             forks = 10\nlocal_tmp = {d}/local-tmp\nretry_files_enabled = False\n\
             interpreter_python = /usr/bin/python3\n\
             [ssh_connection]\npipelining = True\ncontrol_path_dir = {d}/cp\n\
             ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null \
             -o StrictHostKeyChecking=no -o LogLevel=ERROR\n",
            collections = d.join("collections").display(),
            d = d.display()
        );
        std::fs::write(d.join("ansible.cfg"), cfg).expect("write ansible.cfg");
    }

    /// A command that runs `program` (from the ansible venv, or an absolute
    /// path) inside the controller namespace with this fleet's ansible.cfg,
    /// `TIMECTL_BINARY` = the timectl under test, and the venv on PATH.
    pub fn ansible_command(&self, program: &str) -> Command {
        let venv_bin = ansible_venv().join("bin");
        let exe = if program.starts_with('/') {
            PathBuf::from(program)
        } else {
            venv_bin.join(program)
        };
        let mut cmd = self.ctl.command(&exe.to_string_lossy());
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            venv_bin.display()
        );
        cmd.current_dir(self.dir.path())
            .env("PATH", path)
            .env("ANSIBLE_CONFIG", self.dir.path().join("ansible.cfg"))
            .env("ANSIBLE_HOME", self.dir.path().join("ansible-home"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("TIMECTL_BINARY", timectl_binary())
            .env_remove("TIMECTL_REVIEW_DIR")
            .stdin(Stdio::null());
        cmd
    }

    /// `ansible-playbook -i inventory.ini ARGS` in the controller namespace.
    pub fn playbook(&self, args: &[&str]) -> PlaybookRun {
        let mut cmd = self.ansible_command("ansible-playbook");
        cmd.arg("-i")
            .arg(self.dir.path().join("inventory.ini"))
            .args(args);
        PlaybookRun::run(cmd)
    }
}

/// What one ansible-playbook run printed, and its PLAY RECAP.
pub struct PlaybookRun {
    pub out: Output,
    pub took: Duration,
}

impl PlaybookRun {
    pub fn run(mut cmd: Command) -> PlaybookRun {
        let t0 = Instant::now();
        let out = run(&mut cmd);
        PlaybookRun {
            out,
            took: t0.elapsed(),
        }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    /// Everything to show when an assertion fails.
    pub fn context(&self) -> String {
        format!(
            "exit {:?} after {:.1} s\n--- stdout\n{}\n--- stderr\n{}",
            self.out.status.code(),
            self.took.as_secs_f64(),
            self.stdout(),
            String::from_utf8_lossy(&self.out.stderr)
        )
    }

    /// The PLAY RECAP counter `key` (ok, changed, failed, ...) of `host`.
    pub fn recap(&self, host: &str, key: &str) -> u32 {
        self.recap_in(&self.stdout(), host, key)
    }

    /// The same, in `text` (ansible-playbook's output captured elsewhere).
    pub fn recap_in(&self, text: &str, host: &str, key: &str) -> u32 {
        let recap = text
            .split("PLAY RECAP")
            .nth(1)
            .unwrap_or_else(|| panic!("no PLAY RECAP\n{}", self.context()));
        let line = recap
            .lines()
            .find(|l| l.split_whitespace().next() == Some(host))
            .unwrap_or_else(|| panic!("{host} not in PLAY RECAP\n{}", self.context()));
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= for {host} in {line:?}"))
    }

    pub fn success(&self) -> bool {
        self.out.status.success()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // The SSH control masters ansible-playbook left (ControlPersist) live
        // in the controller namespace, which only this fleet's processes
        // enter: end them by PID before the containers go.
        for pid in self.ctl.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        // Containers power off in their own Drop, before the namespace.
        self.hosts.clear();
    }
}

/// Panics with `run`'s output unless it succeeded.
pub fn check_run(what: &str, run: &PlaybookRun) {
    check_ok(what, &run.out);
}
