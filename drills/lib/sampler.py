#!/usr/bin/env python3
"""Samples a drill every INTERVAL seconds into a CSV time series and an
evidence log: the slot (retained WAL, safe_wal_size, wal_status, active),
the WAL volume's use, whether the source answers, and the alerts
Prometheus has firing. Each alert's first firing is written to the
evidence log with the volume's use at that moment. Stops on SIGTERM.

    sampler.py PSQL_URL SLOT VOLUME_DIR PROMETHEUS_URL CSV EVIDENCE
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

psql_url, slot, volume, prometheus, csv_path, evidence_path = sys.argv[1:7]
# The drill's clock, so that its evidence lines and ours share one T+.
start = float(os.environ.get("DRILL_T0", time.time()))
running = True
signal.signal(signal.SIGTERM, lambda *_: globals().__setitem__("running", False))


def stamp():
    return time.strftime("%H:%M:%S", time.gmtime()) + f" T+{time.time() - start:5.1f}s"


def slot_state():
    query = (
        "SELECT coalesce(pg_current_wal_lsn() - restart_lsn, 0)::bigint, coalesce(safe_wal_size, 0), "
        f"coalesce(wal_status, 'missing'), active FROM pg_replication_slots WHERE slot_name = '{slot}'"
    )
    try:
        out = subprocess.run(["psql", psql_url, "-X", "-At", "-F", ",", "-c", query],
                             capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    line = out.stdout.strip()
    return line.split(",") if line else ["0", "0", "missing", "f"]


def firing():
    try:
        with urllib.request.urlopen(prometheus + "/api/v1/alerts", timeout=3) as response:
            alerts = json.load(response)["data"]["alerts"]
        return sorted({a["labels"]["alertname"] for a in alerts if a["state"] == "firing"})
    except Exception:
        return []


seen = set()
with open(csv_path, "w", newline="") as out, open(evidence_path, "a") as evidence:
    writer = csv.writer(out)
    writer.writerow(["seconds", "retained_mb", "safe_wal_size_mb", "volume_used_pct", "wal_status", "active",
                     "source_answers", "firing"])
    while running:
        fs = os.statvfs(volume)
        used = 100.0 * (1 - fs.f_bavail / fs.f_blocks)
        state = slot_state()
        alerts = firing()
        answered = state is not None
        retained, safe, status, active = state if state else ("", "", "unknown", "")
        mb = lambda v: f"{int(v) / 1048576:.1f}" if v not in ("", None) else ""
        writer.writerow([f"{time.time() - start:.1f}", mb(retained), mb(safe), f"{used:.1f}", status, active,
                         int(answered), ";".join(alerts)])
        out.flush()
        for name in alerts:
            if name not in seen:
                seen.add(name)
                evidence.write(f"[{stamp()}] ALERT {name} firing; WAL volume {used:.0f}% used, "
                               f"retained {mb(retained)} MB, safe_wal_size {mb(safe)} MB, wal_status {status}\n")
                evidence.flush()
        for name in list(seen):
            if name not in alerts:
                seen.discard(name)
                evidence.write(f"[{stamp()}] ALERT {name} resolved in Prometheus\n")
                evidence.flush()
        time.sleep(2)
