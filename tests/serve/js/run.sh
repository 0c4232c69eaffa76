#!/bin/sh
# ctest entry for the JavaScript suites (tests/serve/js/<suite>/): skips with
# exit 77 when what the suite needs is absent, then hands over to harness.mjs,
# which installs the suite's npm packages into the build tree, starts
# `assistd serve` and runs the suite with node:test.
#
# usage: run.sh SUITE_DIR CACHE_DIR ASSISTD MODEL WEB_DIR ARTIFACTS_DIR
set -eu
model=$4

skip() {
  echo "SKIP: $*"
  exit 77
}

command -v node >/dev/null 2>&1 || skip "node is not installed (scripts/install-deps.sh installs nodejs)"
command -v npm >/dev/null 2>&1 || skip "npm is not installed (scripts/install-deps.sh installs npm)"
# 18: Debian 12's nodejs. The pins in the suites' package.json run on it
# (playwright-core 1.64+ refuses node 18).
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || skip "node $(node --version) is older than 18"
[ -f "$model" ] || skip "no model at $model"

exec node "$(dirname "$0")/harness.mjs" "$@"
