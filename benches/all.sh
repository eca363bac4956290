#!/usr/bin/env bash
# Every throughput figure of issue 26 in one command: runs the benchmarks
# below one after another (each side by side with its public baseline),
# prints the table of figures against their goals and against the best
# earlier row, appends a dated row per figure to benches/history.tsv and
# to BENCHMARKS.md, and draws benches/out/summary.png (gnuplot).
#
#   bash benches/all.sh                  # about 15 minutes on 2 cores (ROUNDS=3)
#   CHUNKED=1 bash benches/all.sh        # also the 5M-row chunked copy (about 10 more)
#
# The figures (goal in brackets; "progress" in the plot is value/goal for
# an "at least" goal and goal/value for an "at most" one, so 1 = met):
#   backlog_run_over_tail      walpipe run / walpipe tail > /dev/null (the faster of two drains), 500k-row txn + 50k one-row txns   [<= 1.15]
#   backlog_speed_vs_native    native (defaults) time / walpipe run time, same backlog                  [>= 1.25]
#   small_speed_vs_native      native (defaults) time / walpipe run time, 100k one-row txns              [>= 1.25]
#   small_run_over_recvlogical walpipe run into Postgres / pg_recvlogical > /dev/null, same backlog     [<= 1.2]
#   tail_over_recvlogical      walpipe tail / pg_recvlogical, one 400k-row txn                           [<= 0.6]
#   copy_speed_vs_pipe         COPY pipe time / walpipe initial copy time, 1M rows                      [>= 1.2]
#   webhook_requests           requests for a 500k-change backlog in batches of 1000                    [<= 550]
#   webhook_over_recvlogical   walpipe run -> webhook / pg_recvlogical, same backlog                     [<= 0.35]
#   webhook_floor              walpipe tail / pg_recvlogical, same backlog (what any sink can reach)    [-]
#   latency_p50_over_native    walpipe p50 / native p50 at 1,000 txn/s                                  [<= 2]
#   latency_p99_ms             walpipe p99 at 1,000 txn/s, ms                                           [<= 2]
#   restart_ms                 walpipe run: start to the first waiting row in the sink, ms, median of 12 [-]
#   restart_native_ms          the same for a native subscription (ALTER SUBSCRIPTION ENABLE), ms       [-]
#   tail_instructions          callgrind instructions per change of walpipe tail                         [<= 7,569: 30% under 10,813]
#   run_instructions           callgrind instructions per change of walpipe run into Postgres            [<= 6,616: 30% under e7a62b3's 9,451]
#   chunked_over_exported      chunked copy speed / exported copy speed, idle, 5M rows (CHUNKED=1)      [>= 1.0]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
command -v gnuplot >/dev/null || apt_install gnuplot-nox
mkdir -p benches/out
OUT=benches/out
if [ -z "${BUILT_WALPIPE:-}" ]; then
  cargo build --release --locked -q
  BUILT_WALPIPE=target/release/walpipe
fi
export BUILT_WALPIPE
ROUNDS=${ROUNDS:-3}
log() { echo "== $*" >&2; }
number() { grep -oE "$1" | head -n1 | grep -oE '[0-9]+(\.[0-9]+)?' | tail -n1; }
declare -A value

