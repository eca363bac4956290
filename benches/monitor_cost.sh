#!/usr/bin/env bash
# Benchmark: the cost of walpipe's slot monitor on the source. walpipe run
# streams a pgbench load (RATE one-row transactions/s, 4 clients) for
# SECONDS_OF_LOAD s while the monitor polls every 2 s. The source logs every
# statement's duration (log_min_duration_statement = 0); the monitor's
# connection is told apart by its application_name (walpipe-monitor). Per
# poll: the server time of its statements (parse/bind/execute), and the
# round trip walpipe measured (walpipe_monitor_poll_duration_seconds).
#
#   bash benches/monitor_cost.sh          # RATE=500 SECONDS_OF_LOAD=40
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
RATE=${RATE:-500}
DURATION=${SECONDS_OF_LOAD:-40}
SRC_PORT=${SRC_PORT:-24832}
SINK_PORT=${SINK_PORT:-24833}
HTTP=127.0.0.1:24898

workspace_start walpipe-bench
cluster_start source "$SRC_PORT" log_min_duration_statement=0 "log_line_prefix=%m [%p] %a " max_slot_wal_keep_size=1GB
cluster_start sink "$SINK_PORT"
src() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SRC_PORT" -U postgres -d postgres "$@"; }
src -c "CREATE TABLE events (id bigserial PRIMARY KEY, payload text)"
"$PG_BINDIR/psql" -X -q -h 127.0.0.1 -p "$SINK_PORT" -U postgres -c "CREATE DATABASE walpipe"

WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable" \
WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/walpipe?sslmode=disable" \
WALPIPE_JOB_NAME=monitor WALPIPE_HTTP_ADDR=$HTTP WALPIPE_LOG=warn "$WALPIPE" run &
sleep 3
echo "== $RATE transactions/s for $DURATION s while the monitor polls"
echo "INSERT INTO events (payload) VALUES ('event');" > "$WORK/insert.sql"
"$PG_BINDIR/pgbench" -n -h 127.0.0.1 -p "$SRC_PORT" -U postgres -c 4 -j 2 -R "$RATE" -T "$DURATION" -f "$WORK/insert.sql" postgres 2>&1 | grep -E "^tps" || true
curl -s "http://$HTTP/metrics" | grep -E '^walpipe_monitor_poll_duration_seconds_(sum|count|bucket\{[^}]*le="0.005")' > "$WORK/scrape.txt"

python3 - "$WORK/source/server.log" "$WORK/scrape.txt" <<'PY'
import re, sys
polls, current = [], None
for line in open(sys.argv[1], errors="replace"):
    if " walpipe-monitor " not in line:
        continue
    m = re.search(r"duration: ([0-9.]+) ms\s+(parse|bind|execute)[^:]*:\s*(.*)", line)
    if not m:
        continue
    ms, phase, text = float(m.group(1)), m.group(2), m.group(3)
    if phase == "parse":
        continue  # the statements are prepared once per connection, not per poll
    if text.startswith("WITH now AS") and phase == "bind":
        current = [0.0]
        polls.append(current)
    if current is not None:
        current[0] += ms
server = sorted(p[0] for p in polls[1:])  # the first poll finds no slot yet
scrape = dict(line.rsplit(" ", 1) for line in open(sys.argv[2]).read().splitlines())
count = float(next(v for k, v in scrape.items() if k.startswith("walpipe_monitor_poll_duration_seconds_count")))
total = float(next(v for k, v in scrape.items() if k.startswith("walpipe_monitor_poll_duration_seconds_sum")))
under = float(next(v for k, v in scrape.items() if "_bucket" in k))
pct = lambda q: server[min(len(server) - 1, int(q * len(server)))]
print(f"polls: {len(server)} measured on the server, {int(count)} by walpipe")
print(f"server time per poll: median {pct(0.5):.3f} ms, p99 {pct(0.99):.3f} ms, max {server[-1]:.3f} ms")
print(f"round trip per poll (walpipe): mean {total / count * 1000:.3f} ms, {under / count:.0%} under 5 ms")
PY
