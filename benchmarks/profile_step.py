"""Where an H-Net's CPU training step goes, and how it compares with the Transformer and Mamba-2.

    python benchmarks/profile_step.py                          # this checkout, 2 threads
    python benchmarks/profile_step.py --repo ../old-checkout   # the same tables for another commit

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
alone to their target compression (``model_speed.settle_routing``), as trained routers are.
``--hnets`` picks the H-Nets of sections 3, 4 and 6; ``--checkpointing hnets`` (or ``all``) runs
them with each block recomputed in the backward (``--model.gradient_checkpointing true``): memory
traded for time, on the H-Nets alone or on every model.
``--compile`` steps every model of the interleaved section under ``torch.compile``.

``--repo`` imports ``hnet_dna`` from another checkout (an older commit: the "before" of a change).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _setup(repo: Path, threads: int):
    sys.path.insert(0, str(repo))
    import torch

    from hnet_dna import backends

    torch.set_num_threads(threads)
    if hasattr(backends, "keep_freed_memory"):  # as the command-line tools run; older checkouts lack it
        backends.keep_freed_memory()
    return torch


def _timed(fn, repeats: int) -> float:
    """model_speed.timed on the CPU: best of ``repeats`` after one warm-up call."""
    sys.path.insert(0, str(HERE))
    from model_speed import timed

    return timed(fn, "cpu", repeats)


def _build(spec, checkpointing: bool = False):
    """A model as every section measures it: seed 0, and an H-Net's routers settled at their target
    compression (``model_speed.settle_routing``: what trained routers do; an untrained one cuts at
    whatever its random encoder gives); with ``checkpointing``, each block recomputed in the
    backward (``gradient_checkpointing_enable``, as ``--model.gradient_checkpointing true``)."""
    import torch

    from hnet_dna.model.loading import build_model

    sys.path.insert(0, str(HERE))
    from model_speed import settle_routing

    torch.manual_seed(0)
    model = build_model(spec)
    settle_routing(model)
    if checkpointing:
        model.gradient_checkpointing_enable()
    return model


def _checkpointed(name: str, args) -> bool:
    """Whether ``--checkpointing`` (none, hnets, all) recomputes this model's blocks."""
    return args.checkpointing == "all" or (args.checkpointing == "hnets" and name in HNETS)


def _label(name: str, args, shown: str | None = None) -> str:
    """``shown`` (or the name), marked when ``--checkpointing`` recomputes the model's blocks."""
    return (shown or name) + (" (checkpointed)" if _checkpointed(name, args) else "")


def _point_spec(name: str, spec, length: int, batch: int, args, repo: Path) -> str:
    """The JSON a fresh ``--point`` child measures: one training step of ``name`` as ``args`` ask."""
    return json.dumps({"spec": spec, "length": length, "batch": batch, "mode": "train", "time_cap": 600,
                       "memory_cap": 0, "threads": args.threads, "repo": str(repo),
                       "checkpointing": _checkpointed(name, args)})


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


HNETS = {"hnet_1stage": "H-Net", "hnet_1stage_mamba": "Mamba-main H-Net"}  # the cpu_small 1-stage H-Nets
BASELINES = ("transformer", "mamba2")


