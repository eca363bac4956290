#!/usr/bin/env bash
# Benchmark: drain a backlog of changes into a local webhook receiver in
# batches of 1000 (WALPIPE_BATCH_SIZE=1000), side by side in one run with
# pg_recvlogical reading the same backlog from its own slot into /dev/null
# (the server's stream with no consumer work at all), once before and once
# after walpipe's run, and with `walpipe tail > /dev/null` (walpipe's own
# decoding floor: no sink) on its own slot.
#
# The backlog is written while no consumer runs: TXNS transactions of 100
# inserted rows each. walpipe's time runs from `walpipe run` until the
# receiver (scripts/lib/webhook_receiver.py: 204 at once, counts the changes
# of each new Idempotency-Key) has every change; every batch is recorded in
# the state store before and after it is sent, as in production.
#
#   bash benches/webhook_throughput.sh            # TXNS=5000 (500000 changes)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
TXNS=${TXNS:-5000}
CHANGES=$((TXNS * 100))
SRC_PORT=${SRC_PORT:-24542}
HOOK_PORT=${HOOK_PORT:-24590}

workspace_start walpipe-bench-webhook
cluster_start source "$SRC_PORT" fsync=off shared_buffers=256MB max_wal_size=4GB
src() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SRC_PORT" -U postgres -d postgres "$@"; }
src -c "CREATE TABLE orders (id bigint PRIMARY KEY, customer int, status text, amount numeric(12,2), note text, created_at timestamptz)"

python3 scripts/lib/webhook_receiver.py "$HOOK_PORT" count "$CHANGES" "$WORK/done" &
export WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable"
export WALPIPE_SINK_URL="http://127.0.0.1:$HOOK_PORT/hook"
export WALPIPE_JOB_NAME=bench WALPIPE_BATCH_SIZE=1000 WALPIPE_LOG=warn WALPIPE_HTTP_ADDR=127.0.0.1:0
# walpipe: publication, slot and checkpoint (in the state store: the source) on the empty table, then stop.
"$WALPIPE" run & pid=$!
until [ "$(src -c "SELECT count(*) FROM walpipe.checkpoints" 2>/dev/null)" = 1 ]; do sleep 0.2; done
kill -TERM $pid; wait $pid
src -c "CREATE PUBLICATION recv FOR TABLE orders" -c "SELECT pg_create_logical_replication_slot('recv_before', 'pgoutput')" \
    -c "SELECT pg_create_logical_replication_slot('recv_after', 'pgoutput')" \
    -c "SELECT pg_create_logical_replication_slot('decode_only', 'pgoutput')" >/dev/null

echo "== writing the backlog: $TXNS transactions of 100 rows"
seq 0 $((TXNS - 1)) | awk '{s = $1 * 100 + 1; print "INSERT INTO orders SELECT i, i % 1000, '\''new'\'', (i % 10000) / 100.0, '\''order number '\'' || i, now() FROM generate_series(" s ", " s + 99 ") i;"}' > "$WORK/backlog.sql"
src -f "$WORK/backlog.sql"
ENDPOS=$(src -c "SELECT pg_current_wal_lsn()")
src -c "CHECKPOINT"

now() { date +%s.%N; }
recv() { # SLOT: seconds pg_recvlogical takes to drain it
  local start=$(now)
  "$PG_BINDIR/pg_recvlogical" -d "$WALPIPE_SOURCE_URL" -S "$1" --start --endpos="$ENDPOS" \
    -o proto_version=1 -o publication_names=recv -f /dev/null
  echo "$(now) - $start" | bc
}
recv_before=$(recv recv_before)
start=$(now)
"$WALPIPE" tail --slot decode_only --publication recv --endpos "$ENDPOS" --source "$WALPIPE_SOURCE_URL" > /dev/null
tail_s=$(echo "$(now) - $start" | bc)

start=$(now)
"$WALPIPE" run & pid=$!
until [ -s "$WORK/done" ]; do sleep 0.02; done
read -r done_at requests keys bytes < "$WORK/done"
walpipe_s=$(echo "$done_at - $start" | bc)
kill -TERM $pid; wait $pid
recv_after=$(recv recv_after)
recv_s=$(echo "($recv_before + $recv_after) / 2" | bc -l)

printf 'backlog: %d changes in %d transactions; batches of 1000 to a local webhook\n' "$CHANGES" "$TXNS"
printf '  pg_recvlogical > /dev/null  %6.2f s  %8.0f changes/s  (mean of a run before walpipe, %.2f s, and one after, %.2f s)\n' \
  "$recv_s" "$(echo "$CHANGES / $recv_s" | bc -l)" "$recv_before" "$recv_after"
printf '  walpipe tail > /dev/null    %6.2f s  %8.0f changes/s  (decoding only: the floor of any sink)  time ratio tail/pg_recvlogical = %.2f\n' \
  "$tail_s" "$(echo "$CHANGES / $tail_s" | bc -l)" "$(echo "$tail_s / $recv_s" | bc -l)"
printf '  walpipe run -> webhook      %6.2f s  %8.0f changes/s  (%d requests, %d batches, %.0f MB)  time ratio walpipe/pg_recvlogical = %.2f\n' \
  "$walpipe_s" "$(echo "$CHANGES / $walpipe_s" | bc -l)" "$requests" "$keys" "$(echo "$bytes / 1000000" | bc -l)" "$(echo "$walpipe_s / $recv_s" | bc -l)"
