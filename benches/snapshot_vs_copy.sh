#!/usr/bin/env bash
# Benchmark: the initial copy of a ROWS-row table into a Postgres sink,
# walpipe (snapshot_mode=initial_only: create the slot, copy under its
# exported snapshot, stop) vs a plain COPY pipe between the same clusters
#   psql -c 'COPY t TO STDOUT' | psql -c 'COPY t FROM STDIN'
# alternating ROUNDS times each (ABBA order, a CHECKPOINT on the sink before
# each run), into fresh sink databases; medians and ratio.
#
#   bash benches/snapshot_vs_copy.sh            # ROWS=1000000 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-3}
SRC_PORT=${SRC_PORT:-24632}
SINK_PORT=${SINK_PORT:-24633}

workspace_start walpipe-bench
cluster_start source "$SRC_PORT" shared_buffers=256MB max_wal_size=4GB
cluster_start sink "$SINK_PORT" shared_buffers=256MB max_wal_size=4GB
psql_at() { local port=$1 db=$2; shift 2; "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"; }
TABLE="CREATE TABLE t (id bigint PRIMARY KEY, customer int, status text, amount numeric(12,2), note text, created_at timestamptz)"
psql_at "$SRC_PORT" postgres -c "$TABLE"
psql_at "$SRC_PORT" postgres -c "INSERT INTO t SELECT i, i % 1000, 'new', (i % 10000) / 100.0, 'order number ' || i, now() FROM generate_series(1, $ROWS) i"
psql_at "$SRC_PORT" postgres -c "VACUUM ANALYZE t"

seconds() { local start=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $start" | bc; }
copy_pipe() {
  psql_at "$SRC_PORT" postgres -c "COPY t TO STDOUT" | psql_at "$SINK_PORT" "$1" -c "COPY t FROM STDIN"
}
walpipe_copy() {
  WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable" \
  WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/$1?sslmode=disable" \
  WALPIPE_JOB_NAME="$1" WALPIPE_SNAPSHOT_MODE=initial_only WALPIPE_LOG=warn "$WALPIPE" run
}
pipe_times=(); walpipe_times=()
for i in $(seq 1 "$ROUNDS"); do
  psql_at "$SINK_PORT" postgres -c "CREATE DATABASE pipe_$i" -c "CREATE DATABASE walpipe_$i"
  psql_at "$SINK_PORT" "pipe_$i" -c "$TABLE"
  if [ $((i % 2)) = 1 ]; then
    psql_at "$SINK_PORT" postgres -c CHECKPOINT; pipe_times+=("$(seconds copy_pipe "pipe_$i")")
    psql_at "$SINK_PORT" postgres -c CHECKPOINT; walpipe_times+=("$(seconds walpipe_copy "walpipe_$i")")
  else
    psql_at "$SINK_PORT" postgres -c CHECKPOINT; walpipe_times+=("$(seconds walpipe_copy "walpipe_$i")")
    psql_at "$SINK_PORT" postgres -c CHECKPOINT; pipe_times+=("$(seconds copy_pipe "pipe_$i")")
  fi
  for db in "pipe_$i" "walpipe_$i"; do
    n=$(psql_at "$SINK_PORT" "$db" -c "SELECT count(*) FROM t")
    [ "$n" = "$ROWS" ] || { echo "$db has $n rows, expected $ROWS" >&2; exit 1; }
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
pipe=$(median "${pipe_times[@]}"); mine=$(median "${walpipe_times[@]}")
echo "COPY pipe runs (s): ${pipe_times[*]}"
echo "walpipe runs (s):   ${walpipe_times[*]}"
printf 'rows=%s  COPY pipe median %.2f s (%.0f rows/s)  walpipe median %.2f s (%.0f rows/s)  walpipe speed / COPY pipe speed = %.2fx\n' \
  "$ROWS" "$pipe" "$(echo "$ROWS / $pipe" | bc -l)" "$mine" "$(echo "$ROWS / $mine" | bc -l)" "$(echo "$pipe / $mine" | bc -l)"
