#!/usr/bin/env bash
# Customize the test image; run by build-image.sh as mmdebstrap's
# --customize-hook with the root filesystem as $1 (the chroot has the Debian
# mirror configured and /proc, /sys and /dev mounted at this point).
#
# What it does and why:
# - An offline apt repository in /srv/repo holding chrony, ntpsec,
#   systemd-timesyncd and openntpd with their dependencies (and man-db, for
#   the test that reads the packaged man pages; python3-apt, which
#   Ansible's apt module needs, for ci/ansible-bench.sh), and an apt source
#   pointing only at it (lists baked in): real apt-get inside a container with
#   no network can install and remove the daemons a scenario needs.
# - systemd-timesyncd masked (not installed either): no daemon owns the clock
#   on a fresh test host unless a scenario installs one.
# - chrony.service / ntpsec.service drop-ins: the containers have no
#   CAP_SYS_TIME (never give them one: it is the VM's real clock), so the
#   units' ConditionCapability=CAP_SYS_TIME is cleared, chronyd always gets -x
#   and ntpd runs as root without -u (dropping to a user makes it ask for
#   CAP_SYS_TIME and exit).
# - firewalld installed but disabled: each test chooses the firewall backend.
set -euo pipefail

root=$1
chroot_run() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

# --- offline apt repository -------------------------------------------------
# Download each daemon separately: they conflict with each other (all provide
# time-daemon), so apt cannot resolve them in one transaction. Each download
# fetches what that package needs on top of the base image, Recommends
# included, which is what a plain `apt-get install X` inside the container
# will want.
rm -f "$root"/var/cache/apt/archives/*.deb
for pkg in chrony ntpsec systemd-timesyncd openntpd man-db python3-apt; do
    chroot_run apt-get install -y -q --download-only "$pkg" >&2
done
mkdir -p "$root/srv/repo"
mv "$root"/var/cache/apt/archives/*.deb "$root/srv/repo/"
(cd "$root/srv/repo" && dpkg-scanpackages --multiversion . /dev/null >Packages 2>/dev/null)
echo "customize-image: offline repo has $(ls "$root/srv/repo" | grep -c '\.deb$') packages" >&2

rm -f "$root/etc/apt/sources.list"
rm -f "$root"/etc/apt/sources.list.d/*
echo 'deb [trusted=yes] file:/srv/repo ./' >"$root/etc/apt/sources.list.d/timectl-offline.list"
chroot_run apt-get update -q >&2

# --- time daemons: what a container without CAP_SYS_TIME needs --------------
ln -sfn /dev/null "$root/etc/systemd/system/systemd-timesyncd.service"

mkdir -p "$root/etc/systemd/system/chrony.service.d"
cat >"$root/etc/systemd/system/chrony.service.d/timectl-testhost.conf" <<'EOF'
# timectl test host: the container has no CAP_SYS_TIME.
[Unit]
ConditionCapability=

[Service]
# -x: never touch the clock. Appended to whatever /etc/default/chrony says
# (that file is a dpkg conffile and may be managed by the code under test).
ExecStart=
ExecStart=!/usr/sbin/chronyd $DAEMON_OPTS -x
EOF

mkdir -p "$root/etc/systemd/system/ntpsec.service.d" "$root/usr/local/libexec/timectl-testhost"
cat >"$root/etc/systemd/system/ntpsec.service.d/timectl-testhost.conf" <<'EOF'
# timectl test host: the container has no CAP_SYS_TIME.
[Unit]
ConditionCapability=

[Service]
# Debian's wrapper adds `-u ntpsec:ntpsec`; dropping to that user makes ntpd
# ask for CAP_SYS_TIME, which this container does not have, and exit.
ExecStart=
ExecStart=/usr/local/libexec/timectl-testhost/ntp-systemd-wrapper
EOF
# Debian's /usr/libexec/ntpsec/ntp-systemd-wrapper without `-u`: it still
# honours /etc/default/ntpsec (NTPD_OPTS) and forks with the same pidfile.
cat >"$root/usr/local/libexec/timectl-testhost/ntp-systemd-wrapper" <<'EOF'
#!/bin/sh
DAEMON=/usr/sbin/ntpd
PIDFILE=/run/ntpd.pid
LOCKFILE=/run/lock/ntpsec-ntpdate

if [ -r /etc/default/ntpsec ]; then
        . /etc/default/ntpsec
fi

if [ "$IGNORE_DHCP" != "yes" ] && [ -e /run/ntpsec/ntp.conf.dhcp ]; then
        NTPD_OPTS="$NTPD_OPTS -c /run/ntpsec/ntp.conf.dhcp"
else
        NTPD_OPTS="-c /etc/ntpsec/ntp.conf $NTPD_OPTS"
fi

(
        if flock -w 180 9; then
                # shellcheck disable=SC2086
                exec $DAEMON -p $PIDFILE $NTPD_OPTS
        else
                echo "Timeout waiting for $LOCKFILE"
                exit 1
        fi
) 9>$LOCKFILE
EOF
chmod 0755 "$root/usr/local/libexec/timectl-testhost/ntp-systemd-wrapper"

# --- firewall: present, not running ----------------------------------------
chroot_run systemctl disable firewalld.service >&2 || true
chroot_run systemctl disable nftables.service >&2 || true
# sshd: installed for the fleet test, which starts it; off for every other test.
chroot_run systemctl disable ssh.service >&2 || true

# --- boot speed and noise in nspawn -----------------------------------------
# No consoles to log in on (--console=passive), no hardware to wait for.
for unit in console-getty.service getty@.service systemd-networkd-wait-online.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
    ln -sfn /dev/null "$root/etc/systemd/system/$unit"
done

# mmdebstrap copies the build host's hostname and resolver; a container takes
# its machine name as hostname instead, and has no DNS (no network at all).
rm -f "$root/etc/hostname"
echo '# timectl test host: no DNS' >"$root/etc/resolv.conf"

# Each boot gets its own machine id (the rootfs is shared, read-only lower
# layer under --volatile=overlay).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

echo "customize-image: done" >&2
