#!/usr/bin/env bash
# Minimises the committed corpus of every target (or the ones named), merging in any extra
# corpus directories given after `--` (e.g. what a long local run found):
#
#   fuzz/minimise.sh [TARGET...] [-- EXTRA_DIR...]
#
# This is `cargo fuzz cmin` (a libFuzzer merge), with two differences: the readable
# `seed-*` files (written by `cargo test --test fuzz_invariants -- --ignored write_seeds`)
# are kept under their names, and the merge is a set cover over edges only
# (`-set_cover_merge=1 -use_counters=0`), which keeps the same edge coverage in about a
# quarter of the files `-merge=1` keeps (hit-count features come back within seconds of
# fuzzing). Every other input is named by its SHA-1, as libFuzzer names them.
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"

targets=()
extra=()
while [ "$#" -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  targets+=("$1"); shift
done
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for target in "${targets[@]}"; do
  merged="$work/$target/merged"
  old="$work/$target/old"
  mkdir -p "$merged" "$old"
  cp -R "corpus/$target/." "$old/"
  mv "$old"/seed-* "$merged/" 2>/dev/null || true
  dirs=("$old")
  for d in "${extra[@]}"; do
    if [ -d "$d/$target" ]; then dirs+=("$d/$target"); fi
  done
  cargo fuzz run -s none "$target" "$merged" "${dirs[@]}" -- -set_cover_merge=1 -use_counters=0 >"$work/$target.log" 2>&1 \
    || { tail -n 30 "$work/$target.log"; exit 1; }
  rm -rf "corpus/$target"
  mkdir -p "corpus/$target"
  cp -R "$merged/." "corpus/$target/"
  echo "$target: $(ls "corpus/$target" | wc -l) inputs, $(du -sh "corpus/$target" | cut -f1)"
done
