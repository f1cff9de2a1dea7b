#!/usr/bin/env bash
# The FULL soak of tests/soak.rs (issue 14) in release: 2,000 concurrent calls streaming for
# 60 s while faults are injected, a bigger pre-auth flood, 50 fault cycles and 10 Redis
# outages, each case printing one `soak <case>:` line with its figures. Loopback only; takes
# a few minutes. The short mode of the same file runs in every `cargo test`.
#
#   scripts/soak.sh [test-name-filter]
#
# Needs about 10,000 file descriptors: the soft limit is raised to the hard one here (and
# again by the test itself); if the hard limit is lower, run `ulimit -n 20000` as root first.
# The Redis case needs redis-server on PATH (it prints SKIPPED without it, and fails instead
# with STREAMGUARD_REQUIRE_REDIS=1).
set -euo pipefail
cd "$(dirname "$0")/.."

ulimit -n "$(ulimit -Hn)"
echo "RLIMIT_NOFILE: $(ulimit -n)"
STREAMGUARD_SOAK=full cargo test --release --test soak -- --nocapture --test-threads=1 "$@"
