#!/usr/bin/env bash
# Failover (issue 5's benchmark): a three-node fleet of real `assistd serve`
# processes on loopback (stories260K, R=3, sync acks 1). Each trial streams a
# turn of a session from one node, SIGKILLs that node after the first token,
# then sends the session's next turn to another node and times, from the kill,
# that answer's first token and its completion; the killed node restarts and
# must catch up before the next trial. Every trial also checks the full
# history (no acknowledged message lost). Prints p50/p99/max; never fails on time.
#
# It is the e2e test FleetTest.Kill9MidStream... with more trials.
# Usage: bench/failover.sh [build-dir] [trials (20)]
set -euo pipefail
build=${1:-build}
trials=${2:-20}
cd "$(dirname "$0")/.."
exe="$build/tests/e2e_fleet_slow_test"
[ -x "$exe" ] || { echo "build the fleet test first (ninja -C $build assistd e2e_fleet_slow_test)" >&2; exit 2; }
[ -f ../shared/models/stories260K.gguf ] || { echo "no ../shared/models/stories260K.gguf: the failover benchmark needs it" >&2; exit 2; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ASSISTD_FAILOVER_TRIALS="$trials" timeout 600 "$exe" --gtest_filter='FleetTest.Kill9MidStream*' >"$out" 2>&1; then
  grep -E -A2 '^failover' "$out"
else
  # The test's own failure lines, without the nodes' logs it prints after them.
  grep -v -E '^(assistd serve|--- node)' "$out" >&2
  echo "the failover run failed (above)" >&2
  exit 1
fi
