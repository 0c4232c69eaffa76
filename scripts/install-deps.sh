#!/usr/bin/env bash
# Installs every Debian package that building, testing and running assistd needs.
# Idempotent and non-interactive: packages already present are skipped.
set -euo pipefail

# `--build-only`: just what building the release binaries needs (the Docker image).
BUILD_ONLY=0
if [ "${1:-}" = "--build-only" ]; then BUILD_ONLY=1; fi

PACKAGES=(
  build-essential cmake ninja-build pkg-config git python3
  libboost-dev                      # Asio + Beast (header-only in 1.74)
  libyaml-cpp-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev
  librocksdb-dev zlib1g-dev
  libhiredis-dev                    # the session benchmark's Redis client
  prometheus-cpp-dev                # /metrics text format (core only; served by our own HTTP server)
  libssl-dev                        # libcrypto: SHA-256 of API keys, constant-time compare, key generation
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc  # peer replication streams
  libpq-dev                         # change data capture: PostgreSQL logical replication (pgoutput)
)
TEST_PACKAGES=(
  clang libclang-rt-14-dev          # libFuzzer and the sanitize build
  libgtest-dev libgmock-dev libbenchmark-dev
  redis-server                      # the session benchmark's side-by-side baseline
  chromium                          # the chat page's browser test (driven by playwright-core from npm)
  iproute2                          # `ip netns`/veth/bridge for the partition test (skips without it or root)
  postgresql-15                     # the CDC tests start their own server in a temporary directory
)
# The JavaScript suites (openai SDK, browser) run on node >= 18 and npm; a node
# already on the PATH (e.g. from NodeSource) is used as it is.
if ! command -v node >/dev/null 2>&1; then
  TEST_PACKAGES+=(nodejs npm)
fi
if [ "$BUILD_ONLY" -eq 0 ]; then PACKAGES+=("${TEST_PACKAGES[@]}"); fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
