#!/usr/bin/env bash
# Benchmark: how much the walsender pays to send one backlog, drain after
# drain, and how that depends on the host's TCP congestion control.
#
# SMALL one-row transactions are written once; then `walpipe tail >
# /dev/null` drains them DRAINS times, each from a slot of its own (after a
# first drain that warms the caches and is not printed). For each drain it
# prints the time, the CPU time of the walsender that served it, and the
# TCP segments and pure ACKs the host sent and took meanwhile (nstat; on
# loopback nearly all segments carry the walsender's messages).
#
# The walsender sends each pgoutput message as soon as it is decoded
# (TCP_NODELAY). Whether the kernel sends it in a segment of its own, or
# queues it behind others into a full one, decides what the walsender pays
# (BENCHMARKS.md, 2026-12-06 and 2026-12-07). Under BBR the connection is
# paced, and a drain is either cheap or about twice as costly; under CUBIC
# (the Linux default) nothing holds the messages back.
#
# CONGESTION=cubic (or bbr, reno) sets net.ipv4.tcp_congestion_control for
# the run, before the source server starts listening, and puts the old value
# back at the end. It needs root. Unset, the host's setting is used.
#
#   bash benches/walsender_segments.sh            # SMALL=100000 DRAINS=6
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
source scripts/lib/orders.sh
SMALL=${SMALL:-100000}
DRAINS=${DRAINS:-6}
PORT=${PORT:-24632}
SYSCTL=/proc/sys/net/ipv4/tcp_congestion_control

workspace_start walpipe-bench
if [ -n "${CONGESTION:-}" ]; then
  previous=$(cat "$SYSCTL")
  trap 'echo "$previous" > "$SYSCTL"; workspace_stop' EXIT
  echo "$CONGESTION" > "$SYSCTL"
fi
echo "TCP congestion control: $(cat "$SYSCTL")"
cluster_start source "$PORT" fsync=off shared_buffers=256MB max_wal_size=4GB
src() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"; }
src -c "$ORDERS_TABLE" -c "CREATE PUBLICATION bench FOR TABLE orders"
for i in $(seq 0 "$DRAINS"); do src -c "SELECT pg_create_logical_replication_slot('drain_$i', 'pgoutput')" >/dev/null; done
seq 1 "$SMALL" | awk '{print "INSERT INTO orders VALUES (" $1 ", 7, '\''new'\'', 1.00, '\''small'\'', now());"}' > "$WORK/small.sql"
src -f "$WORK/small.sql"
ENDPOS=$(src -c "SELECT pg_current_wal_lsn()")
URL="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable"
export WALPIPE_LOG=warn
drain() { "$WALPIPE" tail --slot "drain_$1" --publication bench --endpos "$ENDPOS" --source "$URL" > /dev/null; }
drain 0

# counter NAME: its value in the nstat output on stdin (0 if absent).
counter() { awk -v name="$1" '$1 == name {value = $2} END {print value + 0}'; }
echo "$SMALL one-row transactions, drained $DRAINS times by walpipe tail"
nstat -n > /dev/null
for i in $(seq 1 "$DRAINS"); do
  start=$(date +%s.%N)
  drain "$i" & pid=$!
  cpu=0
  while kill -0 $pid 2>/dev/null; do
    walsender=$(src -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'drain_$i'")
    [ -n "$walsender" ] && cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$walsender/stat" 2>/dev/null || echo "$cpu")
    sleep 0.05
  done
  wait $pid
  seconds=$(echo "$(date +%s.%N) - $start" | bc)
  counters=$(nstat)
  printf '  drain %d   %5.2f s   walsender CPU %5.2f s   TCP segments %7d   pure ACKs taken %5d\n' \
    "$i" "$seconds" "$cpu" "$(counter TcpOutSegs <<< "$counters")" "$(counter TcpExtTCPPureAcks <<< "$counters")"
done
