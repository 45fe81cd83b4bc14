#!/usr/bin/env bash
# Fuzzes the engine's decoders for a bounded time each: the NTP packet
# decoder (fuzz/fuzz_targets/decode.rs), the NTS-KE stream decoder
# (nts_ke.rs) and NTS extension fields (nts_ef.rs). Uses cargo-fuzz when
# installed (nightly toolchains); otherwise builds the same libFuzzer
# targets on stable with coverage instrumentation passed as plain rustc
# flags.
# Usage: ci/engine-fuzz.sh [SECONDS] [TARGET]
#   SECONDS per target (default 60); TARGET one of decode, nts_ke, nts_ef
#   (default: all of them in turn). Prints libFuzzer's final stats; exits
#   non-zero on a crash (the input is saved under fuzz/artifacts/TARGET/).
set -euo pipefail
secs="${1:-60}"
all_targets=(decode nts_ke nts_ef)
if [ $# -ge 2 ]; then
    case " ${all_targets[*]} " in
        *" $2 "*) targets=("$2") ;;
        *) echo "unknown target '$2' (one of: ${all_targets[*]})" >&2; exit 2 ;;
    esac
else
    targets=("${all_targets[@]}")
fi
cd "$(dirname "$0")/../fuzz"
nightly=false
if cargo fuzz --version >/dev/null 2>&1 && rustc --version | grep -q nightly; then
    nightly=true
else
    export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
    host="$(rustc -vV | sed -n 's/^host: //p')"
fi
for target in "${targets[@]}"; do
    corpus="$(mktemp -d -t "timectl-fuzz-$target-XXXXXX")"
    mkdir -p "artifacts/$target"
    flags=(-max_total_time="$secs" -max_len=1200 -artifact_prefix="artifacts/$target/" -print_final_stats=1)
    echo "== $target: ${secs}s"
    if $nightly; then
        cargo fuzz run "$target" "$corpus" -- "${flags[@]}" || { rm -rf "$corpus"; exit 1; }
    else
        # An explicit --target keeps RUSTFLAGS off build scripts and proc
        # macros (as cargo-fuzz does); only the fuzzed code is instrumented.
        cargo build --release --bin "$target" --target "$host" --target-dir target
        "./target/$host/release/$target" "$corpus" "${flags[@]}" || { rm -rf "$corpus"; exit 1; }
    fi
    rm -rf "$corpus"
done
