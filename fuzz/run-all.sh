#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, on a copy of its committed
# corpus (fuzz/corpus/<target>/ stays untouched) with its dictionary (fuzz/dicts/), without
# a sanitizer (`-s none`, stable Rust). Exits non-zero if any target crashes, times out or
# runs out of memory, after printing the reproducer's path. CI: `fuzz/run-all.sh 20`.
#
# Usage: fuzz/run-all.sh SECONDS [TARGET...]       (from any directory)
set -euo pipefail

seconds="${1:?usage: fuzz/run-all.sh SECONDS [TARGET...]}"
shift
case "$seconds" in
  '' | *[!0-9]*) echo "SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;;
esac

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: installing it (cargo install --locked cargo-fuzz)"
  cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# Build every target once; `cargo fuzz run` below then finds them up to date.
cargo fuzz build -s none

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=()
for target in "${targets[@]}"; do
  corpus="$work/corpus/$target"
  mkdir -p "$corpus"
  if [ -d "corpus/$target" ]; then
    cp -R "corpus/$target/." "$corpus/"
  fi
  args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
  if [ -f "dicts/$target.dict" ]; then
    args+=(-dict="$fuzz_dir/dicts/$target.dict")
  fi
  log="$work/$target.log"
  echo "== $target: ${seconds}s, $(ls "$corpus" | wc -l) corpus inputs"
  if cargo fuzz run -s none "$target" "$corpus" -- "${args[@]}" >"$log" 2>&1; then
    # The last status line: executions, coverage, speed.
    grep -E '^#[0-9]+' "$log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$log" || true
  else
    failed+=("$target")
    echo "!! $target FAILED"
    if ! grep -E -A4 'panicked at|invariant violated' "$log"; then
      grep -E -v '^ +[0-9]+: |^ +at ' "$log" | tail -n 30
    fi
    # libFuzzer writes the input that failed under fuzz/artifacts/<target>/ (kept, ignored
    # by git); its bytes are printed too, so the log alone reproduces it.
    for unit in $(grep -oE "Test unit written to [^ ]+" "$log" | awk '{print $5}' | sort -u); do
      echo "!! reproducer: $unit"
      echo "!!   base64: $(base64 -w0 "$unit")"
      echo "!!   replay: (cd $fuzz_dir && cargo fuzz run -s none $target $unit)"
    done
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]}"
  exit 1
fi
echo "fuzzing passed: ${targets[*]} (${seconds}s each)"
