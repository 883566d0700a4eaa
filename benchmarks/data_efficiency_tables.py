"""Markdown tables of a finished data-efficiency run, for benchmarks/RESULTS.md.

    python benchmarks/data_efficiency_tables.py runs/de_cpu_small

Reads ``DIR/summary.json`` and ``DIR/curves.csv`` (written by ``python -m hnet_dna.data_efficiency``)
and prints: the models (parameters, both FLOP counts with their ratio to the reference, final and
decayed bits per base with the seeds, speed, memory), every H-Net's multipliers against every
baseline (sustained crossing, mean +- sd, per seed, first crossing), and the mean curves.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path


def _f(x, fmt="{:.4f}") -> str:
    return "-" if x is None else fmt.format(x)


def model_table(s: dict) -> str:
    heldouts = s["heldout"]
    head = ["model", "params", "MFLOP/base causal (x ref)", "MFLOP/base torch (x ref)"]
    head += [f"final bits {h} (seeds)" for h in heldouts]
    if s["decay_steps"]:
        head += [f"after decay {h}" for h in heldouts]
    head += ["compression", "bases/s", "peak MB"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in s["models"].items():
        ref = " (reference)" if name == s["reference"] else ""
        causal = m.get("flops_per_base_causal")  # None in runs made before the causal count
        cells = [f"{name}{ref}", f"{m['params'] / 1e6:.2f} M",
                 "-" if causal is None else f"{causal / 1e6:.2f} ({m['flops_ratio_to_reference_causal']:.2f})",
                 f"{m['flops_per_base'] / 1e6:.2f} ({m['flops_ratio_to_reference']:.2f})"]
        for h in heldouts:
            seeds = ", ".join(_f(v) for v in m["final_bits_per_base_per_seed"][h].values())  # null: diverged
            cells.append(f"{_f(m['final_bits_per_base'][h])} ({seeds})")
        if s["decay_steps"]:
            cells += [_f(m["decayed_bits_per_base"][h]) for h in heldouts]
        cells += [_f(m["final_compression"], "{:.2f}"), f"{m['train_bases_per_s']:,.0f}", f"{m['peak_memory_mb']:,.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def multiplier_table(s: dict) -> str:
    heldouts = s["heldout"]
    rows = ["| H-Net | baseline | " + " | ".join(heldouts) + " |", "|" + "---|" * (2 + len(heldouts))]
    for hnet, per_baseline in s["multipliers_by_hnet"].items():
        for b, per in per_baseline.items():
            cells = []
            for h in heldouts:
                v = per[h]
                seeds = ", ".join("-" if x is None else f"{x:.2f}" for x in v["per_seed"].values())
                first = ", ".join("-" if x is None else f"{x:.2f}" for x in v.get("first_crossing_per_seed", {}).values())
                if v["reached"]:
                    head = f"{'>= ' if v['lower_bound'] else ''}**{v['mean']:.2f}x ± {v['sd']:.2f}**"
                else:
                    head = f"**not reached** ({v['seeds_reached']} of {len(v['per_seed'])} seeds)"
                cells.append(f"{head} ({seeds}; first crossing {first})")
            rows.append(f"| {hnet} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def curve_table(run: Path, s: dict, heldout: str) -> str:
    means = defaultdict(list)
    with (run / "curves.csv").open() as f:
        for r in csv.DictReader(f):
            if r["heldout"] == heldout:
                means[(r["model"], int(r["bases_seen"]))].append(float(r["bits_per_base"]))
    names = list(s["models"])
    rows = ["| bases seen | " + " | ".join(names) + " |", "|" + "---|" * (1 + len(names))]
    for bases in s["eval_bases"]:
        vals = [sum(means[(n, bases)]) / len(means[(n, bases)]) for n in names]
        best = min(vals)
        rows.append(f"| {bases / 1e6:.2f} M | " + " | ".join(f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in vals) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished data-efficiency run folder")
    args = parser.parse_args()
    s = json.loads((args.run / "summary.json").read_text())
    print(model_table(s), "", multiplier_table(s), sep="\n")
    for h in s["heldout"]:
        print(f"\nMean held-out bits per base on {h} (best in bold):\n")
        print(curve_table(args.run, s, h))


if __name__ == "__main__":
    main()
