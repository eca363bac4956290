#!/usr/bin/env bash
# Benchmark: commit-to-sink latency under a steady load of RATE one-row
# transactions per second (pgbench -R) for SECONDS s, walpipe run with
# WALPIPE_FLUSH_INTERVAL_MS=50 and native logical replication consuming the
# same stream at the same time, each into its own sink database.
# Latency of a row = when it became visible in the sink minus the source's
# commit time (track_commit_timestamp, one clock): for walpipe the sink
# commit time of the row; for native replication, which gives applied rows
# the origin's commit time, a clock_timestamp() default on an extra column
# (set as the row is applied, just before its commit). p50 / p99 / max.
#
#   bash benches/latency.sh            # RATE=1000 SECONDS=20
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
RATE=${RATE:-1000}
DURATION=${SECONDS_OF_LOAD:-20}
SRC_PORT=${SRC_PORT:-24732}
SINK_PORT=${SINK_PORT:-24733}

workspace_start walpipe-bench
cluster_start source "$SRC_PORT" track_commit_timestamp=on
cluster_start sink "$SINK_PORT" track_commit_timestamp=on
src() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SRC_PORT" -U postgres -d postgres "$@"; }
sink() { local db=$1; shift; "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SINK_PORT" -U postgres -d "$db" "$@"; }
TABLE="CREATE TABLE events (id bigserial PRIMARY KEY, payload text)"
src -c "$TABLE"
sink postgres -c "CREATE DATABASE walpipe" -c "CREATE DATABASE native"
sink native -c "$TABLE" -c "ALTER TABLE events ADD COLUMN applied_at timestamptz DEFAULT clock_timestamp()"

WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable" \
WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/walpipe?sslmode=disable" \
WALPIPE_JOB_NAME=latency WALPIPE_FLUSH_INTERVAL_MS=50 WALPIPE_LOG=warn "$WALPIPE" run & 
until [ "$(sink walpipe -c "SELECT count(*) FROM walpipe.checkpoints" 2>/dev/null)" = 1 ]; do sleep 0.2; done
src -c "CREATE PUBLICATION native FOR TABLE events"
sink native -c "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port=$SRC_PORT user=postgres dbname=postgres' PUBLICATION native WITH (copy_data = false)"
sleep 2

echo "== $RATE transactions/s for $DURATION s"
echo "INSERT INTO events (payload) VALUES ('event');" > "$WORK/insert.sql"
"$PG_BINDIR/pgbench" -n -h 127.0.0.1 -p "$SRC_PORT" -U postgres -c 4 -j 2 -R "$RATE" -T "$DURATION" -f "$WORK/insert.sql" postgres 2>&1 | grep -E "tps|latency average" || true
LAST=$(src -c "SELECT max(id) FROM events")
[ -n "$LAST" ] || { echo "pgbench wrote nothing" >&2; exit 1; }
for db in walpipe native; do
  until [ "$(sink $db -c "SELECT count(*) FROM events WHERE id = $LAST")" = 1 ]; do sleep 0.1; done
done

src -c "COPY (SELECT id, pg_xact_commit_timestamp(xmin) FROM events) TO STDOUT" > "$WORK/source_commits.tsv"
for db in walpipe native; do
  visible="pg_xact_commit_timestamp(e.xmin)"
  [ $db = native ] && visible="e.applied_at"
  sink $db -c "CREATE TABLE source_commits (id bigint PRIMARY KEY, committed timestamptz)"
  sink $db -c "\\copy source_commits FROM '$WORK/source_commits.tsv'"
  sink $db -c "SELECT format('%-8s rows %s  p50 %s ms  p99 %s ms  max %s ms', '$db', count(*),
                 round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                 round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1), round(max(ms)::numeric, 1))
               FROM (SELECT extract(epoch FROM $visible - s.committed) * 1000 AS ms
                     FROM events e JOIN source_commits s USING (id)) l"
done
