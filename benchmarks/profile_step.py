"""Where an H-Net's CPU training step goes, and how it compares with the Transformer and Mamba-2.

    python benchmarks/profile_step.py                          # this checkout, 2 threads
    python benchmarks/profile_step.py --repo ../old-checkout   # the same tables for another commit

This script holds the command line and the in-process tables of where the step goes (components,
operators); the models, the fresh point processes and the other sections are in profile_sections.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

from common import git_commit, model_specs
from profile_sections import (HNETS, _build, _point, _setup, _timed, child_env, flops_table, hnet_dna_home,
                              interleaved, memory_table, throughput)

HERE = Path(__file__).resolve().parent

DETAILS = """\
Tables, printed as markdown (``--sections`` picks them):

1. **components**: forward + backward of each part of the tiny (``cpu_small``) and the wide
   (d 256) 1-stage H-Net on its real shapes (16 x 1,024 bases), alone: the blocks of the encoder,
   main network and decoder, the chunking between them (routing, chunk gather, EMA dechunking,
   upsampling, residual projection, ratio loss), embedding + head + loss; then the whole step and
   what is left over (the framework's and the allocator's share);
2. **top operators** of the whole step under ``torch.profiler`` (self CPU time);
3. **throughput**: training bases/s of the two 1-stage H-Nets (attention or Mamba-2 main network),
   the Transformer and Mamba-2 at 1 k, 4 k and 16 k bases per sequence (16,384 bases per step),
   each point in a fresh process (as ``scaling.py`` measures it), with the ratios the issue sets as
   targets, and peak memory;
