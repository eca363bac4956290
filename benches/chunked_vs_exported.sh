#!/usr/bin/env bash
# Benchmark: the initial copy of a ROWS-row table into a Postgres sink, with
# WALPIPE_SNAPSHOT_STRATEGY=chunked and =exported side by side, in one run:
#   idle source: copy time of each (the chunked one should be >= 0.8x as fast);
#   under a steady pgbench load (RATE transactions/s updating random rows of
#   the table and inserting into `ticks`):
#     copy time; the longest-held snapshot of walpipe's source sessions
#     (now() - xact_start, and age(backend_xmin) in xids) and the slot's
#     retained WAL (pg_current_wal_lsn() - restart_lsn), at their peak,
#     sampled every 0.5 s; p99 write latency of the load during the copy
#     against the same load in the 10 s before walpipe starts; the time
#     from start until the first change made after the start is in the
#     sink; walpipe's peak RSS (VmHWM).
#
#   bash benches/chunked_vs_exported.sh     # ROWS=5000000 RATE=200 LOAD_SECONDS=240
#   RUNS=idle bash benches/chunked_vs_exported.sh   # the idle pairs only (REPEAT=3 of them)
#   BENCH_LOG=walpipe=debug KEEP_WORK=1 ...   # walpipe's log level; the logs stay in the work dir
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
ROWS=${ROWS:-5000000}
RATE=${RATE:-200}
LOAD_SECONDS=${LOAD_SECONDS:-240}
SRC_PORT=${SRC_PORT:-24642}
SINK_PORT=${SINK_PORT:-24643}

workspace_start walpipe-bench
cluster_start source "$SRC_PORT" shared_buffers=512MB max_wal_size=8GB
cluster_start sink "$SINK_PORT" shared_buffers=512MB max_wal_size=8GB
psql_at() { local port=$1 db=$2; shift 2; "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"; }
src() { psql_at "$SRC_PORT" postgres "$@"; }
psql_at "$SRC_PORT" postgres -c "CREATE TABLE t (id bigint PRIMARY KEY, customer int, status text, amount numeric(12,2), note text, created_at timestamptz)" \
  -c "CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"
echo "== loading $ROWS rows"
src -c "INSERT INTO t SELECT i, i % 1000, 'new', (i % 10000) / 100.0, 'order number ' || i, now() FROM generate_series(1, $ROWS) i"
src -c "VACUUM ANALYZE t"
cat > "$WORK/load.sql" <<SQL
\set id random(1, $ROWS)
UPDATE t SET amount = amount + 1, status = 'paid' WHERE id = :id;
INSERT INTO ticks DEFAULT VALUES;
SQL
now() { date +%s.%N; }
# A count on the sink that never waits: an exported copy holds its table's lock until it commits.
sink_count() { psql_at "$SINK_PORT" "$1" -c "SET lock_timeout = '50ms'" -c "SELECT count(*) FROM $2" 2>/dev/null || echo 0; }
# Whether the copy of t is committed in the sink, read from the checkpoint written
# in the same transaction (exported: after every table; chunked: t's progress
# done). A count(*) of t every 0.5 s would scan the chunked copy's rows while
# they arrive, and compete with it for the CPUs.
copied() {
  local db=$1 label=$2 strategy=$3 sql
  if [ "$strategy" = exported ]; then
    sql="SELECT count(*) FROM walpipe.checkpoints WHERE job_name = '$label'"
  else
    sql="SELECT count(*) FROM walpipe.checkpoints WHERE job_name = '$label' AND copy_progress->'public.t'->>'done' = 'true'"
  fi
  [ "$(psql_at "$SINK_PORT" "$db" -c "SET lock_timeout = '50ms'" -c "$sql" 2>/dev/null)" = 1 ]
}

