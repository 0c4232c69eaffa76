#!/usr/bin/env bash
# Engine speed against llama.cpp.
#
# Without LLAMA_BENCH: assistd's figures against the reference file's
# (../shared/reference/llamacpp-bench.md: llama-bench -t 2 -p 128 -n 64).
#
# With LLAMA_BENCH=/path/to/llama-bench: side by side on this machine, now.
# ROUNDS rounds (default 10); in each, every model runs under llama-bench and
# under `assistd bench engine` with the same thread count, prompt 128 and 64
# generated tokens, back to back (which goes first alternates by round), so
# both see the same minute of a machine whose bandwidth swings. Prints every
# round, then per model the medians and the median and range of the per-round
# decode ratios. MODELS_SET=smollm2 (or llama-1b) keeps to the rows of that
# shape; TIED=1 (or 0) to smollm2-135m's tied (or separate) output head.
#
# Makes the random-weight models it needs under $MODELS (default build/models).
# Usage: [LLAMA_BENCH=...] [ROUNDS=N] bench/engine_vs_llamacpp.sh [build-dir] [threads]
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
  "smollm2-135m f32 0 677 64.0"
  "smollm2-135m f16 0 885 83.5"
  "smollm2-135m bf16 0 1139 98.2"
  "llama-1b f16 0 156 27.1"
  "llama-1b bf16 0 241 29.5"
)

assistd_run() {  # path -> "pp tg gbps"
  "$bin" bench engine --model "$1" --precision native --threads "$threads" \
    --prompt-tokens 128 --gen-tokens 64 --reps "${REPS:-3}" --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; print(r["prefill_tokens_per_s"], r["decode_tokens_per_s"], r["decode_weight_gb_per_s"])'
}

if [ -z "${LLAMA_BENCH:-}" ]; then
  printf "%-22s %10s %10s %8s   %10s %10s %8s   %8s\n" model "pp128" "llama.cpp" ratio "tg64" "llama.cpp" ratio "GB/s"
  for row in "${rows[@]}"; do
    read -r shape dtype tied ref_pp ref_tg <<<"$row"
    path=$(make_model "$shape" "$dtype" "$tied")
    REPS=${REPS:-5}
    read -r pp tg gbps < <(assistd_run "$path")
    name=$(basename "$path" .gguf)
    python3 -c "
pp, tg, gb, rp, rt = $pp, $tg, $gbps, $ref_pp, $ref_tg
print(f'{\"$name\":22s} {pp:10.1f} {rp:10.1f} {pp/rp:7.2f}x   {tg:10.1f} {rt:10.1f} {tg/rt:7.2f}x   {gb:8.1f}')"
  done
  exit 0
fi

[ -x "$LLAMA_BENCH" ] || { echo "LLAMA_BENCH=$LLAMA_BENCH is not an executable" >&2; exit 2; }
rounds=${ROUNDS:-10}
[ "$rounds" -ge 1 ] 2>/dev/null || { echo "ROUNDS must be a positive count" >&2; exit 2; }
selected=()
for row in "${rows[@]}"; do
  read -r shape dtype tied _ <<<"$row"
  [ -n "${MODELS_SET:-}" ] && [[ "$shape" != "$MODELS_SET"* ]] && continue
  [ -n "${TIED:-}" ] && [ "$shape" = smollm2-135m ] && [ "$tied" != "$TIED" ] && continue
  selected+=("$row")
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
llama_run() {  # path -> "pp tg"
  "$LLAMA_BENCH" -m "$1" -t "$threads" -p 128 -n 64 -r "${REPS:-3}" -o json 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); d={x["n_prompt"]>0: x["avg_ts"] for x in r}; print(d[True], d[False])'
}
printf "%-5s %-8s %-22s %9s %9s %9s %9s %7s\n" round time model "pp llama" "pp ours" "tg llama" "tg ours" ratio
for ((round = 1; round <= rounds; ++round)); do
  for row in "${selected[@]}"; do
    read -r shape dtype tied _ <<<"$row"
    path=$(make_model "$shape" "$dtype" "$tied")
    name=$(basename "$path" .gguf)
    if ((round % 2)); then
      read -r lpp ltg < <(llama_run "$path"); read -r app atg _ < <(assistd_run "$path")
    else
      read -r app atg _ < <(assistd_run "$path"); read -r lpp ltg < <(llama_run "$path")
    fi
    echo "$round $name $lpp $app $ltg $atg" >>"$log"
    python3 -c "print(f'{$round:<5d} {\"$(date +%H:%M:%S)\":8s} {\"$name\":22s} {$lpp:9.1f} {$app:9.1f} {$ltg:9.1f} {$atg:9.1f} {$atg/$ltg:6.2f}x')"
  done
done
python3 - "$log" "$rounds" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    _, name, lpp, app, ltg, atg = line.split()
    rows.setdefault(name, []).append(tuple(map(float, (lpp, app, ltg, atg))))
print(f"\nmedians over {sys.argv[2]} rounds")
print(f"{'model':22s} {'pp llama':>9s} {'pp ours':>9s} {'tg llama':>9s} {'tg ours':>9s} {'ratio of medians':>17s} {'per-round ratio: median (min-max)':>34s}")
for name, rs in rows.items():
    med = [statistics.median(r[i] for r in rs) for i in range(4)]
    ratios = [r[3] / r[2] for r in rs]
    print(f"{name:22s} {med[0]:9.1f} {med[1]:9.1f} {med[2]:9.1f} {med[3]:9.1f} {med[3]/med[2]:16.2f}x "
          f"{statistics.median(ratios):18.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
PY
