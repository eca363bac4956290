#!/usr/bin/env bash
# The demo: throwaway source and sink PostgreSQL clusters, `walpipe run`
# streaming a small shop (customers, orders, order items) from one to the
# other, and a plain SQL view in the sink (revenue per customer) kept fresh
# by the mirrored tables. Cleans up after itself.
#
#   bash scripts/demo.sh            # SECONDS_OF_WORKLOAD=15
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
RUN_FOR=${SECONDS_OF_WORKLOAD:-15}
SRC_PORT=${SRC_PORT:-27432}
SINK_PORT=${SINK_PORT:-27433}
HTTP_ADDR=${HTTP_ADDR:-127.0.0.1:27898}

workspace_start walpipe-demo
echo "== starting a source cluster on 127.0.0.1:$SRC_PORT and a sink cluster on 127.0.0.1:$SINK_PORT"
cluster_start source "$SRC_PORT" max_slot_wal_keep_size=1GB
cluster_start sink "$SINK_PORT"
src() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$SRC_PORT" -U postgres -d postgres "$@"; }
sink() { "$PG_BINDIR/psql" -X -q -h 127.0.0.1 -p "$SINK_PORT" -U postgres -d postgres "$@"; }
src <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, status text NOT NULL,
                     tags text[], created_at timestamptz DEFAULT now());
CREATE TABLE order_items (order_id bigint REFERENCES orders ON DELETE CASCADE, line int, sku text, qty int,
                          price numeric(10,2), PRIMARY KEY (order_id, line));
INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 8) i;
INSERT INTO orders (customer_id, status, tags) SELECT 1 + i % 8, 'paid', ARRAY['seed'] FROM generate_series(1, 200) i;
INSERT INTO order_items SELECT o.id, l, 'SKU-' || (o.id * l % 50), 1 + l, 9.99 FROM orders o, generate_series(1, 2) l;
SQL

echo "== walpipe run: snapshot, then stream (log: $WORK/walpipe.log)"
WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable" \
WALPIPE_SINK_URL="postgres://postgres@127.0.0.1:$SINK_PORT/postgres?sslmode=disable" \
WALPIPE_JOB_NAME=shop WALPIPE_FLUSH_INTERVAL_MS=200 WALPIPE_HTTP_ADDR=$HTTP_ADDR \
  "$WALPIPE" run > "$WORK/walpipe.log" 2>&1 &
until sink -At -c "SELECT 1 FROM walpipe.checkpoints" 2>/dev/null | grep -q 1; do sleep 0.2; done
sed 's/^/   /' "$WORK/walpipe.log"
echo "== the console: http://$HTTP_ADDR/ and the metrics: http://$HTTP_ADDR/metrics while the demo runs"

sink <<'SQL'
CREATE VIEW revenue_per_customer AS
SELECT c.name, count(DISTINCT o.id) AS orders, sum(i.qty * i.price) AS revenue
FROM customers c JOIN orders o ON o.customer_id = c.id JOIN order_items i ON i.order_id = o.id
WHERE o.status <> 'cancelled' GROUP BY c.name ORDER BY revenue DESC;
SQL

echo "== writing orders for $RUN_FOR s; the sink view follows"
end=$((SECONDS + RUN_FOR))
while [ $SECONDS -lt $end ]; do
  src <<'SQL'
BEGIN;
WITH o AS (INSERT INTO orders (customer_id, status, tags) VALUES (1 + (random() * 7)::int, 'new', ARRAY['web']) RETURNING id)
INSERT INTO order_items SELECT o.id, l, 'SKU-' || (random() * 50)::int, 1 + (random() * 3)::int, round((random() * 40)::numeric, 2)
FROM o, generate_series(1, 3) l;
COMMIT;
UPDATE orders SET status = 'paid' WHERE id = (SELECT min(id) FROM orders WHERE status = 'new');
UPDATE orders SET status = 'cancelled' WHERE id = (SELECT max(id) FROM orders WHERE status = 'paid' AND random() < 0.3);
DELETE FROM orders WHERE id = (SELECT min(id) FROM orders WHERE status = 'cancelled') AND random() < 0.3;
SQL
  sleep 1
  echo "-- sink at $(date +%T): $(sink -At -c "SELECT count(*) || ' orders, ' || (SELECT count(*) FROM order_items) || ' items' FROM orders")"
done
sleep 1
echo "== revenue per customer, in the sink"
sink -c "SELECT * FROM revenue_per_customer"
echo "== source and sink agree?"
for table in customers orders order_items; do
  cols=$(src -c "SELECT string_agg(quote_ident(column_name), ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = '$table'")
  a=$(src -c "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM (SELECT $cols FROM $table) t")
  b=$(sink -At -c "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM (SELECT $cols FROM $table) t")
  [ "$a" = "$b" ] && echo "   $table: identical" || echo "   $table: DIFFERENT"
done
echo "== metrics at http://$HTTP_ADDR/metrics (a few of them):"
curl -s "http://$HTTP_ADDR/metrics" | grep -E '^walpipe_(source_events_total|sink_events_total|slot_retained_wal_bytes|slot_safe_wal_size_bytes|slot_wal_status\{.*reserved"\}|source_idle_seconds|emit_event_time_lag_seconds|job_state\{.*running)' | sed 's/^/   /'
echo "   readiness: $(curl -s "http://$HTTP_ADDR/readyz")"
