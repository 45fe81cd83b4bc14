//! timectl through Ansible on a fleet of real hosts: three test-host
//! containers (systemd, the offline apt repository) reached over SSH from a
//! controller network namespace, driven by one playbook that uses the
//! `timectl.timesync.converge` module of the collection in ansible/ with
//! `gather_facts: false`.
//!
//! The hosts start from different daemons (chrony configured by hand,
//! ntpsec, nothing); each has its own chronyd peer on its loopback
//! (127.0.0.1:11123, in the container's network namespace). The playbook's
//! desired state is the same for all: chrony on that peer.
//!
//! 0. `--check` with `{arch}` in timectl_binary: the action plugin's
//!    module path (probe, binary in a private directory, the module on the
//!    target) plans every host and changes nothing;
//! 1. `--check --diff` through examples/fleet-review.py: every host's plan
//!    and diff is shown, the review document has three distinct plans, and
//!    nothing on any host changed;
//! 2. apply: all three converge (changed=1, chrony synchronised);
//! 3. apply again: changed=0 on every host; the review now shows one plan
//!    ("no changes") for the three hosts;
//! 4. a change rolled out while host3's upstream is down: host3's
//!    verification fails, it is reported failed and rolled back (its files
//!    and units as before), host1 and host2 converge.
//!
//! Run as root with `ci/system-tests.sh fleet` (needs ansible-core from
//! ci/install-deps.sh).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::container::Container;
use support::fleet::{Fleet, FleetHost, PlaybookRun};
use support::live::{chrony_selected, hand_configured_chrony, loopback_peer, text};
use support::{ChronyPeer, record_figure, record_timing, wait_for};

const PLAYBOOK: &str = "---
- name: Time sync by timectl
  hosts: fleet
  gather_facts: false
  tasks:
    - name: Converge time sync
      timectl.timesync.converge:
        state: \"{{ timesync_state }}\"
        spec_name: fleet.yaml
        compress_binary: \"{{ compress_binary | default(false) }}\"
        timectl_binary: \"{{ timectl_binary | default(omit) }}\"
";

/// The desired state (a vars file: `-e @FILE`), chrony on each host's
/// loopback peer; `maxpoll` and `within` vary between rollouts.
fn state_vars(maxpoll: i32, within: &str) -> String {
    format!(
        "{}    verify: {{ synchronized: true, within: {within}, maxOffset: 100ms }}\n",
        state_vars_without_verify(maxpoll)
    )
}

/// The same without `verify`: the job the timesync role does (configure,
/// install, start), for the like-for-like column of the benchmark.
fn state_vars_without_verify(maxpoll: i32) -> String {
    format!(
        "timesync_state:\n  timesync:\n    provider: chrony\n    sources:\n      - server: 127.0.0.1\n        port: 11123\n        iburst: true\n        minpoll: -2\n        maxpoll: {maxpoll}\n    clockControl: false\n"
    )
}

/// The same job on timectl's default, the embedded engine (`timectl
/// daemon` as a systemd service: no package to install), with verify.
fn state_vars_embedded() -> String {
    state_vars(0, "30s").replace("provider: chrony", "provider: embedded")
}

/// What a run must not change (check mode) or must put back (rollback):
/// daemons' packages and units, the config files, timectl's own state.
fn host_state(h: &FleetHost) -> BTreeMap<String, String> {
    let c = &h.container;
    let mut s = BTreeMap::new();
    for p in ["chrony", "ntpsec"] {
        s.insert(format!("package {p}"), c.package_status(p));
    }
    for u in ["chrony.service", "ntpsec.service"] {
        s.insert(
            format!("unit {u}"),
            format!(
                "{} {}",
                c.unit_property(u, "ActiveState"),
                c.unit_property(u, "UnitFileState")
            ),
        );
    }
    for f in [
        "/etc/chrony/chrony.conf",
        "/etc/ntpsec/ntp.conf",
        "/usr/local/bin/timectl",
    ] {
        s.insert(
            format!("file {f}"),
            host_sha256(c, f).unwrap_or_else(|| "absent".to_string()),
        );
    }
    let out = c.exec(&["sh", "-c", "ls /var/lib/timectl/runs 2>/dev/null | wc -l"]);
    s.insert("timectl runs".into(), text(&out.stdout).trim().to_string());
    // The action plugin's private directories (the desired state, the plan,
    // in check mode the controller's binary) are gone after each run.
    let out = c.exec(&[
        "sh",
        "-c",
        "ls -d /root/.ansible/tmp/timectl-ansible.* 2>/dev/null | wc -l",
    ]);
    s.insert(
        "action plugin directories left".into(),
        text(&out.stdout).trim().to_string(),
    );
    s
}

