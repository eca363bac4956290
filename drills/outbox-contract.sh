#!/usr/bin/env bash
# Demo: the outbox event contract does not change when the `orders` table does.
#
# An application writes an order and, in the same transaction, an outbox row
# (aggregate_type, aggregate_id, event_type, payload). walpipe
# (WALPIPE_OUTBOX_TABLES=public.outbox) emits only the event, deletes the
# delivered outbox row (WALPIPE_OUTBOX_DELETE=true), and turns
# pg_logical_emit_message(true, 'events', ...) into events too. Then the
# orders table is reshaped (a column renamed, one added, one retyped) and more
# orders are placed: the raw `orders` changes change shape, the events do not.
#
#   bash drills/outbox-contract.sh        # evidence in drills/out/outbox-contract/
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh
source scripts/lib/cluster.sh
PORT=${PORT:-25442}
HOOK_PORT=${HOOK_PORT:-25491}
OUT=drills/out/outbox-contract
mkdir -p "$OUT"; rm -f "$OUT"/*

workspace_start walpipe-outbox
cluster_start source "$PORT"
src() { "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
src -c "CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric(10,2))" \
    -c "CREATE TABLE outbox (id bigserial PRIMARY KEY, aggregate_type text NOT NULL, aggregate_id text NOT NULL,
          event_type text NOT NULL, payload jsonb NOT NULL, occurred_at timestamptz NOT NULL DEFAULT now())"
python3 scripts/lib/webhook_receiver.py "$HOOK_PORT" record "$OUT/batches.jsonl" &
WALPIPE_SOURCE_URL="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable" \
WALPIPE_SINK_URL="http://127.0.0.1:$HOOK_PORT/events" WALPIPE_JOB_NAME=outbox_demo \
WALPIPE_TABLES=public.orders,public.outbox WALPIPE_OUTBOX_TABLES=public.outbox \
WALPIPE_OUTBOX_PREFIX=events WALPIPE_OUTBOX_DELETE=true WALPIPE_FLUSH_INTERVAL_MS=200 \
WALPIPE_HTTP_ADDR=127.0.0.1:0 WALPIPE_LOG=warn "$WALPIPE" run 2> "$OUT/walpipe.log" &
until [ "$(src -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walpipe_outbox_demo' AND active")" = 1 ]; do sleep 0.2; done

place_order() { # id, the orders columns, their values, total
  src -c "BEGIN" -c "INSERT INTO orders ($2) VALUES ($3)" \
      -c "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
          VALUES ('order', '$1', 'order.placed', jsonb_build_object('order_id', $1, 'total', '$4'))" -c "COMMIT"
}
echo "== v1 of orders: (id, status, total)"
place_order 1 "id, status, total" "1, 'new', 19.90" 19.90
src -c "SELECT pg_logical_emit_message(true, 'events', '{\"event_type\":\"cart.abandoned\",\"aggregate_type\":\"cart\",\"aggregate_id\":\"c-7\",\"payload\":{\"items\":3}}')" >/dev/null
echo "== v2 of orders: status renamed to state, currency added, total retyped to text"
src -c "ALTER TABLE orders RENAME COLUMN status TO state" -c "ALTER TABLE orders ADD COLUMN currency text" \
    -c "ALTER TABLE orders ALTER COLUMN total TYPE text"
place_order 2 "id, state, total, currency" "2, 'new', '5.00', 'EUR'" 5.00

events() { python3 -c '
import json, sys
for line in open(sys.argv[1]):
    for item in json.loads(line):
        if sys.argv[2] == "events" and "event_type" in item: print(json.dumps(item, sort_keys=True))
        if sys.argv[2] == "orders" and item.get("table") == "public.orders" and item["op"] != "schema": print(json.dumps(item["new"], sort_keys=True))
' "$OUT/batches.jsonl" "$1"; }
for _ in $(seq 600); do [ "$(events events 2>/dev/null | wc -l)" = 3 ] && break; sleep 0.2; done
for _ in $(seq 600); do [ "$(src -c "SELECT count(*) FROM outbox")" = 0 ] && break; sleep 0.2; done

{
  echo "# the events (one contract, before and after the schema change)"
  events events
  echo "# the raw orders changes (their shape follows the table)"
  events orders
  echo "# outbox rows left on the source: $(src -c "SELECT count(*) FROM outbox")"
} | tee "$OUT/evidence.log"
python3 - "$OUT/evidence.log" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
events = [json.loads(l) for l in lines[1:4]]
shapes = {tuple(sorted(e)) for e in events}
assert len(events) == 3 and len(shapes) == 1, f"the event contract changed: {shapes}"
assert shapes.pop() == ("aggregate_id", "aggregate_type", "event_id", "event_type", "occurred_at", "payload", "source")
orders = [json.loads(l) for l in lines[5:7]]
assert set(orders[0]) != set(orders[1]), "the orders changes should show the new shape"
assert lines[-1].endswith(": 0"), "delivered outbox rows were not deleted"
print("PASS: 3 events with one contract across the schema change; raw changes changed shape; outbox emptied")
PY
