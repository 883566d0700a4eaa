"""In-silico mutagenesis of a fine-tuned promoter classifier on held-out promoters: which bases
carry the prediction?

    python benchmarks/ism_promoters.py --ckpt_path RUN/best.ckpt --out DIR [--count 40] [--plot 3]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch

import hnet_dna
from common import git_commit
from hnet_dna.backends import cpu_name
from hnet_dna.interpret.plots import plot_ism
from hnet_dna.tasks.finetune import load_classifier

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "classification" / "promoter_tss_chr20_300bp.tsv"
TSS = 249
BANDS = [(-249, -101), (-100, -51), (-50, -1), (0, 50)]

DETAILS = """\
Takes the first ``--count`` promoters (label 1) of the test split of
``../shared/data/classification/promoter_tss_chr20_300bp.tsv`` (RefSeq TSS at -249..+50: the TSS
is base 249, 0-based), runs :func:`hnet_dna.ism` with the classifier (effects on the promoter
class's logit), and writes ``DIR/ism.npz`` (the command's layout), ``DIR/ism.png`` (the first
``--plot`` maps) and ``DIR/profile.png`` (mean importance by position relative to the TSS, with
its spread over sequences). Prints, with machine, date, commit and command: the share of the total
importance in bands around the TSS against the share of positions they hold, and the mean effect of
each base (is the classifier reading GC content, or a TSS-anchored signal?).
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, epilog=DETAILS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--plot", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    rows = [line.split("\t") for line in args.data.read_text().splitlines()[1:]]
    chosen = [r for r in rows if r[1] == "1" and r[2] == "test"][: args.count]
    ids = [r[3] if len(r) > 3 and r[3] else f"test{i}" for i, r in enumerate(chosen)]
    task = load_classifier(args.ckpt_path)
    t0 = time.perf_counter()
    result = hnet_dna.ism([r[0] for r in chosen], scorer=task, ids=ids, batch_size=args.batch_size, target="1",
                          progress=True)
    seconds = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "ism.npz", **result.arrays())
    plot_ism(result, args.out / "ism.png", list(range(min(args.plot, len(chosen)))), offset=-TSS,
         xlabel="position relative to the TSS")
    importance = np.stack([result.importance(i) for i in range(len(chosen))])  # (N, 300)
    effects = np.stack(result.effects)  # (N, 300, 4)
    commit = git_commit()
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads; "
          f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; commit {commit}")
    print(f"command: python benchmarks/ism_promoters.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    subs = 3 * importance.size
    print(f"{len(chosen)} held-out promoters, {subs:,} substitutions in {seconds:.1f} s ({subs / seconds:,.0f} per s)\n")
    total = importance.sum(1, keepdims=True)
    print("| bases (relative to the TSS) | share of positions | share of importance (mean ± sd over promoters) |")
    print("|---|---|---|")
    for lo, hi in BANDS:
        share = importance[:, TSS + lo:TSS + hi + 1].sum(1) / total[:, 0]
        print(f"| {lo:+d}..{hi:+d} | {(hi - lo + 1) / importance.shape[1]:.3f} | {share.mean():.3f} ± {share.std(ddof=1):.3f} |")
    print("\nmean effect on the promoter logit of a substitution to each base (all positions, all promoters):")
    print("| to A | to C | to G | to T |\n|---|---|---|---|")
    print("| " + " | ".join(f"{np.nanmean(np.where(effects[..., b] == 0, np.nan, effects[..., b])):+.4f}" for b in range(4)) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(importance.shape[1]) - TSS
    mean, sd = importance.mean(0), importance.std(0, ddof=1)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.fill_between(x, mean - sd, mean + sd, color="C0", alpha=0.25, lw=0)
    ax.plot(x, mean, color="C0", lw=1)
    ax.axvline(0, color="k", lw=0.6, ls="--")
    ax.set_xlabel("position relative to the TSS")
    ax.set_ylabel("importance (mean |effect|)")
    ax.set_title(f"ISM of a fine-tuned promoter classifier: {len(chosen)} held-out chr20 promoters (mean ± sd)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "profile.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
