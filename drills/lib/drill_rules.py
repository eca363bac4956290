#!/usr/bin/env python3
"""Drill-speed copy of alerts/walpipe.rules.yml, generated, never hand-copied.

Every duration of the rules (`for:`, range selectors like [10m], and the
horizon of predict_linear) is divided by FACTOR, with a floor for ranges so
that a few scrapes still fall inside them. Everything else (expressions,
thresholds, labels, annotations) stays exactly as in the real rules.

    drill_rules.py FACTOR [MIN_RANGE_SECONDS] < alerts/walpipe.rules.yml > drill.rules.yml
"""
import re
import sys

factor = float(sys.argv[1])
min_range = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
UNITS = {"s": 1, "m": 60, "h": 3600}


def seconds(text):
    return float(text[:-1]) * UNITS[text[-1]]


def scaled(text, floor=0.0):
    # Prometheus durations are integers with a unit: milliseconds keep the precision.
    return f"{round(max(seconds(text) / factor, floor) * 1000)}ms"


def rewrite(line):
    line = re.sub(r"^(\s*for: )(\d+[smh])\s*$", lambda m: m.group(1) + scaled(m.group(2)) + "\n", line)
    line = re.sub(r"\[(\d+[smh])\]", lambda m: "[" + scaled(m.group(1), min_range) + "]", line)
    line = re.sub(
        r"(predict_linear\([^\[]*\[[^\]]*\],\s*)(\d+)\)",
        lambda m: f"{m.group(1)}{round(float(m.group(2)) / factor)})",
        line,
    )
    # Recording groups evaluate at their own interval: as fast as the drill's.
    line = re.sub(r"^(\s*interval: )(\d+[smh])\s*$", lambda m: m.group(1) + scaled(m.group(2), 1.0) + "\n", line)
    return line


sys.stdout.write("".join(rewrite(line) for line in sys.stdin))
