#!/usr/bin/env python3
"""Judges a drill from its time series and the notifications Alertmanager
sent; prints the findings and exits 1 if one does not hold.

    judge.py A|B SERIES_CSV NOTIFICATIONS_JSONL     stalled slot: sink blocked / walpipe frozen
    judge.py L SERIES_CSV NOTIFICATIONS_JSONL       long transaction: only the pinned alert
    judge.py --marks SERIES_CSV      gnuplot commands marking each alert's first firing
"""
import csv
import json
import sys

# The order the slot alerts must fire in when the sink is blocked (variant A).
ORDER_A = ["WalpipeConsumerNotConfirming", "WalpipeRetainedWalHigh", "WalpipeSlotInvalidationPredicted",
           "WalpipeSlotUnreserved"]
# Alerts that blame the consumer: silent when a long transaction pins the slot.
CONSUMER = ["WalpipeConsumerNotConfirming", "WalpipeSinkStalled", "WalpipeHeartbeatNotReturning",
            "WalpipeSlotInactive", "WalpipeEmitLagHigh", "WalpipeDown"]


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def first_firings(series):
    first = {}
    for row in series:
        for name in filter(None, row["firing"].split(";")):
            first.setdefault(name, row)
    return first


if sys.argv[1] == "--marks":
    for i, (name, row) in enumerate(sorted(first_firings(rows(sys.argv[2])).items(), key=lambda kv: float(kv[1]["seconds"]))):
        x = float(row["seconds"])
        print(f'set arrow from {x}, graph 0 to {x}, graph 1 nohead dt 2 lc rgb "red"')
        print(f'set label "{name.replace("Walpipe", "")}" at {x}, graph {0.97 - 0.05 * (i % 8)} left font ",9"')
    sys.exit(0)

variant, series_path, notifications_path = sys.argv[1:4]
series = rows(series_path)
failures = []


def check(ok, text):
    print(("ok:     " if ok else "FAILED: ") + text)
    if not ok:
        failures.append(text)


retained = [float(r["retained_mb"]) for r in series if r["retained_mb"]]
used = [float(r["volume_used_pct"]) for r in series]
first = first_firings(series)
check(all(r["source_answers"] == "1" for r in series), f"the source answered every one of {len(series)} samples")
if variant == "L":
    check(max(retained) - retained[0] > 16, f"retained WAL climbed from {retained[0]:.0f} MB to {max(retained):.0f} MB")
    expected = ["WalpipeRestartLsnPinned"]
    check("WalpipeRestartLsnPinned" in first, "WalpipeRestartLsnPinned fired" + (f" at T+{first['WalpipeRestartLsnPinned']['seconds']}s" if "WalpipeRestartLsnPinned" in first else ""))
    for name in CONSUMER:
        check(name not in first, f"{name} stayed silent")
else:
    check(max(retained) - retained[0] > 32, f"retained WAL climbed from {retained[0]:.0f} MB to {max(retained):.0f} MB")
    check(max(used) < 95, f"the WAL volume never filled: at most {max(used):.0f}% used")
    check(any(r["wal_status"] == "lost" for r in series), "wal_status reached lost")
    expected = ORDER_A if variant == "A" else ["WalpipeDown"]
    for name in expected:
        check(name in first, f"{name} fired" + (f" at T+{first[name]['seconds']}s with the volume {first[name]['volume_used_pct']}% used" if name in first else ""))
    if all(name in first for name in expected):
        times = [float(first[name]["seconds"]) for name in expected]
        check(times == sorted(times), "in order: " + " -> ".join(expected))
        warning = first[expected[0]]
        check(float(warning["volume_used_pct"]) < 50, f"the first warning came with the volume under 50% used ({warning['volume_used_pct']}%)")
notified = {}
with open(notifications_path) as f:
    for line in f:
        note = json.loads(line)["notification"]
        for alert in note.get("alerts", []):
            notified.setdefault(alert["labels"]["alertname"], set()).add(alert["status"])
for name in expected:
    statuses = notified.get(name, set())
    check({"firing", "resolved"} <= statuses, f"Alertmanager notified {name} firing and resolved ({', '.join(sorted(statuses)) or 'nothing'})")
sys.exit(1 if failures else 0)
