#!/usr/bin/env bash
# Boot, use and stop a test container by hand (the Rust fixture
# tests/support/container.rs does the same for tests). Run as root.
#
#   container.sh boot NAME [--uplink] [--timectl PATH]   boot; prints the bus address
#   container.sh exec NAME CMD [ARGS...]                 run a command inside
#   container.sh shell NAME                              interactive shell inside
#   container.sh timectl NAME [ARGS...]                  run /opt/timectl/timectl inside
#   container.sh poweroff NAME                           power off and clean up
#   container.sh list                                    running test containers
#
# NAME gets the timectl- prefix if it lacks it. State lives in
# /run/timectl-testhost/NAME (pid, bus socket, console log). The container's
# network namespace is timectl-NAME (ip netns exec it to run peers on its
# loopback); with --uplink, NAME-up is linked to it by a veth pair
# (container 192.0.2.1/24, upstream 192.0.2.2/24).
#
# Commands inside run with the container's capability bounding set, so
# without CAP_SYS_TIME, like everything else in the container.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state_root=/run/timectl-testhost

die() {
    echo "container.sh: $*" >&2
    exit 1
}
# Running, not a zombie (this machine's PID 1 reaps orphans late).
alive() {
    local state
    state=$({ awk '{print $3}' "/proc/$1/stat"; } 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

[[ $(id -u) -eq 0 ]] || die "must run as root"
[[ $# -ge 1 ]] || die "usage: container.sh boot|exec|shell|timectl|poweroff|list [NAME] ..."
cmd=$1
shift

if [[ $cmd == list ]]; then
    for d in "$state_root"/timectl-*; do
        [[ -e $d/pid ]] || continue
        pid=$(cat "$d/pid")
        if alive "$pid"; then
            echo "$(basename "$d") nspawn=$pid bus=unix:path=$d/dbus/system_bus_socket"
        fi
    done
    exit 0
fi

[[ $# -ge 1 ]] || die "$cmd needs a container NAME"
name=$1
shift
[[ $name == timectl-* ]] || name=timectl-$name
dir=$state_root/$name
bus="unix:path=$dir/dbus/system_bus_socket"

leader() {
    local pid
    pid=$(cat "$dir/pid" 2>/dev/null) || die "$name is not running (no $dir/pid)"
    pgrep -P "$pid" -x systemd | head -n1 || die "$name has no systemd (nspawn PID $pid)"
}

# setpriv --bounding-set spec equal to PID 1's bounding set in the container.
bounding_set() {
    local mask names spec bit=0
    mask=$((16#$(awk '/^CapBnd:/ {print $2}' "/proc/$1/status")))
    if ((mask & (1 << 25))); then die "$name has CAP_SYS_TIME: refusing"; fi
    mapfile -t names < <(setpriv --list-caps)
    spec=-all
    for n in "${names[@]}"; do
        if ((mask & (1 << bit))); then spec+=",+$n"; fi
        bit=$((bit + 1))
    done
    echo "$spec"
}

inside() {
    local l
    l=$(leader)
    exec nsenter -t "$l" -a -- setpriv --bounding-set="$(bounding_set "$l")" --inh-caps=-all -- \
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" "$@"
}

case $cmd in
boot)
    uplink=0
    timectl=$repo/target/debug/timectl
    while [[ $# -gt 0 ]]; do
        case $1 in
        --uplink) uplink=1 ;;
        --timectl)
            timectl=$(realpath "$2")
            shift
            ;;
        *) die "unknown boot option $1" ;;
        esac
        shift
    done
    [[ ! -e $dir/pid ]] || ! alive "$(cat "$dir/pid")" || die "$name is already running"
    rootfs=$("$here/build-image.sh" | tail -n1)
    mkdir -p "$dir/dbus"
    chmod 0755 "$dir/dbus"
    ip netns add "$name"
    ip -n "$name" link set lo up
    if [[ $uplink -eq 1 ]]; then
        ip netns add "$name-up"
        ip -n "$name-up" link set lo up
        ip -n "$name" link add th0 type veth peer name th1 netns "$name-up"
        ip -n "$name" addr add 192.0.2.1/24 dev th0
        ip -n "$name" link set th0 up
        ip -n "$name-up" addr add 192.0.2.2/24 dev th1
        ip -n "$name-up" link set th1 up
    fi
    binds=()
    if [[ -x $timectl ]]; then
        binds+=("--bind-ro=$(dirname "$timectl"):/opt/timectl")
    else
        echo "container.sh: $timectl not built; /opt/timectl will be missing" >&2
    fi
    t0=$(now_ms)
    setsid "$here/launch.sh" "$name" "$rootfs" "$dir/dbus" "/run/netns/$name" "${binds[@]}" \
        </dev/null >"$dir/console.log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 1 600); do
        s=$(busctl --address="$bus" --timeout=2 get-property org.freedesktop.systemd1 \
            /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager SystemState 2>/dev/null || true)
        case $s in *running* | *degraded*) break ;; esac
        alive "$(cat "$dir/pid")" || {
            cat "$dir/console.log" >&2
            die "nspawn exited while booting"
        }
        sleep 0.05
    done
    case $s in *running* | *degraded*) ;; *) die "$name did not boot (SystemState: ${s:-none})" ;; esac
    echo "container.sh: $name $s after $(($(now_ms) - t0)) ms" >&2
    echo "DBUS_SYSTEM_BUS_ADDRESS=$bus"
    ;;
exec) inside "$@" ;;
shell) inside bash -l ;;
timectl) inside /opt/timectl/timectl "$@" ;;
poweroff)
    pid=$(cat "$dir/pid" 2>/dev/null || true)
    t0=$(now_ms)
    if [[ -n $pid ]] && alive "$pid"; then
        busctl --address="$bus" --timeout=5 call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
            org.freedesktop.systemd1.Manager PowerOff || kill -TERM "$pid"
        for _ in $(seq 1 300); do
            alive "$pid" || break
            sleep 0.05
        done
        if alive "$pid"; then
            echo "container.sh: $name did not power off; killing" >&2
            kill -TERM "$pid" 2>/dev/null || true
            sleep 3
        fi
    fi
    for root in /sys/fs/cgroup/unified /sys/fs/cgroup; do
        [[ -e $root/timectl/$name/cgroup.kill ]] && echo 1 >"$root/timectl/$name/cgroup.kill" || true
    done
    for root in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
        [[ -d $root/timectl/$name ]] || continue
        for _ in $(seq 1 50); do
            find "$root/timectl/$name" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d $root/timectl/$name ]] || break
            sleep 0.1
        done
    done
    ip netns delete "$name-up" 2>/dev/null || true
    ip netns delete "$name" 2>/dev/null || true
    rm -rf "/run/systemd/nspawn/propagate/$name"
    echo "container.sh: $name powered off and cleaned up in $(($(now_ms) - t0)) ms" >&2
    [[ -e $dir/console.log ]] && tail -n 3 "$dir/console.log" >&2
    rm -rf "$dir"
    ;;
*) die "unknown command $cmd" ;;
esac
