#!/usr/bin/env bash
# Failover of a long conversation with standby KV (issue 14): a three-node
# fleet of real `assistd serve` processes on loopback (R=3, mutual TLS, one
# thread each), a random smollm2-135m BF16 (made here once with `assistd model
# random`). Per trial: a session's history of ~HISTORY tokens is written on
# node v in turns of at most 400 tokens, its next turn on v is the control
# (no failure), v is SIGKILLed right after it and the next turn goes to
# another node; then the same with v restarted over its directories and the
# turn sent to v. Prints the first-token times (p50/p99) and their ratios;
# never fails on time.
#
# It is the e2e test FleetTest.ALongConversationsFailoverImportsItsHistory
# with a larger model and more trials.
# Usage: bench/failover_kv.sh [build-dir] [trials (10)] [history tokens (2000)] [model.gguf]
set -euo pipefail
build=${1:-build}
trials=${2:-10}
history=${3:-2000}
model=${4:-}
cd "$(dirname "$0")/.."
exe="$build/tests/e2e_fleet_slow_test"
[ -x "$exe" ] || { echo "build the fleet test first (ninja -C $build assistd e2e_fleet_slow_test)" >&2; exit 2; }
if [ -z "$model" ]; then
  model="$build/bench-models/smollm2-135m-bf16.gguf"
  if [ ! -f "$model" ]; then
    mkdir -p "$(dirname "$model")"
    "$build/assistd" model random --shape smollm2-135m --dtype bf16 --out "$model" >&2
  fi
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "machine: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores); model $model" >&2
if ASSISTD_E2E_MODEL="$model" ASSISTD_KV_FAILOVER_TRIALS="$trials" ASSISTD_KV_FAILOVER_HISTORY="$history" \
   timeout 1800 "$exe" --gtest_filter='FleetTest.ALongConversationsFailover*' >"$out" 2>&1; then
  grep -E -A5 '^failover of a conversation' "$out"
else
  grep -v -E '^(assistd serve|--- node|\[20)' "$out" | tail -60 >&2
  echo "the failover run failed (above)" >&2
  exit 1
fi
