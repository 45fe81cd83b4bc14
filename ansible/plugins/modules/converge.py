#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: timectl developers
# MIT OR Apache-2.0 (see the collection's LICENSE files)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: converge
short_description: Converge a host's time synchronisation with timectl
version_added: "0.1.0"
description:
  - Runs C(timectl) on the target. In check mode it runs C(timectl plan --json)
    and changes nothing; otherwise it runs C(timectl apply --json --yes) on the
    plan it just made, which verifies the result and rolls every step back when
    a step or the verification fails.
  - The desired state is validated by timectl itself (same keys as timectl's
    desired-state YAML file), not by this module.
  - C(changed) is exactly "the plan has steps" (plus installing the timectl
    binary, see O(timectl_binary)).
  - With C(--diff), every file the plan writes is shown as a unified diff and
    the other steps (services, packages, firewall) as a list.
  - The action plugin of the same name first makes sure the timectl binary on
    the target is the controller's (see O(timectl_binary)). It then runs
    timectl on the target with one shell command and builds this result on
    the controller, so a converged host costs one remote command and the
    target needs no Python. That needs a pipelining connection (the
    desired state travels on the command's standard input, never in a
    command line); without pipelining, and for O(rollback) and a C({arch})
    binary path, this module runs on the target instead.
  - Facts are not needed (C(gather_facts=false) works), timectl detects the
    distribution, daemons and paths itself.
author:
  - timectl developers (@timectl)
options:
  state:
    description:
      - The desired state as a dict, with the same keys as timectl's
        desired-state file (usually a single C(timesync) key).
      - Mutually exclusive with O(src), O(content) and O(rollback).
      - It is logged like any module argument; with symmetric C(keys) in it
        use O(src) (its text is passed as O(content), which is not logged)
        or C(no_log) on the task.
    type: dict
  src:
    description:
      - A desired-state file on the controller (looked up like the C(copy)
        module's C(src), in the role's or playbook's C(files/)). Errors name
        its lines and columns.
      - Mutually exclusive with O(state), O(content) and O(rollback).
    type: path
  content:
    description:
      - The desired-state YAML text itself (not logged, it may hold keys).
      - Mutually exclusive with O(state), O(src) and O(rollback).
    type: str
  spec_name:
    description:
      - The file name timectl is given for the desired state (it appears in
        error messages and in the header of the files timectl manages, so it
        must stay the same from run to run).
      - Defaults to the base name of O(src), else C(ansible.yaml).
    type: str
  root:
    description:
      - Manage an offline root (an image or chroot) on the target instead of
        the running host (C(timectl --root)).
    type: path
  rollback:
    description:
      - Instead of converging, undo a recorded timectl run with
        C(timectl rollback --yes --json). C(last) undoes the last run with
        something left to undo; anything else is a run id (see
        C(timectl runs)).
      - In check mode nothing is undone; the module reports the recorded runs.
    type: str
  timectl_path:
    description:
      - Where the timectl executable is on the target.
    type: path
    default: /usr/local/bin/timectl
  timectl_binary:
    description:
      - The timectl executable on the controller that the action plugin puts at
        O(timectl_path) when that file is missing or differs (a different
        version). C({arch}) in the path is replaced by the target's
        C(uname -m), for fleets of several architectures; the binary's ELF
        machine must match the target's.
      - Defaults to E(TIMECTL_BINARY), else C(timectl) on the controller's
        E(PATH).
      - In check mode a missing or different binary is copied to a private
        directory under Ansible's C(remote_tmp) on the target, run from there
        and removed, so nothing is installed.
    type: path
  install_binary:
    description:
      - Whether the action plugin manages the binary at all. Set to V(false)
        when timectl is installed from a package (C(timectl_path=/usr/bin/timectl)).
    type: bool
    default: true
  compress_binary:
    description:
      - Send the binary gzip-compressed (16 MB become about 6.6 MB) when the
        target has C(gunzip). Worth it on links slower than about
        500 Mbit/s; on a LAN unpacking costs more time than the bytes it
        saves (see docs/benchmarks.md). SSH's own compression
        (C(ansible_ssh_extra_args=-C)) is the other way to the same end.
    type: bool
    default: false
  review_dir:
    description:
      - A directory on the controller where the action plugin writes each
        host's result as C(<inventory_hostname>.json) (plan, markdown plan,
        report), for C(examples/fleet-review.py). Defaults to
        E(TIMECTL_REVIEW_DIR); unset writes nothing.
    type: path
