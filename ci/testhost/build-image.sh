#!/usr/bin/env bash
# Build (or reuse) the Debian 12 root filesystem that system tests boot with
# systemd-nspawn, and print its path as the last line on stdout.
#
# The image is cached under $TIMECTL_TESTHOST_CACHE (default
# /var/cache/timectl-testhost), keyed by a hash of everything that goes into
# it (this script, customize-image.sh, the package lists). A cache hit costs a
# few milliseconds; a miss runs mmdebstrap (~1 min with a reachable Debian
# mirror) and keeps both the unpacked rootfs and a .tar.zst of it:
#
#   $CACHE/<hash>/rootfs/    the tree containers boot from (read-only lower
#                            layer: containers use --volatile=overlay)
#   $CACHE/<hash>.tar.zst    the same tree packed, so a lost rootfs unpacks
#                            again in seconds instead of rebuilding
#   $CACHE/current -> <hash> convenience link for humans
#
# Options: --force rebuilds even when cached; --no-tarball skips the .tar.zst.
# Run as root. Logs go to stderr; stdout carries only the rootfs path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${TIMECTL_TESTHOST_CACHE:-/var/cache/timectl-testhost}
suite=bookworm
mirror=${TIMECTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${TIMECTL_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# Installed in the base image. chrony and ntpsec are deliberately absent: each
# scenario starts from a fresh host and installs what it needs from the
# offline repository (see customize-image.sh).
include=systemd,systemd-sysv,dbus,libpam-systemd,iproute2,netbase,procps,nftables,ntpsec-ntpdig,firewalld
# openssh-server: the fleet test (tests/system_fleet.rs) reaches containers
# with Ansible over SSH (python3 is already there, for firewalld).
include=$include,openssh-server

force=0
tarball=1
for arg in "$@"; do
    case $arg in
    --force) force=1 ;;
    --no-tarball) tarball=0 ;;
    *)
        echo "build-image.sh: unknown argument: $arg" >&2
        exit 2
        ;;
    esac
done

log() { echo "build-image: $*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (mmdebstrap and the cache need it)"
    exit 1
fi

hash=$( {
    echo "suite=$suite include=$include mirror=$mirror security=$security_mirror"
    cat "$here/build-image.sh" "$here/customize-image.sh"
} | sha256sum | cut -c1-16)
dir=$cache/$hash
rootfs=$dir/rootfs
tar=$cache/$hash.tar.zst

mkdir -p "$cache"
chmod 0755 "$cache"
# Several test binaries may ask for the image at once: one builds, the others
# wait for it.
exec 9>"$cache/.lock"
flock 9

t0=$(now_ms)
if [[ $force -eq 0 && -e $dir/.complete ]]; then
    log "cached: $rootfs"
    echo "$rootfs"
    exit 0
fi

rm -rf "$dir" "$dir.tmp"
mkdir -p "$dir.tmp"

if [[ $force -eq 0 && -s $tar ]]; then
    log "unpacking $tar"
    mkdir "$dir.tmp/rootfs"
    tar --zstd -xpf "$tar" -C "$dir.tmp/rootfs" --numeric-owner --xattrs --xattrs-include='*'
    log "unpacked in $(secs $(($(now_ms) - t0))) s"
else
    command -v mmdebstrap >/dev/null || {
        log "mmdebstrap missing: run ci/install-deps.sh"
        exit 1
    }
    log "building $suite image $hash with mmdebstrap"
    mmdebstrap --variant=minbase --mode=root --format=directory \
        --include="$include" \
        --skip=cleanup/apt/lists \
        --customize-hook="\"$here/customize-image.sh\" \"\$1\"" \
        "$suite" "$dir.tmp/rootfs" \
        "deb $mirror $suite main" \
        "deb $mirror $suite-updates main" \
        "deb $security_mirror $suite-security main" >&2
    t1=$(now_ms)
    log "mmdebstrap took $(secs $((t1 - t0))) s"
    if [[ $tarball -eq 1 ]]; then
        tar --zstd -cpf "$tar.tmp" -C "$dir.tmp/rootfs" --numeric-owner --xattrs --xattrs-include='*' .
        mv "$tar.tmp" "$tar"
        log "packed $(du -h "$tar" | cut -f1) into $tar in $(secs $(($(now_ms) - t1))) s"
    fi
fi

echo "$hash" >"$dir.tmp/.hash"
touch "$dir.tmp/.complete"
mv "$dir.tmp" "$dir"
ln -sfn "$hash" "$cache/current"

# Keep the cache from growing without bound: drop other images' trees and
# tarballs. Not while any container booted from this cache runs: it may use
# an older tree, possibly through the `current` link that now points here.
if grep -qsF -- "--directory=$cache/" /proc/[0-9]*/cmdline; then
    log "containers from $cache are running: keeping older cache entries for now"
else
    for old in "$cache"/*; do
        name=$(basename "$old")
        case $name in
        "$hash" | "$hash.tar.zst" | current) ;;
        *)
            log "removing stale cache entry $name"
            rm -rf "$old"
            ;;
        esac
    done
fi

log "image ready in $(secs $(($(now_ms) - t0))) s ($(du -sh "$rootfs" | cut -f1) unpacked)"
echo "$rootfs"
