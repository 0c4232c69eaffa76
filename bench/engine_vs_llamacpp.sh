#!/usr/bin/env bash
# Engine speed side by side with llama.cpp's figures for this machine kind
# (../shared/reference/llamacpp-bench.md: llama-bench -t 2 -p 128 -n 64).
# Makes the random-weight models it needs under $MODELS (default build/models).
# Usage: bench/engine_vs_llamacpp.sh [build-dir] [threads]
set -euo pipefail
build=${1:-build}
threads=${2:-2}
bin="$build/assistd"
models=${MODELS:-$build/models}
mkdir -p "$models"

make_model() {  # shape dtype tied -> path
  local shape=$1 dtype=$2 tied=$3 suffix=""
  [ "$tied" = 1 ] && suffix="-tied"
  local path="$models/$shape$suffix-$dtype.gguf"
  if [ ! -f "$path" ]; then
    "$bin" model random --shape "$shape" --dtype "$dtype" --out "$path" $( [ "$tied" = 1 ] && echo --tied ) >&2
  fi
  echo "$path"
}

# model  dtype  tied  llama.cpp pp128  llama.cpp tg64 (the higher of the two builds in the reference)
rows=(
  "smollm2-135m f32 1 707 66.0"
  "smollm2-135m f16 1 923 112"
  "smollm2-135m bf16 1 1139 100"
  "smollm2-135m q8_0 1 802 141"
  "llama-1b f16 0 156 27.1"
  "llama-1b bf16 0 241 29.5"
)
printf "%-22s %10s %10s %8s   %10s %10s %8s   %8s\n" model "pp128" "llama.cpp" ratio "tg64" "llama.cpp" ratio "GB/s"
for row in "${rows[@]}"; do
  read -r shape dtype tied ref_pp ref_tg <<<"$row"
  path=$(make_model "$shape" "$dtype" "$tied")
  json=$("$bin" bench engine --model "$path" --precision native --threads "$threads" \
         --prompt-tokens 128 --gen-tokens 64 --reps "${REPS:-5}" --json)
  python3 - "$shape-$dtype" "$ref_pp" "$ref_tg" "$json" <<'PY'
import json, sys
name, ref_pp, ref_tg, blob = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
r = json.loads(blob)["results"][0]
pp, tg = r["prefill_tokens_per_s"], r["decode_tokens_per_s"]
print(f"{name:22s} {pp:10.1f} {ref_pp:10.1f} {pp/ref_pp:7.2f}x   {tg:10.1f} {ref_tg:10.1f} {tg/ref_tg:7.2f}x   {r['decode_weight_gb_per_s']:8.1f}")
PY
done
