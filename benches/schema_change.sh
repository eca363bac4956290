#!/usr/bin/env bash
# Benchmark: the apply pause of following a schema change. A table of ROWS
# rows is mirrored by walpipe run (WALPIPE_FLUSH_INTERVAL_MS=50) under a
# steady load of RATE one-row transactions per second (pgbench -R); during
# the load the source runs, 5 s apart: ADD COLUMN ... DEFAULT 7, RENAME
# COLUMN, DROP COLUMN, ALTER COLUMN ... TYPE bigint. Latency of a row = when
# the sink wrote it (a clock_timestamp() default on an extra sink column,
# _walpipe_arrived, which walpipe leaves alone) minus when the source wrote
# it (a clock_timestamp() default; one clock; commit timestamps would not
# do: ALTER TYPE rewrites every row and its xmin). Printed: p50 of the rows
# before the first change, and for each change the worst latency of the
# rows written in the 3 s after it, minus that p50: the pause it cost.
#
#   bash benches/schema_change.sh      # ROWS=1000000 RATE=200
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
ROWS=${ROWS:-1000000}
RATE=${RATE:-200}
SRC_PORT=${SRC_PORT:-24752}
SINK_PORT=${SINK_PORT:-24753}

workspace_start walpipe-bench
cluster_start source "$SRC_PORT"
cluster_start sink "$SINK_PORT"
src() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SRC_PORT" -U postgres -d postgres "$@"; }
sink() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SINK_PORT" -U postgres -d postgres "$@"; }
src -c "CREATE TABLE events (id bigserial PRIMARY KEY, note text DEFAULT 'n', extra text DEFAULT 'x', qty int DEFAULT 1,
                             at timestamptz DEFAULT clock_timestamp())" \
    -c "INSERT INTO events (note) SELECT 'row ' || i FROM generate_series(1, $ROWS) i"

WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable" \
WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/postgres?sslmode=disable" \
WALPIPE_JOB_NAME=schema_bench WALPIPE_FLUSH_INTERVAL_MS=50 WALPIPE_LOG=warn "$WALPIPE" run &
until [ "$(sink -c "SELECT count(*) FROM walpipe.checkpoints" 2>/dev/null)" = 1 ]; do sleep 0.2; done
sink -c "ALTER TABLE events ADD COLUMN _walpipe_arrived timestamptz DEFAULT clock_timestamp()"
echo "== $ROWS rows copied; $RATE transactions/s for 30 s, a schema change every 5 s from 5 s on"

echo "INSERT INTO events DEFAULT VALUES;" > "$WORK/insert.sql"
"$PG_BINDIR/pgbench" -n -h 127.0.0.1 -p "$SRC_PORT" -U postgres -c 2 -j 2 -R "$RATE" -T 30 -f "$WORK/insert.sql" postgres >/dev/null 2>&1 &
LOAD=$!
: > "$WORK/changes.tsv"
change() { # LABEL SQL: runs SQL and records when it committed
  sleep 5
  src -c "$2" >/dev/null
  printf '%s\t%s\n' "$1" "$(src -c "SELECT clock_timestamp()")" >> "$WORK/changes.tsv"
}
change "ADD COLUMN c int DEFAULT 7" "ALTER TABLE events ADD COLUMN c int DEFAULT 7"
change "RENAME COLUMN note TO label" "ALTER TABLE events RENAME COLUMN note TO label"
change "DROP COLUMN extra" "ALTER TABLE events DROP COLUMN extra"
change "ALTER COLUMN qty TYPE bigint ($ROWS rows rewritten)" "ALTER TABLE events ALTER COLUMN qty TYPE bigint"
wait "$LOAD"
LAST=$(src -c "SELECT max(id) FROM events")
until [ "$(sink -c "SELECT count(*) FROM events WHERE id = $LAST")" = 1 ]; do sleep 0.2; done
[ "$(sink -c "SELECT string_agg(attname, ',' ORDER BY attname) FROM pg_attribute WHERE attrelid = 'events'::regclass AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\\_walpipe%'")" = "at,c,id,label,qty" ] \
  || { echo "the sink did not follow the changes" >&2; exit 1; }

sink -c "CREATE TABLE changes (label text, at timestamptz)" -c "\\copy changes FROM '$WORK/changes.tsv'"
sink -c "CREATE TEMP VIEW latency AS SELECT at AS written, extract(epoch FROM _walpipe_arrived - at) * 1000 AS ms
           FROM events WHERE id > $ROWS" \
     -c "SELECT format('rows before the first change: p50 %s ms, max %s ms', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                       round(max(ms)::numeric, 1)) FROM latency WHERE written < (SELECT min(at) FROM changes)" \
     -c "SELECT format('%-50s worst latency %6s ms  pause %6s ms', c.label, round(max(l.ms)::numeric, 1),
                       round((max(l.ms) - (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM latency
                                           WHERE written < (SELECT min(at) FROM changes)))::numeric, 1))
           FROM changes c JOIN latency l ON l.written BETWEEN c.at - interval '1 second' AND c.at + interval '3 seconds'
           GROUP BY c.label, c.at ORDER BY c.at"
