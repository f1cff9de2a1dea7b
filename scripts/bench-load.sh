#!/usr/bin/env bash
# The load figures of BENCHMARKS.md: `streamguard serve` against the unauthenticated
# baseline (examples/unauthenticated_baseline.rs), interleaved, the server pinned to one
# core and `streamguard load` to the other, REPS repetitions, medians.
#
#   scripts/bench-load.sh [max|realtime|idle|setup|scale|soak|redis|all]   (default: all)
#
# Environment: REPS (3), DURATION (seconds per realtime run, 20), OUT (a folder for the JSON
# reports, default target/bench-load). Needs a release build of the binary and the example
# (built here), taskset, python3; `redis` needs redis-server on PATH. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
REPS=${REPS:-3}
DURATION=${DURATION:-20}
OUT=${OUT:-target/bench-load}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

export TWILIO_AUTH_TOKEN=0123456789abcdef0123456789abcdef
export TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef
export RUST_LOG=${RUST_LOG:-warn}
PUBLIC=http://voice.example.com
SERVE_PORT=18180
BASE_PORT=18181

cargo build --release --quiet --bin streamguard --example unauthenticated_baseline
BIN=target/release/streamguard
BASE=target/release/examples/unauthenticated_baseline

pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Caps raised so that the load, not a limit, is what is measured (every call comes from
# 127.0.0.1, and the defaults allow 4 pending connections per address).
start_serve() {
  taskset -c 0 "$BIN" serve --listen 127.0.0.1:$SERVE_PORT --public-url $PUBLIC \
    --max-pending 8192 --max-pending-per-ip 8192 --max-streams 16384 \
    --max-connections 16384 "$@" >"$OUT/serve.log" 2>&1 &
  pids+=($!); SERVE_PID=$!
}
start_base() {
  taskset -c 0 "$BASE" 127.0.0.1:$BASE_PORT "$@" >"$OUT/base.log" 2>&1 &
  pids+=($!); BASE_PID=$!
}
stop_all() { cleanup; pids=(); sleep 0.5; }
wait_port() { for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; }

# load NAME PORT [args...]: one run, its JSON report in $OUT/NAME.json.
load() {
  local name=$1 port=$2; shift 2
  local extra=()
  [ "$port" = $BASE_PORT ] && extra=(--unauthenticated)
  taskset -c 1 "$BIN" load --target http://127.0.0.1:"$port" --public-url $PUBLIC \
    "${extra[@]}" --json "$@" >"$OUT/$name.json"
}

# median KEY FILES...: the median of a numeric field (dotted path) across reports.
median() {
  python3 - "$@" <<'EOF'
import json, statistics, sys
key, files = sys.argv[1], sys.argv[2:]
vals = []
for f in files:
    v = json.load(open(f))
    for k in key.split('.'):
        v = v[k] if v is not None else None
    if v is not None:
        vals.append(v)
print(statistics.median(vals) if vals else "n/a")
EOF
}

both() { # both LABEL [serve flags --] load args: interleaved reps against fresh servers
  local label=$1; shift
  for r in $(seq "$REPS"); do
    start_serve; start_base; wait_port $SERVE_PORT; wait_port $BASE_PORT
    load "$label-serve-$r" $SERVE_PORT "$@"
    load "$label-base-$r" $BASE_PORT "$@"
    stop_all
  done
}

report() { # report LABEL KEY UNIT
  local s b
  s=$(median "$2" "$OUT/$1"-serve-*.json); b=$(median "$2" "$OUT/$1"-base-*.json)
  python3 -c "s,b=$s,$b; print(f'{\"$1\":<28} serve {s:>12,.3f}  baseline {b:>12,.3f}  ratio {s/b if b else float(\"nan\"):.2f}  ($3)')"
}

if [[ $what == max || $what == all ]]; then
  for c in 10 100; do
    both "max-$c" --calls $c --duration 10 --rate max
    report "max-$c" server.frames_per_cpu_second "media frames per server CPU-second"
  done
fi
if [[ $what == realtime || $what == all ]]; then
  both realtime-1000 --calls 1000 --duration "$DURATION" --rate realtime --setup-concurrency 16
  report realtime-1000 server.cores_used "server cores, 1000 real-time calls"
fi
if [[ $what == idle || $what == all ]]; then
  both idle-1000 --calls 1000 --duration 10 --rate idle --setup-concurrency 16
  python3 - "$OUT" <<'EOF'
import glob, json, statistics, sys
out = sys.argv[1]
def per(kind):
    v = []
    for f in glob.glob(f"{out}/idle-1000-{kind}-*.json"):
        s = json.load(open(f))["server"]
        v.append((s["rss_kib"] - s["rss_before_kib"]) / 1000)
    return statistics.median(v)
s, b = per("serve"), per("base")
print(f"{'idle-1000':<28} serve {s:>12.2f}  baseline {b:>12.2f}  difference {s-b:+.2f}  (KiB per idle authenticated stream)")
EOF
fi
if [[ $what == setup || $what == all ]]; then
  # --duration 0: webhook, upgrade, start, stop; nothing streams. RUST_LOG as set (warn by
  # default here; `RUST_LOG=info` adds the per-call log lines).
  both setup-3000 --calls 3000 --duration 0 --setup-concurrency 8
  python3 - "$OUT" <<'EOF'
import glob, json, statistics, sys
out = sys.argv[1]
def per(kind, key):
    return statistics.median(json.load(open(f))["server"][key] / 3000 * 1e6
                             for f in glob.glob(f"{out}/setup-3000-{kind}-*.json"))
for kind, what in (("serve", "webhook + upgrade + start"), ("base", "upgrade + start")):
    print(f"setup-3000 {kind:<6} {per(kind, 'cpu_seconds'):6.1f} µs server CPU per call "
          f"({per(kind, 'user_seconds'):.1f} user, {per(kind, 'system_seconds'):.1f} kernel): {what}")
EOF
fi
if [[ $what == scale || $what == all ]]; then
  for c in 100 500 1000 2000 4000; do
    start_serve; start_base; wait_port $SERVE_PORT; wait_port $BASE_PORT
    load "scale-$c-serve" $SERVE_PORT --calls $c --duration "$DURATION" --setup-concurrency 16
    load "scale-$c-base" $BASE_PORT --calls $c --duration "$DURATION" --setup-concurrency 16
    stop_all
    python3 - "$OUT" "$c" <<'EOF'
import json, sys
out, c = sys.argv[1], sys.argv[2]
for kind in ("serve", "base"):
    r = json.load(open(f"{out}/scale-{c}-{kind}.json"))
    s = r["server"] or {}
    print(f"scale {c:>5} {kind:<6} authenticated {r['authenticated']:>5}/{r['calls']:<5} cores {s.get('cores_used', 0):.3f} "
          f"frames/s {r['frames_per_second']:>9,.0f} lateness p99 {r['lateness']['p99_ms']:.2f} ms "
          f"RSS {s.get('rss_kib', 0)/1024:.1f} MiB errors {r['errors'] or 'none'}")
EOF
  done
fi
if [[ $what == soak || $what == all ]]; then
  # 2,000 echoed calls for 60 s: every frame back, echo latency.
  start_serve --echo; wait_port $SERVE_PORT
  load soak-2000-serve $SERVE_PORT --calls 2000 --duration 60 --echo --setup-concurrency 16
  stop_all
  python3 - "$OUT" <<'EOF'
import json, sys
r = json.load(open(f"{sys.argv[1]}/soak-2000-serve.json"))
print(f"soak 2000 x 60 s (echo): authenticated {r['authenticated']}/{r['calls']}, sent {r['frames_sent']:,}, "
      f"echoed {r['frames_echoed']:,}, echo p50 {r['echo_latency']['p50_ms']:.2f} ms p99 {r['echo_latency']['p99_ms']:.2f} ms "
      f"max {r['echo_latency']['max_ms']:.2f} ms, lateness p99 {r['lateness']['p99_ms']:.2f} ms, cores {r['server']['cores_used']:.3f}, errors {r['errors'] or 'none'}")
EOF
fi
if [[ $what == redis || $what == all ]]; then
  # Call set-up with the replay store in Redis (one local redis-server) against memory.
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --save "" --appendonly no --bind 127.0.0.1 >"$OUT/redis.log" 2>&1 &
  pids+=($!); sleep 0.5
  for r in $(seq "$REPS"); do
    start_serve; wait_port $SERVE_PORT
    load "store-memory-$r" $SERVE_PORT --calls 1000 --duration 0 --setup-concurrency 8
    kill "$SERVE_PID"; sleep 0.5
    start_serve --replay-store redis://127.0.0.1:"$port"; wait_port $SERVE_PORT
    load "store-redis-$r" $SERVE_PORT --calls 1000 --duration 0 --setup-concurrency 8
    kill "$SERVE_PID"; sleep 0.5
  done
  stop_all
  python3 - "$OUT" <<'EOF'
import glob, json, statistics, sys
out = sys.argv[1]
for kind in ("memory", "redis"):
    rs = [json.load(open(f)) for f in glob.glob(f"{out}/store-{kind}-*.json")]
    cpu = statistics.median(r["server"]["cpu_seconds"] / r["calls"] * 1e6 for r in rs)
    ok = statistics.median(r["authenticated"] for r in rs)
    wall = statistics.median(r["wall_seconds"] for r in rs)
    print(f"set-up, {kind:<6} store: {cpu:6.1f} µs server CPU per call, {ok}/1000 authenticated, "
          f"1000 calls in {wall:.2f} s (8 at a time)")
EOF
fi
