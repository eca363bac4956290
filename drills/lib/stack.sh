# The drills' stack: a source (optionally with pg_wal on a small loop
# volume), a sink, walpipe between them, Prometheus with drill-speed rules
# generated from alerts/, Alertmanager, a webhook receiver, and a sampler
# writing the time series. Sourced after scripts/lib/prereqs.sh and
# scripts/lib/cluster.sh, once workspace_start has run. Every function
# writes its evidence to $EVIDENCE; stack_stop undoes everything (also on
# failure: the drills call it from their exit trap).

SRC_PORT=${SRC_PORT:-25432}
SINK_PORT=${SINK_PORT:-25433}
HTTP_PORT=${HTTP_PORT:-25898}
PROM_PORT=${PROM_PORT:-25990}
AM_PORT=${AM_PORT:-25993}
RECEIVER_PORT=${RECEIVER_PORT:-25995}
# Every duration of the alert rules is divided by this (drills/lib/drill_rules.py).
DRILL_SPEED=${DRILL_SPEED:-120}

fail() { echo "DRILL FAILED: $*" | tee -a "$EVIDENCE" >&2; exit 1; }
now() { date +%s.%N; }
since() { printf '%5.1f' "$(echo "$(now) - $T0" | bc)"; }
evidence() { echo "[$(date -u +%H:%M:%S) T+$(since)s] $*" | tee -a "$EVIDENCE"; }
src() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SRC_PORT" -U postgres -d postgres "$@"; }
sink() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SINK_PORT" -U postgres -d postgres "$@"; }
wait_until() { # SECONDS WHAT COMMAND...: poll every second
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@"; do [ $SECONDS -lt $end ] || fail "timed out after ${limit}s waiting for $what"; sleep 1; done
}
fingerprint() { "$@" -c "SELECT count(*) || ':' || coalesce(md5(string_agg((id, customer, payload)::text, '|' ORDER BY id)), '') FROM orders" 2>/dev/null; }
converged() { [ "$(fingerprint src)" = "$(fingerprint sink)" ]; }
# The server's log line for the slot's invalidation (PG13-15 "invalidating
# slot", PG16+ "invalidating obsolete replication slot"): durable, unlike
# wal_status = lost, which lasts only until walpipe re-creates the slot.
server_invalidated_slot() { grep -h -m1 -E 'invalidating (obsolete replication )?slot "walpipe_drill"' "$WORK/source/server.log"; }
slot_field() { src -c "SELECT $1 FROM pg_replication_slots WHERE slot_name = 'walpipe_drill'"; }
firing() { curl -s "http://127.0.0.1:$PROM_PORT/api/v1/alerts" | python3 -c 'import json,sys; print(" ".join(sorted({a["labels"]["alertname"] for a in json.load(sys.stdin)["data"]["alerts"] if a["state"] == "firing"})))'; }

# stack_begin OUT TITLE: a fresh output directory and the drill's clock.
stack_begin() {
  OUT=$1
  rm -rf "$OUT" && mkdir -p "$OUT"
  EVIDENCE=$OUT/evidence.log
  T0=$(now)
  evidence "== $2"
}

# stack_clusters VOLUME_MB [source settings...]: VOLUME_MB > 0 puts the
# source's pg_wal on a loop-mounted volume of that size (root only).
stack_clusters() {
  local volume_mb=$1; shift
  VOLUME_DIR=$WORK
  if [ "$volume_mb" -gt 0 ]; then
    truncate -s "${volume_mb}M" "$WORK/wal.img"
    mkfs.ext4 -q -F "$WORK/wal.img"
    mkdir -p "$WORK/walvol" && mount -o loop "$WORK/wal.img" "$WORK/walvol"
    mkdir -p "$WORK/walvol/pg_wal" && chown -R postgres "$WORK/walvol"
    VOLUME_DIR=$WORK/walvol
    CLUSTER_WALDIR=$WORK/walvol/pg_wal cluster_start source "$SRC_PORT" "$@"
  else
    cluster_start source "$SRC_PORT" "$@"
  fi
  cluster_start sink "$SINK_PORT"
  src -c "CREATE TABLE orders (id bigserial PRIMARY KEY, customer int, payload text)" \
      -c "INSERT INTO orders (customer, payload) SELECT i % 100, repeat('x', 1000) FROM generate_series(1, 5000) i"
}

# stack_monitoring: Prometheus (drill-speed rules) -> Alertmanager -> the receiver.
stack_monitoring() {
  python3 drills/lib/drill_rules.py "$DRILL_SPEED" 10 < alerts/walpipe.rules.yml > "$WORK/drill.rules.yml"
  cat > "$WORK/prometheus.yml" <<EOF
global: {scrape_interval: 2s, scrape_timeout: 1s, evaluation_interval: 2s}
rule_files: [drill.rules.yml]
alerting: {alertmanagers: [{static_configs: [{targets: ["127.0.0.1:$AM_PORT"]}]}]}
scrape_configs: [{job_name: walpipe, static_configs: [{targets: ["127.0.0.1:$HTTP_PORT"]}]}]
EOF
  cat > "$WORK/alertmanager.yml" <<EOF
route: {receiver: drill, group_by: [alertname], group_wait: 1s, group_interval: 2s, repeat_interval: 1h}
receivers: [{name: drill, webhook_configs: [{url: "http://127.0.0.1:$RECEIVER_PORT/", send_resolved: true}]}]
EOF
  : > "$OUT/notifications.jsonl"
  rm -rf "$WORK/am" "$WORK/prom"
  python3 drills/lib/receiver.py "$RECEIVER_PORT" "$OUT/notifications.jsonl" &
  prometheus-alertmanager --config.file="$WORK/alertmanager.yml" --storage.path="$WORK/am" \
    --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= > "$WORK/alertmanager.log" 2>&1 &
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
    --web.listen-address="127.0.0.1:$PROM_PORT" > "$WORK/prometheus.log" 2>&1 &
}

