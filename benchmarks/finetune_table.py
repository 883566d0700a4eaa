"""Print the fine-tuning table of ``benchmarks/finetune_benchmark.sh`` as markdown.

    python benchmarks/finetune_table.py runs/finetune_benchmark

One row per (labelled set, system): test MCC and AUROC as mean ± sd over seeds (ddof 1), the runs
counted, the mean validation MCC of the selected checkpoints (or of the chosen k / C), and what a
run spent (epochs, wall seconds, trainable parameters); per set the winner of each metric and its
margin in sd units (recomputed from the runs in ``results.json``); then the tally issue #30 asks
for: the best pretrained system per set, **chosen on validation** (the highest mean validation
MCC among ``model``, ``lpft``, ``lora`` and ``probe``), against ``scratch`` and the CNN (test MCC
means), and its six-set mean test MCC (the default model's shipping rule).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PRETRAINED = ("model", "lpft", "lora", "probe")  # the systems that use the pretrained weights

LABELS = {
    "model": "pretrained backbone, fine-tuned",
    "lpft": "probe-initialised head, then fine-tuned (LP-FT)",
    "lora": "LoRA adapters (peft), backbone frozen",
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
    print("| set | system | test MCC | test AUROC | runs | val MCC (selected) | epochs | wall s | trainable parameters |")
    print("|---|---|---|---|---|---|---|---|---|")
    tally = {"sets": 0, "best >= scratch": 0, "best >= cnn": 0}
    verdicts, chosen = [], []
    from hnet_dna.protocols.finetune.results import summarise, winners

    for path in sorted(args.out.glob("*/results.json")):
        result = json.loads(path.read_text())
        summary = summarise(result["runs"])  # recomputed from the runs with this checkout's rules
        result["winners"] = winners(summary)
        for system, stats in summary.items():
            runs = [r for r in result["runs"] if r["system"] == system]
            vals = [r["val_mcc"] for r in runs if r["val_mcc"] is not None]
            spent = stats.get("spent", {})
            epochs, wall, trainable = (spent.get(k) for k in ("epochs", "wall_seconds", "trainable_parameters"))
            print(f"| {path.parent.name} | {system}: {LABELS.get(system, system)} | {cell(stats['test/mcc'])} | "
                  f"{cell(stats['test/auroc'])} | {len(runs)} | {sum(vals) / max(len(vals), 1):.3f} | "
                  f"{'-' if epochs is None else f'{epochs:.1f}'} | {'-' if wall is None else f'{wall:.0f}'} | "
                  f"{'-' if trainable is None else f'{trainable:,.0f}'} |")
        wins = result.get("winners", {})
        verdicts.append(f"- {path.parent.name}: " + "; ".join(
            f"{m.removeprefix('test/')} **{w['best']}** (+{w['margin']:.3f} over {w['runner_up']}"
            + (f", {w['margin_sd']:.1f} sd)" if w["margin_sd"] is not None else ")")
            for m, w in wins.items() if m in ("test/mcc", "test/auroc")))
        mean = {s: summary[s]["test/mcc"]["mean"] for s in summary}
        val = {s: _mean([r["val_mcc"] for r in result["runs"] if r["system"] == s]) for s in summary}
        candidates = [s for s in PRETRAINED if val.get(s) is not None and mean.get(s) is not None]
        if candidates and {"scratch", "cnn"} <= mean.keys():
            best = max(candidates, key=lambda s: val[s])  # chosen on validation, never on test
            chosen.append(mean[best])
            tally["sets"] += 1
            tally["best >= scratch"] += mean[best] >= mean["scratch"]
            tally["best >= cnn"] += mean[best] >= mean["cnn"]
            verdicts.append(f"  - chosen on validation: **{best}** (val {val[best]:.3f}), test MCC {mean[best]:.3f}; "
                            f"scratch {mean['scratch']:.3f}, cnn {mean['cnn']:.3f}")
    print()
    print("\n".join(verdicts))
    print()
    print(f"Over {tally['sets']} sets, the best pretrained system chosen on validation is at least as good as scratch "
          f"on {tally['best >= scratch']} and as the CNN on {tally['best >= cnn']} (test MCC means; the goal: 5 and 3 "
          f"of 6); its mean test MCC over these sets: {_mean(chosen) if chosen else float('nan'):.3f}.")


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


if __name__ == "__main__":
    main()
