#!/usr/bin/env bash
# Drill: a slot on a quiet database must not pin the WAL other databases
# write. Writes go only to database "other" of the source cluster; walpipe
# streams database "postgres", which receives nothing. With walpipe's
# heartbeat and keepalive confirmation off, the slot's retained WAL grows
# with every byte "other" writes; with them on (the default), it stays flat.
# Each phase is measured in WAL written (PHASE_MB), not in seconds, so that
# a slow, loaded machine writes as much as a fast one before the verdict.
# Output in drills/out/idle-database/ (evidence.log, series.csv, plot.png).
#
#   bash drills/idle-database.sh          # PHASE_MB=40
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE_MB=${PHASE_MB:-40}
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
source drills/lib/stack.sh
ensure_monitoring_tools
command -v gnuplot >/dev/null || apt_install gnuplot-nox

other() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SRC_PORT" -U postgres -d other "$@"; }
retained_mb() { slot_field "((pg_current_wal_lsn() - restart_lsn) / 1048576)::int"; }
wal_mb() { src -c "SELECT ((pg_current_wal_lsn() - '0/0') / 1048576)::bigint"; }
write_elsewhere() { # MB: writes to "other" until the cluster has written MB more WAL
  local until=$(( $(wal_mb) + $1 ))
  while [ "$(wal_mb)" -lt "$until" ]; do
    other -c "INSERT INTO noise SELECT repeat(md5(random()::text), 32) FROM generate_series(1, 300)"
    sleep 0.5
  done
}

workspace_start walpipe-drill
trap 'stack_stop; workspace_stop' EXIT
stack_begin drills/out/idle-database "idle database: writes only to another database of the cluster"
stack_clusters 0 checkpoint_timeout=30s
src -c "CREATE DATABASE other"
other -c "CREATE TABLE noise (payload text)"
stack_monitoring

stack_walpipe WALPIPE_HEARTBEAT_INTERVAL_MS=0 WALPIPE_KEEPALIVE_CONFIRM=false
stack_sampler
start_off=$(retained_mb)
evidence "phase 1, heartbeat and keepalive confirmation off: retained $start_off MB; writing $PHASE_MB MB of WAL to \"other\""
write_elsewhere "$PHASE_MB"
end_off=$(retained_mb)
evidence "phase 1 done: retained $end_off MB (+$((end_off - start_off)) MB), confirmed_flush_lsn $(slot_field confirmed_flush_lsn), current $(src -c 'SELECT pg_current_wal_lsn()')"

kill -TERM "$WALPIPE_PID"; wait "$WALPIPE_PID" || true
stack_walpipe
evidence "phase 2, the defaults (heartbeat every 2 s, keepalive confirmation on): writing $((PHASE_MB / 2 + PHASE_MB)) MB of WAL to \"other\""
write_elsewhere $((PHASE_MB / 2))
start_on=$(retained_mb)
evidence "phase 2, after $((PHASE_MB / 2)) MB: retained $start_on MB (the keepalive positions released the backlog)"
peak_on=$start_on
until_mb=$(( $(wal_mb) + PHASE_MB ))
while [ "$(wal_mb)" -lt "$until_mb" ]; do
  write_elsewhere 4
  now_mb=$(retained_mb)
  [ "$now_mb" -gt "$peak_on" ] && peak_on=$now_mb
done
end_on=$(retained_mb)
evidence "phase 2 done: retained $end_on MB, at most $peak_on MB; confirmed_flush_lsn $(slot_field confirmed_flush_lsn), current $(src -c 'SELECT pg_current_wal_lsn()')"
kill "$SAMPLER_PID"; wait "$SAMPLER_PID" 2>/dev/null || true
stack_plot

# Nearly all of what "other" wrote stays pinned (the heartbeat-free slot
# confirms nothing); the margin covers WAL written before the first sample.
[ $((end_off - start_off)) -ge $((PHASE_MB * 3 / 4)) ] || fail "with both off, retained WAL should grow by most of the $PHASE_MB MB written (it grew $((end_off - start_off)) MB)"
evidence "ok: with both off, retained WAL grew $((end_off - start_off)) MB while $PHASE_MB MB were written elsewhere"
[ "$peak_on" -le 16 ] || fail "with the defaults, retained WAL should stay flat (it reached $peak_on MB)"
evidence "ok: with the defaults, retained WAL stayed flat: at most $peak_on MB while the same writes went on"
evidence "== idle-database drill passed: $OUT/evidence.log, $OUT/plot.png"
