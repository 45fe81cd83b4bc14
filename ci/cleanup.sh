#!/usr/bin/env bash
# Remove what killed or crashed system-test runs left behind. Safe to run at
# any time: it only touches things named with the timectl- prefix, and only
# those whose owner is gone:
#
#   - test fixtures name everything timectl-<pid>-<seq>... after the test
#     process: if that pid is not running, the resources are stale;
#   - containers booted with ci/testhost/container.sh keep their nspawn pid in
#     /run/timectl-testhost/<name>/pid: stale when that process is gone.
#
# What it removes: nspawn containers (and all processes) in the cgroup subtree
# /sys/fs/cgroup/*/timectl/<name>, User-Mode Linux kernels (linux.uml with
# umid=timectl-<pid>-<seq>... on their command line: the clock bench, the leap
# test, the UML test hosts) and the test hosts' image copies
# (/tmp/timectl-*-umlhost-*), processes running in a stale timectl-*
# network namespace or started from a stale timectl-* temp dir (chronyd peers,
# private dbus-daemon/firewalld), the namespaces, cgroup directories, nspawn's
# /run/systemd/nspawn/propagate/<name>, temp dirs and container.sh state.
#
#   cleanup.sh            remove stale resources
#   cleanup.sh --dry-run  only print what would be removed
#   cleanup.sh --force    also remove timectl-* resources whose owner is alive
#                         or unknown (stops running test containers!)
#
# Resources named otherwise than timectl-<pid>-<seq>... (support::unique_name)
# or by container.sh have no known owner and are left alone without --force,
# except empty cgroup directories (rmdir only succeeds on those).
# Run as root.
set -uo pipefail

dry=0
force=0
for arg in "$@"; do
    case $arg in
    --dry-run) dry=1 ;;
    --force) force=1 ;;
    *)
        echo "cleanup.sh: unknown argument $arg" >&2
        exit 2
        ;;
    esac
done
if [[ $(id -u) -ne 0 ]]; then
    echo "cleanup.sh: must run as root" >&2
    exit 1
fi

tmp=${TMPDIR:-/tmp}
state_root=/run/timectl-testhost
removed=0

say() { echo "cleanup: $*"; }
act() {
    removed=$((removed + 1))
    if [[ $dry -eq 1 ]]; then
        say "would: $*"
    else
        say "$*"
        "$@" 2>/dev/null || true
    fi
}

cgroup_roots() {
    local r
    for r in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
        [[ -e $r/cgroup.procs ]] && echo "$r"
    done
    [[ -e /sys/fs/cgroup/cgroup.controllers ]] && echo /sys/fs/cgroup
}

