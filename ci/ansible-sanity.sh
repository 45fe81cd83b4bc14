#!/usr/bin/env bash
# Build the timectl.timesync collection (ansible/) and run `ansible-test
# sanity` on it. ansible-test wants the collection under
# ansible_collections/NAMESPACE/NAME, so the collection is copied into a
# temporary tree first (the repository keeps it at ansible/).
#
#   ci/ansible-sanity.sh            build + sanity (all tests that apply)
#   ANSIBLE_VENV=DIR                where ci/install-deps.sh put ansible-core
#                                   (default /opt/timectl-ansible/venv)
#
# Runs `ansible-test sanity --local --requirements --python 3.11` (no
# container): ansible-test makes a venv per sanity test and installs that
# test's pinned requirements (pylint, voluptuous, ...) from PyPI. To put pip
# into those venvs it downloads a get-pip.py from its own CI file server,
# which is not a package registry and is not reachable here; this script
# puts a stand-in at the cache path ansible-test reads first: it runs the
# standard library's ensurepip (Debian's python3-venv) and then pip installs
# the exact pip version and packages ansible-test asked for, from PyPI.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
venv=${ANSIBLE_VENV:-/opt/timectl-ansible/venv}
[[ -x $venv/bin/ansible-test ]] || {
    echo "ansible-sanity.sh: $venv/bin/ansible-test missing: run ci/install-deps.sh (as root)" >&2
    exit 1
}
export PATH=$venv/bin:$PATH
now_ms() { echo $(($(date +%s%N) / 1000000)); }
t0=$(now_ms)

work=$(mktemp -d /tmp/timectl-ansible-sanity.XXXXXX)
trap 'rm -rf "$work"' EXIT
ansible-galaxy collection build "$repo/ansible" --output-path "$work/dist" >/dev/null
coll=$work/ansible_collections/timectl/timesync
mkdir -p "$coll"
tar -xzf "$work"/dist/timectl-timesync-*.tar.gz -C "$coll"
echo "ansible-sanity: built $(basename "$work"/dist/*.tar.gz)"
# The stand-in get-pip.py (see above), for the pip version ansible-test pins.
pip_version=$(python3 -c 'import ansible_test._internal.python_requirements as r, inspect, re; print(re.search(r"pip=.([0-9.]+).", inspect.getsource(r)).group(1))')
cache=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
if [[ ! -s $cache ]] || ! grep -q 'timectl stand-in' "$cache"; then
    mkdir -p "$(dirname "$cache")"
    cat >"$cache" <<'PY'
# timectl stand-in for ansible-test's get-pip.py (ci/ansible-sanity.sh):
# ensurepip, then pip installs what ansible-test asked for from PyPI.
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
PY
fi
cd "$coll"
ansible-test sanity --local --requirements --python 3.11 --color no "$@"
echo "ansible-sanity: done in $(( ($(now_ms) - t0) / 1000 )) s"
