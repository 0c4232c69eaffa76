#!/usr/bin/env bash
# `make bench`: every benchmark that prints figures. None fails on time.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
echo "== memory bandwidth now (2 threads; the ceiling of decode's weight reads)"
"$build/assistd" bench membw --threads 2
echo "== engine vs llama.cpp reference (2 threads)"
bash bench/engine_vs_llamacpp.sh "$build" 2
if [ -x "$build/bench/kernels_bench" ]; then
  echo "== kernels"
  "$build/bench/kernels_bench"
fi
if "$build/assistd" bench --help 2>/dev/null | grep -q crdt && [ -f ../shared/data/automerge-paper.json.gz ]; then
  echo "== CRDT editing trace"
  "$build/assistd" bench crdt --trace ../shared/data/automerge-paper.json.gz
fi
if "$build/assistd" bench --help 2>/dev/null | grep -q prefix; then
  echo "== prefix reuse: a session's next-turn TTFT as its history grows (random smollm2-135m BF16)"
  models=${MODELS:-$build/models}
  mkdir -p "$models"
  [ -f "$models/smollm2-135m-bf16.gguf" ] ||
    "$build/assistd" model random --shape smollm2-135m --dtype bf16 --out "$models/smollm2-135m-bf16.gguf" >&2
  "$build/assistd" bench prefix --model "$models/smollm2-135m-bf16.gguf" --precision bf16 --threads 2
fi
if [ -x "$build/tests/e2e_fleet_slow_test" ] && [ -f ../shared/models/stories260K.gguf ]; then
  echo "== failover: kill -9 mid-stream, the session's next turn on another node (20 trials)"
  bash bench/failover.sh "$build" 20
fi
if [ -x "$build/bench/assistd-loadgen" ] && [ -f ../shared/models/stories260K.gguf ] && [ "${LOAD:-1}" != 0 ]; then
  echo "== serving under load (LOAD=0 skips; several minutes)"
  bash bench/load.sh "$build" all
fi
