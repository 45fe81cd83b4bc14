#!/usr/bin/env bash
# Fuzzes the desired-state loader (fuzz/fuzz_targets/spec.rs: bytes ->
# what `timectl validate` does) for a number of inputs, starting from the
# example specs. Like ci/engine-fuzz.sh: cargo-fuzz on nightly when
# installed, otherwise the same libFuzzer target built on stable with
# coverage instrumentation passed as plain rustc flags.
# Usage: ci/spec-fuzz.sh [RUNS]   (default 10000000; libFuzzer's -runs)
# Prints libFuzzer's final stats ("Done N runs"); exits non-zero on a crash
# (the crashing input is saved under fuzz/artifacts/spec/).
set -euo pipefail
runs="${1:-10000000}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo/fuzz"
corpus="$(mktemp -d -t timectl-fuzz-spec-XXXXXX)"
trap 'rm -rf "$corpus"' EXIT
cp "$repo"/examples/*.yaml "$repo"/docs/engine-config.example.yaml "$corpus"/ 2>/dev/null || true
mkdir -p artifacts/spec
if cargo fuzz --version >/dev/null 2>&1 && rustc --version | grep -q nightly; then
    exec cargo fuzz run spec "$corpus" -- -runs="$runs" -max_len=4096 -artifact_prefix=artifacts/spec/
fi
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros
# (as cargo-fuzz does); only the fuzzed code is instrumented.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --bin spec --target "$host" --target-dir target
"./target/$host/release/spec" "$corpus" -runs="$runs" -max_len=4096 -artifact_prefix=artifacts/spec/ -print_final_stats=1
