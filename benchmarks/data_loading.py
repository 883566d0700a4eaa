"""Data-loading throughput against model throughput: is the loader ever the bottleneck?

    python benchmarks/data_loading.py --fasta /tmp/GRCh37_chr20.fa.gz [--out benchmarks/RESULTS.md]

For each window length and worker count: training windows per second through
GenomeDataModule's loader (fetch from FASTA, tokenize, reverse complement, shift, collate), and
bases per second. In the same run, the forward + backward throughput of models on this machine,
so the two can be compared directly. Give a copy of the FASTA in a writable folder (the first run
writes its index and scan cache beside it).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import sys
import time
from pathlib import Path

from common import Report, git_commit, machine, train_row
from hnet_dna.data import GenomeDataModule


def loader_rate(fasta: str, window: int, workers: int, batch: int, seconds: float) -> tuple[float, float]:
    dm = GenomeDataModule(fasta, window=window, stride=window, batch_size=batch, num_workers=workers,
                          reverse_complement=0.5, random_shift=window // 8, val_regions=None)
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    n, epoch, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            n += next(it)["input_ids"].shape[0]
        except StopIteration:  # a short genome: go on with the next epoch
            epoch += 1
            loader.sampler.set_epoch(epoch)
            it = iter(loader)
    elapsed = time.perf_counter() - start
    del it, loader  # stop the workers before the next row
    gc.collect()
    return n / elapsed, n * window / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", required=True)
    parser.add_argument("--windows", default="1024,8192")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per row")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    report = Report(args.out)
    report.write(f"\n### data_loading (cpu), {datetime.date.today()}, commit {git_commit()}")
    report.write(f"\nMachine: {machine('cpu')}. Command: `python {' '.join(sys.argv)}`.")
    report.write("\nModel forward + backward on this machine (what the loader has to keep up with):")
    report.table(["preset", "batch x length", "bases/s"])
    for preset, batch, length in (("tiny-hnet", 8, 1024), ("dna-hnet-m3t1-t15-m4", 1, 1024)):
        r = train_row(preset, batch, length, "cpu", repeats=3)
        report.row([preset, f"{batch} x {length}", f"{r['bases_per_s']:,.0f}"])
    report.write("\nTraining loader (reverse complement 0.5, shift up to window/8, batch 8):")
    report.table(["window", "workers", "windows/s", "bases/s"])
    for window in (int(w) for w in args.windows.split(",")):
        for workers in (int(w) for w in args.workers.split(",")):
            rate, bases = loader_rate(args.fasta, window, workers, batch=8, seconds=args.seconds)
            report.row([window, workers, f"{rate:,.0f}", f"{bases:,.0f}"])


if __name__ == "__main__":
    main()
