//! Which executable the embedded engine's unit runs, decided from the
//! managed root (issue 12): the timectl package's /usr/bin/timectl when the
//! root's dpkg database says the package is installed and owns it, else a
//! copy of this timectl in /usr/local/libexec. Offline roots, the real
//! binary, real files; the package is "installed" into the copied example
//! root the way dpkg leaves it (a status stanza, info/timectl.list, the file).

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use util::{copy_root, text, timectl};

const SPEC: &str = "examples/embedded.yaml";
const COPY: &str = "usr/local/libexec/timectl/timectl";
const UNIT: &str = "etc/systemd/system/timectl-engine.service";
const RUNS_COPY: &str =
    "/usr/local/libexec/timectl/timectl daemon --config /etc/timectl/engine.yaml";
const RUNS_PACKAGED: &str = "/usr/bin/timectl daemon --config /etc/timectl/engine.yaml";

/// What `dpkg -i timectl_*.deb` leaves in a root, as far as timectl looks:
/// the status stanza, the file list, and /usr/bin/timectl (`with_file`).
fn install_package(root: &Path, with_file: bool) {
    let status = root.join("var/lib/dpkg/status");
    let mut text = std::fs::read_to_string(&status).unwrap();
    text.push_str(
        "Package: timectl\nStatus: install ok installed\nPriority: optional\nSection: admin\nArchitecture: amd64\nVersion: 0.1.0-1\nDescription: Declarative time-synchronisation converger\n\n",
    );
    std::fs::write(&status, text).unwrap();
    let info = root.join("var/lib/dpkg/info");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::write(
        info.join("timectl.list"),
        "/.\n/usr\n/usr/bin\n/usr/bin/timectl\n/usr/share/man/man1/timectl.1.gz\n",
    )
    .unwrap();
    if with_file {
        put_executable(root, "usr/bin/timectl");
    }
}

/// A copy of the Debian 12 example root with the package installed (and
/// its executable, `with_file`), and the root as an argument.
fn debian12_with_package(with_file: bool) -> (tempfile::TempDir, String) {
    let root = copy_root("debian12");
    install_package(root.path(), with_file);
    let r = root.path().display().to_string();
    (root, r)
}

fn put_executable(root: &Path, relative: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "#!/bin/sh\n# stands in for the packaged timectl\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn plan_json(root: &str) -> Value {
    let out = timectl(&["plan", SPEC, "--root", root, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ops(plan: &Value) -> Vec<String> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["op"].as_str().unwrap(),
                c["resource"].as_str().unwrap()
            )
        })
        .collect()
}

fn apply(root: &str) -> String {
    let out = timectl(&["apply", SPEC, "--root", root, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    stdout
}

fn assert_nothing_to_do(root: &str) {
    let out = timectl(&["plan", SPEC, "--root", root, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

fn exec_start(root: &Path) -> String {
    let unit = std::fs::read_to_string(root.join(UNIT)).unwrap();
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in {unit}"))
        .to_string()
}

#[test]
fn without_the_package_the_engine_runs_an_installed_copy() {
    let root = copy_root("debian12");
    // A /usr/bin/timectl that no package owns (put there by hand) is not
    // trusted to be a timectl.
    put_executable(root.path(), "usr/bin/timectl");
    let r = root.path().display().to_string();
    let plan = plan_json(&r);
    assert_eq!(plan["engine_binary"]["from"], "copy", "{plan}");
    assert_eq!(
        plan["engine_binary"]["path"],
        "/usr/local/libexec/timectl/timectl"
    );
    assert!(
        ops(&plan).contains(&"install_binary binary:/usr/local/libexec/timectl/timectl".into()),
        "{plan}"
    );
    let out = timectl(&["plan", SPEC, "--root", &r]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("\nEngine executable: /usr/local/libexec/timectl/timectl, a copy of /"),
        "{stdout}"
    );
    apply(&r);
    assert!(root.path().join(COPY).is_file());
    assert_eq!(exec_start(root.path()), RUNS_COPY);
    assert_nothing_to_do(&r);
}

#[test]
fn with_the_package_the_engine_runs_the_packaged_binary_and_nothing_is_copied() {
    let (root, r) = debian12_with_package(true);
    let plan = plan_json(&r);
    assert_eq!(
        plan["engine_binary"],
        serde_json::json!({"from": "package", "path": "/usr/bin/timectl", "version": "0.1.0-1"})
    );
    let ops = ops(&plan);
    assert!(
        !ops.iter()
            .any(|o| o.starts_with("install_binary") || o.contains("libexec")),
        "{ops:?}"
    );
    let out = timectl(&["plan", SPEC, "--root", &r]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(
            "\nEngine executable: /usr/bin/timectl from the timectl package 0.1.0-1 (no copy is installed)\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("+ExecStart=/usr/bin/timectl daemon --config /etc/timectl/engine.yaml"),
        "{stdout}"
    );
    apply(&r);
    assert!(!root.path().join("usr/local/libexec").exists());
    assert_eq!(exec_start(root.path()), RUNS_PACKAGED);
    assert_nothing_to_do(&r);
}

#[test]
fn a_package_without_its_executable_falls_back_to_a_copy_and_says_why() {
    let (_root, r) = debian12_with_package(false);
    let plan = plan_json(&r);
    assert_eq!(plan["engine_binary"]["from"], "copy", "{plan}");
    assert!(
        plan["notes"].to_string().contains(
            "the timectl package 0.1.0-1 is installed, but /usr/bin/timectl is missing: the engine runs a copy of this timectl at /usr/local/libexec/timectl/timectl"
        ),
        "{}",
        plan["notes"]
    );
}

#[test]
fn installing_the_package_later_replaces_the_copy_and_rollback_brings_it_back() {
    let root = copy_root("debian12");
    let r = root.path().display().to_string();
    apply(&r);
    let copy = std::fs::read(root.path().join(COPY)).unwrap();
    // A plan saved before the package arrives no longer describes the host.
    let saved = root.path().join("before.plan");
    let out = timectl(&[
        "plan",
        SPEC,
        "--root",
        &r,
        "--out",
        &saved.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));

    install_package(root.path(), true);
    let out = timectl(&["apply", &saved.display().to_string(), "--root", &r, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("stale") && stderr.contains("engine-binary changed"),
        "{stderr}"
    );

    let plan = plan_json(&r);
    let ops = ops(&plan);
    assert_eq!(
        ops,
        [
            "write_file file:/etc/systemd/system/timectl-engine.service",
            "remove_file binary:/usr/local/libexec/timectl/timectl",
        ],
        "{plan}"
    );
    let removal = &plan["changes"][1];
    assert_eq!(removal["kind"], "remove");
    assert!(
        removal["reason"]
            .as_str()
            .unwrap()
            .contains("runs the packaged /usr/bin/timectl; this copy is no longer used"),
        "{removal}"
    );
    apply(&r);
    assert!(!root.path().join(COPY).exists());
    assert_eq!(exec_start(root.path()), RUNS_PACKAGED);
    assert_nothing_to_do(&r);

    // Undoing that run puts the copy and the unit back as they were.
    let out = timectl(&["rollback", "--root", &r, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert_eq!(std::fs::read(root.path().join(COPY)).unwrap(), copy);
    assert_eq!(exec_start(root.path()), RUNS_COPY);
}
