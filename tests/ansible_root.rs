//! The Ansible module against an offline root (`root:`), on this machine
//! through Ansible's local connection: no containers, but the real
//! ansible-playbook, the real collection (ansible/) and the real timectl.
//! check mode changes nothing, apply converges, a second apply changes
//! nothing, a bad desired state fails with timectl's file:line:column
//! message and changes nothing, `rollback: last` puts the root back.
//!
//! `install_binary: false`: the action plugin must not install timectl on
//! this machine; the binary under test runs.
//!
//! Twice: with pipelining (the action plugin runs timectl itself with one
//! shell command and builds the result on the controller) and without (the
//! module runs on the target, as it does for `rollback` in both).
//!
//! #[ignore]d: needs ansible-core (ci/install-deps.sh); run with
//! `sudo ci/system-tests.sh ansible`.

mod support;
mod util;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::fleet::ansible_venv;

struct Local {
    dir: tempfile::TempDir,
    pipelining: bool,
}

impl Local {
    fn new(pipelining: bool) -> Local {
        let playbook = ansible_venv().join("bin/ansible-playbook");
        assert!(
            playbook.is_file(),
            "{} is missing (ansible-core): run `sudo ci/install-deps.sh`, then \
             `sudo ci/system-tests.sh ansible`",
            playbook.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let coll = dir.path().join("collections/ansible_collections/timectl");
        std::fs::create_dir_all(&coll).unwrap();
        std::os::unix::fs::symlink(support::repo_root().join("ansible"), coll.join("timesync"))
            .unwrap();
        Local { dir, pipelining }
    }

    /// Runs one converge task with `args` (YAML, indented 8) in check mode
    /// or not; returns (success, stdout, the task's result).
    fn converge(&self, args: &str, check: bool) -> (bool, String, Value) {
        let review = self.dir.path().join("review");
        let _ = std::fs::remove_dir_all(&review);
        let playbook = self.dir.path().join("play.yml");
        std::fs::write(
            &playbook,
            format!(
                "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - timectl.timesync.converge:\n        install_binary: false\n        timectl_path: {}\n{args}",
                env!("CARGO_BIN_EXE_timectl")
            ),
        )
        .unwrap();
        let mut cmd = Command::new(ansible_venv().join("bin/ansible-playbook"));
        cmd.args(["-i", "localhost,", "-c", "local", "--diff"])
            .arg(&playbook)
            .env(
                "ANSIBLE_COLLECTIONS_PATH",
                self.dir.path().join("collections"),
            )
            .env("ANSIBLE_HOME", self.dir.path().join("home"))
            .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env(
                "ANSIBLE_PYTHON_INTERPRETER",
                ansible_venv().join("bin/python3"),
            )
            .env("TIMECTL_REVIEW_DIR", &review)
            .env(
                "ANSIBLE_PIPELINING",
                if self.pipelining { "True" } else { "False" },
            );
        if check {
            cmd.arg("--check");
        }
        let out = cmd.output().expect("run ansible-playbook");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let result = std::fs::read_to_string(review.join("localhost.json"))
            .map(|t| serde_json::from_str(&t).expect("review JSON"))
            .unwrap_or(Value::Null);
        (out.status.success(), stdout, result)
    }
}

fn spec_args(root: &Path) -> String {
    format!(
        "        src: {}\n        root: {}\n",
        support::repo_root()
            .join("examples/debian12-chrony-pool.yaml")
            .display(),
        root.display()
    )
}

#[test]
#[ignore = "needs ansible-core from ci/install-deps.sh; run ci/system-tests.sh ansible"]
fn ansible_module_on_an_offline_root() {
    module_on_an_offline_root(Local::new(true));
}

#[test]
#[ignore = "needs ansible-core from ci/install-deps.sh; run ci/system-tests.sh ansible"]
fn ansible_module_on_an_offline_root_without_pipelining() {
    module_on_an_offline_root(Local::new(false));
}

fn module_on_an_offline_root(local: Local) {
    let root = util::copy_root("debian12");
    let original = util::snapshot(root.path());

    // Check mode + diff: the plan, its diff, nothing changed.
    let (ok, out, r) = local.converge(&spec_args(root.path()), true);
    assert!(ok, "{out}");
    assert_eq!(r["changed"], true, "{r:#}");
    assert_eq!(r["outcome"], "planned", "{r:#}");
    assert_eq!(r["steps"][0], "update /etc/chrony/chrony.conf", "{r:#}");
    assert_eq!(r["plan"]["kind"], "plan", "{r:#}");
    assert!(
        r["plan_markdown"]
            .as_str()
            .unwrap_or("")
            .starts_with("### timectl plan: Plan: 0 to add, 1 to change"),
        "{r:#}"
    );
    assert!(
        out.contains("+++ /etc/chrony/chrony.conf (desired)"),
        "{out}"
    );
    assert!(
        out.contains("+pool 2.debian.pool.ntp.org iburst maxsources 4"),
        "{out}"
    );
    assert_eq!(
        util::snapshot(root.path()),
        original,
        "check mode changed the root"
    );

    // Apply, then again.
    let (ok, out, r) = local.converge(&spec_args(root.path()), false);
    assert!(ok, "{out}");
    assert_eq!(r["changed"], true, "{r:#}");
    assert_eq!(r["outcome"], "converged", "{r:#}");
    assert_eq!(r["report"]["outcome"], "converged", "{r:#}");
    let conf = std::fs::read_to_string(root.path().join("etc/chrony/chrony.conf")).unwrap();
    assert!(
        conf.contains("pool 2.debian.pool.ntp.org iburst maxsources 4"),
        "{conf}"
    );
    let converged = util::snapshot(root.path());
    let (ok, out, r) = local.converge(&spec_args(root.path()), false);
    assert!(ok, "{out}");
    assert_eq!(r["changed"], false, "{r:#}");
    assert_eq!(r["outcome"], "no-changes", "{r:#}");
    assert!(out.contains("changed=0"), "{out}");

    // A bad desired state (inline): timectl's message with line and column,
    // nothing changed.
    let bad = format!(
        "        root: {}\n        state:\n          timesync:\n            provider: chrony\n            sources:\n              - server: ntp1.example.com\n                ibrust: true\n",
        root.path().display()
    );
    let (ok, out, r) = local.converge(&bad, false);
    assert!(!ok, "{out}");
    let msg = r["msg"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("timectl plan failed: ansible.yaml:"),
        "{r:#}"
    );
    assert!(msg.contains("unknown field `ibrust`"), "{r:#}");
    let mut now = util::snapshot(root.path());
    // the run journal of the first apply is there in both
    now.retain(|k, _| !k.contains("var/lib/timectl"));
    let mut want = converged.clone();
    want.retain(|k, _| !k.contains("var/lib/timectl"));
    assert_eq!(now, want, "a bad desired state changed the root");

    // rollback: last puts the root back as it was.
    let rb = format!(
        "        rollback: last\n        root: {}\n",
        root.path().display()
    );
    let (ok, out, r) = local.converge(&rb, false);
    assert!(ok, "{out}");
    assert_eq!(r["outcome"], "rolled-back-by-request", "{r:#}");
    assert_eq!(r["changed"], true, "{r:#}");
    let conf = std::fs::read_to_string(root.path().join("etc/chrony/chrony.conf")).unwrap();
    let original_conf = std::fs::read_to_string(
        support::repo_root().join("examples/roots/debian12/etc/chrony/chrony.conf"),
    )
    .unwrap();
    assert_eq!(conf, original_conf);
}
