#!/usr/bin/env bash
# The serving layer under load (issue 4's load benchmark), loopback only and
# bounded in count and time. Starts `assistd serve` for each scenario, runs
# build/bench/assistd-loadgen against it, prints a table, stops the server.
#
#   (a) BURST (default 10000) concurrent streaming requests on stories260K,
#       max_tokens 16, temperature 0: every stream must equal the prompt's
#       answer when asked alone; wall time, p50/p99 completion, errors.
#   (b) 1, 8, 32, 128 concurrent sessions (closed loop, 64 tokens each,
#       ignore_eos) on stories260K and a random smollm2-135m BF16: aggregate
#       tokens/s, p50/p99 time to first token and inter-token latency (chat route,
#       so the first frame marks the first token even when it prints nothing).
#
# Usage: bench/load.sh [build-dir] [a|b|all]
# Env: BURST, SESSIONS ("1 8 32 128"), THREADS (2), MODELS (where the random
#      model is kept; default /tmp/assistd-models), TIMEOUT_S (per run, 600).
set -euo pipefail
build=${1:-build}
which=${2:-all}
cd "$(dirname "$0")/.."
bin="$build/assistd"
loadgen="$build/bench/assistd-loadgen"
stories=../shared/models/stories260K.gguf
models=${MODELS:-/tmp/assistd-models}
burst=${BURST:-10000}
sessions=${SESSIONS:-1 8 32 128}
threads=${THREADS:-2}
timeout_s=${TIMEOUT_S:-600}
[ -x "$bin" ] && [ -x "$loadgen" ] || { echo "build assistd and assistd-loadgen first (ninja -C $build assistd assistd-loadgen)" >&2; exit 2; }
[ -f "$stories" ] || { echo "no $stories: the load benchmark needs it" >&2; exit 2; }

# The same open-file limit the server and the load generator raise themselves to.
ulimit -n "$(ulimit -Hn)"

server_pid=""
server_log=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT

start_server() {  # args for assistd serve; sets $port
  server_log=$(mktemp /tmp/assistd-load-XXXXXX.log)
  "$bin" serve --port 0 --threads "$threads" --drain-grace-s 5 "$@" 2>"$server_log" &
  server_pid=$!
  port=""
  for _ in $(seq 600); do
    port=$(grep -o 'http://127.0.0.1:[0-9]*' "$server_log" | head -1 | cut -d: -f3 || true)
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$server_log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$port" ] || { echo "the server did not start:" >&2; cat "$server_log" >&2; exit 1; }
}

header() {
  echo "| run | concurrency | ok/requests | errors | wall s | tok/s | completion p50 / p99 s | TTFT p50 / p99 ms | inter-token p50 / p99 ms |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
}

if [ "$which" = a ] || [ "$which" = all ]; then
  echo "== (a) $burst concurrent streams, stories260K, max_tokens 16, temperature 0, checked against single requests"
  # Every request queued at once: the queue admits them all; 64 decode together
  # (the KV cache holds 64 x 2 blocks of these short requests).
  start_server --model "$stories" --precision fp32 --max-running 64 --max-queue "$burst" \
    --queue-timeout-ms $((timeout_s * 1000)) --kv-cache-tokens 4096
  header
  "$loadgen" --port "$port" --mode burst --requests "$burst" --max-tokens 16 --check \
    --timeout-s "$timeout_s" --label "stories260K burst" --row || true
  stop_server
  echo
fi

if [ "$which" = b ] || [ "$which" = all ]; then
  mkdir -p "$models"
  smollm=$models/smollm2-135m-bf16.gguf
  [ -f "$smollm" ] || "$bin" model random --shape smollm2-135m --dtype bf16 --out "$smollm" >&2
  echo "== (b) concurrent sessions, 64 tokens per request (ignore_eos), temperature 0"
  header
  for spec in "stories260K:$stories:fp32" "smollm2-135m-bf16:$smollm:bf16"; do
    IFS=: read -r name path precision <<<"$spec"
    start_server --model "$path" --precision "$precision" --max-running 128 --max-queue 1024 \
      --queue-timeout-ms $((timeout_s * 1000)) --kv-cache-tokens 16384 --ctx-size 2048
    # One request first, not counted: a server's first batches at a precision
    # wait for its weights to be copied into huge pages (docs/engine.md).
    "$loadgen" --port "$port" --mode sessions --route chat --concurrency 1 --per-session 1 --max-tokens 1 \
      --timeout-s "$timeout_s" --label warm-up >/dev/null || true
    for c in $sessions; do
      per=$(( c >= 32 ? 2 : (c >= 8 ? 4 : 8) ))
      "$loadgen" --port "$port" --mode sessions --route chat --concurrency "$c" --per-session "$per" --max-tokens 64 \
        --ignore-eos --timeout-s "$timeout_s" --label "$name $precision" --row || true
    done
    stop_server
  done
  echo
  echo "llama-server reference (../shared/reference/llamacpp-bench.md, smollm2-135m BF16, -np 8 -t 2):"
  echo "  8 clients x 64 tokens: 294 tok/s aggregate; the target is >= 1.5x = 441 tok/s"
  # The engine alone, same machine, same minute: batched decode of 8 sequences
  # is the ceiling the 8-session row can reach (it also pays prefill and HTTP).
  echo "the engine alone (assistd bench engine --batch 8 --threads $threads), smollm2-135m BF16:"
  "$bin" bench engine --model "$smollm" --threads "$threads" --batch 8 --prompt-tokens 32 --gen-tokens 64 --reps 3 |
    tail -2
fi
