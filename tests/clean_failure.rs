//! Issue 9, items 4 and 5: secrets never appear in error snippets, saved
//! plans are 0600 always, write errors are errors (exit 1, never a panic's
//! 101), invalid UTF-8 has a position, long values are cut, and `validate`
//! rejects what `plan` rejects, at the same place.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use util::{copy_root, differences, snapshot, text, timectl, write_spec};

const RHEL9_SPEC: &str = "examples/rhel9-ntpd-to-chrony.yaml";

/// Run timectl with stdout going to `stdout`.
fn timectl_to(args: &[&str], stdout: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_timectl"))
        .args(args)
        .current_dir(util::repo())
        .env("NO_COLOR", "1")
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// A pipe whose reading end is already closed: every write is EPIPE, as
/// for `timectl ... | head -c1` once head has exited.
fn broken_pipe() -> Stdio {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    Stdio::from(write)
}

fn dev_full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    )
}

#[test]
fn secrets_are_masked_in_every_snippet() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // The reproduction: an error later on the secret's line.
        (
            "flow.yaml",
            "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n      key: 10\n  keys:\n    - { id: 10, secret: LeakyPassw0rdZZZ, type: SHA999 }\n",
            "7:",
        ),
        // The error is the secret itself (it has a space).
        (
            "space.yaml",
            "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n  keys:\n    - id: 10\n      secret: 7741992288334455 LeakyPassw0rdZZZ\n",
            "7:15: invalid key secret",
        ),
        // Quoted key and value, another error on the line.
        (
            "quoted.yaml",
            "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n  keys:\n    - { \"secret\": \"LeakyPassw0rdZZZ\", id: 70000 }\n",
            "6:",
        ),
        // A secret with a space, in a block scalar: invalid, not shown.
        (
            "block.yaml",
            "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n  keys:\n    - id: 10\n      secret: |\n        Leaky Passw0rdZZZ\n",
            ":",
        ),
    ];
    for (name, spec, position) in cases {
        let path = write_spec(dir.path(), name, spec);
        let p = path.display().to_string();
        for args in [
            vec!["validate", p.as_str()],
            vec!["plan", p.as_str(), "--root", "examples/roots/rhel9-ntpd"],
        ] {
            let out = timectl(&args);
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(1), "{name}: {stdout}{stderr}");
            assert!(stderr.contains(position), "{name}: {stderr}");
            for leak in ["LeakyPassw0rdZZZ", "Passw0rd", "7741992288334455"] {
                assert!(
                    !stdout.contains(leak) && !stderr.contains(leak),
                    "{name}: {args:?} shows the secret:\n{stderr}"
                );
            }
            if name == "flow.yaml" {
                // Masked in place, and the caret still points at the type.
                assert!(
                    stderr.contains("{ id: 10, secret: ****************, type: SHA999 }"),
                    "{stderr}"
                );
                let lines: Vec<&str> = stderr.lines().collect();
                let quoted = lines.iter().position(|l| l.starts_with("7 |")).unwrap();
                let caret = lines[quoted + 1].find('^').unwrap();
                assert_eq!(&lines[quoted][caret..caret + 6], "SHA999", "{stderr}");
            }
        }
    }
}

