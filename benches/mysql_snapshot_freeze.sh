#!/usr/bin/env bash
# Benchmark: the write-freeze window of the MySQL/MariaDB source's two
# snapshots side by side, blocking (WALPIPE_SNAPSHOT_STRATEGY=exported:
# FLUSH TABLES WITH READ LOCK, then one consistent read) and incremental
# (chunked: chunks between watermarks, no lock), on a ROWS-row table under a
# steady write load, each in two cases:
#   plain:   nothing else runs on the server;
#   outage:  a SELECT that runs for HOLD seconds is already running when the
#            copy starts (the classic outage for the blocking snapshot: its
#            lock waits for the SELECT, and every write waits for the lock).
# The load is one session inserting a row at a time into `ticks` (no pause),
# each row stamped with the server's clock; a write's latency is the gap to
# the row before it. Reported per case: the longest gap during the copy (the
# freeze), the p99 gap during the copy against the 5 s before it, the copy's
# time (walpipe start to "snapshot done", or the last chunk placed) and the
# time from start to the first streamed change in the Postgres sink (a row
# written just after the stream's start is fixed). Debian's MariaDB, the local PG15.
#
#   BUILT_WALPIPE=target/release/walpipe bash benches/mysql_snapshot_freeze.sh   # ROWS=5000000 HOLD=30
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
ensure_mariadb
ROWS=${ROWS:-5000000}
HOLD=${HOLD:-30}
SINK_PORT=${SINK_PORT:-24652}
MY_PORT=${MY_PORT:-24653}

workspace_start walpipe-mysql-freeze
cluster_start sink "$SINK_PORT" shared_buffers=256MB max_wal_size=4GB
psql_at() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SINK_PORT" -U postgres -d "$1" -c "$2"; }

source scripts/lib/mariadb.sh
mariadb_start "$MY_PORT" --innodb-buffer-pool-size=512M
trap 'mariadb_stop; workspace_stop' EXIT
my shop -e "CREATE TABLE orders (id bigint PRIMARY KEY, customer int, status varchar(20), amount decimal(12,2), note varchar(100), created_at datetime(6));
            CREATE TABLE ticks (id bigint AUTO_INCREMENT PRIMARY KEY, at datetime(6) NOT NULL);
            INSERT INTO orders SELECT seq, seq % 1000, 'new', (seq % 10000) / 100, concat('order number ', seq), now(6) FROM seq_1_to_$ROWS"

# One session, one insert after another, each stamped by the server, until
# the case's stop file appears (the client then reads its end and exits).
load() { while [ ! -e "$WORK/stop.$1" ]; do echo "INSERT INTO ticks (at) VALUES (now(6));"; done | my shop 2>/dev/null; }

# gaps FROM TO: the gaps (ms) between consecutive ticks stamped in [FROM, TO), one per line.
gaps() {
  my shop -e "SELECT round(timestampdiff(MICROSECOND, lag(at) OVER (ORDER BY id), at) / 1000, 3) FROM ticks WHERE at >= '$1' AND at < '$2'" | grep -v NULL
}
p99() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) {print "n/a"; exit} i=int(NR*0.99); if (i < 1) i=1; print a[i]}'; }
maxof() { sort -n | tail -1; }
server_now() { my -e "SELECT now(6)"; }

run_case() {
  local strategy=$1 name=$2 marker=$(( ROWS + $3 )) job="freeze_$1_$2"
  local copied_line="snapshot done"
  [ "$strategy" = chunked ] && copied_line="its last chunk took its place in the stream"
  psql_at postgres "CREATE DATABASE $job"
  load "$name" & local load_pid=$!
  sleep 5
  local before; before=$(server_now)
  sleep 5
  if [ "$name" = outage ]; then
    # Reads the table for about HOLD seconds (a millisecond per row).
    my shop -e "SELECT count(*) FROM orders WHERE id <= $HOLD * 1000 AND sleep(0.001) = 0" >/dev/null 2>&1 &
    sleep 1
  fi
  local started; started=$(server_now)
  local t0; t0=$(date +%s.%N)
  WALPIPE_SOURCE_URL="mysql://walpipe:pw@127.0.0.1:$MY_PORT/shop" \
  WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/$job?sslmode=disable" \
  WALPIPE_STATE_URL="postgres://postgres@127.0.0.1:$SINK_PORT/$job?sslmode=disable" \
  WALPIPE_JOB_NAME="$job" WALPIPE_SNAPSHOT_STRATEGY="$strategy" WALPIPE_TABLES=shop.orders WALPIPE_TABLE_MAPPINGS=shop.orders=public.orders \
  WALPIPE_HTTP_ADDR=127.0.0.1:0 "$WALPIPE" run > "$WORK/$job.log" 2>&1 &
  local walpipe_pid=$!
  # The first streamed change: a row written once the stream's start is
  # fixed, timed until it is in the sink (the incremental copy streams
  # while it copies; the blocking one after).
  until grep -qE "the blocking snapshot is open|the stream starts at the binlog position now" "$WORK/$job.log"; do sleep 0.05; done
  my shop -e "INSERT INTO orders VALUES ($marker, 1, 'marker', 1, 'first streamed', now(6))"
  (
    until [ "$(psql_at "$job" "SELECT count(*) FROM public.orders WHERE id = $marker" 2>/dev/null)" = 1 ]; do sleep 0.05; done
    echo "$(date +%s.%N) - $t0" | bc > "$WORK/first.$job"
  ) &
  local first_pid=$!
  until grep -q "$copied_line" "$WORK/$job.log"; do sleep 0.1; done
  local copied; copied=$(echo "$(date +%s.%N) - $t0" | bc)
  local done_at; done_at=$(server_now)
  wait "$first_pid"
  local first; first=$(cat "$WORK/first.$job")
  kill "$walpipe_pid"; wait "$walpipe_pid" 2>/dev/null || true
  touch "$WORK/stop.$name"; wait "$load_pid" 2>/dev/null || true
  rm -f "$WORK/stop.$name"; my shop -e "DELETE FROM orders WHERE id > $ROWS"
  local freeze p99_copy p99_before
  freeze=$(gaps "$started" "$done_at" | maxof)
  p99_copy=$(gaps "$started" "$done_at" | p99)
  p99_before=$(gaps "$before" "$started" | p99)
  printf '%-11s %-7s rows=%s  freeze (longest write stall) %8s ms  p99 write gap: copy %s ms, before %s ms  copy %.2f s  first streamed change %.2f s\n' \
    "$([ "$strategy" = chunked ] && echo incremental || echo blocking)" "$name" "$ROWS" "$freeze" "$p99_copy" "$p99_before" "$copied" "$first"
}

run_case exported plain 1
run_case chunked plain 2
run_case exported outage 3
run_case chunked outage 4
