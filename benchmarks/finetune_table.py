"""Print the fine-tuning table of ``benchmarks/finetune_benchmark.sh`` as markdown.

    python benchmarks/finetune_table.py runs/finetune_benchmark

One row per (labelled set, system): test MCC and AUROC as mean ± sd over seeds (ddof 1), the
seeds, and the validation MCC of the selected checkpoints; then the pretraining runs' held-out
bits per base (``heldout_report.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SYSTEMS = {
    "tiny-hnet": "tiny H-Net, pretrained (chr20 < 50 Mb), fine-tuned",
    "hnet_scratch": "tiny H-Net from scratch",
    "tiny-transformer": "tiny Transformer, pretrained, fine-tuned",
    "tiny-mamba2": "tiny Mamba-2, pretrained, fine-tuned",
}


def cell(stats: dict) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{stats['mean']:.3f}" + (f" ± {stats['sd']:.3f}" if stats["sd"] is not None else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print("| set | system | test MCC | test AUROC | seeds | val MCC (selected) |")
    print("|---|---|---|---|---|---|")
    for set_dir in sorted(p for p in args.out.iterdir() if p.is_dir() and p.name != "pretrain"):
        kmer = None
        for system, label in SYSTEMS.items():
            path = set_dir / system / "results.json"
            if not path.is_file():
                continue
            result = json.loads(path.read_text())
            summary = result["summary"]["model"]
            vals = [r["val_mcc"] for r in result["runs"] if r["system"] == "model"]
            print(f"| {set_dir.name} | {label} | {cell(summary['test/mcc'])} | {cell(summary['test/auroc'])} | "
                  f"{len(vals)} | {sum(vals) / len(vals):.3f} |")
            kmer = kmer or result
        if kmer is not None:
            summary = kmer["summary"]["kmer_lr"]
            runs = [r for r in kmer["runs"] if r["system"] == "kmer_lr"]
            print(f"| {set_dir.name} | k-mer logistic regression (k {runs[0]['k']}, C {runs[0]['C']}) | "
                  f"{cell(summary['test/mcc'])} | {cell(summary['test/auroc'])} | {len(runs)} | {runs[0]['val_mcc']:.3f} |")
    print()
    print("| pretrained model | held-out bits per base (20:48-50 Mb) | order-2 Markov |")
    print("|---|---|---|")
    for report in sorted((args.out / "pretrain").glob("*/lightning_logs/version_*/heldout_report.json")):
        bits = json.loads(report.read_text())["bits_per_base"]
        names = list(bits)
        print(f"| {report.parts[-4]} | {bits[names[0]]:.4f} | {bits[names[-1]]:.4f} |")


if __name__ == "__main__":
    main()
