#!/usr/bin/env bash
# Drill: MySQL's failure mode. A stalled consumer does not fill the
# primary's disk here; the binlog expires under it and its position is lost.
#
# A MariaDB source (Debian's) with binlog_expire_logs_seconds=EXPIRE (60);
# a Postgres sink; walpipe mirroring shop.orders (snapshot_mode=when_needed);
# Prometheus scraping walpipe every 2 s with the rules of alerts/ at drill
# speed (drills/lib/drill_rules.py); Alertmanager routing to a local webhook
# receiver; a writer inserting and deleting rows every 0.5 s.
#
#   1. stall: the job is paused (POST /api/v1/jobs/drill/pause): walpipe
#      reads nothing and its checkpoint freezes, while its binlog monitor
#      keeps reporting (a consumer that stopped for any reason looks alike
#      to the server);
#   2. the binlog rotates (FLUSH BINARY LOGS): the checkpoint's file is now
#      closed and counts down to its expiry (walpipe_slot_expires_in_seconds);
#      WalpipeBinlogExpiresSoon fires;
#   3. the server purges the file at a rotation once it expired (no session
#      of walpipe reads it); WalpipeSlotLost fires;
#   4. the job is resumed: walpipe finds its position purged, records the data
#      gap, streams from the binlog position now and copies the table again
#      in chunks beside the stream, so rows deleted during the gap leave the
#      sink; the sink equals the source; every alert resolves.
#
# Asserted and printed as timestamped evidence, in that order. Output in
# drills/out/binlog-purged/: evidence.log, notifications.jsonl, walpipe.log.
#
#   bash drills/binlog-purged.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EXPIRE=${EXPIRE:-60}
MY_PORT=${MY_PORT:-25434}

source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
source drills/lib/stack.sh
source scripts/lib/mariadb.sh
ensure_monitoring_tools
ensure_mariadb

# The source's and the sink's rows, summed alike on both servers.
summary() { echo "$1" | tr -s ' \t' ':'; }
source_rows() { summary "$(my shop -e "SELECT count(*), coalesce(sum(id), 0), coalesce(sum(customer), 0) FROM orders")"; }
sink_rows() { summary "$(sink -c "SELECT count(*), coalesce(sum(id), 0), coalesce(sum(customer), 0) FROM orders" 2>/dev/null | tr '|' ' ')"; }
converged() { [ "$(source_rows)" = "$(sink_rows)" ]; }
metric() { curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v name="$1" '$1 ~ "^"name"[{ ]" {print $2; exit}'; }
# The binlog file the job's checkpoint is in (the position's high 32 bits).
checkpoint_file() {
  local position; position=$(metric walpipe_slot_confirmed_flush_lsn_bytes)
  [ -n "$position" ] && printf 'binlog.%06d' "$(( ${position%.*} >> 32 ))"
}
has_file() { my -e "SHOW BINARY LOGS" | cut -f1 | grep -qx "$1"; }
firing_has() { firing | tr ' ' '\n' | grep -qx "$1"; }

workspace_start walpipe-drill-binlog
trap 'mariadb_stop; stack_stop; workspace_stop' EXIT
stack_begin drills/out/binlog-purged "binlog purged under a stalled job (binlog_expire_logs_seconds=$EXPIRE)"
cluster_start sink "$SINK_PORT"
mariadb_start "$MY_PORT" --binlog-expire-logs-seconds="$EXPIRE"
my shop -e "CREATE TABLE orders (id bigint AUTO_INCREMENT PRIMARY KEY, customer int, payload varchar(200));
            INSERT INTO orders (customer, payload) SELECT seq % 100, repeat('x', 100) FROM seq_1_to_5000"
evidence "source: MariaDB $(my -e 'SELECT version()'), binlog_expire_logs_seconds=$(my -e 'SELECT @@binlog_expire_logs_seconds'), 5000 rows"
stack_monitoring
env WALPIPE_SOURCE_URL="mysql://walpipe:pw@127.0.0.1:$MY_PORT/shop" \
  WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/postgres?sslmode=disable" \
  WALPIPE_JOB_NAME=drill WALPIPE_TABLES=shop.orders WALPIPE_TABLE_MAPPINGS=shop.orders=public.orders \
  WALPIPE_SNAPSHOT_MODE=when_needed WALPIPE_FLUSH_INTERVAL_MS=200 WALPIPE_HTTP_ADDR="127.0.0.1:$HTTP_PORT" \
  "$WALPIPE" run >> "$OUT/walpipe.log" 2>&1 &
