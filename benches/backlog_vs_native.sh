#!/usr/bin/env bash
# Benchmark: drain one backlog into a Postgres sink, walpipe vs PostgreSQL's
# native logical replication (CREATE SUBSCRIPTION), side by side in one run.
#
# The backlog is written while no consumer runs: one transaction of ROWS
# rows, then SMALL one-row transactions. Each consumer has its own slot
# (created before the backlog) and its own database in one sink cluster
# (default durability: fsync on); the time is from start (walpipe run /
# ALTER SUBSCRIPTION ENABLE) until a session on the sink server sees the
# backlog's last row. Native runs twice: with the subscription defaults
# (streaming off: the server spills the big transaction) and with
# streaming = on. As floors for any consumer of one slot, `walpipe tail >
# /dev/null` drains the same backlog first (decoding only, no sink), after
# a first decode of it on a slot of its own that warms the caches and is
# not counted. It drains it twice, each time from a slot of its own, and the
# faster drain is the floor: a drain falls now and then into a mode where
# the walsender sends about one TCP segment per message and spends nearly
# twice the CPU (BENCHMARKS.md, 2026-12-06), and a floor should not be a
# slow draw. Then `pg_recvlogical -f /dev/null` (PostgreSQL's own client,
# the same publication, protocol 2 with streaming on, as walpipe asks) on
# another. For every run the CPU time of the server's walsender is sampled
# too (the part no consumer can skip), with the consumer's own (walpipe, or
# the native apply worker) and, for walpipe, its sink sessions' backends.
# So is the number of TCP segments the host sent during each drain
# (/proc/net/snmp; nearly all of them carry the walsender's messages): on
# loopback the walsender pays for each segment it sends, and a consumer
# that lags behind gets the same messages in fewer, fuller segments
# (BENCHMARKS.md, 2026-12-06: what the walsender pays per segment).
#
#   bash benches/backlog_vs_native.sh            # ROWS=500000 SMALL=50000
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
source scripts/lib/orders.sh
ROWS=${ROWS:-500000}
SMALL=${SMALL:-50000}
SRC_PORT=${SRC_PORT:-24532}
SINK_PORT=${SINK_PORT:-24533}

workspace_start walpipe-bench
cluster_start source "$SRC_PORT" fsync=off shared_buffers=256MB max_wal_size=4GB
# The launcher starts apply workers at most once per
# wal_retrieve_retry_interval (5 s by default): the second subscription
# enabled would wait for it, and that wait is not replication.
cluster_start sink "$SINK_PORT" shared_buffers=256MB max_wal_size=4GB wal_retrieve_retry_interval=50ms
src() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SRC_PORT" -U postgres -d postgres "$@"; }
sink() { local db=$1; shift; "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SINK_PORT" -U postgres -d "$db" "$@"; }

src -c "$ORDERS_TABLE"
NATIVE=(native_default native_streaming)
sink postgres -c "CREATE DATABASE walpipe"
for db in "${NATIVE[@]}"; do sink postgres -c "CREATE DATABASE $db"; sink $db -c "$ORDERS_TABLE"; done

# walpipe: create its publication, slot, tables and checkpoint on the empty table, then stop.
export WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable"
export WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/walpipe?sslmode=disable"
export WALPIPE_JOB_NAME=bench WALPIPE_LOG=warn
"$WALPIPE" run & pid=$!
until [ "$(sink walpipe -c "SELECT count(*) FROM walpipe.checkpoints" 2>/dev/null)" = 1 ]; do sleep 0.2; done
kill -TERM $pid; wait $pid

LAST=$((ROWS + SMALL))
# A consumer's time ends when a session on its sink server sees the
# backlog's last row (it looks every 2 ms: WAIT_FOR_ROW).
for db in walpipe "${NATIVE[@]}"; do sink $db -c "$WAIT_FOR_ROW"; done

# native: disabled subscriptions, each on its own slot.
src -c "CREATE PUBLICATION native FOR TABLE orders"
for db in "${NATIVE[@]}"; do
  src -c "SELECT pg_create_logical_replication_slot('$db', 'pgoutput')" >/dev/null
  streaming=off; [ "$db" = native_streaming ] && streaming=on
  sink $db -c "CREATE SUBSCRIPTION $db CONNECTION 'host=127.0.0.1 port=$SRC_PORT user=postgres dbname=postgres' \
    PUBLICATION native WITH (create_slot = false, slot_name = '$db', enabled = false, copy_data = false, streaming = $streaming)"
done