notes:
  - Supports check mode and diff mode.
  - Needs root on the target (use C(become)) to apply; a plan as a normal user
    reports blockers and fails.
requirements:
  - timectl on the target (put there by the action plugin, or a package).
seealso:
  - name: timectl JSON formats
    description: The plan and report documents returned as RV(plan) and RV(report).
    link: https://example.invalid/timectl/docs/json-format.md
attributes:
  check_mode:
    support: full
    description: Check mode runs C(timectl plan) and changes nothing.
  diff_mode:
    support: full
    description: One diff per file the plan writes, plus the list of steps.
  action:
    support: full
    description: An action plugin puts the timectl binary on the target.
"""

EXAMPLES = r"""
- name: Converge time sync on every host
  hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: Chrony with the corporate servers
      timectl.timesync.converge:
        state:
          timesync:
            provider: chrony
            sources:
              - server: ntp1.corp.example.com
              - server: ntp2.corp.example.com
            verify:
              synchronized: true
              within: 60s

- name: The desired state from a file next to the playbook
  timectl.timesync.converge:
    src: files/site.yaml
    timectl_binary: /srv/timectl/timectl-{arch}

- name: Undo the last run on a host
  timectl.timesync.converge:
    rollback: last
"""

RETURN = r"""
changed:
  description: Whether the plan had steps (and, applied, whether they were made).
  returned: always
  type: bool
plan:
  description: The plan as C(timectl plan --json) prints it (docs/json-format.md).
  returned: when a plan was made
  type: dict
  sample: {"format_version": 1, "kind": "plan", "summary": {"add": 2, "change": 0, "remove": 1}, "changes": []}
plan_markdown:
  description: The plan as C(timectl plan --markdown) prints it, for a pull-request comment.
  returned: when a plan was made
  type: str
  sample: "### timectl plan: Plan: 1 to add, 0 to change, 0 to remove."
steps:
  description: The one-line summaries of the plan's steps, in the order apply runs them.
  returned: when a plan was made
  type: list
  elements: str
  sample: ["stop chrony.service", "install ntpsec"]
report:
  description: The report of C(timectl apply --json) (or of C(timectl rollback --json)).
  returned: when timectl applied or rolled back
  type: dict
  sample: {"outcome": "converged", "steps": [], "verify": {"synchronized": true}}
outcome:
  description: >-
    C(planned) in check mode, else the apply report's outcome (C(no-changes),
    C(converged), C(rolled-back), C(rollback-incomplete), C(verify-failed)) or
    C(rolled-back-by-request) for O(rollback).
  returned: always
  type: str
  sample: converged
rollback:
  description: >-
    When an apply failed, what timectl undid: the steps undone (C(undone)) and
    what it could not restore (C(not_restored)); C(complete) is true when the
    host is back as it was.
  returned: when an apply failed
  type: dict
  sample: {"complete": true, "undone": ["start chrony.service"], "not_restored": []}
runs:
  description: The recorded runs (C(timectl runs --json)), in check mode with O(rollback).
  returned: with O(rollback) in check mode
  type: list
  elements: dict
binary:
  description: >-
    The timectl executable used on the target: C(path), and C(installed) (the
    action plugin copied it to O(timectl_path)) or C(temporary) (copied to a
    temporary directory, in check mode); when it was copied, C(compressed)
    (sent gzip-compressed) and C(seconds) (the remote command that received
    and installed it, and ran timectl).
  returned: when the action plugin manages the binary
  type: dict
  sample: {"path": "/usr/local/bin/timectl", "installed": true, "temporary": false, "compressed": true, "seconds": 0.41}
stdout:
  description: What timectl printed on stdout in the last command.
  returned: on failure
  type: str
stderr:
  description: What timectl printed on stderr in the last command.
  returned: on failure
  type: str