WALPIPE_PID=$!
wait_until 60 "walpipe copies the table" converged
wait_until 60 "Prometheus scrapes walpipe" bash -c "curl -s 'http://127.0.0.1:$PROM_PORT/api/v1/query?query=up' | grep -q '\"1\"'"
(
  while true; do
    my shop -e "INSERT INTO orders (customer, payload) SELECT seq % 100, md5(rand()) FROM seq_1_to_20;
                DELETE FROM orders ORDER BY id LIMIT 5" >/dev/null 2>&1 || true
    sleep 0.5
  done
) &
WRITER_PID=$!
sleep 4
evidence "walpipe streams; the checkpoint is in $(checkpoint_file); alerts firing: $(firing || true)"
[ -z "$(metric walpipe_slot_expires_in_seconds)" ] || fail "a countdown while the checkpoint's file is still written"

# 1. The stall. A paused job holds no binlog session, so the purge below
# does not depend on when a stalled session would be closed and reopened
# (a stuck sink made the file's purge race walpipe's reconnect).
api() { curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$HTTP_PORT/api/v1/jobs/drill/$1?wait=60s"; }
[ "$(api pause)" = 200 ] || fail "walpipe did not pause the job"
stalled=$(checkpoint_file)
evidence "stall: the job is paused; the checkpoint stays in $stalled"

# 2. The rotation: the checkpoint's file is closed and counts down.
my -e "FLUSH BINARY LOGS"
counting_down() { [ -n "$(metric walpipe_slot_expires_in_seconds)" ]; }
wait_until 30 "the expiry countdown" counting_down
evidence "binlog rotated: $stalled is closed; walpipe_slot_expires_in_seconds = $(metric walpipe_slot_expires_in_seconds)"
wait_until 60 "WalpipeBinlogExpiresSoon fires" firing_has WalpipeBinlogExpiresSoon
evidence "alert firing: WalpipeBinlogExpiresSoon ($(metric walpipe_slot_expires_in_seconds) s left); $stalled is still on the server: $(has_file "$stalled" && echo yes || echo no)"
has_file "$stalled" || fail "the file was purged before the alert fired"

# 3. The purge: at a rotation after the expiry, once no session reads the file.
purged() { my -e "FLUSH BINARY LOGS" && ! has_file "$stalled"; }
wait_until $((EXPIRE + 180)) "the server purges $stalled" purged
evidence "the server purged $stalled (binlog_expire_logs_seconds): oldest file now $(my -e 'SHOW BINARY LOGS' | head -1 | cut -f1)"
wait_until 60 "WalpipeSlotLost fires" firing_has WalpipeSlotLost
evidence "alert firing: WalpipeSlotLost (walpipe_slot_wal_status lost = $(curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | grep '^walpipe_slot_wal_status{.*status="lost"' | awk '{print $2}'))"

# 4. Recovery.
[ "$(api resume)" = 200 ] || fail "walpipe did not resume the job"
stall_over=$(now)
evidence "stall over: the job is resumed"
sleep 4
kill "$WRITER_PID"; wait "$WRITER_PID" 2>/dev/null || true
evidence "writer stopped: $(my shop -e 'SELECT count(*) FROM orders') rows at the source"
wait_until 180 "the sink equals the source again" converged
evidence "the sink equals the source ($(sink_rows)), $(awk -v from="$stall_over" -v now="$(now)" 'BEGIN { printf "%.1f", now - from }') s after the stall ended"
grep -q "was purged" "$OUT/walpipe.log" || fail "walpipe did not report the purged position"
gap=$(sink -c "SELECT gap_from FROM walpipe.data_gaps WHERE job_name = 'drill' ORDER BY detected_at DESC LIMIT 1")
[ -n "$gap" ] || fail "no data gap was recorded"
removed=$(grep -o 'snapshot shop.orders: removed [0-9]* rows the source no longer has' "$OUT/walpipe.log" | tail -1 || true)
[ -n "$removed" ] || fail "the copy after the purge did not reconcile the sink"
evidence "walpipe: $(grep -m1 'was purged' "$OUT/walpipe.log" | sed 's/^.*\(the binlog file\)/\1/' | cut -c1-160)"
evidence "walpipe: data gap from $gap recorded; copied again in chunks beside the stream; ${removed#snapshot shop.orders: } (deleted during the gap)"
order=$(python3 -c '
import json, sys
first = {}
for line in open(sys.argv[1]):
    for alert in json.loads(line)["notification"]["alerts"]:
        if alert["status"] == "firing":
            first.setdefault(alert["labels"]["alertname"], alert["startsAt"])
print(" < ".join(name for name, _ in sorted(first.items(), key=lambda item: item[1])))' "$OUT/notifications.jsonl")
evidence "notifications, in order of firing: $order"
case "$order" in *WalpipeBinlogExpiresSoon*WalpipeSlotLost*) ;; *) fail "WalpipeBinlogExpiresSoon did not fire before WalpipeSlotLost";; esac
evidence "after recovery: checkpoint in $(checkpoint_file), binlog written in $(my -e 'SHOW MASTER STATUS' | cut -f1); expires_in '$(metric walpipe_slot_expires_in_seconds)'; alerts firing: $(firing || true)"
stack_alerts_resolve
evidence "== passed: $EVIDENCE"
