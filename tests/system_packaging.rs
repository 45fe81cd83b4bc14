//! timectl as operators install and watch it (issue 12), for real:
//!
//! - the .deb built by ci/build-packages.sh installed with `dpkg -i` on a
//!   fresh test host (nspawn container booted from the test image), where
//!   `man timectl` renders, bash completes the subcommands through the
//!   packaged completion script, and the packaged examples/embedded.yaml is
//!   applied as the README's real-host example is (pool and server names
//!   resolving to chronyd peers on the container's uplink, clock control
//!   off): the engine's unit runs /usr/bin/timectl and nothing is copied to
//!   /usr/local/libexec;
//! - the .rpm checked with `rpm -qlp` (its files) and `rpm -K` (digests),
//!   the .deb's contents with `dpkg-deb -c`;
//! - the metrics textfile of `apply --metrics-textfile` accepted by
//!   Prometheus's own `promtool check metrics`.
//!
//! Run as root with `ci/system-tests.sh packag` (which builds the packages
//! first and passes their directory as TIMECTL_PACKAGES_DIR) or after
//! `ci/build-packages.sh` (target/packages). All are #[ignore]d.

mod support;
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use support::live::{ENGINE, ENGINE_UNIT, INSTALLED, text, unit};
use support::{ChronyPeer, Container, ContainerOptions, record_timing, require_root_and};

const PACKAGED: &str = "/usr/bin/timectl";
const EXAMPLE: &str = "/usr/share/doc/timectl/examples/embedded.yaml";

