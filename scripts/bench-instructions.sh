#!/usr/bin/env bash
# Instructions per media frame, streamguard `serve` against the unauthenticated baseline,
# counted by valgrind's callgrind: a figure that does not drift with machine load, so a
# change can be judged on a shared machine. The server runs under callgrind, a warm-up run
# is discarded (counters zeroed), then CALLS connections stream at RATE for DURATION seconds
# and the counters are dumped; instructions over frames sent. The per-call set-up of those
# connections is included (small against the frames at --rate max).
#
#   scripts/bench-instructions.sh            # CALLS=10 DURATION=5 RATE=max
#
# Needs valgrind (callgrind_control), python3. User-space instructions only: the kernel's
# share (socket reads) is not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${CALLS:-10}
DURATION=${DURATION:-5}
RATE=${RATE:-max}
OUT=${OUT:-target/bench-instructions}
mkdir -p "$OUT"
export TWILIO_AUTH_TOKEN=0123456789abcdef0123456789abcdef
export TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef
export RUST_LOG=${RUST_LOG:-warn}
PUBLIC=http://voice.example.com
cargo build --release --quiet --bin streamguard --example unauthenticated_baseline
BIN=target/release/streamguard

measure() { # measure NAME PORT COMMAND...
  local name=$1 port=$2; shift 2
  rm -f "$OUT/$name".cg.*
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.cg.%p" "$@" >"$OUT/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
  local extra=()
  [ "$name" = baseline ] && extra=(--unauthenticated)
  "$BIN" load --target http://127.0.0.1:"$port" --public-url $PUBLIC "${extra[@]}" \
    --calls 2 --duration 1 --rate "$RATE" --server-pid "$pid" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  "$BIN" load --target http://127.0.0.1:"$port" --public-url $PUBLIC "${extra[@]}" \
    --calls "$CALLS" --duration "$DURATION" --rate "$RATE" --setup-concurrency 16 \
    --server-pid "$pid" --json >"$OUT/$name.json"
  callgrind_control -d "$pid" >/dev/null
  sleep 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$OUT" "$name" <<'EOF'
import glob, json, os, sys
out, name = sys.argv[1], sys.argv[2]
dump = max(glob.glob(f"{out}/{name}.cg.*.[0-9]*"), key=os.path.getmtime)
ir = next(int(l.split()[1]) for l in open(dump) if l.startswith(("summary:", "totals:")))
frames = json.load(open(f"{out}/{name}.json"))["frames_sent"]
print(f"{name:<10} {ir:>14,} instructions, {frames:>9,} frames, {ir / max(frames, 1):>8,.0f} per frame")
EOF
}

measure serve 18190 "$BIN" serve --listen 127.0.0.1:18190 --public-url $PUBLIC \
  --max-pending-per-ip 4096 --max-pending 8192 --max-streams 8192
measure baseline 18191 target/release/examples/unauthenticated_baseline 127.0.0.1:18191
