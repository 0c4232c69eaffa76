#!/usr/bin/env bash
# Runs every libFuzzer target for a fixed time each; a crash fails the run.
set -euo pipefail
build_dir=$1
seconds=${2:-120}
status=0
for target in "$build_dir"/fuzz/*_fuzz; do
  [ -x "$target" ] || continue
  name=$(basename "$target")
  corpus="$build_dir/fuzz-corpus/$name"
  mkdir -p "$corpus"
  seeds="fuzz/corpus/$name"
  echo "== $name for ${seconds}s"
  if ! "$target" -max_total_time="$seconds" -print_final_stats=1 "$corpus" $( [ -d "$seeds" ] && echo "$seeds" ); then
    echo "FUZZ FAILURE in $name" >&2
    status=1
  fi
done
exit $status