#[test]
fn saved_plans_are_0600_and_replaced_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "keys.yaml",
        "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n      key: 5\n  keys:\n    - { id: 5, type: SHA1, secret: HEX:0123ABCD }\n",
    );
    let planfile = dir.path().join("site.plan");
    std::fs::write(&planfile, "old, world-readable\n").unwrap();
    std::fs::set_permissions(&planfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = timectl(&[
        "plan",
        &spec.display().to_string(),
        "--root",
        "examples/roots/rhel9-ntpd",
        "--out",
        &planfile.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let meta = std::fs::metadata(&planfile).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let saved = std::fs::read_to_string(&planfile).unwrap();
    assert!(saved.contains("\"format_version\""), "{saved}");
    // No temporary file is left next to it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".timectl-")), "{names:?}");
}

#[test]
fn write_errors_exit_1_and_never_panic() {
    let full = |args: &[&str]| timectl_to(args, dev_full());
    let broken = |args: &[&str]| timectl_to(args, broken_pipe());
    let plan = ["plan", RHEL9_SPEC, "--root", "examples/roots/rhel9-ntpd"];
    for (label, out) in [
        ("plan >/dev/full", full(&plan)),
        ("plan | closed pipe", broken(&plan)),
        (
            "plan --json >/dev/full",
            full(&[plan.as_slice(), &["--json"]].concat()),
        ),
        (
            "plan --markdown | closed pipe",
            broken(&[plan.as_slice(), &["--markdown"]].concat()),
        ),
        ("validate >/dev/full", full(&["validate", RHEL9_SPEC])),
        ("schema | closed pipe", broken(&["schema"])),
        (
            "facts >/dev/full",
            full(&["facts", "--root", "examples/roots/rhel9-ntpd"]),
        ),
    ] {
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{label}: {stderr}");
        assert!(
            stderr.contains("cannot write to standard output"),
            "{label}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{label}: {stderr}");
    }
}

#[test]
fn apply_whose_output_breaks_fails_cleanly() {
    // The plan cannot be shown: nothing is applied.
    let root = copy_root("rhel9-ntpd");
    let r = root.path().display().to_string();
    let before = snapshot(root.path());
    let out = timectl_to(&["apply", RHEL9_SPEC, "--root", &r, "--yes"], broken_pipe());
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing was applied"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        differences(&before, &snapshot(root.path())),
        Vec::<String>::new()
    );

    // Only the report is lost (--json prints no plan first): the run is
    // done and recorded, the exit code says the output failed.
    let out = timectl_to(
        &["apply", RHEL9_SPEC, "--root", &r, "--yes", "--json"],
        dev_full(),
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write to standard output"),
        "{stderr}"
    );
    assert!(stderr.contains("succeeded; its journal:"), "{stderr}");
    let out = timectl(&["plan", RHEL9_SPEC, "--root", &r, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

#[test]
fn invalid_utf8_is_reported_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.yaml");
    // "é" in Latin-1 (0xe9) after "ntp-caf" on line 4, column 22.
    let mut bytes = b"timesync:\n  provider: chrony\n  sources:\n    - server: ntp-caf".to_vec();
    bytes.push(0xe9);
    bytes.extend_from_slice(b".example\n");
    std::fs::write(&path, &bytes).unwrap();
    let p = path.display().to_string();
    for args in [
        vec!["validate", p.as_str()],
        vec!["plan", p.as_str(), "--root", "examples/roots/rhel9-ntpd"],
        vec![
            "apply",
            p.as_str(),
            "--root",
            "examples/roots/rhel9-ntpd",
            "--yes",
        ],
    ] {
        let out = timectl(&args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!("{p}:4:22: invalid UTF-8 (byte 0xe9)")),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn long_values_are_cut_in_messages() {
    let dir = tempfile::tempdir().unwrap();
    let long = "a".repeat(1 << 20);
    let spec = write_spec(
        dir.path(),
        "long.yaml",
        &format!("timesync:\n  sources:\n    - server: {long}-\n"),
    );
    let out = timectl(&["validate", &spec.display().to_string()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stdout.len() + stderr.len() < 2048,
        "{} bytes of output",
        stdout.len() + stderr.len()
    );
    assert!(stderr.contains("long.yaml:3:15:"), "{stderr}");
    assert!(stderr.contains('…'), "{stderr}");
}

#[test]
fn validate_rejects_what_plan_rejects_at_the_same_place() {
    let dir = tempfile::tempdir().unwrap();
    // The default provider is the embedded engine; the error points at
    // the extraConfig value (line 4), not at the provider or the sources.
    for (name, spec, position) in [
        (
            "plain.yaml",
            "timesync:\n  sources:\n    - server: a.example\n  extraConfig: log tracking\n",
            ":4:16:",
        ),
        (
            "block.yaml",
            "timesync:\n  provider: embedded\n  sources:\n    - server: a.example\n  extraConfig: |\n    log tracking\n",
            ":6:5:",
        ),
    ] {
        let spec = write_spec(dir.path(), name, spec);
        let p = spec.display().to_string();
        let validate = timectl(&["validate", &p]);
        let plan = timectl(&["plan", &p, "--root", "examples/roots/debian12"]);
        for (label, out) in [("validate", &validate), ("plan", &plan)] {
            let (stdout, stderr) = text(out);
            assert_eq!(out.status.code(), Some(1), "{label}: {stdout}{stderr}");
            assert!(
                stderr.contains(&format!(
                    "{p}{position} extraConfig is not supported with the embedded engine"
                )),
                "{label}: {stderr}"
            );
        }
        assert_eq!(text(&validate).1, text(&plan).1);
        assert!(Path::new(&p).exists());
    }
}
