# -*- coding: utf-8 -*-
# Copyright: timectl developers
# MIT OR Apache-2.0 (see the collection's LICENSE files)
"""Action plugin for timectl.timesync.converge.

On the controller, before the module runs on the target:
  * reads O(src) (a desired-state file on the controller) and hands its text
    to the module;
  * makes sure the target's timectl (O(timectl_path)) is the controller's
    O(timectl_binary) for the target's architecture: one remote command reads
    C(uname -m) and the installed binary's SHA-256, and only a missing or
    different binary is copied (in check mode to Ansible's temporary
    directory, so nothing is installed). It travels gzip-compressed when the
    target has gunzip (16 MB -> 6.6 MB), and is unpacked, checked against
    the controller's SHA-256 and made executable in one remote command;
  * afterwards, writes the result to O(review_dir) (or E(TIMECTL_REVIEW_DIR))
    for a fleet review.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import shlex
import shutil
import struct
import time

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.action import ActionBase

# ELF e_machine values and the `uname -m` names that run them.
_ELF_MACHINES = {
    3: ("i386", "i486", "i586", "i686"),
    62: ("x86_64", "amd64"),
    183: ("aarch64", "arm64"),
    40: ("armv7l", "armv6l", "arm"),
    243: ("riscv64",),
    21: ("ppc64le", "ppc64"),
    22: ("s390x",),
}

_SHA256_CACHE = {}


def _sha256(path):
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _SHA256_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA256_CACHE[key] = h.hexdigest()
    return _SHA256_CACHE[key]


def _gzipped(path, digest):
    """The binary gzip-compressed, cached by its SHA-256 in the user's own
    cache directory (mode 0700: a shared /tmp would let another user plant
    a file there; the target checks the unpacked SHA-256 anyway). Ansible
    runs each host's task in its own worker process, so a lock makes one of
    them compress while the others wait."""
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                         "timectl-ansible")
    os.makedirs(cache, mode=0o700, exist_ok=True)
    out = os.path.join(cache, digest + ".gz")
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(out):
            part = out + ".{0}.part".format(os.getpid())
            with open(path, "rb") as src, open(part, "wb") as raw:
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
                    shutil.copyfileobj(src, gz, 1 << 20)
            os.replace(part, out)
    return out


def _elf_machine(path):
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise AnsibleActionFail("timectl_binary {0} is not an ELF executable".format(path))
    endian = "<" if head[5] == 1 else ">"
    return struct.unpack(endian + "H", head[18:20])[0]


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = self._task.args.copy()
        try:
            return self._run(args, result, task_vars)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _run(self, args, result, task_vars):
        review_dir = args.pop("review_dir", None) or os.environ.get("TIMECTL_REVIEW_DIR")
        binary = args.pop("timectl_binary", None) or os.environ.get("TIMECTL_BINARY") or shutil.which("timectl")

        src = args.get("src")
        if src is not None and args.get("content") is None:
            try:
                local = self._find_needle("files", src)
            except Exception as e:
                raise AnsibleActionFail("cannot find src {0}: {1}".format(src, to_native(e)))
            with open(to_bytes(local), "rb") as f:
                args["content"] = to_text(f.read(), errors="surrogate_or_strict")
            args.setdefault("spec_name", os.path.basename(local))
            del args["src"]

        binary_info = None
        if args.get("install_binary", True) not in (False, "false", "no", "False"):
            binary_info = self._ensure_binary(args, binary)

        module_result = self._execute_module(
            module_name="timectl.timesync.converge", module_args=args, task_vars=task_vars)
        result.update(module_result)
        if binary_info is not None:
            result["binary"] = binary_info
            if binary_info["installed"] or binary_info["temporary"]:
                result["changed"] = True
        if review_dir:
            self._write_review(review_dir, task_vars, result)
        return result

    def _ensure_binary(self, args, binary):
        if not binary:
            raise AnsibleActionFail(
                "no timectl executable on the controller: set timectl_binary (or TIMECTL_BINARY), "
                "put timectl on PATH, or set install_binary=false when the target has it")
        remote = args.get("timectl_path") or "/usr/local/bin/timectl"
        probe = "uname -m; command -v gunzip >/dev/null 2>&1 && echo gz || echo raw; sha256sum {0} 2>/dev/null || true".format(
            shlex.quote(remote))
        res = self._low_level_execute_command(probe)
        if res.get("rc") != 0:
            raise AnsibleActionFail("cannot probe the target ({0}): {1}".format(probe, res.get("stderr")))
        lines = to_text(res.get("stdout", "")).splitlines()
        arch = lines[0].strip() if lines else ""
        compress = len(lines) > 1 and lines[1].strip() == "gz"
        remote_sum = lines[2].split()[0] if len(lines) > 2 and lines[2].split() else ""

        local = os.path.expanduser(binary.replace("{arch}", arch))
        if not os.path.isfile(local):
            raise AnsibleActionFail("timectl_binary {0} (for a {1} target) does not exist".format(local, arch))
        machine = _elf_machine(local)
        if arch not in _ELF_MACHINES.get(machine, ()):
            raise AnsibleActionFail(
                "timectl_binary {0} is built for ELF machine {1}, the target is {2}: "
                "point timectl_binary at a build for {2} (use {{arch}} in the path)".format(local, machine, arch))

        digest = _sha256(local)
        info = {"path": remote, "source": local, "installed": False, "temporary": False}
        if remote_sum == digest:
            return info

        started = time.time()
        tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
        staged = self._connection._shell.join_path(tmpdir, "timectl")
        if compress:
            sent = staged + ".gz"
            self._transfer_file(_gzipped(local, digest), sent)
            unpack = "gunzip -c {0} > {1}".format(shlex.quote(sent), shlex.quote(staged))
        else:
            sent = staged
            self._transfer_file(local, staged)
            unpack = "true"
        # Unpack, check the SHA-256 end to end, make it executable; outside
        # check mode also install it atomically (a temporary name, then
        # rename), all in one remote command.
        script = "{u} && echo '{h}  '{s} | sha256sum -c --quiet - && chmod 0755 {s}".format(
            u=unpack, h=digest, s=shlex.quote(staged))
        if not self._task.check_mode:
            script += " && mkdir -p {d} && cp {s} {t} && mv -f {t} {r}".format(
                d=shlex.quote(os.path.dirname(remote) or "/"), s=shlex.quote(staged),
                t=shlex.quote(remote + ".ansible-new"), r=shlex.quote(remote))
        res = self._low_level_execute_command(script)
        if res.get("rc") != 0:
            raise AnsibleActionFail("cannot install timectl at {0} (sent {1}): {2}".format(
                remote, sent, to_text(res.get("stderr") or res.get("stdout"))))
        info["seconds"] = round(time.time() - started, 3)
        info["compressed"] = compress
        if self._task.check_mode:
            # Plan with the controller's binary without installing it.
            self._fixup_perms2((tmpdir, staged), execute=True)
            args["timectl_path"] = staged
            info.update(path=staged, temporary=True)
            return info
        info["installed"] = True
        return info

    def _write_review(self, review_dir, task_vars, result):
        os.makedirs(review_dir, exist_ok=True)
        host = task_vars.get("inventory_hostname", "unknown")
        keep = {k: result.get(k) for k in (
            "changed", "failed", "msg", "outcome", "plan", "plan_markdown", "steps", "report", "rollback")
            if k in result}
        path = os.path.join(review_dir, "{0}.json".format(host))
        with open(path + ".tmp", "w") as f:
            json.dump(dict(host=host, **keep), f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)
