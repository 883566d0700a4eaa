"""What a pretrained backbone hands a classifier, against the same architecture from random weights.

    python benchmarks/finetune_diagnostics.py --config pipelines/finetune/uci_splice_60bp.yaml \\
        [--backbone default] [--rows 1024] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from common import git_commit

DETAILS = """\
For the recipe's labelled set, and for each backbone (the given one, usually pretrained, and the
same architecture freshly initialised under seed 0), prints one markdown row:

* the RMS of the outermost stage's final norm gain (what scales every hidden state);
* the hidden states' mean square per dimension over real bases;
* the spread of the mean-pooled features across sequences (sum of their variances);
* the share of the hidden states' energy along their one largest shared direction (top singular
  value squared over the total; 1/D for isotropic vectors);
* bases per chunk at the first chunking level (H-Nets);
* linear-probe MCC (a seeded subset of ``--rows`` training rows; standardised features, C chosen on validation) on mean-pooled features, and,
  for sets of one sequence length, on the per-position hidden states laid end to end (what a head
  could read if pooling did not average position away); validation and test.

Features come from the frozen backbones in eval mode; nothing is trained but the probes.
``--out`` also writes ``diagnostics.json``. Every row names its backbone; the header names the
machine, date and commit.
"""


def _final_norm(model) -> torch.Tensor:
    from hnet_dna.optim import layer_depths

    depths, top = layer_depths(model)
    names = [n for n, _ in model.named_parameters() if n.endswith("rmsnorm.weight") and depths[n] == top]
    return dict(model.named_parameters())[names[-1]]


@torch.no_grad()
def _hidden(model, datamodule, split: str, idx):
    """Per-sequence hidden states (list of (L, D)) of rows ``idx`` and bases per chunk at level 0 (or None)."""
    from hnet_dna.data.labelled_datamodule import pad_batch

    ds = datamodule.datasets[split]
    hidden, bases, chunks = [], 0, 0
    # the encoded rows as they are (ds[...] would apply the training split's reverse-complement draws)
    items = [{"input_ids": ds.ids[i], "label": ds.labels[i], "index": i} for i in idx]
    for lo in range(0, len(items), 64):
        batch = pad_batch(items[lo:lo + 64], datamodule.tokenizer.pad_id)
        ids = model.tokenizer.from_nucleotide_ids(batch["input_ids"])
        features = model.features(ids, batch["mask"])
        for row in range(len(ids)):
            n = int(batch["mask"][row].sum())
            hidden.append(features.hidden[row, :n].float())
        if features.levels:
            level = features.levels[0]
            bases += int(batch["mask"].sum())
            chunks += int(level.mask.sum())
    return hidden, (bases / chunks if chunks else None)


def _probe(train, val, test, labels) -> tuple[float, float]:
    from sklearn.metrics import matthews_corrcoef

    from hnet_dna.baselines import linear_probe

    fitted = linear_probe((train, labels["train"]), (val, labels["val"]))
    return fitted["val_mcc"], float(matthews_corrcoef(labels["test"], fitted["model"].predict(test)))


def diagnose(model, datamodule, rows: int | None) -> dict:
    model.eval()
    gain = _final_norm(model).detach().float()
    rng = np.random.default_rng(0)  # a seeded subset of training rows (files are often sorted by label)
    n = len(datamodule.datasets["train"])
    idx = {"train": np.sort(rng.permutation(n)[:rows]) if rows and rows < n else np.arange(n)}
    idx |= {s: np.arange(len(datamodule.datasets[s])) for s in ("val", "test")}
    feats = {s: _hidden(model, datamodule, s, idx[s]) for s in ("train", "val", "test")}
    flat = torch.cat(feats["train"][0])  # (sum L, D)
    energy = torch.linalg.svdvals(flat)
    pooled = {s: torch.stack([h.mean(0) for h in feats[s][0]]).numpy() for s in feats}
    labels = {s: np.asarray(datamodule.datasets[s].labels)[idx[s]] for s in feats}
    out = {
        "final_norm_gain_rms": float(gain.pow(2).mean().sqrt()),
        "hidden_mean_square": float(flat.pow(2).mean()),
        "pooled_variance_sum": float(pooled["train"].var(0).sum()),
        "top_direction_share": float(energy[0] ** 2 / energy.pow(2).sum()),
        "bases_per_chunk": feats["train"][1],
    }
    out["probe_mean_val_mcc"], out["probe_mean_test_mcc"] = _probe(pooled["train"], pooled["val"], pooled["test"], labels)
    lengths = {h.shape[0] for s in feats for h in feats[s][0]}
    if len(lengths) == 1:
        laid = {s: torch.stack([h.reshape(-1) for h in feats[s][0]]).numpy() for s in feats}
        out["probe_positions_val_mcc"], out["probe_positions_test_mcc"] = _probe(laid["train"], laid["val"], laid["test"], labels)
    return out


def main() -> None:
    from hnet_dna.backends import cpu_name
    from hnet_dna.cli import build_cli
    from hnet_dna.model.loading import load_model, model_for

    parser = argparse.ArgumentParser(description=__doc__, epilog=DETAILS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a fine-tuning recipe: its labelled set and split")
    parser.add_argument("--backbone", default="default", help="what --model.backbone takes (default: the shipped model)")
    parser.add_argument("--rows", type=int, default=2048, help="training rows used for the statistics and the probe")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    datamodule = build_cli(["--config", args.config, "--trainer.logger", "false"]).datamodule
    given = load_model(args.backbone)
    torch.manual_seed(0)
    fresh = model_for(given.config)  # a masked LM's config gives a masked LM
    rows = {args.backbone: diagnose(given, datamodule, args.rows), "random init (seed 0)": diagnose(fresh, datamodule, args.rows)}
    import datetime

    commit = git_commit()
    print(f"{args.config}; {cpu_name()}, torch {torch.__version__}, {datetime.date.today()}, commit {commit}\n")
    keys = list(next(iter(rows.values())))
    print("| backbone | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join("-" if row.get(k) is None else f"{row[k]:.4g}" for k in keys) + " |")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "diagnostics.json").write_text(json.dumps({"config": args.config, "commit": commit, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
