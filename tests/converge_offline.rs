//! The converger end to end on offline roots, through the real binary:
//! plan, apply, idempotence, bad input, stale plans, rollback, the lock.
//! Every test works on a private copy of an example root.

mod util;

use std::collections::BTreeMap;
use std::path::Path;

use util::{copy_root, differences, snapshot, text, timectl, write_spec};

const RHEL9_SPEC: &str = "examples/rhel9-ntpd-to-chrony.yaml";

fn root_arg(dir: &Path) -> String {
    dir.display().to_string()
}

#[test]
fn rhel9_ntpd_to_chrony_plan_apply_then_nothing_to_do() {
    let root = copy_root("rhel9-ntpd");
    let r = root_arg(root.path());

    let out = timectl(&["plan", RHEL9_SPEC, "--root", &r, "--detailed-exitcode"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "changes expected: {stdout}{stderr}"
    );
    assert!(
        stdout.starts_with("Plan: 1 to add, 1 to change, 1 to remove."),
        "{stdout}"
    );
    let disable = stdout.find("disable ntpd.service").expect(&stdout);
    let update = stdout.find("update /etc/chrony.conf").expect(&stdout);
    let enable = stdout.find("enable chronyd.service").expect(&stdout);
    assert!(disable < update && update < enable, "order: {stdout}");
    assert!(
        stdout.contains("-pool 2.rhel.pool.ntp.org iburst"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+server ntp1.corp.example.com iburst prefer"),
        "{stdout}"
    );
    assert!(
        stdout.contains("because ntpd conflicts with chronyd"),
        "{stdout}"
    );

    let out = timectl(&["apply", RHEL9_SPEC, "--root", &r, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Applied 3 change(s)"), "{stdout}");

    let etc = root.path().join("etc/systemd/system");
    assert!(
        etc.join("multi-user.target.wants/ntpd.service")
            .symlink_metadata()
            .is_err()
    );
    assert_eq!(
        std::fs::read_link(etc.join("multi-user.target.wants/chronyd.service")).unwrap(),
        Path::new("/usr/lib/systemd/system/chronyd.service")
    );
    let conf = std::fs::read_to_string(root.path().join("etc/chrony.conf")).unwrap();
    assert!(conf.contains("\nserver ntp1.corp.example.com iburst prefer\nserver ntp2.corp.example.com iburst\npool 2.rhel.pool.ntp.org iburst maxsources 2\n"), "{conf}");
    assert!(
        conf.contains("\nminsources 2\n") && conf.contains("\nmakestep 1 3\n"),
        "{conf}"
    );
    // The previous file was backed up and the run recorded.
    let backups = root.path().join("var/lib/timectl/backups");
    let run = std::fs::read_dir(&backups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let backup = std::fs::read_to_string(run.join("etc/chrony.conf")).unwrap();
    assert!(backup.contains("pool 2.rhel.pool.ntp.org iburst\n"));
    let journals: Vec<_> = std::fs::read_dir(root.path().join("var/lib/timectl/runs"))
        .unwrap()
        .collect();
    assert_eq!(journals.len(), 1);
    let journal: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(journals[0].as_ref().unwrap().path()).unwrap(),
    )
    .unwrap();
    assert_eq!(journal["state"], "succeeded");
    assert_eq!(journal["steps"].as_array().unwrap().len(), 3);

    let before = snapshot(root.path());
    let out = timectl(&["plan", RHEL9_SPEC, "--root", &r, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(text(&out).0.starts_with("No changes"));
    let out = timectl(&["apply", RHEL9_SPEC, "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out)
            .0
            .contains("No changes: the host was already as desired.")
    );
    // A second apply changes nothing (but timectl's own lock file).
    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new()
    );
}

#[test]
fn bad_specs_fail_with_position_and_leave_the_root_identical() {
    let root = copy_root("rhel9-ntpd");
    let r = root_arg(root.path());
    let specs = tempfile::tempdir().unwrap();
    let cases = [
        (
            "wrong-type.yaml",
            "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n      iburst: often\n",
            "5:15",
            "bool",
        ),
        (
            "unknown-key.yaml",
            "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n  makestep: 1\n",
            "5:3",
            "unknown field `makestep`",
        ),
        (
            "bad-address.yaml",
            "timesync:\n  provider: chrony\n  sources:\n    - server: 192.168.1.300\n",
            "4:15",
            "invalid server",
        ),
        (
            "bad-duration.yaml",
            "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n  verify: { within: soon }\n",
            "5:21",
            "invalid duration",
        ),
        (
            "bad-cidr.yaml",
            "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n  serve:\n    allow: [10.0.0.0/40]\n",
            "6:13",
            "CIDR",
        ),
        (
            "driftfile-newline.yaml",
            "timesync:\n  provider: chrony\n  driftfile: \"/var/lib/x\\nserver evil.example\"\n  sources:\n    - server: a.example\n",
            "3:14",
            "invalid path \"/var/lib/x\\nserver evil.example\": it contains a newline",
        ),
        (
            "driftfile-space.yaml",
            "timesync:\n  provider: ntpd\n  driftfile: /var/lib/my drift\n  sources:\n    - server: a.example\n",
            "3:14",
            "it contains a space",
        ),
        (
            "extra-config-control.yaml",
            "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n  extraConfig: \"log tracking\\r\\nrtcsync\\n\"\n",
            "5:16",
            "extraConfig line 1 contains a carriage return",
        ),
        (
            "ntpd-secret-hash.yaml",
            "timesync:\n  provider: ntpd\n  keys:\n    - { id: 3, secret: \"ab#cd\" }\n  sources:\n    - server: a.example\n      key: 3\n",
            "4:13",
            "reads as the start of a comment",
        ),
        (
            "bad-yaml.yaml",
            "timesync:\n  sources: [a\n",
            "",
            "timesync",
        ),
    ];
    let before = snapshot(root.path());
    for (name, body, position, expected) in cases {
        let path = write_spec(specs.path(), name, body);
        let p = path.display().to_string();
        for args in [
            vec!["validate", p.as_str()],
            vec!["plan", p.as_str(), "--root", &r],
            vec!["apply", p.as_str(), "--root", &r, "--yes"],
        ] {
            let out = timectl(&args);
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
            if !position.is_empty() {
                assert!(
                    stderr.contains(&format!("{p}:{position}: ")),
                    "{args:?} should name {p}:{position}: {stderr}"
                );
                assert!(stderr.contains(expected), "{args:?}: {stderr}");
            } else {
                assert!(stderr.contains(&p), "{args:?}: {stderr}");
            }
        }
    }
    assert_eq!(
        snapshot(root.path()),
        before,
        "the root must be byte-identical"
    );
}

/// The spec's file name goes into the header comment of every config
/// file: a newline in it cannot start a directive.
#[test]
fn a_spec_file_name_cannot_add_a_directive() {
    let root = copy_root("rhel9-ntpd");
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "site\nserver evil.example iburst\n.yaml",
        "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n",
    );
    let out = timectl(&[
        "apply",
        &spec.display().to_string(),
        "--root",
        &root_arg(root.path()),
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let conf = std::fs::read_to_string(root.path().join("etc/chrony.conf")).unwrap();
    let servers: Vec<&str> = conf.lines().filter(|l| l.starts_with("server")).collect();
    assert_eq!(servers, ["server a.example iburst"], "{conf}");
    assert!(
        conf.starts_with("# Managed by timectl. Desired state: "),
        "{conf}"
    );
    assert!(
        conf.contains("site\\nserver evil.example iburst\\n.yaml\n"),
        "{conf}"
    );
}

#[test]
fn a_valid_spec_validates() {
    for example in [
        "examples/rhel9-ntpd-to-chrony.yaml",
        "examples/debian12-chrony-pool.yaml",
        "examples/rhel7-ntpd.yaml",
        "examples/lan-time-server.yaml",
        "examples/timesyncd.yaml",
    ] {
        let out = timectl(&["validate", example]);
        assert_eq!(out.status.code(), Some(0), "{example}: {:?}", text(&out));
    }
}

#[test]
fn saved_plan_is_refused_when_a_managed_file_changed() {
    let root = copy_root("rhel9-ntpd");
    let r = root_arg(root.path());
    let dir = tempfile::tempdir().unwrap();
    let planfile = dir.path().join("site.plan").display().to_string();
    let out = timectl(&["plan", RHEL9_SPEC, "--root", &r, "--out", &planfile]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let meta = std::fs::metadata(&planfile).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );

    // Someone edits the config between plan and apply.
    let conf = root.path().join("etc/chrony.conf");
    let mut edited = std::fs::read_to_string(&conf).unwrap();
    edited.push_str("server rogue.example.com\n");
    std::fs::write(&conf, &edited).unwrap();
    let before = snapshot(root.path());

    let out = timectl(&["apply", &planfile, "--root", &r, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("stale"), "{stderr}");
    assert!(stderr.contains("file:/etc/chrony.conf changed"), "{stderr}");
    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new(),
        "a refused plan changes nothing"
    );
}

#[test]
fn saved_plan_applies_when_fresh() {
    let root = copy_root("rhel9-ntpd");
    let r = root_arg(root.path());
    let dir = tempfile::tempdir().unwrap();
    let planfile = dir.path().join("site.plan").display().to_string();
    assert_eq!(
        timectl(&["plan", RHEL9_SPEC, "--root", &r, "--out", &planfile])
            .status
            .code(),
        Some(0)
    );
    let out = timectl(&["apply", &planfile, "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let out = timectl(&["plan", RHEL9_SPEC, "--root", &r, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    // The same saved plan cannot be replayed: the host changed since.
    let out = timectl(&["apply", &planfile, "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(1));
}

/// Make enabling chronyd fail for real: its unit wants a target whose
/// .wants directory cannot be created (a regular file is in the way; this
/// stops root as well as a normal user).
fn break_enable(root: &Path) {
    let unit = root.join("usr/lib/systemd/system/chronyd.service");
    let text = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("WantedBy=multi-user.target", "WantedBy=timectl-test.target");
    std::fs::write(&unit, text).unwrap();
    std::fs::write(
        root.join("etc/systemd/system/timectl-test.target.wants"),
        "in the way\n",
    )
    .unwrap();
}

#[test]
fn failure_mid_apply_undoes_the_steps_done() {
    let root = copy_root("rhel9-ntpd");
    let r = root_arg(root.path());
    break_enable(root.path());
    let before = snapshot(root.path());

    let out = timectl(&["apply", RHEL9_SPEC, "--root", &r, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("Apply FAILED; every step done was undone"),
        "{stdout}"
    );
    assert!(
        stdout.contains("disable ntpd.service: done, then undone"),
        "{stdout}"
    );
    assert!(
        stdout.contains("update /etc/chrony.conf: done, then undone"),
        "{stdout}"
    );
    assert!(
        stdout.contains("enable chronyd.service: FAILED"),
        "{stdout}"
    );
    assert!(
        stderr.contains("undo: restore /etc/chrony.conf from backup ... ok"),
        "{stderr}"
    );
    assert!(
        stderr.contains("undo: enable ntpd.service ... ok"),
        "{stderr}"
    );

    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new(),
        "not restored"
    );
    let runs = root.path().join("var/lib/timectl/runs");
    let journal = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let journal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(journal).unwrap()).unwrap();
    assert_eq!(journal["state"], "rolled-back");
}

#[test]
fn read_only_config_mid_apply_leaves_every_file_as_it_was() {
    let root = copy_root("rhel9-ntpd");
    let r = root_arg(root.path());
    let before = snapshot(root.path());
    // Step 1 (disable ntpd, under /etc/systemd) succeeds; step 2 (write
    // /etc/chrony.conf) meets a read-only target and fails.
    let out = if nix::unistd::geteuid().is_root() {
        // Root ignores permission bits: bind the file read-only onto itself
        // in a private mount namespace, so replacing it fails for real.
        let conf = root.path().join("etc/chrony.conf");
        std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" apply "$3" --root "$4" --yes"#)
            .args(["sh", &conf.display().to_string(), env!("CARGO_BIN_EXE_timectl"), RHEL9_SPEC, &r])
            .current_dir(util::repo())
            .output()
            .unwrap()
    } else {
        use std::os::unix::fs::PermissionsExt;
        let etc = root.path().join("etc");
        std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o555)).unwrap();
        let out = timectl(&["apply", RHEL9_SPEC, "--root", &r, "--yes"]);
        std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
        out
    };
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("disable ntpd.service: done, then undone"),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains("update /etc/chrony.conf: FAILED"),
        "{stdout}{stderr}"
    );
    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new()
    );
    // No temporary file is left next to the config.
    let leftovers: Vec<_> = std::fs::read_dir(root.path().join("etc"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".timectl-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_second_apply_is_refused_while_one_holds_the_lock() {
    let root = copy_root("rhel9-ntpd");
    let r = root_arg(root.path());
    let before = snapshot(root.path());
    let lock = timectl::apply::Lock::acquire(&timectl::host::Files::new(root.path())).unwrap();
    let out = timectl(&["apply", RHEL9_SPEC, "--root", &r, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("another timectl apply is running"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    drop(lock);
    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new()
    );
}

#[test]
fn apply_without_yes_and_without_a_terminal_changes_nothing() {
    let root = copy_root("rhel9-ntpd");
    let r = root_arg(root.path());
    let before = snapshot(root.path());
    let out = timectl(&["apply", RHEL9_SPEC, "--root", &r]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("refusing to apply without --yes"),
        "{stderr}"
    );
    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new()
    );
}

#[test]
fn json_plan_is_versioned_and_counts_changes() {
    let root = copy_root("rhel9-ntpd");
    let out = timectl(&[
        "plan",
        RHEL9_SPEC,
        "--root",
        &root_arg(root.path()),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["kind"], "plan");
    assert_eq!(
        json["summary"],
        serde_json::json!({"add": 1, "change": 1, "remove": 1})
    );
    let ops: Vec<_> = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["disable_unit", "write_file", "enable_unit"]);
    assert_eq!(json["changes"][1]["resource"], "file:/etc/chrony.conf");
    assert!(
        json["changes"][1]["diff"]
            .as_str()
            .unwrap()
            .contains("+minsources 2")
    );
    assert_eq!(json["host"]["family"], "rhel");
    assert_eq!(json["host"]["mode"], "offline");
    assert_eq!(json["daemon"], "chronyd");
    assert!(json["fingerprint"].as_str().unwrap().len() == 64);
}

/// A chrony spec with a symmetric key: its secret (C0FFEE...) must never
/// reach a plan, a report or the journal.
const KEYS_SPEC: &str = "timesync:\n  provider: chrony\n  keys:\n    - { id: 9, type: SHA256, secret: HEX:C0FFEEC0FFEE1234 }\n  sources:\n    - server: 192.0.2.1\n      key: 9\n";

#[test]
fn key_material_never_appears_in_plans() {
    let root = copy_root("debian12");
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "keys.yaml", KEYS_SPEC);
    let s = spec.display().to_string();
    let r = root_arg(root.path());
    for args in [
        vec!["plan", s.as_str(), "--root", &r],
        vec!["plan", s.as_str(), "--root", &r, "--json"],
        vec!["plan", s.as_str(), "--root", &r, "--markdown"],
    ] {
        let out = timectl(&args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        assert!(
            !stdout.contains("C0FFEE"),
            "secret leaked by {args:?}: {stdout}"
        );
        assert!(stdout.contains("(sensitive)"), "{args:?}: {stdout}");
    }
    let out = timectl(&["apply", &s, "--root", &r, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("C0FFEE") && !stderr.contains("C0FFEE"));
    let keys = root.path().join("etc/chrony/chrony.keys");
    assert!(
        std::fs::read_to_string(&keys)
            .unwrap()
            .contains("9 SHA256 HEX:C0FFEEC0FFEE1234")
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&keys).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640);
    // The journal names the step but holds no key material.
    let runs = root.path().join("var/lib/timectl/runs");
    for j in std::fs::read_dir(runs).unwrap() {
        assert!(
            !std::fs::read_to_string(j.unwrap().path())
                .unwrap()
                .contains("C0FFEE")
        );
    }
}

/// `--markdown-out FILE` writes exactly what `--markdown` prints, beside
/// the JSON on stdout (the Ansible module's one look at the host), and a
/// path it cannot write is an error naming it.
#[test]
fn markdown_out_writes_the_markdown_plan_beside_the_json() {
    let root = copy_root("debian12");
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "keys.yaml", KEYS_SPEC);
    let s = spec.display().to_string();
    let r = root_arg(root.path());
    let md = dir.path().join("plan.md");
    let m = md.display().to_string();
    let out = timectl(&["plan", &s, "--root", &r, "--json", "--markdown-out", &m]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert!(!json["changes"].as_array().unwrap().is_empty());
    let written = std::fs::read_to_string(&md).unwrap();
    let printed = timectl(&["plan", &s, "--root", &r, "--markdown"]);
    assert_eq!(written, text(&printed).0);
    assert!(written.contains("(sensitive)") && !written.contains("C0FFEE"));
    let bad = dir.path().join("no-such-dir/plan.md");
    let out = timectl(&[
        "plan",
        &s,
        "--root",
        &r,
        "--markdown-out",
        &bad.display().to_string(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write the markdown plan to") && stderr.contains("no-such-dir"),
        "{stderr}"
    );
}

#[test]
fn debian_edit_mode_keeps_the_admins_file_and_converges() {
    let root = copy_root("debian12");
    let r = root_arg(root.path());
    let spec = "examples/debian12-chrony-pool.yaml";
    let out = timectl(&["apply", spec, "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let conf = std::fs::read_to_string(root.path().join("etc/chrony/chrony.conf")).unwrap();
    assert!(
        conf.contains("# disabled by timectl: pool 2.debian.pool.ntp.org iburst\n"),
        "{conf}"
    );
    assert!(
        conf.contains("\npool 2.debian.pool.ntp.org iburst maxsources 4\n"),
        "{conf}"
    );
    // Everything else of the Debian file is still there.
    for kept in [
        "confdir /etc/chrony/conf.d",
        "maxupdateskew 100.0",
        "makestep 1 3",
        "leapsectz right/UTC",
    ] {
        assert!(conf.contains(kept), "{kept} lost: {conf}");
    }
    let out = timectl(&["plan", spec, "--root", &r, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

#[test]
fn centos7_switches_from_chronyd_to_ntpd() {
    let root = copy_root("centos7");
    let r = root_arg(root.path());
    let out = timectl(&["apply", "examples/rhel7-ntpd.yaml", "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let wants = root
        .path()
        .join("etc/systemd/system/multi-user.target.wants");
    assert!(wants.join("chronyd.service").symlink_metadata().is_err());
    assert!(wants.join("ntpd.service").symlink_metadata().is_ok());
    let conf = std::fs::read_to_string(root.path().join("etc/ntp.conf")).unwrap();
    assert!(
        conf.contains("\ntos minsane 2\n") && conf.contains("\ntinker step 0.128\n"),
        "{conf}"
    );
    let out = timectl(&[
        "plan",
        "examples/rhel7-ntpd.yaml",
        "--root",
        &r,
        "--detailed-exitcode",
    ]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

#[test]
fn conflicts_fail_refuses_while_another_daemon_is_enabled() {
    let root = copy_root("rhel9-ntpd");
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "fail.yaml",
        "timesync:\n  provider: chrony\n  conflicts: fail\n  sources:\n    - server: a.example\n",
    );
    let out = timectl(&[
        "plan",
        &spec.display().to_string(),
        "--root",
        &root_arg(root.path()),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("ntpd.service is enabled") && stderr.contains("conflicts: fail"),
        "{stderr}"
    );
}

#[test]
fn unknown_distribution_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    std::fs::write(
        root.path().join("etc/os-release"),
        "ID=alpine\nVERSION_ID=3.20\n",
    )
    .unwrap();
    let out = timectl(&["plan", RHEL9_SPEC, "--root", &root_arg(root.path())]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("unsupported distribution \"alpine\""),
        "{stderr}"
    );
}

#[test]
fn switching_away_from_chrony_removes_timectls_drop_in() {
    let root = copy_root("debian12");
    let r = root_arg(root.path());
    let dir = tempfile::tempdir().unwrap();
    let chrony = write_spec(
        dir.path(),
        "chrony.yaml",
        "timesync:\n  provider: chrony\n  clockControl: false\n  sources:\n    - server: 192.0.2.1\n",
    );
    let out = timectl(&[
        "apply",
        &chrony.display().to_string(),
        "--root",
        &r,
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let drop_in = root
        .path()
        .join("etc/systemd/system/chrony.service.d/timectl-no-clock-control.conf");
    assert!(std::fs::read_to_string(&drop_in).unwrap().contains("-x"));

    let engine = write_spec(
        dir.path(),
        "engine.yaml",
        "timesync:\n  sources:\n    - server: 192.0.2.1\n",
    );
    let e = engine.display().to_string();
    let out = timectl(&["plan", &e, "--root", &r]);
    let (stdout, _) = text(&out);
    assert!(
        stdout
            .contains("remove /etc/systemd/system/chrony.service.d/timectl-no-clock-control.conf"),
        "{stdout}"
    );
    let out = timectl(&["apply", &e, "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(!drop_in.exists());
    assert!(
        root.path()
            .join("usr/local/libexec/timectl/timectl")
            .is_file()
    );
    assert!(
        root.path()
            .join("etc/systemd/system/multi-user.target.wants/timectl-engine.service")
            .symlink_metadata()
            .is_ok()
    );
    let out = timectl(&["plan", &e, "--root", &r, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

#[test]
fn applying_to_the_running_host_needs_root() {
    let spec = "examples/embedded.yaml";
    // As root, drop to nobody for this check; as a user, run directly.
    let out = if nix::unistd::geteuid().is_root() {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_timectl"))
            .args(["apply", spec, "--yes"])
            .current_dir(util::repo())
            .output()
            .unwrap()
    } else {
        timectl(&["apply", spec, "--yes"])
    };
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}

/// Runs timectl with `--metrics-textfile PROM` added, expecting exit
/// `code`; returns the samples written, `name{labels}` -> value.
fn with_textfile(args: &[&str], prom: &Path, code: i32) -> BTreeMap<String, f64> {
    let prom_arg = prom.display().to_string();
    let mut argv = args.to_vec();
    argv.extend(["--metrics-textfile", &prom_arg]);
    let out = timectl(&argv);
    assert_eq!(out.status.code(), Some(code), "{argv:?}: {:?}", text(&out));
    std::fs::read_to_string(prom)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// The `result` a run of `command` ended with (the one sample that is 1),
/// checking that `timectl_last_run_success` agrees.
fn result_of(s: &BTreeMap<String, f64>, command: &str) -> String {
    let prefix = format!("timectl_last_run_result{{command=\"{command}\",result=\"");
    let set: Vec<&str> = s
        .iter()
        .filter(|(k, v)| k.starts_with(&prefix) && **v == 1.0)
        .map(|(k, _)| k[prefix.len()..].trim_end_matches("\"}"))
        .collect();
    assert_eq!(set.len(), 1, "{s:?}");
    let success = s[&format!("timectl_last_run_success{{command=\"{command}\"}}")];
    assert_eq!(success == 1.0, set[0] == "success", "{s:?}");
    set[0].to_string()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

const DRIFT: &str = "timectl_drift_detected{command=\"apply\"}";
const CHANGES: &str = "timectl_last_run_changes{command=\"apply\"}";
const PLANNED: &str = "timectl_last_run_planned_changes{command=\"apply\"}";

#[test]
fn apply_and_plan_write_metrics_textfiles() {
    let root = copy_root("debian12");
    let r = root_arg(root.path());
    let metrics = tempfile::tempdir().unwrap();
    let apply_prom = metrics.path().join("timectl-apply.prom");
    let plan_prom = metrics.path().join("timectl-plan.prom");
    let apply = ["apply", "examples/embedded.yaml", "--root", &r, "--yes"];

    let before = unix_now();
    let s = with_textfile(&apply, &apply_prom, 0);
    let at = s["timectl_last_run_timestamp_seconds{command=\"apply\"}"];
    assert!(
        at >= before.floor() && at <= unix_now() + 1.0,
        "{at} vs {before}"
    );
    assert_eq!(result_of(&s, "apply"), "success");
    assert_eq!(s[DRIFT], 1.0);
    // disable chrony, install the copy, config, unit, enable the engine.
    assert_eq!(s[PLANNED], 5.0, "{s:?}");
    assert_eq!(s[CHANGES], 5.0);
    // Only the .prom file: the temporary file was renamed over it.
    assert_eq!(std::fs::read_dir(metrics.path()).unwrap().count(), 1);

    // Converged: no drift, nothing changed.
    let s = with_textfile(&apply, &apply_prom, 0);
    assert_eq!((s[DRIFT], s[CHANGES]), (0.0, 0.0));
    assert_eq!(result_of(&s, "apply"), "success");

    // A hand edit is drift that plan reports without changing anything.
    std::fs::write(root.path().join("etc/timectl/engine.yaml"), "edited\n").unwrap();
    let s = with_textfile(
        &["plan", "examples/embedded.yaml", "--root", &r],
        &plan_prom,
        0,
    );
    assert_eq!(s["timectl_drift_detected{command=\"plan\"}"], 1.0);
    assert_eq!(s["timectl_last_run_planned_changes{command=\"plan\"}"], 1.0);
    assert_eq!(s["timectl_last_run_changes{command=\"plan\"}"], 0.0);
    assert_eq!(result_of(&s, "plan"), "success");

    // A spec that does not load: a failure, drift unknown (not reported).
    let bad = write_spec(metrics.path(), "bad.yaml", "timesync:\n  sourcez: []\n");
    let bad = bad.display().to_string();
    let s = with_textfile(&["plan", &bad, "--root", &r], &plan_prom, 1);
    assert_eq!(result_of(&s, "plan"), "failure");
    assert!(
        !s.keys().any(|k| k.starts_with("timectl_drift_detected")),
        "{s:?}"
    );
}

#[test]
fn a_rolled_back_apply_says_so_in_its_metrics() {
    let root = copy_root("rhel9-ntpd");
    let r = root_arg(root.path());
    break_enable(root.path());
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("timectl.prom");
    let s = with_textfile(&["apply", RHEL9_SPEC, "--root", &r, "--yes"], &prom, 1);
    assert_eq!(result_of(&s, "apply"), "rolled_back");
    assert_eq!((s[DRIFT], s[PLANNED]), (1.0, 3.0));
    // Everything done was undone: no change kept.
    assert_eq!(s[CHANGES], 0.0);
}
#[test]
fn an_unwritable_metrics_textfile_fails_the_command_after_the_run() {
    let root = copy_root("debian12");
    let r = root_arg(root.path());
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir/timectl.prom");
    let out = timectl(&[
        "plan",
        "examples/embedded.yaml",
        "--root",
        &r,
        "--metrics-textfile",
        &missing.display().to_string(),
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.starts_with("Plan: "), "{stdout}");
    assert!(
        stderr.contains("cannot write the metrics textfile") && stderr.contains("no-such-dir"),
        "{stderr}"
    );
}

const TIMESYNCD_SPEC: &str = "examples/timesyncd.yaml";

/// A Debian 12 image with systemd-timesyncd installed but disabled: the
/// drop-in is written and the unit enabled (with its D-Bus alias), the
/// package's own timesyncd.conf is left alone, and a second run does
/// nothing.
#[test]
fn timesyncd_on_a_debian_image_writes_its_drop_in_and_enables_it() {
    let root = copy_root("debian12-timesyncd");
    let r = root_arg(root.path());
    let shipped = std::fs::read(root.path().join("etc/systemd/timesyncd.conf")).unwrap();

    let out = timectl(&["plan", TIMESYNCD_SPEC, "--root", &r, "--detailed-exitcode"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("Plan: 2 to add, 0 to change, 0 to remove."),
        "{stdout}"
    );
    let create = stdout
        .find("create /etc/systemd/timesyncd.conf.d/timectl.conf")
        .expect(&stdout);
    let enable = stdout
        .find("enable systemd-timesyncd.service")
        .expect(&stdout);
    assert!(create < enable, "{stdout}");

    let out = timectl(&["apply", TIMESYNCD_SPEC, "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let drop_in = std::fs::read_to_string(
        root.path()
            .join("etc/systemd/timesyncd.conf.d/timectl.conf"),
    )
    .unwrap();
    assert!(
        drop_in.contains("\n[Time]\n")
            && drop_in.contains("\nNTP=ntp1.corp.example.com 2.debian.pool.ntp.org\n")
            && drop_in.contains("\nPollIntervalMinSec=32\nPollIntervalMaxSec=1024\n"),
        "{drop_in}"
    );
    let system = root.path().join("etc/systemd/system");
    assert_eq!(
        std::fs::read_link(system.join("sysinit.target.wants/systemd-timesyncd.service")).unwrap(),
        Path::new("/lib/systemd/system/systemd-timesyncd.service")
    );
    assert!(
        system
            .join("dbus-org.freedesktop.timesync1.service")
            .symlink_metadata()
            .is_ok()
    );
    assert_eq!(
        std::fs::read(root.path().join("etc/systemd/timesyncd.conf")).unwrap(),
        shipped
    );

    let before = snapshot(root.path());
    let out = timectl(&["plan", TIMESYNCD_SPEC, "--root", &r, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let out = timectl(&["apply", TIMESYNCD_SPEC, "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new()
    );
}

/// What timesyncd cannot do fails at load with the position, and on a
/// RHEL root (no systemd-timesyncd there) at the provider; nothing is
/// touched either way.
#[test]
fn timesyncd_refusals_leave_the_root_identical() {
    let dir = tempfile::tempdir().unwrap();
    for (name, root_name, body, position, expected) in [
        (
            "serve.yaml",
            "debian12-timesyncd",
            "timesync:\n  provider: timesyncd\n  sources:\n    - server: a.example\n  serve: { allow: [10.0.0.0/8] }\n",
            "5:19",
            "provider timesyncd is a client only and cannot serve time",
        ),
        (
            "nts.yaml",
            "debian12-timesyncd",
            "timesync:\n  provider: timesyncd\n  sources:\n    - server: a.example\n      nts: true\n",
            "5:12",
            "provider timesyncd has no NTS",
        ),
        (
            "rhel.yaml",
            "rhel9-ntpd",
            "timesync:\n  provider: timesyncd\n  sources:\n    - server: a.example\n",
            "2:13",
            "does not ship systemd-timesyncd; use provider chrony",
        ),
    ] {
        let root = copy_root(root_name);
        let r = root_arg(root.path());
        let before = snapshot(root.path());
        let path = write_spec(dir.path(), name, body);
        let p = path.display().to_string();
        for args in [
            vec!["plan", p.as_str(), "--root", &r],
            vec!["apply", p.as_str(), "--root", &r, "--yes"],
        ] {
            let out = timectl(&args);
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
            assert!(
                stderr.contains(&format!("{p}:{position}: ")) && stderr.contains(expected),
                "{args:?}: {stderr}"
            );
        }
        // Nothing but timectl's own lock file (apply takes the lock first).
        assert_eq!(
            differences(&before, &snapshot(root.path())),
            Vec::<String>::new(),
            "{name}: the root changed"
        );
    }
}
