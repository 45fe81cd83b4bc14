#!/usr/bin/env bash
# Install the host packages the system tests need (run as root; idempotent).
#
# - Makes sure /usr/sbin/policy-rc.d refuses to start daemons (exit 101), so
#   installing chrony or firewalld on the host starts nothing: on this kind of
#   machine PID 1 is not systemd and nothing should own the host clock.
# - Installs the tools the harness uses: systemd-nspawn, mmdebstrap, nftables,
#   chrony/ntpdig/firewalld as host-side test peers, dbus-daemon, busctl,
#   user-mode-linux (a kernel clock of its own for the clock bench),
#   prometheus/promtool (scrape the engine's metrics endpoint, lint its output).
# - Stops any chronyd/firewalld/prometheus that the install itself started (by PID),
#   never one that was running before.
set -euo pipefail

# PIDs of the time and firewall daemons running now, space separated.
daemon_pids() {
    local name
    for name in chronyd firewalld ntpd prometheus; do
        pgrep -x "$name" || true
    done | tr '\n' ' '
}

if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps.sh: must run as root" >&2
    exit 1
fi

start_ns=$(date +%s%N)

if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# Installed by timectl ci/install-deps.sh: start no daemons on install.\nexit 101\n' \
        >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    echo "install-deps: created /usr/sbin/policy-rc.d (exit 101)"
fi

packages=(
    systemd-container # systemd-nspawn
    mmdebstrap        # builds the test image
    nftables          # nft, firewall tests in network namespaces
    chrony            # chronyd -x as a host-side NTP peer
    ntpsec-ntpdig     # ntpdig as an NTP client peer
    firewalld         # private firewalld for firewall tests
    netbase           # /etc/protocols, firewalld needs it
    iproute2          # ip netns
    zstd              # image cache compression
    dbus              # dbus-daemon for the private firewalld bus
    dpkg-dev          # dpkg-scanpackages for the image's offline apt repo
    util-linux        # nsenter, setpriv, flock
    procps            # pgrep
    systemd           # busctl
    user-mode-linux   # linux.uml: a real kernel clock for clock-control tests (uml_leap, the uml_clock bench)
    python3           # UML init scripts (clock_settime, adjtimex), the leap reference, the bench judge
    prometheus        # prometheus and promtool: a real scraper of the engine's metrics (tests/engine_metrics.rs), promtool check metrics on the apply textfile
    rpm               # rpm -qlp / rpm -K on the built .rpm
    python3-venv      # the venv that holds ansible-core (below) and ansible-test's sanity venvs
    openssh-client    # ssh: Ansible reaches the fleet test's containers over SSH
    openssl           # the throw-away CA and certificate of chronyd's NTS-KE server (tests/engine_nts.rs)
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed; then
        missing+=("$p")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all ${#packages[@]} packages already installed"
else
    # Remember the daemons that were running before, so that only ones the
    # install started get stopped.
    before=" $(daemon_pids) "
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    for pid in $(daemon_pids); do
        if [[ $before != *" $pid "* ]]; then
            echo "install-deps: stopping $(cat "/proc/$pid/comm" 2>/dev/null || echo '?') (PID $pid) started by the install"
            kill "$pid" 2>/dev/null || true
        fi
    done
fi

for tool in systemd-nspawn mmdebstrap nft chronyd chronyc ntpdig firewalld dbus-daemon busctl \
    dpkg-scanpackages zstd nsenter setpriv pgrep ip flock linux.uml python3 prometheus promtool rpm ssh ssh-keygen openssl; do
    if ! command -v "$tool" >/dev/null; then
        echo "install-deps: $tool still missing after install" >&2
        exit 1
    fi
done

# ansible-core for the fleet test (tests/system_fleet.rs) and
# ci/ansible-sanity.sh, from PyPI at a pinned version, in a venv of its own
# (Debian 12's ansible-core is 2.14, older than the collection targets).
ansible_version=2.18.12
ansible_venv=/opt/timectl-ansible/venv
if [[ $("$ansible_venv/bin/python3" -c 'import ansible; print(ansible.__version__)' 2>/dev/null) != "$ansible_version" ]]; then
    echo "install-deps: installing ansible-core $ansible_version into $ansible_venv"
    /usr/bin/python3 -m venv "$ansible_venv"
    "$ansible_venv/bin/pip" install -q --disable-pip-version-check "ansible-core==$ansible_version"
fi
for tool in ansible-playbook ansible-galaxy ansible-test; do
    if [[ ! -x $ansible_venv/bin/$tool ]]; then
        echo "install-deps: $ansible_venv/bin/$tool missing after install" >&2
        exit 1
    fi
done

elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
echo "install-deps: done in $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000))) s"
