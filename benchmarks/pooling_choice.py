"""Choose each recipe's pooling on validation: fine-tune the recipe's model once per pooling (one
seed, one budget) and compare the selected checkpoints' validation MCC. Test metrics are never
printed or read here.

    python benchmarks/pooling_choice.py --out runs/pooling_choice --budget epochs:4 \\
        --sets uci_splice_60bp core_promoters_70bp --poolings mean max attention flatten

Each (set, pooling) is one protocol run (``python -m hnet_dna.finetune --systems model``) in
``OUT/<set>/<pooling>/``: a rerun skips those finished. Prints a Markdown table of validation MCC
per set and pooling, and the pooling with the highest (ties: the first listed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SETS = ("core_promoters_70bp", "ecoli_promoters", "enhancers_iEnhancer2L", "promoter_tss_chr20",
        "splice_sites_chr20", "uci_splice_60bp")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", default="epochs:4", help="the protocol's --budget, the same for every pooling")
    parser.add_argument("--sets", nargs="+", default=list(SETS), help="recipes in pipelines/finetune/")
    parser.add_argument("--poolings", nargs="+", default=["mean", "max", "attention", "flatten"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default="default")
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    table = {}
    for name in args.sets:
        for pooling in args.poolings:
            out = args.out / name / pooling
            if not (out / "results.json").is_file():
                print(f"== {name}, pooling {pooling}", file=sys.stderr, flush=True)
                subprocess.run([sys.executable, "-m", "hnet_dna.finetune", "--config", f"pipelines/finetune/{name}.yaml",
                                "--model.backbone", args.backbone, "--model.pooling", pooling, "--systems", "model",
                                "--seeds", str(args.seed), "--budget", args.budget, "--out", str(out),
                                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"],
                               cwd=repo, check=True, stdout=subprocess.DEVNULL)
            runs = json.loads((out / "results.json").read_text())["runs"]
            table[name, pooling] = next(r["val_mcc"] for r in runs if r["system"] == "model")
    print(f"Validation MCC of the selected checkpoint, `model`, seed {args.seed}, budget `{args.budget}`:\n")
    print("| set | " + " | ".join(args.poolings) + " | chosen |")
    print("|---|" + "---|" * (len(args.poolings) + 1))
    for name in args.sets:
        values = [table[name, p] for p in args.poolings]
        best = args.poolings[max(range(len(values)), key=lambda i: (values[i], -i))]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {best} |")


if __name__ == "__main__":
    main()
