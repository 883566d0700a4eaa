"""In-silico mutagenesis throughput: substitutions scored per second, by sequence length and batch.

    python benchmarks/ism_speed.py [--model M] [--lengths 100 300 1000] [--batches 32 128] [--threads 2]

Each point runs :func:`hnet_dna.ism` once (after one untimed warm-up at the smallest length) on a
slice of real sequence (``tests/data/chr20_slices.fa``, held-out chr20) with the language-model
scorer and the command's default window (512, stride 256): a sequence of L bases costs 3 L forward
passes of min(L, 512) bases. Prints a markdown table with machine, date, commit and command.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

import hnet_dna
from common import git_commit
from hnet_dna.backends import cpu_name
from hnet_dna.interpret.ism import DEFAULT_WINDOW
from hnet_dna.model.loading import load_model

REPO = Path(__file__).resolve().parents[1]


def fixture_sequence() -> str:
    lines = (REPO / "tests" / "data" / "chr20_slices.fa").read_text().splitlines()
    return "".join(line for line in lines if line and not line.startswith(">"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="default: the shipped model")
    p.add_argument("--lengths", type=int, nargs="+", default=[100, 300, 1000])
    p.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    seq = fixture_sequence().replace("N", "")
    if len(seq) < max(args.lengths):
        sys.exit(f"the fixture has {len(seq):,} bases; ask for at most that")
    hnet_dna.ism([seq[:min(args.lengths)]], model, batch_size=args.batches[0])  # warm-up
    commit = git_commit()
    print(f"machine: {cpu_name()}, {args.threads} torch threads, torch {torch.__version__}; "
          f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; commit {commit}; model {args.model or 'default'}")
    print(f"command: python benchmarks/ism_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    print("| length | window | batch | substitutions | seconds | substitutions/s | bases read/s |")
    print("|---|---|---|---|---|---|---|")
    for length in args.lengths:
        for batch in args.batches:
            t0 = time.perf_counter()
            hnet_dna.ism([seq[:length]], model, batch_size=batch)
            seconds = time.perf_counter() - t0
            window = min(length, DEFAULT_WINDOW)
            subs = 3 * length
            print(f"| {length:,} | {window} | {batch} | {subs:,} | {seconds:.2f} | {subs / seconds:,.0f} | "
                  f"{subs * window / seconds:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
