"""Model speed: training throughput and peak memory, chunked SSD vs a per-position loop, and the
cost per generated base with the cache at short and long prefixes.

    python benchmarks/model_speed.py                       # CPU, every section
    python benchmarks/model_speed.py --device cuda         # GPU (bf16 autocast), adds H-Net / T9
    python benchmarks/model_speed.py --sections ssd,generate --out benchmarks/RESULTS.md

Each table row is printed (and appended to --out) as soon as it is measured; a section stops
starting new rows once its time cap is spent, so a short run still leaves results. Ratios are
always against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import Report, autocast, git_commit, machine, sync, timed, train_row
from hnet_dna import HNetConfig, HNetForCausalLM
from hnet_dna.model.ssd import ssd_scan, ssd_sequential_ref

TRAIN_ROWS = {
    "cpu": [
        ("tiny-hnet", 8, 1024),
        ("tiny-transformer", 8, 1024),
        ("tiny-mamba2", 8, 1024),
        ("tiny-hnet-2stage", 8, 1024),
        ("tiny-hnet", 2, 4096),
        ("dna-transformer-t9", 1, 1024),
        ("dna-mamba2-m10", 1, 1024),
        ("dna-hnet-m3t1-t15-m4", 1, 1024),
        ("dna-hnet-m3t1-m15-m4", 1, 1024),
        ("dna-transformer-t9", 1, 4096),
        ("dna-hnet-m3t1-t15-m4", 1, 4096),
    ],
    "cuda": [
        ("dna-transformer-t9", 8, 8192),
        ("dna-mamba2-m10", 8, 8192),
        ("dna-hnet-m3t1-t15-m4", 8, 8192),
        ("dna-hnet-m3t1-m15-m4", 8, 8192),
        ("dna-transformer-t9", 16, 2048),
        ("dna-hnet-m3t1-t15-m4", 16, 2048),
    ],
}
SSD_ROWS = [(1, 1024, 16, 64, 128, 256), (1, 4096, 16, 64, 128, 256), (4, 2048, 8, 32, 16, 64)]
GEN_ROWS = {"cpu": [("tiny-hnet", 1), ("dna-hnet-m3t1-t15-m4", 1)], "cuda": [("dna-hnet-m3t1-t15-m4", 1), ("dna-hnet-m3t1-t15-m4", 8)]}
PREFIXES = (1024, 8192)


# ------------------------------------------------------------------------------ train section
def section_train(report: Report, device: str, cap: float, repeats: int) -> None:
    report.table(["preset", "params (M)", "batch x length", "fwd+bwd (s, best)", "bases/s", "peak memory (MB)", "bases per chunk", "vs T9 (same shape)"])
    t9 = {}
    start = time.perf_counter()
    for preset, batch, length in TRAIN_ROWS[device]:
        if time.perf_counter() - start > cap:
            report.write(f"(time cap of {cap:.0f} s reached: later rows not run)")
            break
        if device == "cpu":
            # A fresh process per row: the CPU peak (ru_maxrss) is a process-wide high-water mark.
            cmd = [sys.executable, __file__, "--train-row", json.dumps([preset, batch, length, repeats])]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        else:
            r = train_row(preset, batch, length, device, repeats)
            torch.cuda.empty_cache()
        if preset == "dna-transformer-t9":
            t9[(batch, length)] = r["seconds"]
        ratio = f"{r['seconds'] / t9[(batch, length)]:.2f}x time" if (batch, length) in t9 and preset != "dna-transformer-t9" else ""
        chunks = " / ".join(f"{c:.1f}" for c in r["compression"]) or "-"
        report.row([preset, f"{r['params_m']:.1f}", f"{batch} x {length}", f"{r['seconds']:.3f}", f"{r['bases_per_s']:,.0f}", f"{r['peak_mb']:,.0f}", chunks, ratio])


# -------------------------------------------------------------------------------- SSD section
def section_ssd(report: Report, device: str, cap: float, repeats: int) -> None:
    report.table(["batch x length", "heads x headdim x state", "chunk", "pass", "chunked (s, best)", "per-position loop (s, 1 run)", "speedup"])
    start = time.perf_counter()
    for batch, length, heads, p, n, chunk in SSD_ROWS:
        if time.perf_counter() - start > cap:
            report.write(f"(time cap of {cap:.0f} s reached: later rows not run)")
            break
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, length, heads, p, generator=g).to(device)
        a = (-torch.rand(batch, length, heads, generator=g) * 0.1).to(device)
        B = torch.randn(batch, length, 1, n, generator=g).to(device)
        C = torch.randn(batch, length, 1, n, generator=g).to(device)
        with torch.no_grad():
            chunked = timed(lambda: ssd_scan(x, a, B, C, chunk_size=chunk), device, repeats)
            loop = timed(lambda: ssd_sequential_ref(x, a, B, C), device, 1, warmup=0)
        report.row([f"{batch} x {length}", f"{heads} x {p} x {n}", chunk, "forward", f"{chunked:.4f}", f"{loop:.3f}", f"{loop / chunked:.1f}x"])
        xg = x.clone().requires_grad_()
        chunked = timed(lambda: ssd_scan(xg, a, B, C, chunk_size=chunk).sum().backward(), device, repeats)
        loop = timed(lambda: ssd_sequential_ref(xg, a, B, C).sum().backward(), device, 1, warmup=0)
        report.row([f"{batch} x {length}", f"{heads} x {p} x {n}", chunk, "fwd+bwd", f"{chunked:.4f}", f"{loop:.3f}", f"{loop / chunked:.1f}x"])


# --------------------------------------------------------------------------- generate section
def section_generate(report: Report, device: str, cap: float, steps: int) -> None:
    report.table(["preset", "batch", "prefix", "prefill (s)", "ms per new base (cached)", "ms per base, full rerun", "cached step vs 1k"])
    start = time.perf_counter()
    for preset, batch in GEN_ROWS[device]:
        torch.manual_seed(0)
        model = HNetForCausalLM(HNetConfig.from_preset(preset)).to(device).eval()
        first = None
        for prefix in PREFIXES:
            if time.perf_counter() - start > cap:
                report.write(f"(time cap of {cap:.0f} s reached: later rows not run)")
                return
            ids = torch.randint(0, 4, (batch, prefix), device=device)
            with torch.no_grad(), autocast(device):
                t0 = time.perf_counter()
                logits, cache = model.prefill(ids)
                sync(device)
                prefill = time.perf_counter() - t0
                nxt = logits.argmax(-1)
                model.step(nxt, cache)  # warmup
                sync(device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    logits, _ = model.step(nxt, cache)
                    nxt = logits.argmax(-1)
                sync(device)
                per_step = (time.perf_counter() - t0) / steps
                rerun = timed(lambda: model(ids), device, 1, warmup=0)
            first = first or per_step
            report.row([preset, batch, prefix, f"{prefill:.2f}", f"{per_step * 1e3:.1f}", f"{rerun * 1e3:.0f}", f"{per_step / first:.2f}x"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sections", default="train,ssd,generate")
    parser.add_argument("--out", type=Path, help="append the tables (markdown) to this file")
    parser.add_argument("--cap", type=float, default=600, help="seconds per section before it stops starting rows")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per row (best is reported)")
    parser.add_argument("--steps", type=int, default=64, help="cached decoding steps timed per prefix")
    parser.add_argument("--train-row", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.train_row:  # child process of the CPU train section
        preset, batch, length, repeats = json.loads(args.train_row)
        print(json.dumps(train_row(preset, batch, length, "cpu", repeats)))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")

    report = Report(args.out)
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    report.write(f"\n### model_speed ({args.device}), {datetime.date.today()}, commit {git_commit()}")
    report.write(f"\nMachine: {machine(args.device)}. Command: `{cmd}`.")
    sections = {"train": section_train, "ssd": section_ssd, "generate": section_generate}
    for name in args.sections.split(","):
        report.write(f"\n**{name}**")
        if name == "generate":
            section_generate(report, args.device, args.cap, args.steps)
        else:
            sections[name](report, args.device, args.cap, args.repeats)


if __name__ == "__main__":
    main()
