#!/usr/bin/env bash
# Benchmark: drain the same backlog (one 400k-row transaction) with
# `walpipe tail > /dev/null` and with pg_recvlogical, side by side in one run
# (alternating, ROUNDS times each, on slots created before the backlog), and
# print the medians and their ratio.
#
#   bash benches/tail_vs_pg_recvlogical.sh            # ROWS=400000 ROUNDS=5
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
ROWS=${ROWS:-400000}
ROUNDS=${ROUNDS:-5}
PORT=${PORT:-24432}

workspace_start walpipe-bench
cluster_start source "$PORT" fsync=off shared_buffers=256MB max_wal_size=4GB
PSQL=("$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres -d postgres)
URL="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable"

"${PSQL[@]}" -c "CREATE TABLE orders (id bigint PRIMARY KEY, customer int, status text, amount numeric(12,2), note text, created_at timestamptz)"
"${PSQL[@]}" -c "CREATE PUBLICATION bench FOR TABLE orders"
"${PSQL[@]}" -c "SELECT pg_create_logical_replication_slot('verify', 'pgoutput')" >/dev/null
for i in $(seq 1 "$ROUNDS"); do
  "${PSQL[@]}" -c "SELECT pg_create_logical_replication_slot('recv_$i', 'pgoutput')" >/dev/null
  "${PSQL[@]}" -c "SELECT pg_create_logical_replication_slot('walpipe_$i', 'pgoutput')" >/dev/null
done
"${PSQL[@]}" -c "INSERT INTO orders SELECT i, i % 1000, 'new', (i % 10000) / 100.0, 'order number ' || i, now() FROM generate_series(1, $ROWS) i"
ENDPOS=$("${PSQL[@]}" -c "SELECT pg_current_wal_lsn()")
"${PSQL[@]}" -c "CHECKPOINT"

seconds() { local start=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $start" | bc; }
recv_times=(); walpipe_times=()
for i in $(seq 1 "$ROUNDS"); do
  recv_times+=("$(seconds "$PG_BINDIR/pg_recvlogical" -d "$URL" -S "recv_$i" --start --endpos="$ENDPOS" \
    -o proto_version=2 -o streaming=on -o publication_names=bench -f /dev/null)")
  walpipe_times+=("$(seconds sh -c "'$WALPIPE' tail --slot walpipe_$i --publication bench --endpos $ENDPOS --source '$URL' > /dev/null 2>/dev/null")")
done
# The timed runs print to /dev/null; check once that the output is complete.
# (Schema lines, the table's shape announced before its changes, are not changes.)
lines=$("$WALPIPE" tail --slot verify --publication bench --endpos "$ENDPOS" --source "$URL" 2>/dev/null | grep -vc '"op":"schema"')
[ "$lines" = "$ROWS" ] || { echo "walpipe tail printed $lines changes, expected $ROWS" >&2; exit 1; }

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
recv=$(median "${recv_times[@]}")
mine=$(median "${walpipe_times[@]}")
echo "pg_recvlogical runs (s): ${recv_times[*]}"
echo "walpipe tail runs (s):   ${walpipe_times[*]}"
printf 'rows=%s  pg_recvlogical median %.3f s (%.0f rows/s)  walpipe tail median %.3f s (%.0f rows/s)  ratio walpipe/pg_recvlogical = %.3f\n' \
  "$ROWS" "$recv" "$(echo "$ROWS / $recv" | bc -l)" "$mine" "$(echo "$ROWS / $mine" | bc -l)" "$(echo "$mine / $recv" | bc -l)"
