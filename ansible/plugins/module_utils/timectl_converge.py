# -*- coding: utf-8 -*-
# Copyright: timectl developers
# MIT OR Apache-2.0 (see the collection's LICENSE files)
"""What the converge module and its action plugin share: the argument spec
and how timectl's plan and apply output become the task's result.

The action plugin runs timectl on the target with one shell command (no
Python on the target, no module to ship) and builds the result here, on
the controller; the module (used for O(rollback), and by anyone who calls
it without the action plugin) builds the same result on the target."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os.path

ARGUMENT_SPEC = dict(
    state=dict(type="dict"),
    src=dict(type="path"),
    content=dict(type="str", no_log=True),
    spec_name=dict(type="str"),
    root=dict(type="path"),
    rollback=dict(type="str"),
    timectl_path=dict(type="path", default="/usr/local/bin/timectl"),
    timectl_binary=dict(type="path"),
    install_binary=dict(type="bool", default=True),
    compress_binary=dict(type="bool", default=False),
    review_dir=dict(type="path"),
)
MUTUALLY_EXCLUSIVE = [("state", "src", "content", "rollback")]
REQUIRED_ONE_OF = [("state", "src", "content", "rollback")]

# timectl's environment: no colour, a UTF-8 locale every target has.
TIMECTL_ENV = {"NO_COLOR": "1", "LC_ALL": "C.UTF-8"}


def spec_name(name, src):
    """The file name timectl is given for the desired state, or a ValueError."""
    name = name or (os.path.basename(src) if src else "ansible.yaml")
    if "/" in name or name in ("", ".", ".."):
        raise ValueError("spec_name must be a plain file name: {0!r}".format(name))
    return name


def spec_bytes(state, content):
    """The desired-state file's bytes: the state dict as JSON (JSON is YAML,
    and timectl validates it like its own files), or the text as given."""
    if state is not None:
        return json.dumps(state, indent=2, sort_keys=True).encode("utf-8")
    return content.encode("utf-8", "surrogateescape")


def diffs(plan):
    """Ansible diffs for a plan: the list of steps, then one per file.

    timectl's plan JSON carries unified diffs (no whole before/after
    contents: they can hold key material), so they are handed to Ansible
    ready-made (``prepared``), which its callbacks print as they are."""
    changes = plan.get("changes") or []
    if not changes:
        return []
    marks = {"add": "+", "change": "~", "remove": "-"}
    lines = []
    for n, change in enumerate(changes, 1):
        lines.append("{0} {1:2d}. {2}".format(
            marks.get(change.get("kind"), "~"), n, change.get("summary", "")))
        if change.get("reason"):
            lines.append("       because {0}".format(change["reason"]))
    summary = plan.get("summary") or {}
    head = "timectl plan: {0} to add, {1} to change, {2} to remove".format(
        summary.get("add", 0), summary.get("change", 0), summary.get("remove", 0))
    out = [{"prepared": head + "\n" + "\n".join(lines) + "\n"}]
    for change in changes:
        text = change.get("diff")
        if not text:
            continue
        if change.get("sensitive"):
            text = "--- {0}\n+++ {0} (desired)\n(sensitive: not shown)\n".format(
                change.get("resource", "").split(":", 1)[-1])
        out.append({"prepared": text if text.endswith("\n") else text + "\n"})
    return out


def rollback_info(report):
    undone = [s.get("summary") for s in report.get("steps") or [] if s.get("status") == "undone"]
    not_restored = report.get("not_restored") or []
    return {"complete": not not_restored, "undone": undone, "not_restored": not_restored}


def _failed(result, msg, **extra):
    result.update(extra)
    result.update(failed=True, msg=msg)
    return result


def converge_result(plan_run, markdown, check_mode, diff, apply_run=None):
    """The task's result from timectl's output.

    plan_run: (rc, stdout, stderr) of ``timectl plan NAME --json --out ...``;
    markdown: the ``--markdown-out`` file's text (None if it was not made);
    apply_run: (rc, stdout, stderr) of ``timectl apply PLAN --yes --json``,
    None in check mode (and ignored when the plan has blockers: timectl
    refuses to apply such a plan, so nothing was done).
    A failed result has ``failed=True`` and ``msg``."""
    result = dict(changed=False)
    rc, out, err = plan_run
    if rc != 0:
        return _failed(result, "timectl plan failed: {0}".format(err.strip() or out.strip()),
                       rc=rc, stdout=out, stderr=err)
    try:
        plan = json.loads(out)
    except ValueError:
        return _failed(result, "timectl plan --json printed no JSON (exit {0}): {1}".format(
            rc, (err or out).strip()), rc=rc, stdout=out, stderr=err)
    steps = [c.get("summary", "") for c in plan.get("changes") or []]
    result.update(plan=plan, plan_markdown=markdown or "", steps=steps, changed=bool(steps))
    if diff:
        result["diff"] = diffs(plan)
    if plan.get("blockers"):
        return _failed(result, "timectl cannot plan this host: {0}".format("; ".join(plan["blockers"])),
                       outcome="blocked")
    if check_mode:
        result["outcome"] = "planned"
        return result

    rc, out, err = apply_run
    try:
        report = json.loads(out)
    except ValueError:
        report = None
    if report is None:
        return _failed(result, "timectl apply failed before making a report (exit {0}): {1}".format(
            rc, err.strip() or out.strip()), rc=rc, stdout=out, stderr=err)
    outcome = report.get("outcome", "")
    result.update(report=report, outcome=outcome)
    if rc != 0 or outcome not in ("converged", "no-changes"):
        rollback = rollback_info(report)
        reason = report.get("error") or (report.get("verify") or {}).get("detail") or err.strip()
        msg = "timectl apply {0}: {1}".format(outcome or "failed", reason)
        if outcome in ("rolled-back", "rollback-incomplete"):
            msg += "; rolled back {0} step(s){1}".format(
                len(rollback["undone"]),
                "" if rollback["complete"] else ", NOT restored: " + "; ".join(
                    str(x) for x in rollback["not_restored"]))
        result["changed"] = bool(outcome == "rollback-incomplete")
        return _failed(result, msg, rc=rc, rollback=rollback, stderr=err)
    result["changed"] = outcome == "converged"
    return result
