//! The committed man pages (man/) and shell completions (completions/) are
//! what timectl generates from its clap definitions and the spec's JSON
//! Schema (src/manual.rs): this fails when an option, a subcommand or a
//! spec key changed and the files were not regenerated. To regenerate:
//!
//!     TIMECTL_REGENERATE=1 cargo test --test generated_files

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const DIRS: [&str; 2] = ["man", "completions"];
const HOW: &str = "regenerate with `TIMECTL_REGENERATE=1 cargo test --test generated_files` and commit the result";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn committed_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for dir in DIRS {
        for entry in std::fs::read_dir(repo().join(dir)).into_iter().flatten() {
            let entry = entry.unwrap();
            names.insert(format!("{dir}/{}", entry.file_name().to_string_lossy()));
        }
    }
    names
}

#[test]
fn committed_man_pages_and_completions_are_regenerated() {
    let generated = timectl::manual::generated_files();
    let wanted: BTreeSet<String> = generated.iter().map(|f| f.path.clone()).collect();
    if std::env::var_os("TIMECTL_REGENERATE").is_some() {
        for dir in DIRS {
            std::fs::create_dir_all(repo().join(dir)).unwrap();
        }
        for file in &generated {
            std::fs::write(repo().join(&file.path), &file.content).unwrap();
        }
        for extra in committed_names().difference(&wanted) {
            std::fs::remove_file(repo().join(extra)).unwrap();
        }
    }
    let mut problems = Vec::new();
    for file in &generated {
        match std::fs::read(repo().join(&file.path)) {
            Ok(committed) if committed == file.content => {}
            Ok(_) => problems.push(format!("{} differs from what timectl generates", file.path)),
            Err(e) => problems.push(format!("{} is missing ({e})", file.path)),
        }
    }
    for extra in committed_names().difference(&wanted) {
        problems.push(format!("{extra} is no longer generated"));
    }
    assert!(problems.is_empty(), "{}\n{HOW}", problems.join("\n"));
}

#[test]
fn every_subcommand_has_a_page_and_the_spec_page_has_every_key() {
    let pages: Vec<String> = timectl::manual::man_pages()
        .into_iter()
        .map(|p| p.path)
        .collect();
    for name in [
        "man/timectl.1",
        "man/timectl-plan.1",
        "man/timectl-apply.1",
        "man/timectl-daemon.1",
        "man/timectl-completions.1",
        "man/timectl-spec.5",
    ] {
        assert!(pages.iter().any(|p| p == name), "{name} not in {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("help")), "{pages:?}");
    let spec = timectl::manual::spec_page(&timectl::spec::json_schema());
    // Every key of every mapping in the schema has an entry.
    let schema = timectl::spec::json_schema();
    for (name, def) in schema["$defs"].as_object().unwrap() {
        for key in def["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            assert!(
                spec.contains(&format!("\n.TP\n\\fB{key}\\fR (")),
                "{name}.{key} missing from timectl-spec(5)"
            );
        }
    }
    assert!(
        spec.contains("\\fBmask\\fR\nStop, disable and mask them"),
        "{spec}"
    );
}

/// The page renders as man(1) shows it, where man is installed (the
/// system test checks `man timectl` after installing the .deb).
#[test]
fn man_renders_the_spec_page_when_man_is_installed() {
    let Ok(out) = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(repo().join("man/timectl-spec.5"))
        .env("MANWIDTH", "100")
        .output()
    else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("timectl-spec - the desired-state file"),
        "{text}"
    );
    assert!(text.contains("minSources (non-negative integer)"), "{text}");
}

#[test]
fn completions_command_prints_the_generated_scripts() {
    // What the committed files are checked against (above).
    for (name, shell) in [
        ("bash", timectl::manual::Shell::Bash),
        ("zsh", timectl::manual::Shell::Zsh),
        ("fish", timectl::manual::Shell::Fish),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_timectl"))
            .args(["completions", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, timectl::manual::completions(shell), "{name}");
        let script = String::from_utf8_lossy(&out.stdout);
        for subcommand in ["plan", "apply", "completions"] {
            assert!(script.contains(subcommand), "{name}: no {subcommand}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_timectl"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("possible values: bash, zsh, fish"),
        "{out:?}"
    );
}
