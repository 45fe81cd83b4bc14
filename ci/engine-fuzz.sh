#!/usr/bin/env bash
# Fuzzes the NTP packet decoder (fuzz/fuzz_targets/decode.rs) for a bounded
# time. Uses cargo-fuzz when installed (nightly toolchains); otherwise builds
# the same libFuzzer target on stable with coverage instrumentation passed
# as plain rustc flags.
# Usage: ci/engine-fuzz.sh [SECONDS]   (default 60)
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")/../fuzz"
corpus="$(mktemp -d -t timectl-fuzz-XXXXXX)"
trap 'rm -rf "$corpus"' EXIT
if cargo fuzz --version >/dev/null 2>&1 && rustc --version | grep -q nightly; then
    exec cargo fuzz run decode "$corpus" -- -max_total_time="$secs"
fi
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros
# (as cargo-fuzz does); only the fuzzed code is instrumented.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --bin decode --target "$host" --target-dir target
"./target/$host/release/decode" "$corpus" -max_total_time="$secs" -max_len=1200
