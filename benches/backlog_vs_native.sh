#!/usr/bin/env bash
# Benchmark: drain one backlog into a Postgres sink, walpipe vs PostgreSQL's
# native logical replication (CREATE SUBSCRIPTION), side by side in one run.
#
# The backlog is written while neither consumer runs: one transaction of
# ROWS rows, then SMALL one-row transactions. Each consumer has its own slot
# (created before the backlog) and its own sink database in one sink cluster;
# the time is from start (walpipe run / ALTER SUBSCRIPTION ENABLE) until the
# last row of the backlog is in its sink.
#
#   bash benches/backlog_vs_native.sh            # ROWS=500000 SMALL=50000
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
ROWS=${ROWS:-500000}
SMALL=${SMALL:-50000}
SRC_PORT=${SRC_PORT:-56532}
SINK_PORT=${SINK_PORT:-56533}

ensure_postgres15
PG_BINDIR=$PG15_BINDIR
cargo build --release --locked -q
WALPIPE=$PWD/target/release/walpipe

WORK=$(mktemp -d /tmp/walpipe-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; cluster_stop source; cluster_stop sink; rm -rf "$WORK"' EXIT
cluster_start source "$SRC_PORT" fsync=off shared_buffers=256MB max_wal_size=4GB
cluster_start sink "$SINK_PORT" fsync=off shared_buffers=256MB max_wal_size=4GB
src() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SRC_PORT" -U postgres -d postgres "$@"; }
sink() { local db=$1; shift; "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SINK_PORT" -U postgres -d "$db" "$@"; }
TABLE="CREATE TABLE orders (id bigint PRIMARY KEY, customer int, status text, amount numeric(12,2), note text, created_at timestamptz)"

src -c "$TABLE"
sink postgres -c "CREATE DATABASE native" -c "CREATE DATABASE walpipe"
sink native -c "$TABLE"

# walpipe: create its publication, slot, tables and checkpoint on the empty table, then stop.
export WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable"
export WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/walpipe?sslmode=disable"
export WALPIPE_JOB_NAME=bench WALPIPE_LOG=warn
"$WALPIPE" run & pid=$!
until [ "$(sink walpipe -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'walpipe'" 2>/dev/null)" = 1 ] \
  && [ "$(sink walpipe -c "SELECT count(*) FROM walpipe.checkpoints" 2>/dev/null)" = 1 ]; do sleep 0.2; done
kill -TERM $pid; wait $pid

# native: a disabled subscription on its own slot.
src -c "CREATE PUBLICATION native FOR TABLE orders" -c "SELECT pg_create_logical_replication_slot('native', 'pgoutput')" >/dev/null
sink native -c "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port=$SRC_PORT user=postgres dbname=postgres' \
  PUBLICATION native WITH (create_slot = false, slot_name = 'native', enabled = false, copy_data = false, streaming = on)"

echo "== writing the backlog: one $ROWS-row transaction, then $SMALL one-row transactions"
src -c "INSERT INTO orders SELECT i, i % 1000, 'new', (i % 10000) / 100.0, 'order number ' || i, now() FROM generate_series(1, $ROWS) i"
seq $((ROWS + 1)) $((ROWS + SMALL)) | awk '{print "INSERT INTO orders VALUES (" $1 ", 7, '\''new'\'', 1.00, '\''small'\'', now());"}' > "$WORK/small.sql"
src -f "$WORK/small.sql"
LAST=$((ROWS + SMALL))

arrived() { [ "$(sink "$1" -c "SELECT count(*) FROM orders WHERE id = $LAST")" = 1 ]; }
now() { date +%s.%N; }

start=$(now)
"$WALPIPE" run & pid=$!
until arrived walpipe; do sleep 0.05; done
walpipe_s=$(echo "$(now) - $start" | bc)
kill -TERM $pid; wait $pid

start=$(now)
sink native -c "ALTER SUBSCRIPTION native ENABLE"
until arrived native; do sleep 0.05; done
native_s=$(echo "$(now) - $start" | bc)

for db in walpipe native; do
  n=$(sink $db -c "SELECT count(*) FROM orders")
  [ "$n" = "$LAST" ] || { echo "$db has $n rows, expected $LAST" >&2; exit 1; }
done
printf 'backlog=%s-row txn + %s one-row txns  native %.2f s  walpipe %.2f s  speed-up walpipe/native = %.2fx\n' \
  "$ROWS" "$SMALL" "$native_s" "$walpipe_s" "$(echo "$native_s / $walpipe_s" | bc -l)"
