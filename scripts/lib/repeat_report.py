#!/usr/bin/env python3
"""Reads the logs of N `cargo test` runs and lists every test that did not
pass in every run (failed, or missing from a run because its binary did not
get that far). Exit 1 if there is one.

    repeat_report.py N run1.log run2.log ...
"""
import re
import sys

runs = int(sys.argv[1])
logs = sys.argv[2:]
passed, seen = {}, set()
for path in logs:
    binary = "?"
    for line in open(path, errors="replace"):
        running = re.match(r"\s*Running (\S+)", line)
        if running:
            binary = re.sub(r"-[0-9a-f]{16}$", "", running.group(1).split("/")[-1])
        result = re.match(r"test (\S+) \.\.\. (ok|FAILED|ignored)", line)
        if result:
            name = f"{binary}::{result.group(1)}"
            seen.add(name)
            if result.group(2) == "ok":
                passed[name] = passed.get(name, 0) + 1
            elif result.group(2) == "ignored":
                passed[name] = passed.get(name, 0) + 1
unstable = sorted(name for name in seen if passed.get(name, 0) < runs)
print(f"{len(seen)} tests, {runs} runs")
for name in unstable:
    print(f"NOT STABLE: {name} passed {passed.get(name, 0)} of {runs} runs")
print(f"{len(seen) - len(unstable)} passed, {len(unstable)} failed")
sys.exit(1 if unstable or not seen else 0)
