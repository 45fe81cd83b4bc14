#!/usr/bin/env bash
# Run timectl's system tests: every #[ignore]d test in the workspace (the
# convention: #[ignore = "needs root ...; run ci/system-tests.sh"] marks a
# test that needs root, containers or real peers). Run as root from anywhere.
#
#   ci/system-tests.sh                 all ignored tests
#   ci/system-tests.sh FILTER...       only ignored tests whose name matches
#                                      (`fleet`: the Ansible fleet test, plus
#                                      ansible-test sanity on ansible/)
#   TIMECTL_SYSTEM_TESTS_SKIP_DEPS=1   skip ci/install-deps.sh (offline dev box)
#   TIMECTL_UML_BENCH_THREADS=N        clock bench scenarios at once (default 2)
#
# Steps: clean leftovers of earlier runs, install host packages, build (or
# reuse) the cached test image, build the tests, run them one at a time
# (containers boot fast, but the 2-core CI machine gains nothing from running
# several at once and logs stay readable), then the real-kernel clock bench
# (tests/uml_clock.rs, tests uml_bench_*) two scenarios at a time: each
# scenario runs for minutes of wall time in two mostly idle UML kernels, so
# running four kernels at once halves the bench (about 11 minutes instead
# of 22). The Ansible benchmark (ansible_bench_*) is left to
# ci/ansible-bench.sh. Always cleans up at exit. Ends with a timing summary, including the
# timings and bench figures the tests record.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

if [[ $(id -u) -ne 0 ]]; then
    echo "system-tests.sh: must run as root (containers, namespaces, nftables)" >&2
    exit 1
fi

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
phases=()
phase() { # phase NAME CMD...: run and time one step
    local name=$1 t0 rc
    shift
    echo "=== $name" >&2
    t0=$(now_ms)
    rc=0
    "$@" || rc=$?
    phases+=("$(printf '%-28s %8s s' "$name" "$(secs $(($(now_ms) - t0)))")")
    return $rc
}

timings=$(mktemp /tmp/timectl-system-tests-timings.XXXXXX)
t_start=$(now_ms)
summary() {
    local rc=$?
    echo "=== cleanup" >&2
    "$here/cleanup.sh" || true
    echo
    echo "=== system test timings"
    printf '%s\n' "${phases[@]}"
    if [[ -s $timings ]]; then
        echo "--- recorded by tests"
        sed 's/^/  /' "$timings"
    fi
    printf '%-28s %8s s\n' "total" "$(secs $(($(now_ms) - t_start)))"
    rm -f "$timings"
    exit $rc
}
trap summary EXIT

phase "cleanup before" "$here/cleanup.sh"
if [[ -z ${TIMECTL_SYSTEM_TESTS_SKIP_DEPS:-} ]]; then
    phase "install-deps" "$here/install-deps.sh"
fi
rootfs_out=$(mktemp /tmp/timectl-system-tests-rootfs.XXXXXX)
build_image() { "$here/testhost/build-image.sh" >"$rootfs_out"; }
phase "test image" build_image
TIMECTL_TESTHOST_ROOTFS=$(tail -n1 "$rootfs_out")
rm -f "$rootfs_out"
export TIMECTL_TESTHOST_ROOTFS
export TIMECTL_TIMINGS_FILE=$timings

# The .deb and .rpm for the packaging tests (tests/system_packaging.rs),
# unless a filter leaves those tests out.
if [[ $# -eq 0 || "$*" == *packag* ]]; then
    packages_out=$(mktemp /tmp/timectl-system-tests-packages.XXXXXX)
    build_packages() { "$here/build-packages.sh" >"$packages_out"; }
    phase "packages (.deb, .rpm)" build_packages
    TIMECTL_PACKAGES_DIR=$(dirname "$(tail -n1 "$packages_out")")
    rm -f "$packages_out"
    export TIMECTL_PACKAGES_DIR
fi

# ansible-test sanity on the timectl.timesync collection (ansible/), unless a
# filter leaves the Ansible tests out.
if [[ $# -eq 0 || "$*" == *ansible* || "$*" == *fleet* ]]; then
    phase "ansible-test sanity" "$here/ansible-sanity.sh"
fi

# --tests: the library's and binaries' unit tests and every integration test
# (tests/*.rs); benches and examples have no system tests.
phase "cargo build (tests)" cargo test --tests --no-run --quiet
rc=0
phase "ignored tests" cargo test --tests --no-fail-fast -- --ignored --test-threads=1 --skip uml_bench_ --skip ansible_bench_ "$@" || rc=1
phase "uml clock bench" cargo test --test uml_clock -- --ignored \
    --test-threads="${TIMECTL_UML_BENCH_THREADS:-2}" "$@" || rc=1
exit $rc
