#!/usr/bin/env python3
"""Judges a drill from its time series, the notifications Alertmanager sent
and durable evidence; prints the findings and exits 1 if one does not hold.

    judge.py A|B SERIES_CSV NOTIFICATIONS_JSONL --server-log LOG --data-gap LSN --scrape METRICS
                                     stalled slot: sink blocked / walpipe frozen
    judge.py L SERIES_CSV NOTIFICATIONS_JSONL   long transaction: only the pinned alert
    judge.py --marks SERIES_CSV      gnuplot commands marking each alert's first firing
    judge.py --settled NOTIFICATIONS_JSONL
                                     exit 0 once every alert notified firing was notified resolved after

The rule every verdict keeps: it never depends on a sample landing in a
window shorter than a few sampling periods (2 s here). A state that can be
brief is judged on what stays: the server's log line, a table row, a
counter. `wal_status = lost`, for one, lasts only until walpipe re-creates
the slot, which can be within a second; `unreserved` lasts from passing the
cap to the next checkpoint, anything from 0 to about 20 s in these drills.
Both are reported when the sampler saw them, never required. Every alert the
judge requires stays true for tens of seconds by construction (noted beside
each list).
"""
import argparse
import csv
import json
import re
import sys

# The order the slot alerts must fire in when the sink is blocked (variant A).
# Each condition holds from its onset until the loss or later: confirmed
# frozen for the whole stall (~2 min), retained > 50% of the cap from 32 MB
# until the loss (~50 s), safe_wal_size predicted below 0 within 30 s (drill
# speed) from ~20 MB left until it reaches 0 (~30 s), the data gap counter's
# increase over its hour (30 s at drill speed).
ORDER_A = ["WalpipeConsumerNotConfirming", "WalpipeRetainedWalHigh", "WalpipeSlotInvalidationPredicted",
           "WalpipeDataGapRecorded"]
# Variant B: a frozen walpipe exports nothing (down for the whole freeze, minutes).
ORDER_B = ["WalpipeDown", "WalpipeDataGapRecorded"]
# Brief by nature: reported when sampled, never required.
BRIEF = ["WalpipeSlotUnreserved", "WalpipeSlotLost"]
# Alerts that blame the consumer: silent when a long transaction pins the slot.
CONSUMER = ["WalpipeConsumerNotConfirming", "WalpipeSinkStalled", "WalpipeHeartbeatNotReturning",
            "WalpipeSlotInactive", "WalpipeEmitLagHigh", "WalpipeDown"]
INVALIDATED = re.compile(r'invalidating (obsolete replication )?slot "walpipe_drill"')


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def first_firings(series):
    first = {}
    for row in series:
        for name in filter(None, row["firing"].split(";")):
            first.setdefault(name, row)
    return first


def notifications(path):
    """(alertname, status) of every notification, in the order received."""
    out = []
    with open(path) as f:
        for line in f:
            for alert in json.loads(line)["notification"].get("alerts", []):
                out.append((alert["labels"]["alertname"], alert["status"]))
    return out


def settled(path):
    last = {}
    for name, status in notifications(path):
        last[name] = status
    return all(status == "resolved" for status in last.values())


def scraped(path, metric):
    """The sum of a metric's samples in a /metrics scrape (0 when absent)."""
    total = 0.0
    with open(path) as f:
        for line in f:
            if line.startswith(metric + "{") or line.startswith(metric + " "):
                total += float(line.rsplit(" ", 1)[1])
    return total


if sys.argv[1] == "--marks":
    for i, (name, row) in enumerate(sorted(first_firings(rows(sys.argv[2])).items(), key=lambda kv: float(kv[1]["seconds"]))):
        x = float(row["seconds"])
        print(f'set arrow from {x}, graph 0 to {x}, graph 1 nohead dt 2 lc rgb "red"')
        print(f'set label "{name.replace("Walpipe", "")}" at {x}, graph {0.97 - 0.05 * (i % 8)} left font ",9"')
    sys.exit(0)
if sys.argv[1] == "--settled":
    sys.exit(0 if settled(sys.argv[2]) else 1)

parser = argparse.ArgumentParser()
parser.add_argument("variant", choices=["A", "B", "L"])
parser.add_argument("series")
parser.add_argument("notifications")
parser.add_argument("--server-log")
parser.add_argument("--data-gap")
parser.add_argument("--scrape")
args = parser.parse_args()
series = rows(args.series)
failures = []


def check(ok, text):
    print(("ok:     " if ok else "FAILED: ") + text)
    if not ok:
        failures.append(text)


def info(text):
    print("info:   " + text)


retained = [float(r["retained_mb"]) for r in series if r["retained_mb"]]
used = [float(r["volume_used_pct"]) for r in series]
first = first_firings(series)
check(all(r["source_answers"] == "1" for r in series), f"the source answered every one of {len(series)} samples")
if args.variant == "L":
    check(max(retained) - retained[0] > 16, f"retained WAL climbed from {retained[0]:.0f} MB to {max(retained):.0f} MB")
    expected = ["WalpipeRestartLsnPinned"]
    check("WalpipeRestartLsnPinned" in first, "WalpipeRestartLsnPinned fired" + (f" at T+{first['WalpipeRestartLsnPinned']['seconds']}s" if "WalpipeRestartLsnPinned" in first else ""))
    for name in CONSUMER:
        check(name not in first, f"{name} stayed silent")
else:
    check(max(retained) - retained[0] > 32, f"retained WAL climbed from {retained[0]:.0f} MB to {max(retained):.0f} MB")
    with open(args.server_log, errors="replace") as f:
        log = f.read()
    line = next((l for l in log.splitlines() if INVALIDATED.search(l)), None)
    check(line is not None, "the server's log says the slot was invalidated" + (f": {line.split('LOG:', 1)[-1].strip()}" if line else ""))
    check("No space left on device" not in log and "PANIC" not in log, "the server's log has no full-disk error and no PANIC")
    check(max(used) < 95, f"the WAL volume never filled: at most {max(used):.0f}% of it used in the samples")
    check(bool(args.data_gap), f"walpipe.data_gaps has the gap: from {args.data_gap or 'nothing recorded'}")
    gaps = scraped(args.scrape, "walpipe_data_gaps_total")
    check(gaps >= 1, f"walpipe_data_gaps_total counts it: {gaps:.0f}")
    seen = [r["seconds"] for r in series if r["wal_status"] == "lost"]
    info(f"wal_status lost sampled at T+{seen[0]}s" if seen else "wal_status lost not sampled (walpipe re-created the slot between two samples)")
    for name in BRIEF:
        info(f"{name} fired at T+{first[name]['seconds']}s" if name in first else f"{name} not sampled firing (a brief state)")
    expected = ORDER_A if args.variant == "A" else ORDER_B
    for name in expected:
        check(name in first, f"{name} fired" + (f" at T+{first[name]['seconds']}s with the volume {first[name]['volume_used_pct']}% used" if name in first else ""))
    if all(name in first for name in expected):
        times = [float(first[name]["seconds"]) for name in expected]
        check(times == sorted(times), "in order: " + " -> ".join(expected))
        warning = first[expected[0]]
        check(float(warning["volume_used_pct"]) < 50, f"the first warning came with the volume under 50% used ({warning['volume_used_pct']}%)")
notified = {}
for name, status in notifications(args.notifications):
    notified.setdefault(name, set()).add(status)
for name in expected:
    statuses = notified.get(name, set())
    check({"firing", "resolved"} <= statuses, f"Alertmanager notified {name} firing and resolved ({', '.join(sorted(statuses)) or 'nothing'})")
sys.exit(1 if failures else 0)