# run STRATEGY LOADED LABEL: one copy into a fresh sink database; prints a result line.
run() {
  local strategy=$1 loaded=$2 label=$3 db="${3}_sink" load_pid= start_tick=0 t0 log="$WORK/$3.walpipe.log"
  psql_at "$SINK_PORT" postgres -c "CREATE DATABASE $db"
  if [ "$loaded" = yes ]; then
    "$PG_BINDIR/pgbench" -n -c 4 -j 2 -R "$RATE" -T "$LOAD_SECONDS" -l --log-prefix="$WORK/$label.load" \
      -f "$WORK/load.sql" -h 127.0.0.1 -p "$SRC_PORT" -U postgres postgres >/dev/null 2>&1 &
    load_pid=$!
    sleep 10
    start_tick=$(src -c "SELECT coalesce(max(id), 0) FROM ticks")
  fi
  t0=$(now)
  local wal_from
  wal_from=$(src -c "SELECT pg_current_wal_lsn() - '0/0'")
  WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable" \
  WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/$db?sslmode=disable" \
  WALPIPE_JOB_NAME="$label" WALPIPE_SNAPSHOT_STRATEGY="$strategy" WALPIPE_TABLES=public.t,public.ticks \
  WALPIPE_HTTP_ADDR=127.0.0.1:0 WALPIPE_LOG="${BENCH_LOG:-info}" "$WALPIPE" run 2>"$log" &
  local pid=$! first= done_at= xmin_s=0 xmin_xids=0 retained=0
  while [ -z "$done_at" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "walpipe exited; log:" >&2; cat "$log" >&2; exit 1; }
    read -r hold xids kept < <(src -F ' ' -c "SELECT coalesce(max(extract(epoch FROM now() - xact_start)) FILTER (WHERE backend_xmin IS NOT NULL), 0)::numeric(10,1), \
        coalesce(max(age(backend_xmin)), 0), coalesce((SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots WHERE slot_name = 'walpipe_$label'), 0) \
      FROM pg_stat_activity WHERE application_name NOT IN ('pgbench', 'psql') AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
    xmin_s=$(echo "if ($hold > $xmin_s) $hold else $xmin_s" | bc); xmin_xids=$(( xids > xmin_xids ? xids : xmin_xids ))
    retained=$(echo "if ($kept > $retained) $kept else $retained" | bc)
    if [ "$loaded" = yes ] && [ -z "$first" ] && \
       [ "$(sink_count "$db" "ticks WHERE id > $start_tick")" -gt 0 ]; then
      first=$(echo "$(now) - $t0" | bc)
    fi
    if copied "$db" "$label" "$strategy"; then
      done_at=$(now)
    fi
    sleep 0.5
  done
  local copy_s rss written
  copy_s=$(echo "$done_at - $t0" | bc)
  written=$(src -c "SELECT pg_current_wal_lsn() - '0/0' - $wal_from")
  [ "$(sink_count "$db" t)" = "$ROWS" ] || { echo "$label: the sink does not hold $ROWS rows" >&2; exit 1; }
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  local p99_before=- p99_during=-
  if [ -n "$load_pid" ]; then
    [ "$(echo "$done_at - $t0 + 10 < $LOAD_SECONDS" | bc)" = 1 ] || { echo "the copy outlasted the load: raise LOAD_SECONDS" >&2; exit 1; }
    while [ -z "$first" ]; do
      [ "$(sink_count "$db" "ticks WHERE id > $start_tick")" -gt 0 ] && first=$(echo "$(now) - $t0" | bc)
      sleep 0.2
    done
    wait "$load_pid"
    # pgbench -l: client_id transaction_no time_us script_no time_epoch time_us_fraction
    p99() { cat "$WORK/$label".load.* | awk -v a="$1" -v b="$2" '{t = $5 + $6 / 1e6; if (t >= a && t < b) print $3 / 1000}' | sort -n | awk '{v[NR]=$1} END {print (NR ? v[int(NR * 0.99) + (NR * 0.99 > int(NR * 0.99))] : "-")}'; }
    p99_before=$(p99 "$(echo "$t0 - 10" | bc)" "$t0")
    p99_during=$(p99 "$t0" "$done_at")
  fi
  kill -TERM "$pid"; wait "$pid" || true
  # An idle slot left behind would hold WAL through the next runs.
  src -c "SELECT pg_drop_replication_slot('walpipe_$label')" >/dev/null
  printf '%-22s copy %7.1f s  xmin held %6.1f s (%s xids)  retained WAL %6.1f MB of %6.1f MB written  p99 write before/during %s / %s ms  first streamed change %s s  peak RSS %.1f MB\n' \
    "$label" "$copy_s" "$xmin_s" "$xmin_xids" "$(echo "$retained / 1048576" | bc -l)" "$(echo "$written / 1048576" | bc -l)" "$p99_before" "$p99_during" "${first:--}" "$(echo "$rss / 1024" | bc -l)"
  echo "$copy_s" > "$WORK/$label.copy_seconds"
}

echo "== rows=$ROWS, load RATE=$RATE tps (pgbench -R, 4 clients) while loaded"
RUNS=${RUNS:-idle loaded}
# The idle pair runs REPEAT times, alternating, because a single copy's time
# on a shared 2-core machine varies by up to 25%; the median ratio is the figure.
REPEAT=${REPEAT:-3}
if [[ " $RUNS " == *" idle "* ]]; then
  for i in $(seq 1 "$REPEAT"); do
    run exported no "idle_exported_$i"
    run chunked no "idle_chunked_$i"
  done
fi
if [[ " $RUNS " == *" loaded "* ]]; then
  run exported yes loaded_exported
  run chunked yes loaded_chunked
fi
if [[ " $RUNS " == *" idle "* ]]; then
  ratios=()
  for i in $(seq 1 "$REPEAT"); do
    ratios+=("$(echo "$(cat "$WORK/idle_exported_$i.copy_seconds") / $(cat "$WORK/idle_chunked_$i.copy_seconds")" | bc -l)")
  done
  printf 'idle source: chunked speed / exported speed, per pair: %s\n' "$(printf '%.2fx ' "${ratios[@]}")"
  printf 'idle source: chunked speed / exported speed, median of %s pairs = %.2fx\n' "$REPEAT" \
    "$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{v[NR]=$1} END {print (NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2)}')"
fi
