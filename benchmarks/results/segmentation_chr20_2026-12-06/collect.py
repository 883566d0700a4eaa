"""Collect the chr20 per-base runs of 2026-12-06 into one Markdown table: per run, then mean ± sd per system.

    python benchmarks/results/segmentation_chr20_2026-12-06/collect.py FILE.json [FILE.json ...] > table.md

Each FILE is a protocol results.json (its "runs") or a retest.json (a list of runs re-tested with the
current metrics); a later file's run of the same (system, seed) replaces an earlier one's.
"""
import json
import math
import sys
from pathlib import Path

COLUMNS = ["mcc", "auprc", "edge_recall", "mcc/exon", "mcc/intron", "mcc/cpg", "mcc/tss", "auprc/exon", "auprc/cpg",
           "edge_recall/exon", "edge_precision/exon"]
ORDER = ["model", "scratch", "cnn", "probe"]

runs = {}
for path in sys.argv[1:]:
    data = json.loads(Path(path).read_text())
    for run in data if isinstance(data, list) else data["runs"]:
        runs[(run["system"], run["seed"])] = run


def cell(value):
    return "-" if value is None or value != value else f"{value:.3f}"


print("| system | seed | " + " | ".join(COLUMNS) + " | epochs | steps | training FLOPs | wall s |")
print("|---|---|" + "---|" * (len(COLUMNS) + 4))
for system in ORDER:
    for (s, seed), run in sorted(runs.items()):
        if s != system:
            continue
        flops = run.get("training_flops")
        print(f"| {system} | {seed} | " + " | ".join(cell(run["test"].get("test/" + c)) for c in COLUMNS)
              + f" | {cell(run.get('epochs'))} | {run.get('optimizer_steps') or '-'} | "
              + (f"{flops:.3g}" if flops else "-") + f" | {run.get('wall_seconds') or '-'} |")
print()
print("| system | runs | " + " | ".join(COLUMNS) + " |")
print("|---|---|" + "---|" * len(COLUMNS))
for system in ORDER:
    rows = [r for (s, _), r in runs.items() if s == system]
    if system == "probe":
        rows = rows[:1]  # deterministic: one fit, recorded per seed
    if not rows:
        continue
    cells = []
    for c in COLUMNS:
        values = [r["test"].get("test/" + c) for r in rows]
        values = [v for v in values if v is not None and v == v]
        if not values:
            cells.append("-")
            continue
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        cells.append(f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else ""))
    print(f"| {system} | {len(rows)} | " + " | ".join(cells) + " |")