# Is process $1 running? A zombie is not (this machine's PID 1 reaps
# orphans late, so a killed test can linger as one).
alive() {
    local state
    state=$({ awk '{print $3}' "/proc/$1/stat"; } 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# Is the resource called $1 stale (its owner gone)? Returns 0 = stale.
stale() {
    local name=$1 pid base
    [[ $force -eq 1 ]] && return 0
    if [[ $name =~ ^timectl-([0-9]+)-[0-9]+ ]]; then
        ! alive "${BASH_REMATCH[1]}"
        return
    fi
    base=${name%-up}
    base=${base%-fw}
    if [[ -r $state_root/$base/pid ]]; then
        ! alive "$(cat "$state_root/$base/pid")"
        return
    fi
    # Nobody we know owns it.
    return 1
}

# All PIDs in a cgroup subtree.
subtree_pids() {
    find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un
}

kill_pids() {
    local sig=$1 pid
    shift
    for pid in "$@"; do
        alive "$pid" || continue
        act kill "-$sig" "$pid"
    done
}

# --- containers: cgroup subtrees ---------------------------------------------
declare -A containers=()
for root in $(cgroup_roots); do
    for dir in "$root"/timectl/timectl-*; do
        [[ -d $dir ]] && containers[$(basename "$dir")]=1
    done
done
for name in "${!containers[@]}"; do
    mapfile -t pids < <(for root in $(cgroup_roots); do
        [[ -d $root/timectl/$name ]] && subtree_pids "$root/timectl/$name"
    done | sort -un)
    if ! stale "$name"; then
        # Owner alive (or unknown but still running): leave it, except for
        # empty directories, which rmdir removes only when really empty.
        [[ ${#pids[@]} -eq 0 ]] || continue
    fi
    if [[ ${#pids[@]} -gt 0 ]]; then
        nspawn=()
        for pid in "${pids[@]}"; do
            [[ $(cat "/proc/$pid/comm" 2>/dev/null) == systemd-nspawn ]] && nspawn+=("$pid")
        done
        # nspawn turns SIGTERM into an orderly shutdown of the container.
        kill_pids TERM "${nspawn[@]}"
        if [[ $dry -eq 0 ]]; then
            for _ in $(seq 1 50); do
                running=0
                for pid in "${nspawn[@]}"; do alive "$pid" && running=1; done
                [[ $running -eq 0 ]] && break
                sleep 0.1
            done
        fi
        for root in $(cgroup_roots); do
            [[ -e $root/timectl/$name/cgroup.kill ]] || continue
            if [[ $dry -eq 1 ]]; then
                say "would: kill cgroup $root/timectl/$name"
            else
                echo 1 >"$root/timectl/$name/cgroup.kill" 2>/dev/null || true
            fi
        done
        mapfile -t rest < <(for root in $(cgroup_roots); do
            [[ -d $root/timectl/$name ]] && subtree_pids "$root/timectl/$name"
        done | sort -un)
        kill_pids KILL "${rest[@]}"
        [[ $dry -eq 0 ]] && sleep 0.2
    fi
    for root in $(cgroup_roots); do
        [[ -d $root/timectl/$name ]] || continue
        if [[ $dry -eq 1 ]]; then
            say "would: remove cgroup $root/timectl/$name"
            removed=$((removed + 1))
        else
            find "$root/timectl/$name" -depth -type d -exec rmdir {} + 2>/dev/null
            if [[ -d $root/timectl/$name ]]; then
                say "could not remove cgroup $root/timectl/$name (still in use)"
            else
                say "removed cgroup $root/timectl/$name"
                removed=$((removed + 1))
            fi
        fi
    done
    [[ -e /run/systemd/nspawn/propagate/$name ]] && act rm -rf "/run/systemd/nspawn/propagate/$name"
done

# --- UML test hosts (tests/support/uml_host.rs) ------------------------------
# linux.uml runs with umid=timectl-<pid>-<seq>; its helper processes are its
# children with the same command line, so each matches. SIGTERM makes the UML
# kernel kill its guest and exit; SIGKILL what is left. (They also run in a
# timectl-* namespace and from a temp dir: the sections below catch them too.)
declare -A uml_pids=()
for proc in /proc/[0-9]*; do
    cmdline=$({ tr '\0' ' ' <"$proc/cmdline"; } 2>/dev/null) || continue
    [[ $cmdline =~ umid=(timectl-[0-9]+-[0-9]+) ]] || continue
    stale "${BASH_REMATCH[1]}" || continue
    uml_pids[${proc#/proc/}]=1
done
if [[ ${#uml_pids[@]} -gt 0 ]]; then
    say "stale UML test hosts: ${!uml_pids[*]}"
    kill_pids TERM "${!uml_pids[@]}"
    [[ $dry -eq 0 ]] && sleep 1
    kill_pids KILL "${!uml_pids[@]}"
fi

# --- network namespaces --------------------------------------------------------
for path in /run/netns/timectl-*; do
    [[ -e $path ]] || continue
    name=$(basename "$path")
    mapfile -t pids < <(ip netns pids "$name" 2>/dev/null)
    # Owner alive, or unknown (not named by the fixtures or container.sh:
    # someone else's, maybe being set up right now): leave it.
    stale "$name" || continue
    kill_pids TERM "${pids[@]}"
    [[ $dry -eq 0 && ${#pids[@]} -gt 0 ]] && sleep 0.5
    mapfile -t pids < <(ip netns pids "$name" 2>/dev/null)
    kill_pids KILL "${pids[@]}"
    act ip netns delete "$name"
done

# --- processes started from a stale temp dir (peers, private buses) -----------
for proc in /proc/[0-9]*; do
    cmdline=$({ tr '\0' ' ' <"$proc/cmdline"; } 2>/dev/null) || continue
    [[ $cmdline =~ $tmp/(timectl-[0-9]+-[0-9]+)[^[:space:]]* ]] || continue
    stale "${BASH_REMATCH[1]}" || continue
    pid=${proc#/proc/}
    [[ $pid == "$$" ]] && continue
    say "stale process $pid: $cmdline"
    kill_pids TERM "$pid"
done

# --- temp dirs and container.sh state -------------------------------------------
for dir in "$tmp"/timectl-[0-9]*-[0-9]*; do
    [[ -d $dir ]] || continue
    name=$(basename "$dir")
    [[ $name =~ ^(timectl-[0-9]+-[0-9]+) ]] || continue
    stale "${BASH_REMATCH[1]}" && act rm -rf "$dir"
done
for dir in "$state_root"/timectl-*; do
    [[ -d $dir ]] || continue
    pid=$(cat "$dir/pid" 2>/dev/null || echo 0)
    if [[ $force -eq 1 ]] || ! alive "$pid"; then
        act rm -rf "$dir"
    fi
done

if [[ $dry -eq 1 ]]; then
    say "dry run: $removed actions"
else
    say "done ($removed removed)"
fi
