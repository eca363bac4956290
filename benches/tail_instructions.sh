#!/usr/bin/env bash
# Benchmark: the instructions `walpipe tail` spends decoding one backlog,
# counted by valgrind's callgrind, which does not depend on machine noise:
# two builds side by side (an A/B of a change), each draining the same
# backlog from its own slot, and walpipe's per-row cost next to the
# walsender's own CPU time for the same rows.
#
# The backlog: one ROWS-row transaction of a 6-column table, then SMALL
# one-row transactions (per-transaction costs).
#
#   BASE_WALPIPE=<old build> BUILT_WALPIPE=<new build> bash benches/tail_instructions.sh   # ROWS=100000 SMALL=10000
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
source scripts/lib/orders.sh
ROWS=${ROWS:-100000}
SMALL=${SMALL:-10000}
PORT=${PORT:-24462}
: "${BASE_WALPIPE:?set BASE_WALPIPE to the build to compare with (a release build of the previous landing)}"
command -v valgrind >/dev/null || { echo "valgrind is not installed: apt-get install valgrind" >&2; exit 1; }

workspace_start walpipe-instructions
cluster_start source "$PORT" fsync=off shared_buffers=256MB max_wal_size=4GB
PSQL=("$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres -d postgres)
URL="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable"

"${PSQL[@]}" -c "$ORDERS_TABLE"
"${PSQL[@]}" -c "CREATE PUBLICATION bench FOR TABLE orders"
for build in base head; do
  "${PSQL[@]}" -c "SELECT pg_create_logical_replication_slot('$build', 'pgoutput')" >/dev/null
done
write_orders_backlog "${PSQL[@]}"
ENDPOS=$("${PSQL[@]}" -c "SELECT pg_current_wal_lsn()")

# Instructions of the whole process (every thread), from callgrind's totals.
instructions() {
  local build=$1 binary=$2 out="$WORK/callgrind.$1"
  valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no \
    "$binary" tail --slot "$build" --publication bench --endpos "$ENDPOS" --source "$URL" > "$WORK/lines.$build" 2>/dev/null
  local changes
  changes=$(grep -vc '"op":"schema"' "$WORK/lines.$build")
  [ "$changes" = "$((ROWS + SMALL))" ] || { echo "$build printed $changes changes, expected $((ROWS + SMALL))" >&2; exit 1; }
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}
base=$(instructions base "$BASE_WALPIPE")
head=$(instructions head "$WALPIPE")
# Both read the same WAL: the lines must be the same, byte for byte.
cmp -s "$WORK/lines.base" "$WORK/lines.head" && same="the same bytes" || same="DIFFERENT bytes"
printf 'backlog: %s rows in one transaction + %s one-row transactions (%s from both builds)\n' "$ROWS" "$SMALL" "$same"
printf '  base  %14d instructions  %8.0f per change\n' "$base" "$(echo "$base / ($ROWS + $SMALL)" | bc -l)"
printf '  head  %14d instructions  %8.0f per change\n' "$head" "$(echo "$head / ($ROWS + $SMALL)" | bc -l)"
printf '  head / base = %.4f\n' "$(echo "$head / $base" | bc -l)"
