#!/usr/bin/env bash
# Scale-out figures (issue 5), on loopback:
#  (a) process start to the first 200 on /readyz of `assistd serve` (one node)
#      with stories260K and with a random-weight smollm2-135m in BF16 (made
#      here with `assistd model random` in a temporary directory): the median
#      and max of several starts;
#  (b) a fourth node joining a three-node fleet that holds N sessions (10,000
#      by default): from its process start to ready, and to holding its
#      replica set (every session rendezvous placement gives it). It is the
#      e2e test FleetTest.ANodeJoiningAFleetTakesOverItsReplicaSet with more
#      sessions.
# Bounded: every start has 60 s, the join run 20 minutes. Prints figures; fails
# only when a server does not become ready or the join test fails.
# Usage: bench/scaleout.sh [build-dir] [starts (7)] [join sessions (10000; 0: skip the join)]
set -euo pipefail
build=${1:-build}
starts=${2:-7}
sessions=${3:-10000}
cd "$(dirname "$0")/.."
exe="$build/assistd"
test_exe="$build/tests/e2e_fleet_slow_test"
[ -x "$exe" ] || { echo "build assistd first (ninja -C $build assistd)" >&2; exit 2; }
stories=../shared/models/stories260K.gguf
[ -f "$stories" ] || { echo "no $stories: the scale-out figures need it" >&2; exit 2; }
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# One start: prints the milliseconds from exec to /readyz 200.
start_to_ready() {
  local model=$1 log=$tmp/serve.log port= t0 t1 code
  : >"$log"
  t0=$(now_ms)
  "$exe" serve --model "$model" --port 0 --threads 1 >"$log" 2>&1 &
  pid=$!
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "assistd serve exited before it was ready:" >&2; cat "$log" >&2; exit 1
    fi
    if [ $(( $(now_ms) - t0 )) -gt 60000 ]; then
      echo "assistd serve was not ready within 60 s:" >&2; cat "$log" >&2; exit 1
    fi
    if [ -z "$port" ]; then
      port=$(sed -n 's|.* on http://127\.0\.0\.1:\([0-9]*\) .*|\1|p' "$log" | head -1)
      [ -n "$port" ] || { sleep 0.001; continue; }
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
    [ "$code" = 200 ] && break
    sleep 0.001
  done
  t1=$(now_ms)
  kill -TERM "$pid"; wait "$pid" || true; pid=
  echo $(( t1 - t0 ))
}

summary() {  # label, then the samples
  local label=$1; shift
  local sorted n
  sorted=$(printf '%s\n' "$@" | sort -n)
  n=$#
  printf '%-34s median %5d ms  min %5d ms  max %5d ms  (%d starts: %s)\n' "$label" \
    "$(echo "$sorted" | sed -n "$(( (n + 1) / 2 ))p")" "$(echo "$sorted" | head -1)" \
    "$(echo "$sorted" | tail -1)" "$n" "$(echo $sorted)"
}

random_model=$tmp/smollm2-135m-bf16.gguf
"$exe" model random --shape smollm2-135m --dtype bf16 --out "$random_model" >/dev/null
echo "start to ready (assistd serve, one node, --threads 1; target under 500 ms):"
for m in "$stories" "$random_model"; do
  start_to_ready "$m" >/dev/null  # warm the page cache: the figure is the server's, not the disk's
  samples=()
  for _ in $(seq "$starts"); do samples+=("$(start_to_ready "$m")"); done
  summary "  $(basename "$m")" "${samples[@]}"
done
rm -f "$random_model"

[ "$sessions" -gt 0 ] || exit 0  # start-to-ready figures only
[ -x "$test_exe" ] || { echo "build the fleet test for the join figure (ninja -C $build e2e_fleet_slow_test)" >&2; exit 2; }
out=$tmp/join.out
if ASSISTD_JOIN_SESSIONS="$sessions" timeout 1200 "$test_exe" \
     --gtest_filter='FleetTest.ANodeJoiningAFleetTakesOverItsReplicaSet' >"$out" 2>&1; then
  grep -E '^scale-out join' "$out"
else
  grep -v -E '^(assistd serve|--- node)' "$out" | tail -40 >&2
  echo "the join run failed (above)" >&2
  exit 1
fi
