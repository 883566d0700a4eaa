"""The inference commands on one long region: wall time and peak memory of ``score``, ``embed`` and
``boundaries`` on 1 Mb (by default) of a real chromosome, and inference memory per window size.

    python benchmarks/long_inputs.py --fasta ../shared/data/genomes/GRCh37_chr20.fa.gz \\
        --region 20:30,000,001-31,000,000 --out runs/long_inputs
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from common import git_commit, peak_rss_mb, reset_peak_memory, rss_mb

DETAILS = """\
Each command runs in its own process under ``/usr/bin/time -v`` with the shipped default model and
its default window; the table gives wall seconds, bases per second and the process's peak resident
memory. The second table is the peak resident memory of one forward pass (no grad) of the default
model on one window of each size, over what the process held before it (a fresh process each):
the memory a window costs, which ``--help`` quotes. The third (section ``exact``) scores a region
(``--exact-region``) with each of ``--exact-models`` (``default``: the shipped model; or a model
folder) twice: in windows, and with ``--exact-context`` (blocks of 4,096 bases continuing from
the model's caches). Prints markdown with machine, date, commit and command.
"""


def timed_command(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak resident MB, last stderr line) of a command run under /usr/bin/time -v."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    said = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("hnet_dna.")]
    return wall, peak_kb / 1024, said[-1] if said else ""


def window_memory(window: int, batch: int) -> dict:
    """A child: peak resident MB of one no-grad forward of the default model on (batch, window)."""
    import torch

    from hnet_dna.model.loading import load_model

    torch.set_num_threads(1)
    model = load_model(None).eval()
    ids = torch.randint(0, 4, (batch, window))
    with torch.inference_mode():
        reset_peak_memory()  # loading the weights peaked higher than a small window's pass
        before = rss_mb()
        model(ids)
    return {"peak_mb": peak_rss_mb() - before}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, epilog=DETAILS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fasta", required=True)
    p.add_argument("--region", default="20:30,000,001-31,000,000")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--windows", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--sections", default="commands,windows,exact")
    p.add_argument("--exact-region", default=None, help="the region of the exact section (default --region)")
    p.add_argument("--exact-models", nargs="+", default=["default"],
                   help="models of the exact section: 'default' (the shipped model) or model folders")
    p.add_argument("--window-memory", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.window_memory:
        window, batch = json.loads(args.window_memory)
        print(json.dumps(window_memory(window, batch)))
        return

    from hnet_dna.backends import cpu_name
    from hnet_dna.io import parse_region

    args.out.mkdir(parents=True, exist_ok=True)
    chrom, start, end = parse_region(args.region)
    length = end - start
    bed = args.out / "region.bed"
    bed.write_text(f"{chrom}\t{start}\t{end}\n")
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + (sys.argv[1:] if argv is None else list(argv)))
    print(f"### long_inputs: {cpu_name()}, {datetime.date.today()}, commit {git_commit()}\n\nCommand: `{cmd}`\n")
    py = sys.executable
    runs = {
        "score --region (per-base bits, bedGraph)": [py, "-m", "hnet_dna.score", "--fasta", args.fasta, "--region",
                                                     args.region, "--output", str(args.out / "region.bedgraph"), "--quiet"],
        "embed (BED, pooling mean)": [py, "-m", "hnet_dna.embed", "--fasta", args.fasta, "--input", str(bed),
                                      "--output", str(args.out / "mean.npz"), "--quiet"],
        "embed (BED, pooling none: every base)": [py, "-m", "hnet_dna.embed", "--fasta", args.fasta, "--input", str(bed),
                                                  "--pooling", "none", "--output", str(args.out / "bases.npz"), "--quiet"],
        "boundaries --region (bigWig, BED, PNG)": [py, "-m", "hnet_dna.boundaries", "--fasta", args.fasta, "--region",
                                                   args.region, "--out", str(args.out / "boundaries"), "--quiet"],
    }
    threads = os.environ.get("OMP_NUM_THREADS")
    cores = f"{threads} thread(s) (OMP_NUM_THREADS)" if threads else f"{os.cpu_count()} cores"
    if "commands" not in args.sections:
        runs = {}
    else:
        print(f"Region {args.region} ({length:,} bases), the shipped default model, each command's default window "
              f"and batch size, {cores}.\n")
        print("| command | wall (s) | bases/s | peak resident memory (MB) | what it said |\n|---|---|---|---|---|")
    for name, command in runs.items():
        wall, peak, said = timed_command(command)
        print(f"| `{name}` | {wall:.1f} | {length / wall:,.0f} | {peak:,.0f} | {said} |", flush=True)

    if "windows" in args.sections:
        print("\nInference memory of one forward pass (default model, no grad, 1 thread): peak resident memory "
              "over what the process held before it, a fresh process per row.\n")
        print("| window (bases) | batch | peak MB | MB per 1,000 bases |\n|---|---|---|---|")
        for window, batch in [(w, 1) for w in args.windows] + [(4096, 8), (1024, 32)]:
            out = subprocess.run([py, __file__, "--fasta", args.fasta, "--out", str(args.out), "--window-memory",
                                  json.dumps([window, batch])], capture_output=True, text=True, check=True).stdout
            peak = json.loads(out.strip().splitlines()[-1])["peak_mb"]
            print(f"| {window:,} | {batch} | {peak:,.1f} | {peak / (window * batch) * 1000:.1f} |", flush=True)

    if "exact" not in args.sections:
        return
    region = args.exact_region or args.region
    chrom, start, end = parse_region(region)
    print(f"\nScoring {region} ({end - start:,} bases) in windows (the default: 1,024 bases, stride 512, "
          f"batch 32) and with `--exact-context` (one read from the start in blocks of 4,096 bases); {cores}.\n")
    print("| model | reading | wall (s) | bases/s | peak resident memory (MB) | what it said |\n|---|---|---|---|---|---|")
    for model in args.exact_models:
        chosen = [] if model == "default" else ["--model", model]
        for reading, extra in (("windows", []), ("exact context", ["--exact-context", "--window", "4096"])):
            command = [py, "-m", "hnet_dna.score", "--fasta", args.fasta, "--region", region, "--output",
                       str(args.out / "exact.bedgraph"), "--quiet", *chosen, *extra]
            wall, peak, said = timed_command(command)
            print(f"| {model} | {reading} | {wall:.1f} | {(end - start) / wall:,.0f} | {peak:,.0f} | {said} |", flush=True)

if __name__ == "__main__":
    main()
