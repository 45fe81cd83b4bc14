//! Helpers for tests that run the real `timectl` binary against copies of
//! the example roots in temporary directories.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A private copy of `examples/roots/NAME` (symlinks kept as symlinks).
pub fn copy_root(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("examples/roots").join(name), dir.path());
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Everything about a tree that a change could touch: per path, the kind,
/// mode, owner, and the content or link target.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ids = format!(
            "{:o} {}:{}",
            meta.permissions().mode() & 0o7777,
            meta.uid(),
            meta.gid()
        );
        if meta.file_type().is_symlink() {
            out.insert(
                rel,
                format!("link -> {}", std::fs::read_link(&path).unwrap().display()),
            );
        } else if meta.is_dir() {
            out.insert(rel, format!("dir {ids}"));
            walk(root, &path, out);
        } else {
            let content = std::fs::read(&path).unwrap();
            out.insert(
                rel,
                format!("file {ids} {}", String::from_utf8_lossy(&content)),
            );
        }
    }
}

/// Run the timectl binary.
pub fn timectl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_timectl"))
        .args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Write a spec into a temp dir and return its path.
pub fn write_spec(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Paths that differ between two snapshots, leaving out timectl's own
/// state (`var/lib/timectl`: lock, journals, backups) and the parent
/// directories created for it.
pub fn differences(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let state = |k: &str| {
        k.starts_with("var/lib/timectl")
            || ((k == "var" || k == "var/lib") && !before.contains_key(k))
    };
    before
        .keys()
        .chain(after.keys())
        .filter(|k| !state(k) && before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}
