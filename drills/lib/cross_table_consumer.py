#!/usr/bin/env python3
"""The consumer of drills/cross-table-consumer.sh.

walpipe promises the order of the changes to one key (one row), not an
order across tables. A consumer that fans out per table (a queue or a topic
per table, a worker each) sees `order_items` and `orders` changes
interleaved in any way. This replays the batches a webhook received, split
per table with each table's own order kept, under several interleavings,
into two consumers of an "order summary" view (status and total quantity
per order):

- `StateConsumer` keeps the latest row of each table by key and computes the
  view from both (items whose order has not arrived yet wait for it). It
  assumes nothing across tables.
- `NaiveConsumer` updates the view as each change arrives, as if an item
  could only come after its order: an item for an unknown order is dropped.

    cross_table_consumer.py BATCHES.jsonl TRUTH.json
Prints one line per interleaving and consumer; exit 1 unless the state
consumer matches the source every time.
"""
import json
import random
import sys


def changes_per_table(path):
    tables = {}
    seen = set()
    for line in open(path):
        for change in json.loads(line):
            # Messages have no table; schema lines (a table's shape) are no row changes.
            if change["id"] in seen or change.get("table") is None or change["op"] == "schema":
                continue
            seen.add(change["id"])
            tables.setdefault(change["table"], []).append(change)
    return tables


def interleavings(tables, seeds):
    orders, items = tables.get("public.orders", []), tables.get("public.order_items", [])
    yield "commit order", sorted(orders + items, key=position)
    yield "order_items first", items + orders
    yield "orders first", orders + items
    for seed in seeds:
        rng, a, b, merged = random.Random(seed), list(orders), list(items), []
        while a or b:
            source = a if (a and (not b or rng.random() < 0.5)) else b
            merged.append(source.pop(0))
        yield f"random (seed {seed})", merged


def position(change):
    lsn, _, ordinal = change["id"].rpartition(":")
    high, low = lsn.split("/")
    return (int(high, 16) << 32 | int(low, 16), int(ordinal) if ordinal.isdigit() else -1)


class StateConsumer:
    def __init__(self):
        self.rows = {"public.orders": {}, "public.order_items": {}}

    def apply(self, change):
        rows = self.rows[change["table"]]
        if change["op"] in ("insert", "update", "snapshot"):
            if change["old"] and change["old"].get("id") != change["new"]["id"]:
                rows.pop(change["old"]["id"], None)
            rows[change["new"]["id"]] = change["new"]
        elif change["op"] == "delete":
            rows.pop(change["key"]["id"], None)

    def view(self):
        qty = {}
        for item in self.rows["public.order_items"].values():
            qty[item["order_id"]] = qty.get(item["order_id"], 0) + item["qty"]
        return {str(o["id"]): {"status": o["status"], "qty": qty.get(o["id"], 0)} for o in self.rows["public.orders"].values()}


class NaiveConsumer:
    def __init__(self):
        self.summary, self.items, self.dropped = {}, {}, 0

    def apply(self, change):
        op, table = change["op"], change["table"]
        if table == "public.orders":
            key = str((change["new"] or change["key"])["id"])
            if op in ("insert", "snapshot"):
                self.summary[key] = {"status": change["new"]["status"], "qty": 0}
            elif op == "update" and key in self.summary:
                self.summary[key]["status"] = change["new"]["status"]
            elif op == "delete":
                self.summary.pop(key, None)
            return
        item_id = (change["new"] or change["key"])["id"]
        before = self.items.pop(item_id, None)
        if before and str(before["order_id"]) in self.summary:
            self.summary[str(before["order_id"])]["qty"] -= before["qty"]
        if op != "delete":
            order = str(change["new"]["order_id"])
            if order not in self.summary:
                self.dropped += 1  # "cannot happen": the order comes first
                return
            self.summary[order]["qty"] += change["new"]["qty"]
            self.items[item_id] = change["new"]

    def view(self):
        return self.summary


def main():
    tables = changes_per_table(sys.argv[1])
    truth = json.load(open(sys.argv[2]))
    state_ok = True
    for name, changes in interleavings(tables, seeds=[1, 2, 3]):
        for consumer in (StateConsumer(), NaiveConsumer()):
            for change in changes:
                consumer.apply(change)
            view = consumer.view()
            wrong = sum(1 for k in set(view) | set(truth) if view.get(k) != truth.get(k))
            verdict = "matches the source" if wrong == 0 else f"WRONG for {wrong} of {len(truth)} orders"
            extra = f", dropped {consumer.dropped} item changes" if isinstance(consumer, NaiveConsumer) else ""
            print(f"{name:<20} {type(consumer).__name__:<14} {verdict}{extra}")
            if isinstance(consumer, StateConsumer) and wrong:
                state_ok = False
    sys.exit(0 if state_ok else 1)


if __name__ == "__main__":
    main()