4. **interleaved**: the same models' training steps taken in turn, round after round, in one
   process: each round gives one ratio per pair from steps a second apart, so the machine's
   drift (this one's timings move 10-30 % within minutes) falls on all alike. Median and
   range of the per-round ratios. (Not in the default sections: ``--sections interleaved``.)
5. **flops**: training FLOPs per base of the five cpu_small models at each length, on the causal
   count the data-efficiency benchmark matches them on (and torch's), with each 1-stage H-Net's
   work per base over Mamba-2's: what a bases/s ratio at that length can be expected to be at
   equal hardware efficiency. (``--sections flops``.)
6. **memory**: per model and length (16,384 bases per step), three measures of one training step:
   what autograd keeps for the backward (the saved tensors' distinct storages, counted once),
   the peak of live tensor bytes (``torch.profiler``'s allocation records: the model's memory,
   whatever the allocator), and the peak resident memory of a fresh process over what it held
   before the step (what ``throughput`` reports: the allocator's gaps and kept-freed memory
   included); then where the H-Net's kept bytes are created, by source file.
   (``--sections memory``.)

Every model is freshly initialised (seed 0); an H-Net's routers are first fitted on the ratio loss
alone to their target compression (``common.settle_routing``), as trained routers are.
``--hnets`` picks the H-Nets of sections 3, 4 and 6; ``--checkpointing hnets`` (or ``all``) runs
them with each block recomputed in the backward (``--model.gradient_checkpointing true``): memory
traded for time, on the H-Nets alone or on every model.
``--compile`` steps every model of the interleaved section under ``torch.compile``.

``--repo`` measures the ``hnet_dna`` of another checkout (an older commit: the "before" of a change):
the command then runs again in a child process with that checkout first on PYTHONPATH.
"""


def components(spec, batch: int, length: int, repeats: int) -> list[tuple[str, float]]:
    """(part, seconds of forward + backward) of a 1-stage H-Net, each part on its real input."""
    import torch

    from hnet_dna.model import chunking
    from hnet_dna.model.layers import hi

    model = _build(spec)
    ids = torch.randint(0, 4, (batch, length))
    stage = model.backbone
    mask = torch.ones(batch, length, dtype=torch.bool)
    with torch.no_grad():  # the real inputs of each part
        x = model.embeddings(ids)
        h = stage.encoder(x, mask)
        route = stage.routing_module(h, mask)
        index, inner_mask = chunking.boundary_index(route.boundary_mask)
        inner_in = chunking.downsample(h, index)
        z = stage.main_network(inner_in, inner_mask)[0]
        inner_in = stage.main_network._widen(inner_in)  # what the main network's blocks see
        y = torch.randn(batch, length, h.shape[-1])
    rows = []

    def blocks(stack, inp, m, name):
        for i, layer in enumerate(stack.layers):
            t = inp.clone().requires_grad_()
            rows.append((f"{name} block {i} ({layer.kind}), L={inp.shape[1]}",
                         _timed(lambda: layer(t, mask=m).pow(2).mean().backward(), repeats)))

    blocks(stage.encoder, hi(h), mask, "encoder")

    def chunk_and_dechunk():
        hh = h.clone().requires_grad_()
        zz = z.clone().requires_grad_()
        r = stage.routing_module(hh, mask)
        idx, im = chunking.boundary_index(r.boundary_mask)
        gathered = chunking.downsample(hh, idx)
        P = chunking.downsample(r.boundary_prob, idx).clamp(chunking.P_CLAMP, 1 - chunking.P_CLAMP)
        c = chunking.confidence(r.boundary_prob, r.boundary_mask)
        zz = zz + 0 * gathered  # counts the gather's backward (the main network sits between them)
        out = chunking.dechunk(zz, P, r.boundary_mask, c, stage._residual(hh))
        loss, _, _ = chunking.ratio_loss(r.boundary_mask, r.boundary_prob, mask, 3.0)
        (out.pow(2).mean() + loss).backward()

    rows.append(("chunking: routing, gather, EMA dechunk, upsample, residual, ratio loss", _timed(chunk_and_dechunk, repeats)))
    blocks(stage.main_network.main_network, hi(inner_in), inner_mask, "main")
    blocks(stage.decoder, hi(y), mask, "decoder")

    def head():
        xx = x.clone().requires_grad_()
        logits = model.lm_head(xx)
        loss, _ = model._lm_loss(logits, ids, mask, None)
        loss.backward()

    rows.append(("embedding output -> LM head -> loss", _timed(head, repeats)))

    def step():
        model(ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    total = _timed(step, repeats)
    rows.append(("whole step", total))
    rows.append(("left over (framework, allocator, norms between stages)", total - sum(t for _, t in rows[:-1])))
    return rows


def top_operators(spec, batch: int, length: int, count: int) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    model = _build(spec)
    ids = torch.randint(0, 4, (batch, length))

    def step():
        model(ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    lines = ["| operator | self CPU (ms) | share | calls |", "|---|---|---|---|"]
    for e in events[:count]:
        lines.append(f"| `{e.key}` | {e.self_cpu_time_total / 1e3:.1f} | {e.self_cpu_time_total / total:.0%} | {e.count} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, epilog=DETAILS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=HERE.parent, help="the checkout whose hnet_dna is profiled")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--sections", default="components,operators,throughput",
                   help="comma-separated: components, operators, throughput, interleaved, flops, memory")
    p.add_argument("--hnets", nargs="+", default=list(HNETS), choices=list(HNETS),
                   help="the H-Nets of the throughput, interleaved and memory sections")
    p.add_argument("--rounds", type=int, default=12, help="rounds of the interleaved section (a quarter past 16 kb)")
    p.add_argument("--checkpointing", choices=("none", "hnets", "all"), default="none",
                   help="recompute each block in the backward (--model.gradient_checkpointing true) for no "
                        "model, the H-Nets only, or every model: throughput, interleaved and memory sections")
    p.add_argument("--compile", action="store_true",
                   help="interleaved section: every model under torch.compile (Inductor's C++ backend; "
                        "minutes of compiling per model and length)")
    p.add_argument("--point", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.point:
        print(json.dumps(_point(json.loads(args.point))))
        return
    repo = args.repo.resolve()
    if hnet_dna_home() != repo:  # another checkout's hnet_dna: this command again, in a child that imports it
        if os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] == str(repo):
            raise SystemExit(f"--repo {repo}: no hnet_dna package there")
        script = sys.argv[0] if Path(sys.argv[0]).resolve() == Path(__file__).resolve() else __file__
        rest = sys.argv[1:] if argv is None else list(argv)
        raise SystemExit(subprocess.run([sys.executable, script, *rest], env=child_env(repo)).returncode)
    torch = _setup(repo, args.threads)

    from hnet_dna.backends import cpu_name

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    print(f"### profile_step: hnet_dna at {commit} ({repo.name}); {cpu_name()}, "
          f"{args.threads} threads, torch {torch.__version__}; {datetime.date.today()}; script at {git_commit()}")
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + (sys.argv[1:] if argv is None else list(argv)))
    print(f"\nCommand: `{cmd}`")
    specs = model_specs()
    hnets = {"tiny (cpu_small)": specs[("hnet_1stage", 64)], "wide (d 256)": specs[("hnet_1stage", 256)]}
    sections = args.sections.split(",")
    if "components" in sections:
        for label, spec in hnets.items():
            rows = components(spec, 16, 1024, args.repeats)
            total = dict(rows)["whole step"]
            print(f"\n**components, {label} H-Net, 16 x 1,024 bases, forward + backward (best of {args.repeats})**\n")
            print("| part | ms | share of the step |\n|---|---|---|")
            for name, t in rows:
                print(f"| {name} | {t * 1e3:.1f} | {t / total:.0%} |")
    if "operators" in sections:
        for label, spec in hnets.items():
            print(f"\n**top operators, {label} H-Net, 16 x 1,024 bases**\n")
            print(top_operators(spec, 16, 1024, 12))
    if "throughput" in sections:
        print("\n**training throughput, cpu_small sizes, 16,384 bases per step, a fresh process per point**\n")
        throughput(repo, args)
    if "interleaved" in sections:
        print("\n**training steps in turn, one process, 16,384 bases per step (one sequence past that); "
              "median ms per step, per-round ratio median (min-max)**\n")
        interleaved(args)
    if "flops" in sections:
        print("\n**training FLOPs per base, freshly initialised models (routers settled at 3 bases per chunk), "
              "one sequence per length**\n")
        flops_table(args)
    if "memory" in sections:
        print("\n**training memory, cpu_small sizes, 16,384 bases per step (one sequence past that)**\n")
        memory_table(repo, args)


if __name__ == "__main__":
    main()
