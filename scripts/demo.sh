#!/usr/bin/env bash
# The demo: a throwaway source PostgreSQL with orders and order items, a
# small shop workload, and `walpipe tail` printing every change as it
# commits. Cleans up after itself. (The Postgres sink and the metrics join
# the demo with the sidecar.)
#
#   bash scripts/demo.sh            # SECONDS_OF_WORKLOAD=10
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
RUN_FOR=${SECONDS_OF_WORKLOAD:-10}
PORT=${PORT:-57432}

ensure_postgres15
PG_BINDIR=$PG15_BINDIR
echo "== building walpipe"
cargo build --release --locked -q
WALPIPE=$PWD/target/release/walpipe

WORK=$(mktemp -d /tmp/walpipe-demo.XXXXXX)
cleanup() { [ -n "${TAIL_PID:-}" ] && kill "$TAIL_PID" 2>/dev/null && wait "$TAIL_PID" 2>/dev/null; cluster_stop source; rm -rf "$WORK"; }
trap cleanup EXIT
echo "== starting a throwaway source cluster on 127.0.0.1:$PORT"
cluster_start source "$PORT"
PSQL=("$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres -d postgres)
"${PSQL[@]}" <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, status text NOT NULL,
                     total numeric(12,2) NOT NULL, tags text[], created_at timestamptz DEFAULT now());
CREATE TABLE order_items (order_id bigint REFERENCES orders ON DELETE CASCADE, line int, sku text, qty int,
                          price numeric(10,2), PRIMARY KEY (order_id, line));
INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 20) i;
CREATE PUBLICATION demo FOR TABLE orders, order_items;
SQL
"${PSQL[@]}" -c "SELECT pg_create_logical_replication_slot('demo', 'pgoutput')" >/dev/null

echo "== walpipe tail --slot demo --publication demo  (one JSON line per change)"
"$WALPIPE" tail --slot demo --publication demo --source "postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable" &
TAIL_PID=$!

end=$((SECONDS + RUN_FOR))
while [ $SECONDS -lt $end ]; do
  "${PSQL[@]}" <<'SQL'
BEGIN;
WITH o AS (INSERT INTO orders (customer_id, status, total, tags)
           VALUES (1 + (random() * 19)::int, 'new', 0, ARRAY['web']) RETURNING id)
INSERT INTO order_items SELECT o.id, l, 'SKU-' || (random() * 100)::int, 1 + (random() * 3)::int, round((random() * 50)::numeric, 2)
FROM o, generate_series(1, 2) l;
UPDATE orders SET total = (SELECT sum(qty * price) FROM order_items WHERE order_id = orders.id)
WHERE id = (SELECT max(id) FROM orders);
COMMIT;
UPDATE orders SET status = 'paid' WHERE id = (SELECT min(id) FROM orders WHERE status = 'new');
SQL
  sleep 1
done
"${PSQL[@]}" -c "DELETE FROM orders WHERE id = (SELECT min(id) FROM orders)"
sleep 1
echo "== done: the slot has confirmed what was printed"
"${PSQL[@]}" -c "SELECT slot_name, confirmed_flush_lsn, pg_current_wal_lsn() FROM pg_replication_slots"
