#!/usr/bin/env python3
"""The table of benches/all.sh: this run's figures against their goals and
against the best earlier row of benches/history.tsv; and the data of the
summary plot (progress to the goal: 1 = met).

usage: summarize.py HISTORY DATE COMMIT SUMMARY_DAT [ROUNDS_TSV] > table.md

ROUNDS_TSV (figure, then its rounds' values, space-separated) adds each
figure's rounds to the table; its "this run" is then their median (their
most, for webhook requests).
"""
import sys

# figure: (what, goal, "max" if lower is better else "min", format)
GOALS = {
    "backlog_run_over_tail": ("mixed backlog: walpipe run / tail (the floor)", 1.15, "max", "{:.2f}x"),
    "backlog_speed_vs_native": ("mixed backlog: speed vs native (defaults)", 1.25, "min", "{:.2f}x"),
    "small_speed_vs_native": ("100k one-row txns: speed vs native (defaults)", 1.25, "min", "{:.2f}x"),
    "small_run_over_recvlogical": ("100k one-row txns: run / pg_recvlogical", 1.2, "max", "{:.2f}x"),
    "tail_over_recvlogical": ("400k-row txn: tail / pg_recvlogical", 0.6, "max", "{:.2f}x"),
    "copy_speed_vs_pipe": ("initial copy 1M rows: speed vs COPY pipe", 1.2, "min", "{:.2f}x"),
    "webhook_requests": ("webhook 500k backlog: requests", 550, "max", "{:.0f}"),
    "webhook_over_recvlogical": ("webhook 500k backlog: time / pg_recvlogical", 0.35, "max", "{:.2f}x"),
    "webhook_floor": ("same backlog: tail / pg_recvlogical (floor)", None, "max", "{:.2f}x"),
    "latency_p50_over_native": ("1,000 txn/s: p50 / native p50", 2.0, "max", "{:.1f}x"),
    "latency_p99_ms": ("1,000 txn/s: walpipe p99", 2.0, "max", "{:.1f} ms"),
    "restart_ms": ("restart to first row: walpipe", None, "max", "{:.0f} ms"),
    "restart_native_ms": ("restart to first row: native", None, "max", "{:.0f} ms"),
    "tail_instructions": ("tail: instructions per change", 7569, "max", "{:,.0f}"),
    "run_instructions": ("run: instructions per change", 6616, "max", "{:,.0f}"),
    "chunked_over_exported": ("chunked / exported copy, idle, 5M rows", 1.0, "min", "{:.2f}x"),
}


def main():
    history, date, commit, dat = sys.argv[1:5]
    rounds = {}
    if len(sys.argv) > 5:
        for line in open(sys.argv[5]):
            figure, _, values = line.rstrip("\n").partition("\t")
            rounds[figure] = [float(v) for v in values.split()]
    rows = [line.rstrip("\n").split("\t") for line in open(history) if line.strip() and not line.startswith("#")]
    now = {f: float(v) for d, c, f, v in rows if (d, c) == (date, commit)}
    earlier = {}
    for d, c, f, v in rows:
        if (d, c) == (date, commit):
            continue
        better = min if GOALS[f][2] == "max" else max
        earlier[f] = better(earlier.get(f, float(v)), float(v))
    print("| figure | this run | rounds | goal | best earlier | vs best earlier |")
    print("|---|---|---|---|---|---|")
    plotted = 0
    with open(dat, "w") as out:
        for figure, value in now.items():
            what, goal, sense, fmt = GOALS[figure]
            best = earlier.get(figure)
            goal_text = "-" if goal is None else ("<= " if sense == "max" else ">= ") + fmt.format(goal)
            best_text = "-" if best is None else fmt.format(best)
            versus = "-" if best is None else "{:.2f}".format(value / best)
            each = " / ".join(fmt.format(v) for v in rounds.get(figure, [])) or "-"
            print(f"| {what} | {fmt.format(value)} | {each} | {goal_text} | {best_text} | {versus} |")
            if goal is not None:
                progress = goal / value if sense == "max" else value / goal
                label = what.replace('"', "'")
                colour = 0x2E8B57 if progress >= 1 else 0x4A7AB8
                out.write(f'{plotted}\t"{label}"\t{progress:.4f}\t{colour}\n')
                plotted += 1


main()
