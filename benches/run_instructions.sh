#!/usr/bin/env bash
# Benchmark: the instructions `walpipe run` spends applying one backlog into
# a Postgres sink (decoding, the mirror records, the sink's batching and
# COPY text), counted by valgrind's callgrind, which does not depend on
# machine noise. The companion of tail_instructions.sh, on the same backlog:
# one ROWS-row transaction of a 6-column table, then SMALL one-row
# transactions. The server's and the sink backends' work is not counted.
#
# `walpipe run` does not stop by itself: it is stopped (SIGTERM) once the
# sink holds the backlog's last row (committed with its checkpoint), so the
# count includes its start, its stop, and the idle loop in
# between: about 6 million instructions (ROWS=1 SMALL=1), 0.5% of the default backlog's.
#
#   BUILT_WALPIPE=<build> bash benches/run_instructions.sh   # ROWS=100000 SMALL=10000
#   PROFILE=<file>: keep callgrind's output there (read it with callgrind_annotate --inclusive=yes)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
source scripts/lib/orders.sh
ROWS=${ROWS:-100000}
SMALL=${SMALL:-10000}
PORT=${PORT:-24477}
command -v valgrind >/dev/null || { echo "valgrind is not installed: apt-get install valgrind" >&2; exit 1; }

workspace_start walpipe-run-instructions
cluster_start source "$PORT" fsync=off shared_buffers=256MB max_wal_size=4GB
PSQL=("$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE sink" \
  -c "$ORDERS_TABLE"
export WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable"
export WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$PORT/sink?sslmode=disable"
export WALPIPE_JOB_NAME=instructions WALPIPE_LOG=warn

# The job's slot, publication, destination and checkpoint, on the empty table.
"$WALPIPE" run & pid=$!
until [ "$("${PSQL[@]}" -d sink -c "SELECT count(*) FROM walpipe.checkpoints" 2>/dev/null)" = 1 ]; do sleep 0.2; done
kill -TERM $pid; wait $pid

write_orders_backlog "${PSQL[@]}" -d postgres

valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.run" --dump-instr=no "$WALPIPE" run 2>/dev/null & pid=$!
# The last row is committed with its checkpoint, in one sink transaction.
until [ "$("${PSQL[@]}" -d sink -c "SELECT count(*) FROM orders WHERE id = $ROWS + $SMALL" 2>/dev/null)" = 1 ]; do
  kill -0 $pid 2>/dev/null || { echo "walpipe run ended before the backlog was applied" >&2; exit 1; }
  sleep 1
done
kill -TERM $pid; wait $pid || true
rows=$("${PSQL[@]}" -d sink -c "SELECT count(*) FROM orders")
[ "$rows" = "$((ROWS + SMALL))" ] || { echo "the sink holds $rows rows, expected $((ROWS + SMALL))" >&2; exit 1; }
[ -z "${PROFILE:-}" ] || cp "$WORK/callgrind.run" "$PROFILE"
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/callgrind.run")
printf 'backlog: %s rows in one transaction + %s one-row transactions, into a Postgres sink\n' "$ROWS" "$SMALL"
printf '  run  %14d instructions  %8.0f per change\n' "$total" "$(echo "$total / ($ROWS + $SMALL)" | bc -l)"
