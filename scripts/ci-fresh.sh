#!/usr/bin/env bash
# Runs .ci/run the way a new machine would: a clone of HEAD in a temporary folder, an empty
# CARGO_HOME (no registry cache, no installed cargo tools; rustup's toolchain is kept), a fresh
# target folder, CI=true, and no ../shared beside the clone (the repo must stand alone).
# Prints each step's duration (from .ci/run) and the total; removes everything it made.
#
# Run it before submitting a change to .ci/run, Cargo.toml, Cargo.lock or fuzz/Cargo.toml.
# Only committed work is tested (it clones HEAD): commit first.
#
# Usage: scripts/ci-fresh.sh            KEEP=1 scripts/ci-fresh.sh   (keep the folder)
set -euo pipefail

repo="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
work="$(mktemp -d "${TMPDIR:-/tmp}/streamguard-ci-fresh.XXXXXX")"
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    echo "kept: $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# A bin folder with only rustup's proxies, so that tools installed in the usual cargo home
# (cargo-deny, cargo-fuzz ...) are not found: .ci/run must install them itself.
rustup_bin="$(dirname "$(command -v rustup)")"
mkdir -p "$work/toolchain-bin" "$work/cargo-home"
for tool in cargo rustc rustdoc rustup rustfmt cargo-fmt cargo-clippy clippy-driver; do
  if [ -e "$rustup_bin/$tool" ]; then
    ln -s "$rustup_bin/$tool" "$work/toolchain-bin/$tool"
  fi
done
path_without_cargo="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -x -F "$rustup_bin" | paste -sd: -)"

git clone --quiet --no-hardlinks "$repo" "$work/streamguard"
echo "ci-fresh: $(git -C "$work/streamguard" log -1 --format='%h %s') in $work"

start=$SECONDS
set +e
(
  cd "$work/streamguard"
  env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_BUILD_TARGET_DIR \
    CARGO_HOME="$work/cargo-home" \
    RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" \
    PATH="$work/toolchain-bin:$path_without_cargo" \
    CI=true \
    bash .ci/run
) 2>&1 | tee "$work/ci.log"
rc=${PIPESTATUS[0]}
set -e
total=$((SECONDS - start))

echo
echo "== ci-fresh: exit $rc after ${total}s ($((total / 60)) min $((total % 60)) s) =="
grep -E '^-- .*: [0-9]+s$' "$work/ci.log" || true
exit "$rc"
