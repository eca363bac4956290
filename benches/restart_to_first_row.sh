#!/usr/bin/env bash
# Benchmark: how long a consumer that was stopped takes to put the first
# waiting change into its sink once started again, walpipe against a native
# subscription, side by side. This is the start every drain of a backlog
# pays, and what a restart (a deploy, a crash) costs before changes flow.
#
# Each round commits one row at the source while the consumers are stopped,
# then starts each in turn (`walpipe run` with its checkpoint and slot in
# place; `ALTER SUBSCRIPTION ... ENABLE`), and takes the time from the start
# until a session on the sink server sees the row (it looks every 1 ms,
# committing after each look). The consumer is stopped again before the
# next one starts. With BASE_WALPIPE, that build runs too, alternating with
# BUILT_WALPIPE (an A/B of a change). Prints the median of ROUNDS rounds.
#
#   bash benches/restart_to_first_row.sh                       # ROUNDS=12
#   BASE_WALPIPE=<old build> bash benches/restart_to_first_row.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
source scripts/lib/orders.sh
ROUNDS=${ROUNDS:-12}
SRC_PORT=${SRC_PORT:-24552}
SINK_PORT=${SINK_PORT:-24553}

workspace_start walpipe-restart
cluster_start source "$SRC_PORT" fsync=off
# The launcher starts apply workers at most once per wal_retrieve_retry_interval (5 s by default).
cluster_start sink "$SINK_PORT" wal_retrieve_retry_interval=50ms
src() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SRC_PORT" -U postgres -d postgres "$@"; }
sink() { local db=$1; shift; "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SINK_PORT" -U postgres -d "$db" "$@"; }

src -c "$ORDERS_TABLE"
builds=(head)
declare -A binary=([head]=$WALPIPE)
if [ -n "${BASE_WALPIPE:-}" ]; then builds=(base head); binary[base]=$(realpath "$BASE_WALPIPE"); fi

# start_walpipe BUILD: `walpipe run` of BUILD in the background (its pid in pid).
start_walpipe() {
  WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable" \
    WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/walpipe_$1?sslmode=disable" \
    WALPIPE_JOB_NAME=$1 WALPIPE_LOG=warn "${binary[$1]}" run & pid=$!
}

# Each walpipe build has its own job (slot, publication) and sink database;
# each is run once so that its checkpoint is in place.
for build in "${builds[@]}"; do
  sink postgres -c "CREATE DATABASE walpipe_$build"
  sink "walpipe_$build" -c "$WAIT_FOR_ROW"
  start_walpipe "$build"
  until [ "$(sink "walpipe_$build" -c "SELECT count(*) FROM walpipe.checkpoints" 2>/dev/null)" = 1 ]; do sleep 0.2; done
  kill -TERM $pid; wait $pid
done
sink postgres -c "CREATE DATABASE native"
sink native -c "$ORDERS_TABLE" -c "$WAIT_FOR_ROW"
src -c "CREATE PUBLICATION native FOR TABLE orders" -c "SELECT pg_create_logical_replication_slot('native', 'pgoutput')" >/dev/null
sink native -c "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port=$SRC_PORT user=postgres dbname=postgres' \
  PUBLICATION native WITH (create_slot = false, slot_name = 'native', enabled = false, copy_data = false)"

# first_row CONSUMER DB ID START-COMMAND...: starts the consumer, and adds
# its seconds to the row ID in DB to $WORK/times.CONSUMER.
first_row() {
  local consumer=$1 db=$2 id=$3 start waiter; shift 3
  sink "$db" -c "CALL wait_for_row($id, 0.001)" > "$WORK/seen" & waiter=$!
  # It waits once its first look found nothing.
  until [ "$(sink "$db" -c "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")" = 1 ]; do sleep 0.01; done
  start=$(date +%s.%N)
  "$@"
  wait $waiter
  echo "$(cat "$WORK/seen") - $start" | bc >> "$WORK/times.$consumer"
}
for round in $(seq 1 "$ROUNDS"); do
  src -c "INSERT INTO orders VALUES ($round, 1, 'new', 1.00, 'restart', now())"
  for build in "${builds[@]}"; do
    first_row "$build" "walpipe_$build" "$round" start_walpipe "$build"
    kill -TERM $pid; wait $pid
  done
  first_row native native "$round" sink native -c "ALTER SUBSCRIPTION native ENABLE"
  sink native -c "ALTER SUBSCRIPTION native DISABLE"
  # The worker exits after DISABLE; the next ENABLE must start a new one.
  until [ "$(sink native -c "SELECT count(*) FROM pg_stat_subscription WHERE subname = 'native' AND pid IS NOT NULL")" = 0 ]; do sleep 0.01; done
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "restart to first row in the sink, median of $ROUNDS rounds (each round's ms in brackets)"
for consumer in "${builds[@]}" native; do
  label=$consumer; [ "$consumer" = head ] && label="walpipe ($WALPIPE)"; [ "$consumer" = base ] && label="walpipe ($BASE_WALPIPE)"
  mapfile -t times < "$WORK/times.$consumer"
  printf '  %-60s %6.1f ms  [%s]\n' "$label" "$(echo "$(median "${times[@]}") * 1000" | bc -l)" \
    "$(for t in "${times[@]}"; do printf '%.0f ' "$(echo "$t * 1000" | bc -l)"; done)"
done
