//! How long `timectl plan` takes on the shipped example roots: the library
//! call (load the spec, detect facts, compile, observe, diff) and the whole
//! command as an admin runs it (process start to exit). Target: a median
//! under 20 ms for the command. Run: `cargo bench --bench plan`.

use std::path::PathBuf;
use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bench_plan(c: &mut Criterion) {
    let cases = [
        ("rhel9-ntpd", "examples/rhel9-ntpd-to-chrony.yaml"),
        ("debian12", "examples/lan-time-server.yaml"),
        ("centos7", "examples/rhel7-ntpd.yaml"),
    ];
    let mut group = c.benchmark_group("plan");
    for (root, spec) in cases {
        let root_dir = repo().join("examples/roots").join(root);
        let spec_path = repo().join(spec);
        group.bench_function(format!("library/{root}"), |b| {
            b.iter(|| {
                let spec = timectl::spec::Spec::load(&spec_path).unwrap();
                let host = timectl::host::Host::offline(&root_dir);
                let plan = timectl::plan::build(&spec, &host).unwrap();
                assert!(!plan.changes.is_empty());
                plan
            })
        });
        group.bench_function(format!("command/{root}"), |b| {
            b.iter(|| {
                let out = Command::new(env!("CARGO_BIN_EXE_timectl"))
                    .args(["plan"])
                    .arg(&spec_path)
                    .arg("--root")
                    .arg(&root_dir)
                    .output()
                    .unwrap();
                assert!(out.status.success());
                out
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
