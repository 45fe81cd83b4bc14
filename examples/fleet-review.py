#!/usr/bin/env python3
"""Review a fleet change: one markdown document with every host's timectl plan.

Runs `ansible-playbook --check` (any playbook that uses
timectl.timesync.converge) with TIMECTL_REVIEW_DIR set, so the module's
action plugin leaves each host's plan on the controller, then writes one
markdown document: identical plans appear once, with the list of hosts
they apply to; hosts that could not be planned are listed with timectl's
reason. Ready for a pull-request comment.

    examples/fleet-review.py --out plan.md -- -i inventory.ini site.yml [--diff] [-e ...]

Everything after `--` goes to ansible-playbook (`--check` is added).
Exit status: ansible-playbook's (0 when every host was planned), after the
document is written either way. Standard library only.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


def load_results(review_dir):
    results = []
    for name in sorted(os.listdir(review_dir)):
        if name.endswith(".json"):
            with open(os.path.join(review_dir, name)) as f:
                results.append(json.load(f))
    return results


def group_plans(results):
    """[(plan_markdown, [hosts])] in first-seen order, and [(host, msg)]."""
    groups = {}
    order = []
    failed = []
    for r in results:
        if r.get("failed") or "plan_markdown" not in r:
            failed.append((r["host"], r.get("msg", "no plan")))
            continue
        key = r["plan_markdown"]
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(r["host"])
    return [(key, sorted(groups[key])) for key in order], failed


def render(results, title):
    groups, failed = group_plans(results)
    changing = sum(len(h) for k, h in groups if not _no_changes(k))
    out = ["# {0}".format(title), ""]
    out.append("{0} host(s): {1} with changes, {2} already as desired, {3} not planned; "
               "{4} distinct plan(s).".format(len(results), changing,
                                              sum(len(h) for k, h in groups if _no_changes(k)),
                                              len(failed), len(groups)))
    out.append("")
    for n, (markdown, hosts) in enumerate(groups, 1):
        out.append("## Plan {0} of {1}: {2} host(s)".format(n, len(groups), len(hosts)))
        out.append("")
        out.append("Hosts: " + ", ".join("`{0}`".format(h) for h in hosts))
        out.append("")
        # The plan's own headings one level down, under this one.
        for line in markdown.rstrip("\n").splitlines():
            out.append("#" + line if line.startswith("### ") else line)
        out.append("")
    if failed:
        out.append("## Not planned")
        out.append("")
        for host, msg in sorted(failed):
            out.append("- `{0}`: {1}".format(host, " ".join(str(msg).split())))
        out.append("")
    return "\n".join(out)


def _no_changes(markdown):
    return "No changes" in markdown.splitlines()[0] if markdown else False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--out", "-o", help="write the document here (default: stdout)")
    parser.add_argument("--title", default="timectl fleet plan")
    parser.add_argument("--ansible-playbook", default="ansible-playbook")
    parser.add_argument("playbook_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    pb_args = args.playbook_args
    if pb_args and pb_args[0] == "--":
        pb_args = pb_args[1:]
    if not pb_args:
        parser.error("give ansible-playbook's arguments after --")

    with tempfile.TemporaryDirectory(prefix="timectl-review-") as review_dir:
        env = dict(os.environ, TIMECTL_REVIEW_DIR=review_dir)
        # ansible-playbook's own output goes to stderr: stdout may be the document.
        proc = subprocess.run([args.ansible_playbook, "--check"] + pb_args, env=env,
                              stdout=sys.stderr, stdin=subprocess.DEVNULL)
        results = load_results(review_dir)
    document = render(results, args.title)
    if args.out:
        with open(args.out, "w") as f:
            f.write(document)
    else:
        sys.stdout.write(document)
    if not results:
        print("fleet-review: no host ran timectl.timesync.converge "
              "(ansible-playbook exited {0})".format(proc.returncode), file=sys.stderr)
        return proc.returncode or 1
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
