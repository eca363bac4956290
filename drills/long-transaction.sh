#!/usr/bin/env bash
# Drill, the negative control: a long-running transaction on the source pins
# the slot's restart_lsn while walpipe is healthy and keeps confirming.
# WalpipeRestartLsnPinned fires; the alerts that blame the consumer (not
# confirming, sink stalled, heartbeat, slot inactive, emit lag, down) stay
# silent. Then the transaction ends, restart_lsn moves, everything resolves.
#
# Same stack as drills/stalled-slot.sh (real Prometheus with drill-speed
# rules, Alertmanager, a receiver); the cap is 1 GB so that only the pin
# shows. Output in drills/out/long-transaction/.
#
#   bash drills/long-transaction.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
source drills/lib/stack.sh
ensure_monitoring_tools
command -v gnuplot >/dev/null || apt_install gnuplot-nox

workspace_start walpipe-drill
trap 'stack_stop; workspace_stop' EXIT
stack_begin drills/out/long-transaction "long transaction: restart_lsn pinned while walpipe confirms"
stack_clusters 0 max_slot_wal_keep_size=1GB checkpoint_timeout=30s
stack_monitoring
stack_walpipe
stack_sampler

src -c "BEGIN; INSERT INTO orders (customer, payload) VALUES (-1, 'held open'); SELECT pg_sleep(3600)" >/dev/null 2>&1 &
wait_until 10 "the long transaction holds an xid" bash -c "[ \"\$(${PG_BINDIR}/psql -X -At -h 127.0.0.1 -p $SRC_PORT -U postgres -d postgres -c \"SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND query LIKE '%pg_sleep(3600)%'\")\" = 1 ]"
evidence "a transaction with an xid is held open: $(src -c "SELECT 'pid ' || pid || ', xid ' || backend_xid || ', started ' || xact_start FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3600)%' AND backend_xid IS NOT NULL")"
stack_writer 300
wait_until 180 "WalpipeRestartLsnPinned fires" bash -c "curl -s 'http://127.0.0.1:$PROM_PORT/api/v1/alerts' | grep -q '\"alertname\":\"WalpipeRestartLsnPinned\".*\"state\":\"firing\"\|\"state\":\"firing\".*\"alertname\":\"WalpipeRestartLsnPinned\"'"
evidence "the slot as the on-call sees it: $(slot_field "'restart_lsn ' || restart_lsn || ', confirmed_flush_lsn ' || confirmed_flush_lsn || ', retained ' || pg_size_pretty(pg_current_wal_lsn() - restart_lsn)")"
evidence "the oldest transaction: $(src -c "SELECT 'pid ' || pid || ', age ' || date_trunc('second', now() - xact_start) FROM pg_stat_activity WHERE backend_xid IS NOT NULL ORDER BY xact_start LIMIT 1")"
sleep 10
evidence "alerts firing: $(firing)"

src -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3600)%' AND pid <> pg_backend_pid()" >/dev/null
evidence "the long transaction ended (terminated): restart_lsn can move"
sleep 5
kill "$WRITER_PID"; wait "$WRITER_PID" 2>/dev/null || true
wait_until 60 "the sink equals the source" converged
wait_until 120 "restart_lsn moved on" bash -c "[ \"\$(${PG_BINDIR}/psql -X -At -h 127.0.0.1 -p $SRC_PORT -U postgres -d postgres -c \"SELECT (pg_current_wal_lsn() - restart_lsn) < 16777216 FROM pg_replication_slots WHERE slot_name = 'walpipe_drill'\")\" = t ]"
evidence "restart_lsn moved: $(slot_field "'retained ' || pg_size_pretty(pg_current_wal_lsn() - restart_lsn)")"
stack_alerts_resolve
kill "$SAMPLER_PID"; wait "$SAMPLER_PID" 2>/dev/null || true
python3 drills/lib/judge.py L "$OUT/series.csv" "$OUT/notifications.jsonl" | tee -a "$EVIDENCE"
stack_plot
evidence "== long-transaction drill passed: $OUT/evidence.log, $OUT/series.csv, $OUT/plot.png"