/// Starting daemons: host1 chrony configured by hand, host2 ntpsec, host3
/// nothing.
fn starting_daemons(fleet: &Fleet) {
    hand_configured_chrony(&fleet.host("host1").container);
    let h2 = &fleet.host("host2").container;
    h2.apt_get(&["install", "ntpsec"]);
    h2.wait_unit_state("ntpsec.service", "active", Duration::from_secs(20));
}

fn review(fleet: &Fleet, vars: &str, out_md: &str, extra: &[&str]) -> (PlaybookRun, String) {
    let mut cmd = fleet.ansible_command("python3");
    cmd.arg(support::repo_root().join("examples/fleet-review.py"))
        .args(["--out", out_md, "--"])
        .arg("-i")
        .arg(fleet.dir().join("inventory.ini"))
        .arg("playbook.yml")
        .arg(format!("-e@{vars}"))
        .args(extra);
    let run = PlaybookRun::run(cmd);
    let md = std::fs::read_to_string(fleet.dir().join(out_md)).unwrap_or_default();
    (run, md)
}

#[test]
#[ignore = "needs root, systemd-nspawn, the test image and ansible-core; run ci/system-tests.sh fleet"]
fn fleet_check_apply_idempotent_and_partial_rollback() {
    let t_all = Instant::now();
    let fleet = Fleet::boot(3);
    let peers: Vec<_> = fleet
        .hosts
        .iter()
        .map(|h| Some(loopback_peer(&h.container)))
        .collect();
    let mut peers = peers;

    // Starting daemons: chrony by hand, ntpsec, nothing.
    hand_configured_chrony(&fleet.host("host1").container);
    let h2 = &fleet.host("host2").container;
    h2.apt_get(&["install", "ntpsec"]);
    h2.wait_unit_state("ntpsec.service", "active", Duration::from_secs(20));

    std::fs::write(fleet.dir().join("playbook.yml"), PLAYBOOK).unwrap();
    std::fs::write(fleet.dir().join("v1.yml"), state_vars(0, "30s")).unwrap();
    std::fs::write(
        fleet.dir().join("v1-noverify.yml"),
        state_vars_without_verify(0),
    )
    .unwrap();
    std::fs::write(fleet.dir().join("v2.yml"), state_vars(1, "8s")).unwrap();

    let before: Vec<_> = fleet.hosts.iter().map(host_state).collect();

    // 0. check mode the other way: with `{arch}` in timectl_binary (its
    // SHA-256 needs the target's architecture first) the action plugin
    // probes, copies the binary to a private directory and runs the module
    // on the target, then removes the directory. Plans, changes nothing.
    let arch_bin = fleet.dir().join("arch-bin");
    std::fs::create_dir_all(&arch_bin).unwrap();
    std::os::unix::fs::symlink(
        support::fleet::timectl_binary(),
        arch_bin.join(format!("timectl-{}", std::env::consts::ARCH)),
    )
    .unwrap();
    let by_module = fleet.playbook(&[
        "playbook.yml",
        "-e@v1.yml",
        "--check",
        "-e",
        &format!("timectl_binary={}/timectl-{{arch}}", arch_bin.display()),
    ]);
    assert!(
        by_module.success(),
        "check through the module failed:\n{}",
        by_module.context()
    );
    for h in &fleet.hosts {
        assert_eq!(
            by_module.recap(&h.name, "changed"),
            1,
            "{}",
            by_module.context()
        );
    }
    let after: Vec<_> = fleet.hosts.iter().map(host_state).collect();
    assert_eq!(before, after, "check mode (module path) changed a host");

    // 1. check + diff, through the review script.
    let (check, md) = review(&fleet, "v1.yml", "review-before.md", &["--diff"]);
    record_timing(
        "fleet: ansible-playbook --check --diff (3 hosts)",
        check.took,
    );
    assert!(check.success(), "check run failed:\n{}", check.context());
    let log = text(&check.out.stderr); // the review script passes ansible's output on stderr
    eprintln!("--- check --diff output\n{log}\n--- review document\n{md}");
    for h in &fleet.hosts {
        assert_eq!(check.recap_in(&log, &h.name, "changed"), 1, "{log}");
        assert_eq!(check.recap_in(&log, &h.name, "failed"), 0, "{log}");
    }
    // The diffs: host1 edits chrony.conf, host3 creates it (after apt), host2
    // stops ntpsec; each host's step list is there.
    assert!(
        log.contains("+++ /etc/chrony/chrony.conf (desired)"),
        "{log}"
    );
    assert!(log.contains("+server 127.0.0.1 port 11123"), "{log}");
    assert!(log.contains("stop ntpsec.service"), "{log}");
    assert!(log.contains("install package chrony"), "{log}");
    let after: Vec<_> = fleet.hosts.iter().map(host_state).collect();
    assert_eq!(before, after, "check mode changed a host");
    assert!(md.contains("3 host(s): 3 with changes"), "{md}");
    assert!(md.contains("3 distinct plan(s)"), "{md}");
    for h in &fleet.hosts {
        assert!(md.contains(&format!("`{}`", h.name)), "{md}");
    }

    // 2. apply: all converge. The check run above sent the binary as it is
    // (the default); this one sends it gzip-compressed.
    let apply = fleet.playbook(&["playbook.yml", "-e@v1.yml", "-e", "compress_binary=true"]);
    record_timing("fleet: ansible-playbook apply (3 hosts)", apply.took);
    assert!(apply.success(), "apply failed:\n{}", apply.context());
    // The binary arrived byte for byte.
    let binary = std::fs::read(support::fleet::timectl_binary()).expect("read timectl");
    let wanted = hex::encode(Sha256::digest(&binary));
    for h in &fleet.hosts {
        assert_eq!(apply.recap(&h.name, "changed"), 1, "{}", apply.context());
        let c = &h.container;
        assert_eq!(
            host_sha256(c, "/usr/local/bin/timectl").as_deref(),
            Some(wanted.as_str()),
            "{}: the installed timectl is not the controller's",
            h.name
        );
        assert_eq!(
            c.unit_property("chrony.service", "ActiveState"),
            "active",
            "{}",
            h.name
        );
        assert_eq!(
            chrony_selected(c).as_deref(),
            Some("127.0.0.1"),
            "{}",
            h.name
        );
        assert_ne!(
            c.unit_property("ntpsec.service", "ActiveState"),
            "active",
            "{}",
            h.name
        );
    }

    // 3. again: nothing to do anywhere; the review groups the three hosts.
    let again = fleet.playbook(&["playbook.yml", "-e@v1.yml"]);
    record_timing("fleet: ansible-playbook apply again (3 hosts)", again.took);
    assert!(again.success(), "second apply failed:\n{}", again.context());
    for h in &fleet.hosts {
        assert_eq!(again.recap(&h.name, "changed"), 0, "{}", again.context());
    }
    let (check2, md2) = review(&fleet, "v1.yml", "review-after.md", &[]);
    assert!(check2.success(), "{}", check2.context());
    eprintln!("--- review document after convergence\n{md2}");
    assert!(md2.contains("1 distinct plan(s)"), "{md2}");
    assert!(
        md2.contains("Hosts: `host1`, `host2`, `host3`"),
        "identical plans must appear once with their hosts:\n{md2}"
    );

    // 4. host3's upstream goes away; the next rollout fails there only.
    let converged: Vec<_> = fleet.hosts.iter().map(host_state).collect();
    peers[2] = None;
    let partial = fleet.playbook(&["playbook.yml", "-e@v2.yml"]);
    record_timing(
        "fleet: ansible-playbook apply, host3 fails (3 hosts)",
        partial.took,
    );
    assert!(
        !partial.success(),
        "host3 must fail:\n{}",
        partial.context()
    );
    assert_eq!(
        partial.recap("host1", "changed"),
        1,
        "{}",
        partial.context()
    );
    assert_eq!(
        partial.recap("host2", "changed"),
        1,
        "{}",
        partial.context()
    );
    assert_eq!(partial.recap("host1", "failed"), 0, "{}", partial.context());
    assert_eq!(partial.recap("host2", "failed"), 0, "{}", partial.context());
    assert_eq!(partial.recap("host3", "failed"), 1, "{}", partial.context());
    let out = partial.stdout();
    eprintln!("--- rollout with host3's upstream down\n{out}");
    // The failed host's result: timectl's reason and the rollback report.
    let fatal: serde_json::Value = out
        .lines()
        .find_map(|l| l.strip_prefix("fatal: [host3]: FAILED! => "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no JSON result for host3:\n{out}"));
    let msg = fatal["msg"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("timectl apply rolled-back: not synchronised within 8s"),
        "{fatal:#}"
    );
    assert_eq!(fatal["outcome"], "rolled-back", "{fatal:#}");
    assert_eq!(fatal["report"]["outcome"], "rolled-back", "{fatal:#}");
    assert_eq!(fatal["rollback"]["complete"], true, "{fatal:#}");
    let undone = fatal["rollback"]["undone"].to_string();
    assert!(
        undone.contains("update /etc/chrony/chrony.conf"),
        "{fatal:#}"
    );
    assert!(
        fatal["plan_markdown"]
            .as_str()
            .unwrap_or("")
            .contains("maxpoll 1"),
        "{fatal:#}"
    );
    // host3 is as it was; host1 and host2 have the new config.
    let h3 = fleet.host("host3");
    wait_for("host3's chrony back up", Duration::from_secs(10), || {
        let s = host_state(h3);
        let mut want = converged[2].clone();
        // The failed run's journal is new; nothing else may differ.
        want.insert("timectl runs".into(), s["timectl runs"].clone());
        if s == want {
            Ok(())
        } else {
            Err(format!("{s:?} != {want:?}"))
        }
    });
    for (i, name) in ["host1", "host2"].iter().enumerate() {
        let conf = fleet
            .host(name)
            .container
            .read_file("/etc/chrony/chrony.conf");
        assert!(conf.contains("maxpoll 1"), "{name}:\n{conf}");
        assert_ne!(host_state(fleet.host(name)), converged[i], "{name}");
    }
    drop(peers);
    record_timing("fleet: whole test", t_all.elapsed());
}

// --- benchmark (ci/ansible-bench.sh; skipped by ci/system-tests.sh) --------

/// The same play with linux-system-roles/timesync: chrony, the same peer
/// (the role has no port option for servers, so the source line is a custom
/// setting), facts gathered by the role itself (it runs `setup` with the
/// subsets it needs when the play does not gather them).
const ROLE_PLAYBOOK: &str = "---
- name: Time sync by linux-system-roles/timesync
  hosts: fleet
  gather_facts: false
  vars:
    timesync_ntp_provider: chrony
    timesync_ntp_servers: []
    timesync_chrony_custom_settings:
      - server 127.0.0.1 port 11123 iburst minpoll -2 maxpoll 0
  roles:
    - timesync
";

struct BenchRow {
    tool: &'static str,
    run: &'static str,
    seconds: f64,
    result: String,
}

fn recap_summary(run: &PlaybookRun, fleet: &Fleet) -> String {
    let text = run.stdout();
    if !text.contains("PLAY RECAP") {
        return format!("no recap (exit {:?})", run.out.status.code());
    }
    let (mut changed, mut failed) = (0, 0);
    for h in &fleet.hosts {
        changed += run.recap(&h.name, "changed");
        failed += run.recap(&h.name, "failed") + run.recap(&h.name, "unreachable");
    }
    format!(
        "{} (hosts failed: {failed}, changed tasks: {changed})",
        if run.success() { "ok" } else { "FAILED" }
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One tool on a fresh fleet: check+diff, apply, apply again, check+diff on
/// the converged hosts (the last two three times each, median).
/// `prep`: packages installed on every host (from the image's offline
/// repository) before the timed runs; when given, one check+diff run before
/// installing them is recorded too.
/// A fresh fleet in the bench's starting state (chrony configured by hand,
/// ntpsec, nothing), each host with its chronyd peer on loopback (kept
/// running while the returned peers live).
fn bench_fleet() -> (Fleet, Vec<ChronyPeer>) {
    let fleet = Fleet::boot(3);
    let peers = fleet
        .hosts
        .iter()
        .map(|h| loopback_peer(&h.container))
        .collect();
    starting_daemons(&fleet);
    (fleet, peers)
}

fn bench_tool(
    tool: &'static str,
    playbook: &str,
    extra: &[&str],
    prep: &[&str],
    rows: &mut Vec<BenchRow>,
) {
    let (fleet, _peers) = bench_fleet();
    std::fs::write(fleet.dir().join("playbook.yml"), playbook).unwrap();
    std::fs::write(fleet.dir().join("v1.yml"), state_vars(0, "30s")).unwrap();
    std::fs::write(
        fleet.dir().join("v1-noverify.yml"),
        state_vars_without_verify(0),
    )
    .unwrap();
    std::fs::write(fleet.dir().join("v1-embedded.yml"), state_vars_embedded()).unwrap();
    if let Some(role) = std::env::var_os("TIMECTL_TIMESYNC_ROLE") {
        std::fs::create_dir_all(fleet.dir().join("roles")).unwrap();
        std::os::unix::fs::symlink(role, fleet.dir().join("roles/timesync")).unwrap();
    }
    let mut args = vec!["playbook.yml"];
    args.extend_from_slice(extra);
    let mut check_args = args.clone();
    check_args.extend_from_slice(&["--check", "--diff"]);
    let mut push = |run: &'static str, r: &PlaybookRun, secs: f64| {
        eprintln!("--- {tool}: {run}\n{}", r.context());
        let result = recap_summary(r, &fleet);
        record_figure(&format!(
            "ansible bench: {tool}: {run}: {secs:.2} s, {result}"
        ));
        rows.push(BenchRow {
            tool,
            run,
            seconds: secs,
            result,
        });
    };
    // Every column's first timed run finds the SSH connections open
    // (ControlPersist), as the role's did after its run on the hosts as
    // they are: one ping first, not timed. Without it, the module's first
    // run alone paid for the three SSH handshakes (about 0.3 s here).
    std::fs::write(
        fleet.dir().join("ping.yml"),
        "- hosts: fleet\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n",
    )
    .unwrap();
    let warm = fleet.playbook(&["ping.yml"]);
    assert!(
        recap_summary(&warm, &fleet).starts_with("ok"),
        "{}",
        warm.context()
    );
    if !prep.is_empty() {
        let r = fleet.playbook(&check_args);
        push("check --diff, hosts as they are", &r, r.took.as_secs_f64());
        for h in &fleet.hosts {
            let mut argv = vec!["install", "--no-install-recommends"];
            argv.extend_from_slice(prep);
            h.container.apt_get(&argv);
        }
    }
    let r = fleet.playbook(&check_args);
    push("check --diff, unconverged hosts", &r, r.took.as_secs_f64());
    let r = fleet.playbook(&args);
    push("apply, unconverged hosts", &r, r.took.as_secs_f64());
    let mut again = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let r = fleet.playbook(&args);
        again.push(r.took.as_secs_f64());
        last = Some(r);
    }
    push(
        "apply again (converged; median of 3)",
        last.as_ref().unwrap(),
        median(again),
    );
    let mut check = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let r = fleet.playbook(&check_args);
        check.push(r.took.as_secs_f64());
        last = Some(r);
    }
    push(
        "check --diff, converged hosts (median of 3)",
        last.as_ref().unwrap(),
        median(check),
    );
    // Ansible's own floor on these hosts: one ansible.builtin.ping task.
    let mut ping = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let r = fleet.playbook(&["ping.yml"]);
        ping.push(r.took.as_secs_f64());
        last = Some(r);
    }
    push(
        "one ping task: Ansible's floor (median of 3)",
        last.as_ref().unwrap(),
        median(ping),
    );
}

