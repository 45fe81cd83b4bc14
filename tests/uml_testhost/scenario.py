#!/usr/bin/python3
# Runs once at boot inside User-Mode Linux (tests/uml_testhost.rs): the test
# image's systemd is PID 1 and the clock is UML's own, never the host's.
#
#   1. wait until the reference (the host's chronyd -x on 10.77.0.1) answers;
#   2. set this kernel's clock START_OFFSET seconds off (clock_settime);
#   3. `timectl apply SPEC --yes` with clock control (the shipped default);
#   4. the judge: `ntpdig -j -p 4` against the reference every INTERVAL
#      seconds from the end of the apply for DURATION seconds, with the
#      daemon's own offset beside it. ntpdig takes 4 samples 50 ms apart and
#      reports the one with the shortest synchronisation distance (round trip
#      / 2 + precision), as NTP's clock filter does: a UML process that the
#      host does not schedule for a few ms between send and receive gives an
#      outlier of that size, and one of 4 samples without one is the truth.
#
# Output lines (parsed by the test; offsets in seconds, all as ntpdig signs
# them: reference minus local, so a clock that is ahead is negative):
#   JUDGE_BEFORE <offset>                 before the clock is set off
#   JUDGE_START <offset>                  after it is set off, before the apply
#   APPLY| <line>                         the apply's stdout and stderr
#   APPLY_EXIT <code> <seconds>
#   JUDGE <t since apply> <judge offset|-> <judge's distance|-> <daemon's offset|->
#   LOG| <line>                           the daemon's journal at the end
#   DONE | ERROR <what>
import json
import os
import subprocess
import sys
import time

CONFIG = "/etc/timectl-uml/scenario.json"

# The engine refuses clock control under CI or TIMECTL_NO_CLOCK_CONTROL:
# systemd gives this unit neither, and nothing here may pass them on.
os.environ.pop("CI", None)
os.environ.pop("TIMECTL_NO_CLOCK_CONTROL", None)


def say(line):
    print(line, flush=True)


def run(argv, timeout):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def judge(reference):
    """(offset, synchronisation distance) or (None, None)."""
    try:
        r = run(["ntpdig", "-j", "-p", "4", "-t", "1", reference], timeout=10)
        if r.returncode != 0:
            return None, None
        doc = json.loads(r.stdout)
        # ntpdig's JSON calls the distance "precision".
        return doc["offset"], doc["precision"]
    except (subprocess.TimeoutExpired, ValueError, KeyError):
        return None, None


def daemon_offset(provider):
    """The daemon's own estimate, signed like ntpdig (reference - local)."""
    try:
        if provider == "chrony":
            r = run(["chronyc", "-c", "tracking"], timeout=5)
            # Field 5: system time offset, positive = local clock fast.
            return -float(r.stdout.split(",")[4]) if r.returncode == 0 else None
        r = run(["/opt/timectl/timectl", "status", "--json"], timeout=5)
        doc = json.loads(r.stdout) if r.returncode == 0 else {}
        # offset_seconds: local clock minus true time.
        off = doc.get("offset_seconds")
        return -off if off is not None else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def fmt(x):
    return "-" if x is None else f"{x:+.6f}"


def main():
    cfg = json.load(open(CONFIG))
    reference = cfg["reference"]
    provider = cfg["provider"]

    deadline = time.monotonic() + 60
    before = judge(reference)[0]
    while before is None:
        if time.monotonic() > deadline:
            say(f"ERROR the reference {reference} did not answer ntpdig within 60 s")
            return
        time.sleep(1)
        before = judge(reference)[0]
    say(f"JUDGE_BEFORE {fmt(before)}")

    time.clock_settime(time.CLOCK_REALTIME, time.time() + cfg["start_offset"])
    say(f"JUDGE_START {fmt(judge(reference)[0])}")

    t0 = time.monotonic()
    r = run(["/opt/timectl/timectl", "apply", cfg["spec"], "--yes"], timeout=300)
    applied = time.monotonic()
    for line in (r.stdout + r.stderr).splitlines():
        say(f"APPLY| {line}")
    say(f"APPLY_EXIT {r.returncode} {applied - t0:.3f}")

    n = 0
    while n * cfg["interval"] <= cfg["duration"]:
        wake = applied + n * cfg["interval"]
        time.sleep(max(0.0, wake - time.monotonic()))
        t = time.monotonic() - applied
        j, dist = judge(reference)
        d = daemon_offset(provider)
        say(f"JUDGE {t:.1f} {fmt(j)} {fmt(dist)} {fmt(d)}")
        n += 1

    unit = "chrony" if provider == "chrony" else "timectl-engine"
    status = ["chronyc", "tracking"] if provider == "chrony" else ["/opt/timectl/timectl", "status"]
    for argv in (status, ["journalctl", "-u", unit, "--no-pager", "-n", "60", "-o", "short-monotonic"]):
        try:
            r = run(argv, timeout=10)
            for line in (r.stdout + r.stderr).splitlines():
                say(f"LOG| {line}")
        except subprocess.TimeoutExpired:
            say(f"LOG| {' '.join(argv)}: timed out")
    if provider != "chrony":
        # The engine's structured journal fields (issue 12): every applied
        # step carries STEP (seconds, positive: forward).
        r = run(["journalctl", "-u", unit, "--no-pager", "-o", "json"], timeout=10)
        for line in r.stdout.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "STEP" in entry:
                say(f"JOURNAL_STEP {entry['STEP']}")
    say("DONE")


try:
    main()
except Exception as e:  # the test shows this line; the unit powers off anyway
    say(f"ERROR {e!r}")
    sys.exit(1)
