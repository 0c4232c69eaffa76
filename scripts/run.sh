#!/usr/bin/env bash
# `make run`: picks a model the project can find or make locally and starts assistd on it.
# Until the HTTP server lands (`assistd serve`), this runs a generation on that model.
set -euo pipefail
bin=${1:-build/assistd}
root=$(cd "$(dirname "$0")/.." && pwd)
model="$root/../shared/models/stories260K.gguf"
if [ ! -f "$model" ]; then
  model="$root/build/models/random-smollm2-135m-bf16.gguf"
  if [ ! -f "$model" ]; then
    echo "run: ../shared/models/stories260K.gguf is absent; generating a random-weight smollm2-135m"
    echo "run: (random weights: answers are random tokens, mostly unused vocabulary entries that print as nothing)"
    mkdir -p "$(dirname "$model")"
    "$bin" model random --shape smollm2-135m --dtype bf16 --out "$model"
  fi
fi
echo "run: model $model"
if "$bin" --help 2>/dev/null | grep -q ' serve'; then
  exec "$bin" serve --model "$model"
fi
exec "$bin" generate --model "$model" --prompt "${PROMPT:-Once upon a time}" --max-tokens "${MAX_TOKENS:-200}"