/// The bench's row "apt-get by hand": what both tools' chrony applies share
/// and neither can make faster. On a fresh fleet in the bench's starting
/// state, `apt-get install chrony` runs on every host without chrony (the
/// ntpsec host and the empty one), all at once, as Ansible's forks would.
/// With Ansible's floor (one ping task) added, no chrony apply of this fleet
/// can take less: that bounds the ratio any tool can reach against the role.
const SHARED_INSTALL: &str = "install chrony on the 2 hosts without it, at once";

fn bench_shared_install(rows: &mut Vec<BenchRow>) {
    let (fleet, _peers) = bench_fleet();
    let missing: Vec<_> = fleet
        .hosts
        .iter()
        .filter(|h| h.container.package_status("chrony") != "installed")
        .collect();
    assert_eq!(
        missing.len(),
        2,
        "the bench starts with chrony on one host of three"
    );
    let t = Instant::now();
    std::thread::scope(|s| {
        for h in &missing {
            s.spawn(|| {
                h.container
                    .apt_get(&["install", "--no-install-recommends", "chrony"])
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    for h in &missing {
        assert_eq!(h.container.package_status("chrony"), "installed");
    }
    record_figure(&format!(
        "ansible bench: apt-get by hand: {SHARED_INSTALL}: {secs:.2} s"
    ));
    rows.push(BenchRow {
        tool: "apt-get by hand",
        run: SHARED_INSTALL,
        seconds: secs,
        result: "ok".into(),
    });
}

#[test]
#[ignore = "benchmark: run ci/ansible-bench.sh (needs TIMECTL_TIMESYNC_ROLE)"]
fn ansible_bench_timectl_vs_timesync_role() {
    // The columns: (TIMECTL_BENCH_ONLY key, tool, playbook, extra args,
    // packages installed first).
    // - "noverify": the role does not check synchronisation, so the same
    //   job without verify;
    // - "embedded": timectl's default, nothing to install but timectl;
    // - "role": Ansible's apt module needs python3-apt on the host (the
    //   image has it in its offline repository, not installed); timectl
    //   does not.
    type Column = (
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    );
    const COLUMNS: [Column; 4] = [
        ("chrony", "timectl module", PLAYBOOK, &["-e@v1.yml"], &[]),
        (
            "noverify",
            "timectl module, no verify",
            PLAYBOOK,
            &["-e@v1-noverify.yml"],
            &[],
        ),
        (
            "embedded",
            "timectl module, embedded",
            PLAYBOOK,
            &["-e@v1-embedded.yml"],
            &[],
        ),
        (
            "role",
            "timesync role",
            ROLE_PLAYBOOK,
            &[],
            &["python3-apt"],
        ),
    ];
    // TIMECTL_BENCH_ONLY=chrony,noverify,embedded,role,apt (any of them):
    // run only those columns (apt: bench_shared_install) and print their
    // rows (no ratio table), for a quick look while working on the module.
    if let Ok(only) = std::env::var("TIMECTL_BENCH_ONLY") {
        let mut rows = Vec::new();
        for key in only.split(',').map(str::trim) {
            if key == "apt" {
                bench_shared_install(&mut rows);
                continue;
            }
            let (_, tool, playbook, extra, prep) = COLUMNS
                .iter()
                .find(|c| c.0 == key)
                .unwrap_or_else(|| {
                    panic!("TIMECTL_BENCH_ONLY: unknown column {key:?} (chrony, noverify, embedded, role, apt)")
                });
            bench_tool(tool, playbook, extra, prep, &mut rows);
        }
        for r in &rows {
            eprintln!("{}: {}: {:.2} s, {}", r.tool, r.run, r.seconds, r.result);
        }
        return;
    }
    let role = std::env::var_os("TIMECTL_TIMESYNC_ROLE").unwrap_or_else(|| {
        panic!(
            "TIMECTL_TIMESYNC_ROLE is not set: point it at a checkout of \
             linux-system-roles/timesync (https://github.com/linux-system-roles/timesync); \
             ci/ansible-bench.sh explains"
        )
    });
    let role = std::path::PathBuf::from(role);
    assert!(
        role.join("tasks/main.yml").is_file(),
        "TIMECTL_TIMESYNC_ROLE={} is not the timesync role (no tasks/main.yml)",
        role.display()
    );
    let mut rows = Vec::new();
    for (_, tool, playbook, extra, prep) in COLUMNS {
        bench_tool(tool, playbook, extra, prep, &mut rows);
    }
    bench_shared_install(&mut rows);
    let mut table = String::from(
        "| run (3 hosts) | timectl module (chrony) | timectl module (chrony), no verify | timectl module (embedded engine) | timesync role (chrony) | ratio | ratio, no verify | ratio, embedded |\n|---|---|---|---|---|---|---|---|\n",
    );
    let runs: Vec<&str> = rows
        .iter()
        .filter(|r| r.tool == "timectl module")
        .map(|r| r.run)
        .collect();
    let find = |tool: &str, run: &str| {
        rows.iter()
            .find(|r| r.tool == tool && r.run == run)
            .unwrap_or_else(|| panic!("no {tool} row for {run}"))
    };
    for run in runs {
        let t = find("timectl module", run);
        let n = find("timectl module, no verify", run);
        let e = find("timectl module, embedded", run);
        let l = find("timesync role", run);
        table.push_str(&format!(
            "| {run} | {:.2} s, {} | {:.2} s, {} | {:.2} s, {} | {:.2} s, {} | {:.1}x | {:.1}x | {:.1}x |\n",
            t.seconds,
            t.result,
            n.seconds,
            n.result,
            e.seconds,
            e.result,
            l.seconds,
            l.result,
            l.seconds / t.seconds,
            l.seconds / n.seconds,
            l.seconds / e.seconds
        ));
    }
    for r in rows
        .iter()
        .filter(|r| r.run == "check --diff, hosts as they are")
    {
        table.push_str(&format!(
            "\n{} without python3-apt on the hosts, check --diff: {:.2} s, {}\n",
            r.tool, r.seconds, r.result
        ));
    }
    // The bound on a chrony apply: Ansible's floor plus the package install
    // both tools make (bench_shared_install).
    let apt = find("apt-get by hand", SHARED_INSTALL);
    let floor = find(
        "timectl module",
        "one ping task: Ansible's floor (median of 3)",
    );
    let role_apply = find("timesync role", "apply, unconverged hosts");
    let bound = apt.seconds + floor.seconds;
    table.push_str(&format!(
        "\nShared by every chrony apply: `apt-get install chrony` on the 2 hosts without it, at once, by hand: {:.2} s. \
         With Ansible's floor ({:.2} s), no tool's chrony apply of this fleet takes less than {bound:.2} s: \
         against the role's apply ({:.2} s), at most {:.1}x.\n",
        apt.seconds,
        floor.seconds,
        role_apply.seconds,
        role_apply.seconds / bound
    ));
    eprintln!("{table}");
    if let Some(out) = std::env::var_os("TIMECTL_BENCH_OUT") {
        std::fs::write(out, &table).expect("write TIMECTL_BENCH_OUT");
    }
}

/// The desired state the example playbook ships is valid (plain
/// `cargo test`, no root).
#[test]
fn example_playbook_spec_is_valid() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_timectl"))
        .args(["validate", "examples/ansible/files/site.yaml"])
        .current_dir(support::repo_root())
        .output()
        .expect("run timectl validate");
    assert!(out.status.success(), "{out:?}");
}

/// SHA-256 (hex) of a file on a host, None if it cannot be read.
fn host_sha256(c: &Container, path: &str) -> Option<String> {
    let out = c.exec(&["sha256sum", path]);
    out.status
        .success()
        .then(|| {
            text(&out.stdout)
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .flatten()
}
