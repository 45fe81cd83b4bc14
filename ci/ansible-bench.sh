#!/usr/bin/env bash
# Benchmark (not run by CI): the timectl.timesync.converge module against the
# linux-system-roles/timesync role on the same kind of fleet in the same run:
# three test-host containers over SSH (tests/support/fleet.rs), starting
# from chrony configured by hand, ntpsec, and no daemon. For each tool, on a
# fresh fleet: `ansible-playbook --check --diff`, apply, apply again (median
# of 3) and `--check --diff` on the converged hosts (median of 3). Both plays
# run with gather_facts: false (the role gathers the facts it needs itself).
# The module runs twice: with the desired state's verify, and without it
# (the role's job: configure, install, start; no synchronisation check).
# Prints a markdown table for docs/benchmarks.md.
#
#   TIMECTL_TIMESYNC_ROLE=/path/to/timesync sudo -E ci/ansible-bench.sh
#
# The role is not vendored here and is on no package registry this project
# uses: clone https://github.com/linux-system-roles/timesync and point
# TIMECTL_TIMESYNC_ROLE at the clone (the directory with tasks/main.yml).
# timectl is the build made to ship (`cargo build --profile dist`, see
# Cargo.toml), copied to the hosts by the action plugin.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

die() {
    echo "ansible-bench.sh: $*" >&2
    exit 1
}
[[ $(id -u) -eq 0 ]] || die "must run as root (containers, namespaces)"
role=${TIMECTL_TIMESYNC_ROLE:-}
[[ -n $role ]] || die "set TIMECTL_TIMESYNC_ROLE to a checkout of linux-system-roles/timesync (git clone https://github.com/linux-system-roles/timesync)"
[[ -f $role/tasks/main.yml ]] || die "TIMECTL_TIMESYNC_ROLE=$role is not the timesync role (no tasks/main.yml); get it from https://github.com/linux-system-roles/timesync"
TIMECTL_TIMESYNC_ROLE=$(cd "$role" && pwd)
export TIMECTL_TIMESYNC_ROLE

trap '"$here/cleanup.sh" >/dev/null || true' EXIT
"$here/cleanup.sh" >/dev/null
[[ -n ${TIMECTL_SYSTEM_TESTS_SKIP_DEPS:-} ]] || "$here/install-deps.sh"
TIMECTL_TESTHOST_ROOTFS=$("$here/testhost/build-image.sh" | tail -n1)
export TIMECTL_TESTHOST_ROOTFS
cargo build --profile dist --bin timectl --quiet
export TIMECTL_FLEET_BINARY=$repo/target/dist/timectl
out=$(mktemp /tmp/timectl-ansible-bench.XXXXXX)
export TIMECTL_BENCH_OUT=$out
role_rev=$(git -C "$TIMECTL_TIMESYNC_ROLE" rev-parse --short HEAD 2>/dev/null || echo "unknown revision")
cargo test --test system_fleet -- --ignored --exact ansible_bench_timectl_vs_timesync_role \
    --nocapture --test-threads=1 >&2
echo
echo "ansible-core $(/opt/timectl-ansible/venv/bin/python3 -c 'import ansible; print(ansible.__version__)'), timesync role $role_rev, timectl $("$TIMECTL_FLEET_BINARY" --version | awk '{print $2}') (profile dist, $(stat -c %s "$TIMECTL_FLEET_BINARY") bytes)"
echo
cat "$out"
rm -f "$out"
