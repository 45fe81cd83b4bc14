#!/usr/bin/env bash
# Build timectl's .deb and .rpm from one build with the dist profile
# (Cargo.toml: release plus LTO and no symbol table): the binary, the man
# pages and shell completions committed under man/ and completions/ (kept
# equal to what timectl generates by tests/generated_files.rs), the JSON
# Schema, the docs, the examples and the license files. The package contents
# are listed in Cargo.toml ([package.metadata.deb] and
# [package.metadata.generate-rpm]).
#
#   ci/build-packages.sh [OUTDIR]     default OUTDIR: target/packages
#
# The packaging tools are installed with `cargo install --locked --debug` at
# the pinned versions below, once: a matching installed version is reused
# (measured on the 2-core CI machine with optimised builds and other builds
# running: cargo-deb ~120 s, cargo-generate-rpm ~330 s; building both
# packages from a finished dist build takes a few seconds). Logs go to stderr; the last two lines on stdout are
# the .deb's and the .rpm's paths.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
out=${1:-$repo/target/packages}

log() { echo "build-packages: $*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# ensure_tool CRATE VERSION: cargo install it unless that version is there.
ensure_tool() {
    local crate=$1 version=$2 t0
    if cargo install --list | grep -qx "$crate v$version:"; then
        log "$crate $version already installed"
        return
    fi
    # --debug: an unoptimised build of a packaging tool compiles in about
    # half the time, and it only copies and compresses a few files.
    log "installing $crate $version (cargo install --locked --debug)"
    t0=$(now_ms)
    cargo install --locked --debug --version "$version" "$crate" >&2
    log "installed $crate $version in $(secs $(($(now_ms) - t0))) s"
}

t_start=$(now_ms)
ensure_tool cargo-deb "$CARGO_DEB_VERSION"
ensure_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

t0=$(now_ms)
cargo build --profile dist --locked >&2
log "dist build in $(secs $(($(now_ms) - t0))) s"

rm -rf "$out"
mkdir -p "$out"
t0=$(now_ms)
cargo deb --no-build --locked --profile dist --output "$out" >&2
cargo generate-rpm --profile dist --output "$out" >&2
log "packages built in $(secs $(($(now_ms) - t0))) s (total $(secs $(($(now_ms) - t_start))) s)"

deb=$(find "$out" -maxdepth 1 -name 'timectl_*.deb' | head -n1)
rpm=$(find "$out" -maxdepth 1 -name 'timectl-*.rpm' | head -n1)
if [[ -z $deb || -z $rpm ]]; then
    log "missing package in $out: $(ls "$out")"
    exit 1
fi
ls -l "$deb" "$rpm" >&2
echo "$deb"
echo "$rpm"