def throughput(repo: Path, args) -> str:
    """Training bases/s and peak memory per point, each in a fresh process (scaling.py's child)."""
    sys.path.insert(0, str(HERE))
    import scaling

    specs = scaling.model_specs()
    names = [n for n in HNETS if n in args.hnets] + list(BASELINES)
    small = {name: spec for (name, d), spec in specs.items() if d < 256 and name in names}
    lines = ["| length | model | bases/s | peak MB | / Transformer bases/s | / Mamba-2 bases/s "
             "| / Transformer peak MB |", "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for length in args.lengths:
        batch = max(1, 16384 // length)
        r = {}
        for name in names:
            point = _point_spec(name, small[name], length, batch, args, repo)
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            out = subprocess.run([sys.executable, __file__, "--point", point], capture_output=True, text=True,
                                 env=env, check=True).stdout
            r[name] = json.loads(out.strip().splitlines()[-1])
        bps = {k: batch * length / v["seconds"] for k, v in r.items()}
        for name in names:
            ratios = " | ".join(f"{bps[name] / bps[b]:.2f}x" if name in HNETS else "" for b in BASELINES)
            peak = f"{r[name]['peak_mb'] / r['transformer']['peak_mb']:.2f}x" if name in HNETS else ""
            lines.append(f"| {length:,} | {_label(name, args)} | {bps[name]:,.0f} | {r[name]['peak_mb']:,.0f} "
                         f"| {ratios} | {peak} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def interleaved(args) -> str:
    """Median training-step milliseconds of the cpu_small 1-stage H-Nets and the two baselines,
    stepped in turn in one process, and the median (min-max) over rounds of each H-Net's bases/s
    ratio to each baseline."""
    import statistics
    import time

    import torch

    sys.path.insert(0, str(HERE))
    import scaling

    specs = scaling.model_specs()
    hnets = [n for n in HNETS if n in args.hnets]
    names = hnets + list(BASELINES)
    small = {name: spec for (name, d), spec in specs.items() if d < 256 and name in names}
    models = {name: _build(small[name], _checkpointed(name, args)) for name in names}
    if args.compile:  # every model alike; the first (warm-up) step of each length compiles
        models = {name: torch.compile(model) for name, model in models.items()}
    lines = ["| length | rounds | H-Net | H-Net ms | Transformer ms | Mamba-2 ms | H-Net / Transformer (bases/s) "
             "| H-Net / Mamba-2 (bases/s) |", "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for length in args.lengths:
        batch = max(1, 16384 // length)
        ids = torch.randint(0, 4, (batch, length))

        def step(model):
            start = time.perf_counter()
            model(ids, labels=ids).loss.backward()
            model.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        for model in models.values():  # warm-up (compiled: a second step, for any recompile)
            for _ in range(2 if args.compile else 1):
                step(model)
        graphs = _compiled_graphs() if args.compile else 0
        rounds = args.rounds if length <= 16384 else max(2, args.rounds // 4)
        times = {name: [] for name in names}
        for _ in range(rounds):
            for name in names:
                times[name].append(step(models[name]))
        recompiled = _compiled_graphs() - graphs if args.compile else 0
        if recompiled:  # a recompile inside the timed rounds: its round is slow
            print(f"({recompiled} graphs compiled during the timed rounds at {length:,}: "
                  "the min of the ratios includes compiling)", flush=True)
        med = {name: statistics.median(t) * 1e3 for name, t in times.items()}

        def ratio(hnet, base):
            r = [b / h for h, b in zip(times[hnet], times[base])]
            return f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"

        for hnet in hnets:
            shown = HNETS[hnet] + (" (compiled, as every model)" if args.compile else "")
            lines.append(f"| {length:,} | {rounds} | {_label(hnet, args, shown)} | {med[hnet]:,.0f} | {med['transformer']:,.0f} | "
                         f"{med['mamba2']:,.0f} | {ratio(hnet, 'transformer')} | {ratio(hnet, 'mamba2')} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def _compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far (0 before any)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters["stats"]["unique_graphs"])


def flops_table(args) -> str:
    """Training FLOPs per base (causal / torch count) of the cpu_small models, one sequence per length."""
    import torch

    sys.path.insert(0, str(HERE))
    import scaling

    from hnet_dna.data_efficiency.flops import count_training_flops

    specs = scaling.model_specs()
    names = ("hnet_1stage", "hnet_1stage_mamba", "hnet_2stage", "transformer", "mamba2")
    small = {name: spec for (name, d), spec in specs.items() if d < 256}
    lines = ["| length | " + " | ".join(f"{n} MFLOP/base (causal / torch)" for n in names)
             + " | 1-stage H-Net / Mamba-2, Mamba-main H-Net / Mamba-2 (causal) |", "|---|" + "---|" * (len(names) + 1)]
    print("\n".join(lines), flush=True)
    for length in args.lengths:
        counts = {}
        for name in names:
            counts[name] = count_training_flops(_build(small[name]), torch.randint(0, 4, (1, length)))
        cells = [f"{counts[n]['causal'] / 1e6:.2f} / {counts[n]['torch'] / 1e6:.2f}" for n in names]
        ratios = " / ".join(f"{counts[h]['causal'] / counts['mamba2']['causal']:.2f}x" for h in HNETS)
        lines.append(f"| {length:,} | " + " | ".join(cells) + f" | {ratios} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def kept_for_backward(model, ids) -> dict[str, float]:
    """MB that autograd keeps for the backward of one forward, by the hnet_dna file whose line
    created the saved tensor (each storage counted once: views share one)."""
    import collections
    import traceback

    import torch

    seen = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            frames = [f for f in traceback.extract_stack() if "hnet_dna" in f.filename]
            seen[key] = (t.untyped_storage().nbytes() / 2**20, Path(frames[-1].filename).name if frames else "other")
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, labels=ids)
    by_file = collections.Counter()
    for mb, where in seen.values():
        by_file[where] += mb
    return dict(by_file.most_common())


def peak_live_mb(model, ids) -> float:
    """Peak MB of live tensors over one forward + backward, from the profiler's allocation records
    (CPU): allocator-independent, unlike resident memory."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(ids, labels=ids).loss.backward()
    model.zero_grad(set_to_none=True)
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def memory_table(repo: Path, args) -> str:
    """Kept-for-backward, peak live and peak resident MB of the cpu_small 1-stage H-Nets and the two
    baselines per length."""
    import torch

    sys.path.insert(0, str(HERE))
    import scaling

    names = [n for n in HNETS if n in args.hnets] + list(BASELINES)
    small = {name: spec for (name, d), spec in scaling.model_specs().items() if d < 256 and name in names}
    lines = ["| length | model | kept for backward MB | peak live MB | peak resident MB (fresh process) |",
             "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    breakdown = None
    for length in args.lengths:
        batch = max(1, 16384 // length)
        for name in names:
            model = _build(small[name], _checkpointed(name, args))
            ids = torch.randint(0, 4, (batch, length))
            # a checkpointed block's own saved-tensor hooks hide what it keeps from kept_for_backward
            kept = None if _checkpointed(name, args) else kept_for_backward(model, ids)
            live = peak_live_mb(model, ids)
            if name == "hnet_1stage" and breakdown is None and kept is not None:
                breakdown = length, kept
            point = _point_spec(name, small[name], length, batch, args, repo)
            out = subprocess.run([sys.executable, __file__, "--point", point], capture_output=True, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}, check=True).stdout
            resident = json.loads(out.strip().splitlines()[-1])["peak_mb"]
            kept_mb = "n/a" if kept is None else f"{sum(kept.values()):,.0f}"
            lines.append(f"| {length:,} | {_label(name, args)} | {kept_mb} | {live:,.0f} | {resident:,.0f} |")
            print(lines[-1], flush=True)
    if breakdown is None:
        return "\n".join(lines)
    length, kept = breakdown
    where = ", ".join(f"{k} {v:.0f}" for k, v in kept.items())
    lines.append(f"\nH-Net at {length:,}: kept MB by the file that created them: {where}")
    print(lines[-1], flush=True)
    return "\n".join(lines)


def _point(point: dict) -> dict:
    """A child: one training point of another checkout, measured as scaling.run_point does."""
    _setup(Path(point["repo"]), point["threads"])
    import torch

    model = _build(point["spec"], point.get("checkpointing", False))
    ids = torch.randint(0, 4, (point["batch"], point["length"]))

    def step(x=ids):
        model(x, labels=x).loss.backward()
        model.zero_grad(set_to_none=True)

    sys.path.insert(0, str(HERE))
    from scaling import rss_mb, peak_rss_mb, reset_peak_memory

    step(torch.randint(0, 4, (1, min(point["length"], 128))))  # the kernels' code and one-time buffers
    reset_peak_memory()  # as scaling.py measures it: the peak over what the process holds now
    before = rss_mb()
    seconds = _timed(step, 3 if point["length"] <= 16384 else 1)
    peak = peak_rss_mb() - before
    return {"seconds": seconds, "peak_mb": peak}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    torch = _setup(repo, args.threads)
    sys.path.insert(0, str(HERE))
    import scaling
    from model_speed import git_commit

    from hnet_dna.backends import cpu_name

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    print(f"### profile_step: hnet_dna at {commit} ({repo.name}); {cpu_name()}, "
          f"{args.threads} threads, torch {torch.__version__}; {datetime.date.today()}; script at {git_commit()}")
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + (sys.argv[1:] if argv is None else list(argv)))
    print(f"\nCommand: `{cmd}`")
    specs = scaling.model_specs()
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
