#!/usr/bin/env bash
# Put this process in its own cgroups, then exec systemd-nspawn booting a test
# container. Used by the Rust fixture (tests/support) and by container.sh.
#
#   launch.sh NAME ROOTFS BUS_DIR NETNS_PATH [extra systemd-nspawn args...]
#
# PID 1 of this machine is not systemd, so nothing gives nspawn a cgroup of its
# own; without one, all containers share a payload cgroup and see each other's
# services. Writing our PID to cgroup.procs before exec means nspawn (same PID)
# and everything it starts live under /sys/fs/cgroup/{systemd,unified}/timectl/NAME,
# which is also how cleanup.sh finds leftovers.
#
# CAP_NET_ADMIN is added explicitly: --private-network would grant it, but
# --network-namespace-path (systemd 252) does not, and nft/firewalld inside the
# container need it. The namespace is the container's own, so that is safe.
# Never add --capability=CAP_SYS_TIME: the clock is this machine's real clock.
set -euo pipefail

if [[ $# -lt 4 ]]; then
    echo "usage: launch.sh NAME ROOTFS BUS_DIR NETNS_PATH [nspawn args...]" >&2
    exit 2
fi
name=$1 rootfs=$2 bus_dir=$3 netns=$4
shift 4

case $name in
timectl-*) ;;
*)
    echo "launch.sh: container name must start with timectl-: $name" >&2
    exit 2
    ;;
esac

for hierarchy in systemd unified; do
    cg=/sys/fs/cgroup/$hierarchy/timectl/$name
    mkdir -p "$cg"
    echo $$ >"$cg/cgroup.procs"
done

exec systemd-nspawn \
    --directory="$rootfs" \
    --machine="$name" \
    --boot \
    --register=no \
    --keep-unit \
    --console=passive \
    --volatile=overlay \
    --network-namespace-path="$netns" \
    --capability=CAP_NET_ADMIN \
    --bind="$bus_dir:/run/dbus" \
    "$@"