# stack_walpipe [VAR=value ...]: walpipe run for job "drill" (snapshot_mode
# when_needed), until it streams and Prometheus scrapes it.
stack_walpipe() {
  env WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable" \
    WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/postgres?sslmode=disable" \
    WALPIPE_JOB_NAME=drill WALPIPE_SNAPSHOT_MODE=when_needed WALPIPE_FLUSH_INTERVAL_MS=200 \
    WALPIPE_HEARTBEAT_INTERVAL_MS=2000 WALPIPE_HTTP_ADDR="127.0.0.1:$HTTP_PORT" "$@" \
    "$WALPIPE" run >> "$OUT/walpipe.log" 2>&1 &
  WALPIPE_PID=$!
  wait_until 60 "walpipe streams" converged
  wait_until 60 "Prometheus scrapes walpipe" bash -c "curl -s 'http://127.0.0.1:$PROM_PORT/api/v1/query?query=up' | grep -q '\"1\"'"
  evidence "walpipe streams; Prometheus scrapes it; alerts firing: $(firing || true)"
}

# stack_sampler: the time series and the alerts' first firings, every 2 s.
stack_sampler() {
  DRILL_T0=$T0 python3 drills/lib/sampler.py "postgresql://postgres@127.0.0.1:$SRC_PORT/postgres" walpipe_drill \
    "$VOLUME_DIR" "http://127.0.0.1:$PROM_PORT" "$OUT/series.csv" "$EVIDENCE" &
  SAMPLER_PID=$!
}

# stack_writer ROWS: inserts ROWS rows of 1 kB every 0.5 s (and deletes 5) until stopped.
stack_writer() {
  local rows=$1
  (
    while true; do
      src -c "INSERT INTO orders (customer, payload) SELECT (random() * 100)::int, repeat(md5(random()::text), 32) FROM generate_series(1, $rows)" \
          -c "DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY id LIMIT 5)" >/dev/null 2>&1 || true
      sleep 0.5
    done
  ) &
  WRITER_PID=$!
}

# stack_alerts_resolve: every alert is resolved in Alertmanager, and the
# receiver has been sent the resolution of every alert it was sent firing
# (Alertmanager sends it on the group's next flush, after its API already
# shows the alert resolved).
stack_alerts_resolve() {
  wait_until 180 "every alert resolves in Alertmanager" bash -c \
    "curl -s 'http://127.0.0.1:$AM_PORT/api/v2/alerts?active=true&silenced=false&inhibited=false' | python3 -c 'import json,sys; sys.exit(1 if json.load(sys.stdin) else 0)'"
  wait_until 60 "the receiver is sent every resolution" python3 drills/lib/judge.py --settled "$OUT/notifications.jsonl"
  evidence "Alertmanager: no active alert; the receiver got the resolution of every alert it got firing"
}

# stack_plot: series.csv as plot.png, each alert's first firing marked.
stack_plot() {
  local marks
  marks=$(python3 drills/lib/judge.py --marks "$OUT/series.csv")
  gnuplot <<EOF
set terminal png size 1200,700 noenhanced
set output "$OUT/plot.png"
set datafile separator ","
set title "walpipe drill: retained WAL, safe_wal_size and the WAL volume, with alert firings"
set xlabel "seconds"
set ylabel "MB"
set y2label "volume used (%)"
set y2range [0:100]
set ytics nomirror
set y2tics
set key outside bottom center horizontal
set grid
$marks
plot "$OUT/series.csv" every ::1 using 1:2 with lines lw 2 title "retained WAL (MB)", \
     "" every ::1 using 1:3 with lines lw 2 title "safe_wal_size (MB)", \
     "" every ::1 using 1:4 axes x1y2 with lines lw 2 title "WAL volume used (%)"
EOF
}

# stack_stop: stops and unmounts everything the stack started.
stack_stop() {
  set +e
  [ -n "${WALPIPE_PID:-}" ] && kill -CONT "$WALPIPE_PID" 2>/dev/null
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for name in "${STARTED_CLUSTERS[@]}"; do cluster_stop "$name"; done
  STARTED_CLUSTERS=()
  mountpoint -q "$WORK/walvol" 2>/dev/null && umount "$WORK/walvol"
  rm -rf "$WORK/source" "$WORK/sink" "$WORK/wal.img" "$WORK/am" "$WORK/prom"
  WALPIPE_PID=
  set -e
}
