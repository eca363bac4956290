#!/usr/bin/env bash
# Benchmark: what a sink server needs to take ROWS rows, whoever sends them,
# in the two ways walpipe's copies write them (server-side COPY from a file,
# so no client and no network is timed; ROUNDS rounds, each case fresh):
#   - into a table that has its primary key while the rows go in: what the
#     chunked copy must do, since the stream's changes are applied by key
#     between its chunks (text, as chunks are sent today, and binary);
#   - into a table without it, the key built after the rows in the same
#     transaction: what the exported-snapshot copy does (deferred_key.rs),
#     binary where the types allow.
# The ratio of the two is the most a chunked copy could reach against the
# exported one on the same machine, however fast walpipe itself were.
#
#   bash benches/copy_key_floor.sh          # ROWS=2000000 ROUNDS=2
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
ROWS=${ROWS:-2000000}
ROUNDS=${ROUNDS:-2}
PORT=${PORT:-24811}

workspace_start walpipe-key-floor
cluster_start sink "$PORT" shared_buffers=512MB max_wal_size=8GB
PSQL=("$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres -d postgres)
"${PSQL[@]}" -c "CREATE TABLE t (id bigint PRIMARY KEY, customer int, status text, amount numeric(12,2), note text, created_at timestamptz)" \
  -c "INSERT INTO t SELECT i, i % 1000, 'new', (i % 10000) / 100.0, 'order number ' || i, now() FROM generate_series(1, $ROWS) i" \
  -c "COPY t TO '$WORK/t.txt'" -c "COPY t TO '$WORK/t.bin' (FORMAT binary)"

seconds() { local start; start=$(date +%s.%N); "${PSQL[@]}" -c "$1" >/dev/null; echo "$(date +%s.%N) - $start" | bc; }
declare -A total
cases=(keyed_text keyed_binary deferred_text deferred_binary)
for round in $(seq 1 "$ROUNDS"); do
  for case in "${cases[@]}"; do
    like="LIKE t"
    [[ $case == keyed_* ]] && like="LIKE t INCLUDING ALL"
    file="$WORK/t.txt" format=""
    [[ $case == *_binary ]] && file="$WORK/t.bin" format="(FORMAT binary)"
    sql="COPY d FROM '$file' $format"
    [[ $case == deferred_* ]] && sql="BEGIN; $sql; ALTER TABLE d ADD PRIMARY KEY (id); COMMIT"
    "${PSQL[@]}" -c "DROP TABLE IF EXISTS d" -c "CREATE TABLE d ($like)" -c "CHECKPOINT" 2>/dev/null
    took=$(seconds "$sql")
    total[$case]=$(echo "${total[$case]:-0} + $took" | bc)
    printf 'round %s  %-16s %6.2f s\n' "$round" "$case" "$took"
  done
done
mean() { echo "${total[$1]} / $ROUNDS" | bc -l; }
echo "$ROWS rows, mean of $ROUNDS rounds:"
for case in "${cases[@]}"; do printf '  %-16s %6.2f s\n' "$case" "$(mean "$case")"; done
printf 'the most a chunked copy can reach against the exported one: text %.2fx, binary %.2fx\n' \
  "$(echo "$(mean deferred_binary) / $(mean keyed_text)" | bc -l)" "$(echo "$(mean deferred_binary) / $(mean keyed_binary)" | bc -l)"