# The single-run benches below are run ROUNDS times, one round of each in
# turn (so a slow spell of the machine falls on every figure, not on one),
# and each figure is the median of its rounds: on 2 cores one run decides
# these figures by noise (BENCHMARKS.md, 2026-12-06, the two rows of
# e642e01). Webhook requests are the most of any round, since the goal
# holds for every run. The rounds' values go to $OUT/rounds.tsv and into
# the table. The other benches take medians of their own.
declare -A rounds
keep() { rounds[$1]="${rounds[$1]:-} $2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
most() { printf '%s\n' "$@" | sort -g | tail -n1; }
for round in $(seq 1 "$ROUNDS"); do
  log "round $round of $ROUNDS: backlog into Postgres vs native (benches/backlog_vs_native.sh)"
  bash benches/backlog_vs_native.sh > "$OUT/backlog.$round.txt" 2>&1
  decode=$(number 'decoding only\) +[0-9.]+' < "$OUT/backlog.$round.txt")
  run=$(number 'walpipe run +[0-9.]+' < "$OUT/backlog.$round.txt")
  keep backlog_run_over_tail "$(echo "$run / $decode" | bc -l)"
  keep backlog_speed_vs_native "$(grep 'native_default' "$OUT/backlog.$round.txt" | number 'speed-up [0-9.]+')"

  log "round $round of $ROUNDS: 100k one-row transactions into Postgres vs native (benches/backlog_vs_native.sh)"
  ROWS=0 SMALL=100000 bash benches/backlog_vs_native.sh > "$OUT/small.$round.txt" 2>&1
  keep small_speed_vs_native "$(grep 'native_default' "$OUT/small.$round.txt" | number 'speed-up [0-9.]+')"
  keep small_run_over_recvlogical "$(number 'walpipe run / pg_recvlogical [0-9.]+' < "$OUT/small.$round.txt")"

  log "round $round of $ROUNDS: webhook backlog (benches/webhook_throughput.sh)"
  bash benches/webhook_throughput.sh > "$OUT/webhook.$round.txt" 2>&1
  keep webhook_requests "$(number '\([0-9]+ requests' < "$OUT/webhook.$round.txt")"
  keep webhook_over_recvlogical "$(number 'walpipe/pg_recvlogical = [0-9.]+' < "$OUT/webhook.$round.txt")"
  keep webhook_floor "$(number 'tail/pg_recvlogical = [0-9.]+' < "$OUT/webhook.$round.txt")"

  log "round $round of $ROUNDS: latency at 1,000 txn/s (benches/latency.sh)"
  bash benches/latency.sh > "$OUT/latency.$round.txt" 2>&1
  walpipe_p50=$(grep '^walpipe' "$OUT/latency.$round.txt" | number 'p50 [0-9.]+')
  native_p50=$(grep '^native' "$OUT/latency.$round.txt" | number 'p50 [0-9.]+')
  keep latency_p50_over_native "$(echo "$walpipe_p50 / $native_p50" | bc -l)"
  keep latency_p99_ms "$(grep '^walpipe' "$OUT/latency.$round.txt" | number 'p99 [0-9.]+')"
done
: > "$OUT/rounds.tsv"
for figure in "${!rounds[@]}"; do
  # shellcheck disable=SC2086 # one value per word
  if [ "$figure" = webhook_requests ]; then value[$figure]=$(most ${rounds[$figure]}); else value[$figure]=$(median ${rounds[$figure]}); fi
  # shellcheck disable=SC2086
  printf '%s\t%s\n' "$figure" "$(printf '%s\n' ${rounds[$figure]} | xargs printf '%.4g ')" >> "$OUT/rounds.tsv"
done

log "walpipe tail vs pg_recvlogical (benches/tail_vs_pg_recvlogical.sh)"
ROUNDS=3 bash benches/tail_vs_pg_recvlogical.sh > "$OUT/tail.txt" 2>&1
value[tail_over_recvlogical]=$(number 'ratio walpipe/pg_recvlogical = [0-9.]+' < "$OUT/tail.txt")

log "initial copy vs a COPY pipe (benches/snapshot_vs_copy.sh)"
bash benches/snapshot_vs_copy.sh > "$OUT/copy.txt" 2>&1
value[copy_speed_vs_pipe]=$(number 'COPY pipe speed = [0-9.]+' < "$OUT/copy.txt")

log "restart to first row vs native (benches/restart_to_first_row.sh)"
bash benches/restart_to_first_row.sh > "$OUT/restart.txt" 2>&1
value[restart_ms]=$(grep '^  walpipe' "$OUT/restart.txt" | number ' [0-9.]+ ms')
value[restart_native_ms]=$(grep '^  native' "$OUT/restart.txt" | number ' [0-9.]+ ms')

log "instructions per change (benches/tail_instructions.sh)"
BASE_WALPIPE=${BASE_WALPIPE:-$BUILT_WALPIPE} bash benches/tail_instructions.sh > "$OUT/instructions.txt" 2>&1
value[tail_instructions]=$(grep '^  head' "$OUT/instructions.txt" | number '[0-9]+ per change')
bash benches/run_instructions.sh > "$OUT/run_instructions.txt" 2>&1
value[run_instructions]=$(grep '^  run' "$OUT/run_instructions.txt" | number '[0-9]+ per change')

figures=(backlog_run_over_tail backlog_speed_vs_native small_speed_vs_native small_run_over_recvlogical tail_over_recvlogical copy_speed_vs_pipe webhook_requests
  webhook_over_recvlogical webhook_floor latency_p50_over_native latency_p99_ms restart_ms restart_native_ms tail_instructions run_instructions)
if [ "${CHUNKED:-0}" = 1 ]; then
  log "chunked vs exported copy, 5M rows (benches/chunked_vs_exported.sh)"
  ROWS=5000000 bash benches/chunked_vs_exported.sh > "$OUT/chunked.txt" 2>&1
  value[chunked_over_exported]=$(number 'median of [0-9]+ pairs = [0-9.]+' < "$OUT/chunked.txt")
  figures+=(chunked_over_exported)
fi

commit=$(git rev-parse --short HEAD)
today=$(date -u +%F)
for figure in "${figures[@]}"; do
  printf '%s\t%s\t%s\t%.4f\n' "$today" "$commit" "$figure" "${value[$figure]}"
done >> benches/history.tsv
python3 benches/summarize.py benches/history.tsv "$today" "$commit" "$OUT/summary.dat" "$OUT/rounds.tsv" > "$OUT/table.md"
cat "$OUT/table.md"
# The walsender's cost per message depends on the host's TCP congestion
# control (BENCHMARKS.md, 2026-12-07), so each row names it.
congestion=$(cat /proc/sys/net/ipv4/tcp_congestion_control 2>/dev/null || echo unknown)
{
  echo; echo "## \`bash benches/all.sh\`, $today, \`$commit\`"; echo
  echo "Host TCP congestion control: \`$congestion\`."; echo
  cat "$OUT/table.md"
} >> BENCHMARKS.md
gnuplot benches/summary.gnuplot
log "table appended to BENCHMARKS.md; plot in $OUT/summary.png"
