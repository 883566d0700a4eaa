"""Print the fine-tuning table of ``benchmarks/finetune_benchmark.sh`` as markdown.

    python benchmarks/finetune_table.py runs/finetune_benchmark

One row per (labelled set, system): test MCC and AUROC as mean ± sd over seeds (ddof 1), the runs
counted, and the mean validation MCC of the selected checkpoints (or of the chosen k / C); per set
the winner of each metric and its margin in sd units (recomputed from the runs in ``results.json``);
then the tally the
issue asks for: on how many sets the pretrained model is at least as good as ``scratch`` and
ahead of the CNN (test MCC means).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LABELS = {
    "model": "pretrained backbone, fine-tuned",
    "scratch": "same architecture from scratch",
    "cnn": "CNN from scratch",
    "probe": "linear probe, frozen backbone",
    "kmer_lr": "k-mer logistic regression",
}


def cell(stats: dict) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{stats['mean']:.3f}" + (f" ± {stats['sd']:.3f}" if stats["sd"] is not None else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print("| set | system | test MCC | test AUROC | runs | val MCC (selected) |")
    print("|---|---|---|---|---|---|")
    tally = {"sets": 0, "model >= scratch": 0, "model > cnn": 0}
    verdicts = []
    from hnet_dna.protocols.finetune.results import summarise, winners

    for path in sorted(args.out.glob("*/results.json")):
        result = json.loads(path.read_text())
        summary = summarise(result["runs"])  # recomputed from the runs with this checkout's rules
        result["winners"] = winners(summary)
        for system, stats in summary.items():
            runs = [r for r in result["runs"] if r["system"] == system]
            vals = [r["val_mcc"] for r in runs if r["val_mcc"] is not None]
            print(f"| {path.parent.name} | {system}: {LABELS.get(system, system)} | {cell(stats['test/mcc'])} | "
                  f"{cell(stats['test/auroc'])} | {len(runs)} | {sum(vals) / max(len(vals), 1):.3f} |")
        wins = result.get("winners", {})
        verdicts.append(f"- {path.parent.name}: " + "; ".join(
            f"{m.removeprefix('test/')} **{w['best']}** (+{w['margin']:.3f} over {w['runner_up']}"
            + (f", {w['margin_sd']:.1f} sd)" if w["margin_sd"] is not None else ")")
            for m, w in wins.items() if m in ("test/mcc", "test/auroc")))
        mean = {s: summary[s]["test/mcc"]["mean"] for s in summary}
        if {"model", "scratch", "cnn"} <= mean.keys():
            tally["sets"] += 1
            tally["model >= scratch"] += mean["model"] >= mean["scratch"]
            tally["model > cnn"] += mean["model"] > mean["cnn"]
    print()
    print("\n".join(verdicts))
    print()
    print(f"Test MCC means over {tally['sets']} sets: the pretrained model is at least as good as scratch on "
          f"{tally['model >= scratch']}, ahead of the CNN on {tally['model > cnn']} (the goal: 4 of 6 each).")


if __name__ == "__main__":
    main()