src -c "CREATE PUBLICATION decode_only FOR TABLE orders" \
  -c "SELECT pg_create_logical_replication_slot('decode_only', 'pgoutput')" \
  -c "SELECT pg_create_logical_replication_slot('decode_again', 'pgoutput')" \
  -c "SELECT pg_create_logical_replication_slot('decode_warm_up', 'pgoutput')" \
  -c "SELECT pg_create_logical_replication_slot('recvlogical', 'pgoutput')" >/dev/null
echo "== writing the backlog: one $ROWS-row transaction, then $SMALL one-row transactions"
src -c "INSERT INTO orders SELECT i, i % 1000, 'new', (i % 10000) / 100.0, 'order number ' || i, now() FROM generate_series(1, $ROWS) i"
seq $((ROWS + 1)) $((ROWS + SMALL)) | awk '{print "INSERT INTO orders VALUES (" $1 ", 7, '\''new'\'', 1.00, '\''small'\'', now());"}' > "$WORK/small.sql"
src -f "$WORK/small.sql"

now() { date +%s.%N; }
# walsender_cpu SLOT: CPU seconds (user + system) so far of the walsender serving SLOT.
walsender_cpu() {
  local pid
  pid=$(src -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$1'")
  [ -n "$pid" ] && awk '{print ($14 + $15) / 100}' "/proc/$pid/stat" 2>/dev/null
}
# watch_for_last DB: a session on DB's sink waits for the last row, in the background.
watch_for_last() {
  sink "$1" -c "CALL wait_for_row($LAST, 0.002)" > "$WORK/arrival.$1" & waiter=$!
  # It waits once its first look found nothing: then its snapshot is taken.
  until [ "$(sink "$1" -c "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")" = 1 ]; do sleep 0.01; done
}
# wait_sampling DB SLOT: wait for the watcher of DB, keeping the walsender's
# CPU in ws_cpu; the time the last row was seen goes in arrival.
wait_sampling() {
  ws_cpu=0
  while kill -0 $waiter 2>/dev/null; do ws_cpu=$(walsender_cpu "$2" || echo "$ws_cpu"); sleep 0.05; done
  wait $waiter
  ws_cpu=$(walsender_cpu "$2" || echo "$ws_cpu")
  arrival=$(cat "$WORK/arrival.$1")
}
declare -A walsender_s
# drain_sampling SLOT COMMAND...: runs COMMAND (a decoder of SLOT, output to
# /dev/null) to its end; prints its seconds, and keeps the walsender's CPU
# in $WORK/walsender.SLOT and the TCP segments sent in $WORK/segments.SLOT.
drain_sampling() {
  local slot=$1 start pid cpu=0 segments_before; shift
  segments_before=$(tcp_segments)
  start=$(now)
  "$@" > /dev/null & pid=$!
  while kill -0 $pid 2>/dev/null; do cpu=$(walsender_cpu "$slot" || echo "$cpu"); sleep 0.05; done
  wait $pid
  echo "$cpu" > "$WORK/walsender.$slot"
  echo "$(($(tcp_segments) - segments_before))" > "$WORK/segments.$slot"
  echo "$(now) - $start" | bc
}

# tcp_segments: TCP segments this host has sent so far.
tcp_segments() {
  awk '$1 == "Tcp:" && $2 != "RtoAlgorithm" {print $12}' /proc/net/snmp
}
declare -A segments

# cpu_of PID...: CPU seconds (user + system) so far of these processes.
cpu_of() {
  local pid total=0
  for pid in "$@"; do
    total=$(awk -v total="$total" '{print total + ($14 + $15) / 100}' "/proc/$pid/stat" 2>/dev/null || echo "$total")
  done
  echo "$total"
}
declare -A consumer_s sink_s

ENDPOS=$(src -c "SELECT pg_current_wal_lsn()")
"$WALPIPE" tail --slot decode_warm_up --publication decode_only --endpos "$ENDPOS" --source "$WALPIPE_SOURCE_URL" > /dev/null
declare -A decode_drain_s
for slot in decode_only decode_again; do
  decode_drain_s[$slot]=$(drain_sampling $slot "$WALPIPE" tail --slot $slot --publication decode_only --endpos "$ENDPOS" \
    --source "$WALPIPE_SOURCE_URL")
done
# The floor is the faster drain; the other is printed too.
floor_slot=decode_only other_slot=decode_again
if (( $(echo "${decode_drain_s[decode_again]} < ${decode_drain_s[decode_only]}" | bc) )); then
  floor_slot=decode_again other_slot=decode_only
fi
decode_s=${decode_drain_s[$floor_slot]}
walsender_s[decode]=$(cat "$WORK/walsender.$floor_slot")
segments[decode]=$(cat "$WORK/segments.$floor_slot")
recvlogical_s=$(drain_sampling recvlogical "$PG_BINDIR/pg_recvlogical" -d "${WALPIPE_SOURCE_URL%%\?*}" -S recvlogical \
  --start --endpos="$ENDPOS" -o proto_version=2 -o streaming=on -o publication_names=decode_only -f /dev/null)
walsender_s[recvlogical]=$(cat "$WORK/walsender.recvlogical")
segments[recvlogical]=$(cat "$WORK/segments.recvlogical")

watch_for_last walpipe
segments_before=$(tcp_segments)
start=$(now)
"$WALPIPE" run & pid=$!
wait_sampling walpipe walpipe_bench
walpipe_s=$(echo "$arrival - $start" | bc)
walsender_s[walpipe]=$ws_cpu
segments[walpipe]=$(($(tcp_segments) - segments_before))
consumer_s[walpipe]=$(cpu_of $pid)
# shellcheck disable=SC2046 # one pid per word
sink_s[walpipe]=$(cpu_of $(sink postgres -c "SELECT pid FROM pg_stat_activity WHERE datname = 'walpipe' AND backend_type = 'client backend'"))
kill -TERM $pid; wait $pid

declare -A native_s
for db in "${NATIVE[@]}"; do
  watch_for_last $db
  segments_before=$(tcp_segments)
  start=$(now)
  sink $db -c "ALTER SUBSCRIPTION $db ENABLE"
  wait_sampling $db $db
  native_s[$db]=$(echo "$arrival - $start" | bc)
  walsender_s[$db]=$ws_cpu
  segments[$db]=$(($(tcp_segments) - segments_before))
  # shellcheck disable=SC2046 # one pid per word
  consumer_s[$db]=$(cpu_of $(sink "$db" -c "SELECT pid FROM pg_stat_subscription WHERE subname = '$db' AND relid IS NULL"))
  sink $db -c "ALTER SUBSCRIPTION $db DISABLE"
done

for db in walpipe "${NATIVE[@]}"; do
  n=$(sink $db -c "SELECT count(*) FROM orders")
  [ "$n" = "$LAST" ] || { echo "$db has $n rows, expected $LAST" >&2; exit 1; }
done
echo "backlog: one $ROWS-row transaction + $SMALL one-row transactions, sink with fsync on"
printf '  walpipe tail > /dev/null (decoding only) %6.2f s   walsender CPU %5.2f s   (the faster of two drains)\n' "$decode_s" "${walsender_s[decode]}"
printf '  walpipe tail, the other drain           %6.2f s   walsender CPU %5.2f s   TCP segments %s\n' \
  "${decode_drain_s[$other_slot]}" "$(cat "$WORK/walsender.$other_slot")" "$(cat "$WORK/segments.$other_slot")"
printf '  pg_recvlogical -f /dev/null            %6.2f s   walsender CPU %5.2f s\n' "$recvlogical_s" "${walsender_s[recvlogical]}"
printf '  walpipe run                           %6.2f s   walsender CPU %5.2f s   walpipe CPU %5.2f s   sink backends CPU %5.2f s\n' \
  "$walpipe_s" "${walsender_s[walpipe]}" "${consumer_s[walpipe]}" "${sink_s[walpipe]}"
for db in "${NATIVE[@]}"; do
  printf '  native (%-17s)          %6.2f s   walsender CPU %5.2f s   apply worker CPU %5.2f s   walpipe speed-up %.2fx\n' "$db" "${native_s[$db]}" \
    "${walsender_s[$db]}" "${consumer_s[$db]}" "$(echo "${native_s[$db]} / $walpipe_s" | bc -l)"
done
printf '  walpipe run / pg_recvlogical %.2fx   native (defaults) / pg_recvlogical %.2fx\n' \
  "$(echo "$walpipe_s / $recvlogical_s" | bc -l)" "$(echo "${native_s[native_default]} / $recvlogical_s" | bc -l)"
printf '  TCP segments sent during each drain: tail: %s, pg_recvlogical: %s, walpipe run: %s' \
  "${segments[decode]}" "${segments[recvlogical]}" "${segments[walpipe]}"
for db in "${NATIVE[@]}"; do printf ', %s: %s' "$db" "${segments[$db]}"; done
echo
