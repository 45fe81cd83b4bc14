#!/usr/bin/env bash
# Engine benchmarks, printed beside chronyd's figures from the same run:
#  - RMS time error under simulation at 10 us .. 10 ms jitter (vs chrony's
#    published 14/56/229/750 us), pure, no root needed;
#  - server requests/second on loopback on one core, RSS with four
#    sources, start-to-synchronised with iburst, NTS-protected requests/s
#    and NTS-KE handshakes/s (needs root and chrony; chrony's NTS server
#    runs with ntsprocesses 0). TIMECTL_BENCH_ONLY=nts: the NTS part only.
# Figures only: exits 0 whether or not targets are met.
# Usage: ci/engine-bench.sh [sim|daemon|nts|all]   (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
if [ "$what" = sim ] || [ "$what" = all ]; then
    cargo bench --bench engine_sim
fi
if [ "$what" = daemon ] || [ "$what" = nts ] || [ "$what" = all ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "engine-bench: the daemon and NTS benchmarks need root (chronyd peers)" >&2
        exit 1
    fi
    if ! command -v chronyd >/dev/null || ! command -v openssl >/dev/null; then
        [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; }
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chrony util-linux openssl procps
    fi
    export TIMECTL_NO_CLOCK_CONTROL=1
fi
if [ "$what" = daemon ] || [ "$what" = all ]; then
    cargo bench --bench engine_daemon
fi
if [ "$what" = nts ]; then
    TIMECTL_BENCH_ONLY=nts cargo bench --bench engine_daemon
fi