"""

import json
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.timectl.timesync.plugins.module_utils.timectl_converge import (
    ARGUMENT_SPEC, MUTUALLY_EXCLUSIVE, REQUIRED_ONE_OF, TIMECTL_ENV, converge_result, spec_bytes, spec_name)


def _run(module, argv, cwd):
    return module.run_command(argv, cwd=cwd, environ_update=TIMECTL_ENV)


def _do_rollback(module, timectl, root_args, workdir, result):
    run_id = module.params["rollback"]
    if module.check_mode:
        rc, out, err = _run(module, [timectl, "runs", "--json"] + root_args, workdir)
        if rc != 0:
            module.fail_json(msg="timectl runs failed: {0}".format(err.strip()), rc=rc, stdout=out, stderr=err, **result)
        try:
            runs = json.loads(out)
        except ValueError:
            module.fail_json(msg="timectl runs --json printed no JSON (exit {0}): {1}".format(
                rc, (err or out).strip()), rc=rc, stdout=out, stderr=err, **result)
        result.update(changed=True, outcome="planned", runs=runs if isinstance(runs, list) else [runs])
        module.exit_json(**result)
    argv = [timectl, "rollback"]
    if run_id != "last":
        argv.append(run_id)
    argv += ["--yes", "--json"] + root_args
    rc, out, err = _run(module, argv, workdir)
    try:
        report = json.loads(out)
    except ValueError:
        report = None
    if rc != 0:
        module.fail_json(msg="timectl rollback failed: {0}".format(err.strip() or out.strip()),
                         rc=rc, report=report, stdout=out, stderr=err, **result)
    result.update(changed=bool(report and report.get("undone")), outcome="rolled-back-by-request", report=report)
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=MUTUALLY_EXCLUSIVE,
        required_one_of=REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    p = module.params
    timectl = p["timectl_path"]
    if not os.access(timectl, os.X_OK):
        module.fail_json(msg="timectl is not executable at {0} (install it, or let the action plugin "
                             "copy the controller's with timectl_binary)".format(timectl))
    root_args = ["--root", p["root"]] if p["root"] else []
    result = dict(changed=False)

    workdir = tempfile.mkdtemp(prefix="timectl-ansible-", dir=module.tmpdir)
    try:
        if p["rollback"]:
            _do_rollback(module, timectl, root_args, workdir, result)

        if p["src"] is not None and p["content"] is None:
            # src reached the module without the action plugin (the file is
            # on the target): read it there.
            try:
                with open(p["src"], "rb") as f:
                    p["content"] = f.read().decode("utf-8", "surrogateescape")
            except (IOError, OSError) as e:
                module.fail_json(msg="cannot read src {0}: {1}".format(p["src"], e))
        try:
            name = spec_name(p["spec_name"], p["src"])
        except ValueError as e:
            module.fail_json(msg=str(e))
        # Always the same name, in a directory of its own: timectl writes the
        # spec's path into the headers of the files it manages, so a random
        # name would change them on every run.
        with open(os.path.join(workdir, name), "wb") as f:
            f.write(spec_bytes(p["state"], p["content"]))

        planfile = os.path.join(workdir, "plan.timectl")
        mdfile = os.path.join(workdir, "plan.md")
        # One look at the host: the JSON, the saved plan and the markdown.
        plan_run = _run(module, [timectl, "plan", name, "--json", "--out", planfile,
                                 "--markdown-out", mdfile] + root_args, workdir)
        markdown = None
        if os.path.exists(mdfile):
            with open(mdfile, "rb") as f:
                markdown = f.read().decode("utf-8", "surrogateescape")
        apply_run = None
        if plan_run[0] == 0 and not module.check_mode:
            # Apply exactly the plan shown: timectl refuses a saved plan if
            # the host changed since it was made (or if it has blockers).
            apply_run = _run(module, [timectl, "apply", planfile, "--yes", "--json"] + root_args, workdir)
        result = converge_result(plan_run, markdown, module.check_mode, module._diff, apply_run)
        if result.pop("failed", False):
            module.fail_json(**result)
        module.exit_json(**result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
