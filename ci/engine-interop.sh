#!/usr/bin/env bash
# Interop tests of the embedded engine against real peers (issue 4):
# chronyd (-x, never touches the clock) as server and client, ntpdig in a
# network namespace, a falseticker behind a timestamp-shifting relay.
# Needs root. Installs chrony and ntpsec-ntpdig if missing, without
# letting the packages start any daemon. Fails (never skips) when a
# requirement is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "engine-interop: must run as root (network namespaces, chronyd)" >&2
    exit 1
fi

if ! command -v chronyd >/dev/null || ! command -v ntpdig >/dev/null; then
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # Keep package installs from starting chronyd on this host.
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends chrony ntpsec-ntpdig iproute2
fi

# Remove namespaces left by an interrupted earlier run (ours only).
cleanup() {
    for ns in $(ip netns list 2>/dev/null | awk '/^timectl-ntpdig-/ {print $1}'); do
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT
cleanup

# The tests start the engine with --no-clock-control; this makes the
# daemon refuse clock control even if a test forgot the flag.
export TIMECTL_NO_CLOCK_CONTROL=1
cargo test --test engine_interop -- --ignored --test-threads=1
