#!/usr/bin/env bash
# Quick mutation testing for CI (MUTATION.md): the mutants of the lines a diff touches in the
# pure core, against the core's test binaries, within a time bound. Exits non-zero when a
# mutant survives (or times out); exits 0, saying why, when the diff touches no core file.
#   scripts/mutants-quick.sh [BASE]     (BASE defaults to HEAD~1; diff is BASE...HEAD)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${1:-HEAD~1}"
BUDGET="${MUTANTS_QUICK_SECONDS:-900}"
CORE=(src/token.rs src/store/mod.rs src/store/memory.rs src/sid.rs src/wire/frames.rs
  src/wire/frames/fast.rs src/extract.rs src/signature.rs src/wire/twiml.rs src/session.rs
  src/upgrade.rs src/webhook.rs)
TESTS=(token sid store session webhook signature upgrade extract frames media_fast_path twiml labels embedding
  fuzz_invariants fuzz_regressions)

if ! git rev-parse --verify --quiet "$BASE^{commit}" >/dev/null; then
  echo "mutants-quick: $BASE is not in this clone (shallow?); nothing to compare against"
  exit 0
fi
diff_file="$(mktemp)"
trap 'rm -f "$diff_file"' EXIT
git diff "$BASE...HEAD" -- "${CORE[@]}" >"$diff_file"
if [ ! -s "$diff_file" ]; then
  echo "mutants-quick: the diff $BASE...HEAD touches no pure-core file; nothing to mutate"
  exit 0
fi
args=()
for f in "${CORE[@]}"; do args+=(--file "$f"); done
for t in "${TESTS[@]}"; do args+=("--cargo-arg=--test=$t"); done
# cargo-mutants exits 0 when every mutant is caught, 2 when one is missed, 3 on a timeout.
timeout --signal=INT "$BUDGET" nice -n 19 cargo mutants -j 1 --timeout 30 --build-timeout 300 \
  --in-diff "$diff_file" -o mutants.out-quick "${args[@]}"