/// The directory holding the built timectl_*.deb and timectl-*.rpm.
fn packages_dir() -> PathBuf {
    let dir = std::env::var_os("TIMECTL_PACKAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join("target/packages"));
    assert!(
        package(&dir, "timectl_", ".deb").is_some() && package(&dir, "timectl-", ".rpm").is_some(),
        "no timectl .deb and .rpm in {}: build them with `ci/build-packages.sh` \
         (ci/system-tests.sh does, and sets TIMECTL_PACKAGES_DIR)",
        dir.display()
    );
    dir
}

fn package(dir: &Path, prefix: &str, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.find_map(|e| {
        let path = e.ok()?.path();
        let name = path.file_name()?.to_str()?.to_string();
        (name.starts_with(prefix) && name.ends_with(suffix)).then_some(path)
    })
}

fn host_output(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// Files every package must carry.
const PACKAGE_FILES: &[&str] = &[
    "/usr/bin/timectl",
    "/usr/share/man/man1/timectl.1",
    "/usr/share/man/man1/timectl-apply.1",
    "/usr/share/man/man1/timectl-plan.1",
    "/usr/share/man/man5/timectl-spec.5",
    "/usr/share/bash-completion/completions/timectl",
    "/usr/share/fish/vendor_completions.d/timectl.fish",
    "/usr/share/timectl/schemas/timectl.schema.json",
    "/usr/share/doc/timectl/README.md",
    "/usr/share/doc/timectl/docs/embedded.md",
    "/usr/share/doc/timectl/examples/embedded.yaml",
];

#[test]
#[ignore = "needs rpm and dpkg-deb and the built packages; run ci/system-tests.sh packag"]
fn packaging_rpm_and_deb_carry_every_file_and_the_rpm_digests_check() {
    require_root_and(&["rpm", "dpkg-deb"]);
    let dir = packages_dir();
    let rpm = package(&dir, "timectl-", ".rpm").unwrap();
    let rpm = rpm.to_str().unwrap();
    let (ok, list) = host_output("rpm", &["-qlp", rpm]);
    assert!(ok, "rpm -qlp: {list}");
    for file in PACKAGE_FILES {
        assert!(
            list.lines().any(|l| l == *file),
            "{file} not in the rpm:\n{list}"
        );
    }
    for file in [
        "/usr/share/zsh/site-functions/_timectl",
        "/usr/share/licenses/timectl/LICENSE-MIT",
        "/usr/share/licenses/timectl/LICENSE-APACHE",
    ] {
        assert!(
            list.lines().any(|l| l == file),
            "{file} not in the rpm:\n{list}"
        );
    }
    let (ok, checked) = host_output("rpm", &["-K", rpm]);
    assert!(ok && checked.contains("digests OK"), "rpm -K: {checked}");
    let (ok, info) = host_output(
        "rpm",
        &[
            "-qp",
            "--qf",
            "%{NAME} %{VERSION}-%{RELEASE} %{LICENSE}\n",
            rpm,
        ],
    );
    assert!(ok, "{info}");
    assert_eq!(
        info.trim(),
        format!("timectl {}-1 MIT OR Apache-2.0", env!("CARGO_PKG_VERSION"))
    );

    let deb = package(&dir, "timectl_", ".deb").unwrap();
    let (ok, contents) = host_output("dpkg-deb", &["-c", deb.to_str().unwrap()]);
    assert!(ok, "dpkg-deb -c: {contents}");
    let paths: Vec<&str> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.'))
        .collect();
    for file in PACKAGE_FILES {
        // dpkg packages carry man pages gzipped.
        let wanted = if file.contains("/man/") {
            format!("{file}.gz")
        } else {
            file.to_string()
        };
        assert!(
            paths.contains(&wanted.as_str()),
            "{wanted} not in the deb:\n{contents}"
        );
    }
    for file in [
        "/usr/share/zsh/vendor-completions/_timectl",
        "/usr/share/doc/timectl/LICENSE-MIT",
        "/usr/share/doc/timectl/copyright",
    ] {
        assert!(paths.contains(&file), "{file} not in the deb:\n{contents}");
    }
}

/// Three chronyd peers on port 123 upstream of the container (192.0.2.2-4)
/// and /etc/hosts entries that make the example's names resolve to them,
/// the pool to two of them.
fn example_sources(c: &Container) -> Vec<ChronyPeer> {
    c.uplink().add_address("192.0.2.3/24");
    c.uplink().add_address("192.0.2.4/24");
    let peers = ["192.0.2.2", "192.0.2.3", "192.0.2.4"]
        .iter()
        .map(|addr| {
            ChronyPeer::builder()
                .port(123)
                .bind(addr)
                .allow("192.0.2.0/24")
                .netns(c.uplink().netns())
                .start()
        })
        .collect();
    let hosts = text(&c.exec(&["cat", "/etc/hosts"]).stdout);
    c.write_file(
        "/etc/hosts",
        &format!(
            "{hosts}\n192.0.2.2 2.debian.pool.ntp.org\n192.0.2.3 2.debian.pool.ntp.org\n192.0.2.4 time.cloudflare.com\n"
        ),
    );
    peers
}

/// COMPREPLY of the packaged bash completion for the words typed so far.
fn complete(c: &Container, words: &[&str]) -> Vec<String> {
    let script = format!(
        "source /usr/share/bash-completion/completions/timectl\n\
         complete -p timectl\n\
         COMP_WORDS=({words})\n\
         COMP_CWORD={cword}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _timectl timectl \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf 'reply: %s\\n' \"${{COMPREPLY[@]}}\"\n",
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
    );
    let out = c.exec_ok(&["bash", "-c", &script]);
    assert!(
        out.contains(" -F _timectl timectl"),
        "not registered: {out}"
    );
    out.lines()
        .filter_map(|l| l.strip_prefix("reply: "))
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs root, the test image and the built .deb; run ci/system-tests.sh packag"]
fn packaging_deb_installs_man_and_completion_work_and_the_example_runs_the_packaged_binary() {
    let mut tools = support::CONTAINER_TOOLS.to_vec();
    tools.extend_from_slice(support::live::CHRONY_TOOLS);
    require_root_and(&tools);
    let dir = packages_dir();
    let deb = package(&dir, "timectl_", ".deb").unwrap();
    let deb_inside = format!(
        "/opt/packages/{}",
        deb.file_name().unwrap().to_str().unwrap()
    );
    let c = Container::boot_with(ContainerOptions {
        uplink: true,
        bind_ro: vec![(dir.clone(), "/opt/packages".into())],
        ..ContainerOptions::default()
    });

    // man-db from the image's offline repository, then the package.
    c.apt_get(&["install", "man-db"]);
    let t = Instant::now();
    c.exec_ok(&["dpkg", "-i", &deb_inside]);
    record_timing("dpkg -i timectl .deb", t.elapsed());
    let status = c.package_status("timectl");
    assert_eq!(status, "installed");
    let version = c.exec_ok(&[PACKAGED, "--version"]);
    assert_eq!(
        version.trim(),
        format!("timectl {}", env!("CARGO_PKG_VERSION"))
    );

    // man timectl renders, and so does the spec's page (words compared
    // with single spaces: man justifies lines).
    let man_page = |args: &[&str]| -> String {
        let mut argv = vec!["env", "MANWIDTH=100", "man", "-P", "cat"];
        argv.extend_from_slice(args);
        let page = c.exec_ok(&argv);
        page.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let man = man_page(&["timectl"]);
    assert!(
        man.contains("NAME") && man.contains("timectl - Declarative time synchronisation"),
        "{man}"
    );
    assert!(
        man.contains("timectl-plan(1)") && man.contains("timectl-spec(5)"),
        "{man}"
    );
    let spec_page = c.exec_ok(&[
        "env",
        "MANWIDTH=100",
        "man",
        "-P",
        "cat",
        "5",
        "timectl-spec",
    ]);
    assert!(
        spec_page.contains("minSources (non-negative integer)"),
        "{spec_page}"
    );
    let apply_page = man_page(&["timectl-apply"]);
    assert!(apply_page.contains("--metrics-textfile"), "{apply_page}");

    // Bash completes subcommands, a prefix, and options of a subcommand.
    let subcommands = complete(&c, &["timectl", ""]);
    for word in ["plan", "apply", "validate", "completions"] {
        assert!(
            subcommands.iter().any(|w| w == word),
            "{word} not in {subcommands:?}"
        );
    }
    assert_eq!(complete(&c, &["timectl", "pl"]), ["plan"]);
    let options = complete(&c, &["timectl", "apply", "--met"]);
    assert_eq!(options, ["--metrics-textfile"]);

    // The README's real-host example, from the packaged example file.
    let _peers = example_sources(&c);
    let example = c.read_file(EXAMPLE);
    assert_eq!(
        example,
        std::fs::read_to_string(support::repo_root().join("examples/embedded.yaml")).unwrap()
    );
    // This machine's clock is never the engine's to set.
    let spec =
        support::live::put_spec(&c, "embedded", &format!("{example}  clockControl: false\n"));
    let plan = c.exec(&[PACKAGED, "plan", &spec, "--json"]);
    assert!(plan.status.success(), "{plan:?}");
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["engine_binary"]["from"], "package", "{plan}");
    assert_eq!(plan["engine_binary"]["path"], PACKAGED, "{plan}");
    let ops: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["op"].as_str().unwrap())
        .collect();
    assert!(!ops.contains(&"install_binary"), "{ops:?}");

    let applied = support::live::apply_with(&c, PACKAGED, &spec);
    // Converged includes the example's verification: synchronised within
    // 60 s, |offset| <= 100 ms.
    support::live::expect_converged(applied, "embedded example from the .deb");
    assert_eq!(unit(&c, ENGINE), ("active".into(), "enabled".into()));
    let unit_file = c.read_file(ENGINE_UNIT);
    assert!(
        unit_file
            .contains("\nExecStart=/usr/bin/timectl daemon --config /etc/timectl/engine.yaml\n"),
        "{unit_file}"
    );
    let pid = c.unit_property(ENGINE, "MainPID");
    let exe = c.exec_ok(&["readlink", &format!("/proc/{pid}/exe")]);
    assert_eq!(exe.trim(), PACKAGED);
    let copy = c.exec(&["test", "-e", INSTALLED]);
    assert!(!copy.status.success(), "a copy went to {INSTALLED}");
    let libexec = c.exec(&["test", "-e", "/usr/local/libexec/timectl"]);
    assert!(
        !libexec.status.success(),
        "/usr/local/libexec/timectl exists"
    );
    let status = c.exec_ok(&[PACKAGED, "status"]);
    assert!(status.contains("Synchronised    : yes"), "{status}");

    // Converged: a second apply changes nothing.
    let again = support::live::apply_with(&c, PACKAGED, &spec);
    assert_eq!(again.outcome(), "no-changes", "{}", again.context());
    let took = c.poweroff();
    record_timing("packaging test container poweroff", took);
}

#[test]
#[ignore = "needs promtool (Debian package prometheus); run ci/system-tests.sh packag"]
fn packaging_metrics_textfile_passes_promtool() {
    require_root_and(&["promtool"]);
    let root = util::copy_root("debian12");
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("timectl.prom");
    let out = util::timectl(&[
        "apply",
        "examples/embedded.yaml",
        "--root",
        &root.path().display().to_string(),
        "--yes",
        "--metrics-textfile",
        &prom.display().to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let metrics = std::fs::read(&prom).unwrap();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        check.stdin.take().unwrap().write_all(&metrics).unwrap();
    }
    let checked = check.wait_with_output().unwrap();
    // promtool exits non-zero on format errors and on lint problems alike.
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{}",
        text(&checked.stdout),
        text(&checked.stderr),
        text(&metrics)
    );
}
