//! `--root` is a boundary (issue 9, item 1): symlinks inside an offline root
//! are followed inside it, as in a chroot, and a symlink whose target does
//! not resolve inside the root is an error naming the link. These are the
//! issue's reproductions, run through the real binary on copies of the RHEL 9
//! example root, with a directory outside the root holding files a broken
//! implementation would read, print, back up or change.

mod util;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use util::{copy_root, differences, snapshot, text, timectl};

const SPEC: &str = "examples/rhel9-ntpd-to-chrony.yaml";
/// In every file outside the root: must never appear in any output.
const MARKER: &str = "OUTSIDE-THE-ROOT-7f3a";

/// A directory outside the root with a full copy of the example's /etc (and
/// a state directory), every file carrying the marker.
struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new() -> Outside {
        let dir = copy_root("rhel9-ntpd");
        for file in ["etc/chrony.conf", "etc/ntp.conf"] {
            let path = dir.path().join(file);
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push_str(&format!("# {MARKER}\nserver outside.invalid iburst\n"));
            std::fs::write(&path, text).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/keep"), MARKER).unwrap();
        std::fs::write(dir.path().join("secret.conf"), format!("{MARKER}\n")).unwrap();
        Outside { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// Replace `rel` in the root by a symlink to `target`.
fn replace_with_link(root: &Path, rel: &str, target: &Path) {
    let path = root.join(rel);
    if let Ok(meta) = path.symlink_metadata() {
        if meta.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    symlink(target, &path).unwrap();
}

/// `../` repeated so that, from `rel`'s directory, the path climbs to the
/// filesystem root and then names `outside`: a link that escapes with `..`.
fn climbing(root: &Path, rel: &str, outside: &Path) -> PathBuf {
    let depth = root.join(rel).parent().unwrap().components().count();
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.join(outside.strip_prefix("/").unwrap())
}

/// Every command a user would run: each must fail naming the link, print
/// nothing from outside, and leave the outside directory byte-identical.
fn assert_refused(root: &Path, outside: &Outside, link: &str) {
    let r = root.display().to_string();
    let before = snapshot(outside.dir.path());
    let spec = util::repo().join(SPEC).display().to_string();
    let runs: [&[&str]; 4] = [
        &["plan", &spec, "--root", &r],
        &["plan", &spec, "--root", &r, "--json"],
        &["plan", &spec, "--root", &r, "--markdown"],
        &["apply", &spec, "--root", &r, "--yes"],
    ];
    for args in runs {
        let out = timectl(args);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} must fail\n{stdout}{stderr}"
        );
        assert!(
            stderr.contains(&format!("{link} is a symlink to")),
            "{args:?}: the error must name {link}\n{stdout}{stderr}"
        );
        assert!(
            stderr.contains("does not resolve inside the root"),
            "{stderr}"
        );
        assert!(
            !stdout.contains(MARKER) && !stderr.contains(MARKER),
            "{args:?} printed a file from outside the root\n{stdout}{stderr}"
        );
        assert!(!stdout.contains("outside.invalid"), "{stdout}");
    }
    assert_eq!(
        differences(&before, &snapshot(outside.dir.path())),
        Vec::<String>::new(),
        "the directory outside the root changed"
    );
}

#[test]
fn etc_linked_to_a_directory_outside_is_refused() {
    let outside = Outside::new();
    let root = copy_root("rhel9-ntpd");
    replace_with_link(root.path(), "etc", &outside.path("etc"));
    assert_refused(root.path(), &outside, "/etc");
}

#[test]
fn etc_linked_out_with_dot_dot_is_refused() {
    let outside = Outside::new();
    let root = copy_root("rhel9-ntpd");
    let target = climbing(root.path(), "etc", &outside.path("etc"));
    replace_with_link(root.path(), "etc", &target);
    assert_refused(root.path(), &outside, "/etc");
}

#[test]
fn config_file_linked_to_a_file_outside_is_refused() {
    for how in ["absolute", "dot-dot"] {
        let outside = Outside::new();
        let root = copy_root("rhel9-ntpd");
        let file = outside.path("etc/chrony.conf");
        let target = match how {
            "absolute" => file,
            _ => climbing(root.path(), "etc/chrony.conf", &file),
        };
        replace_with_link(root.path(), "etc/chrony.conf", &target);
        assert_refused(root.path(), &outside, "/etc/chrony.conf");
    }
}

#[test]
fn state_directory_linked_outside_is_refused_before_any_change() {
    for rel in ["var/lib/timectl", "var/lib", "var"] {
        let outside = Outside::new();
        let root = copy_root("rhel9-ntpd");
        std::fs::create_dir_all(root.path().join("var/lib")).unwrap();
        let before = snapshot(root.path());
        replace_with_link(root.path(), rel, &outside.path("state"));
        let r = root.path().display().to_string();
        let spec = util::repo().join(SPEC).display().to_string();
        let outside_before = snapshot(outside.dir.path());
        let out = timectl(&["apply", &spec, "--root", &r, "--yes"]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{rel}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!("/{rel} is a symlink to")),
            "{rel}: {stderr}"
        );
        assert_eq!(
            differences(&outside_before, &snapshot(outside.dir.path())),
            Vec::<String>::new(),
            "{rel}: the directory outside the root changed"
        );
        // Nothing in the root changed either: the lock comes first.
        let after = snapshot(root.path());
        let changed: Vec<_> = differences(&before, &after)
            .into_iter()
            .filter(|k| !k.starts_with("var"))
            .collect();
        assert_eq!(changed, Vec::<String>::new(), "{rel}");
    }
}

#[test]
fn unit_links_directory_linked_outside_is_refused() {
    let outside = Outside::new();
    let root = copy_root("rhel9-ntpd");
    replace_with_link(
        root.path(),
        "etc/systemd/system/multi-user.target.wants",
        &outside.path("etc/systemd/system/multi-user.target.wants"),
    );
    assert_refused(
        root.path(),
        &outside,
        "/etc/systemd/system/multi-user.target.wants",
    );
}

#[test]
fn links_that_resolve_inside_the_root_are_followed_inside_it() {
    // The trap: the link's absolute target also exists on the host, outside
    // the root, holding the marker. Inside the root it names the root's own
    // copy, which is the one timectl must read and replace.
    let outside = Outside::new();
    let root = copy_root("rhel9-ntpd");
    let decoy = outside.path("secret.conf");
    let inside = root.path().join(decoy.strip_prefix("/").unwrap());
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    std::fs::rename(root.path().join("etc/chrony.conf"), &inside).unwrap();
    symlink(&decoy, root.path().join("etc/chrony.conf")).unwrap();
    // The state directory is an in-root link too (relative this time).
    std::fs::create_dir_all(root.path().join("data/timectl")).unwrap();
    std::fs::create_dir_all(root.path().join("var/lib")).unwrap();
    symlink("../../data/timectl", root.path().join("var/lib/timectl")).unwrap();

    let r = root.path().display().to_string();
    let spec = util::repo().join(SPEC).display().to_string();
    let outside_before = snapshot(outside.dir.path());
    let out = timectl(&["plan", &spec, "--root", &r]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // The diff is against the root's file (its pool line), not the decoy.
    assert!(
        stdout.contains("-pool 2.rhel.pool.ntp.org iburst"),
        "{stdout}"
    );
    assert!(!stdout.contains(MARKER), "{stdout}");

    let out = timectl(&["apply", &spec, "--root", &r, "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains(MARKER) && !stderr.contains(MARKER));
    // The link is kept and the root's file behind it was replaced.
    assert_eq!(
        std::fs::read_link(root.path().join("etc/chrony.conf")).unwrap(),
        decoy
    );
    let written = std::fs::read_to_string(&inside).unwrap();
    assert!(
        written.contains("server ntp1.corp.example.com iburst prefer"),
        "{written}"
    );
    // Journal and backup went through the in-root state link.
    let runs = std::fs::read_dir(root.path().join("data/timectl/runs"))
        .unwrap()
        .count();
    assert_eq!(runs, 1);
    assert!(root.path().join("data/timectl/lock").exists());
    assert_eq!(
        differences(&outside_before, &snapshot(outside.dir.path())),
        Vec::<String>::new()
    );
    // And it converged: nothing left to do.
    let out = timectl(&["plan", &spec, "--root", &r, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}
