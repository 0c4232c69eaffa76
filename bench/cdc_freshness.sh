#!/usr/bin/env bash
# Knowledge freshness (issue 15): starts PostgreSQL 15 (Debian's) on a free
# loopback port in a temporary directory, runs build/bench/assistd-cdc-bench
# against it, stops it. Usage: bench/cdc_freshness.sh [build-dir] [bench args...]
#   e.g. bench/cdc_freshness.sh build --seconds 10 --rates 1000,10000
set -euo pipefail
BUILD=${1:-build}
shift || true
BIN=/usr/lib/postgresql/15/bin
[ -x "$BIN/initdb" ] || { echo "cdc_freshness: PostgreSQL 15 is not installed ($BIN/initdb)"; exit 1; }
DIR=$(mktemp -d /tmp/assistd-cdc-bench.XXXXXX)
AS=()
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$DIR"; AS=(runuser -u postgres --); fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { "${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
"${AS[@]}" "$BIN/initdb" -D "$DIR/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null
cat >> "$DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
wal_level = logical
max_wal_senders = 4
max_replication_slots = 4
CONF
"${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start >/dev/null
echo "cdc_freshness: PostgreSQL 15 on 127.0.0.1:$PORT (defaults: fsync on, synchronous_commit on); $(nproc) CPUs: $(lscpu | sed -n 's/^Model name: *//p')"
"$BUILD/bench/assistd-cdc-bench" --port "$PORT" "$@"
