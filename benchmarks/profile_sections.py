"""``profile_step.py``'s models (built and checkpointed as its sections measure them), the fresh
process that measures one point (``profile_step.py --point``, the profiled checkout first on
PYTHONPATH), and its model-comparison sections: throughput, interleaved, flops, memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common import model_specs, peak_rss_mb, reset_peak_memory, rss_mb, settle_routing, timed

SCRIPT = Path(__file__).with_name("profile_step.py")  # what a fresh point process runs (--point)
HNETS = {"hnet_1stage": "H-Net", "hnet_1stage_mamba": "Mamba-main H-Net"}  # the cpu_small 1-stage H-Nets
BASELINES = ("transformer", "mamba2")


def hnet_dna_home() -> Path | None:
    """The checkout whose ``hnet_dna`` this process imports (or would), None without one."""
    import importlib.util

    spec = importlib.util.find_spec("hnet_dna")
    return Path(spec.origin).resolve().parents[1] if spec is not None and spec.origin else None


def child_env(repo: Path, threads: int | None = None) -> dict:
    """The environment of a child process that imports ``repo``'s hnet_dna: the checkout first on
    PYTHONPATH (and, with ``threads``, OMP_NUM_THREADS)."""
    path = os.pathsep.join([str(repo)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env = {**os.environ, "PYTHONPATH": path}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _setup(repo: Path, threads: int):
    """This process's settings for measuring (torch's threads, freed memory kept as the command-line
    tools keep it), once its hnet_dna is found to be ``repo``'s (see :func:`child_env`)."""
    import torch

    from hnet_dna import backends

    if hnet_dna_home() != repo.resolve():
        raise RuntimeError(f"hnet_dna is imported from {hnet_dna_home()}, not from {repo}: put it first on PYTHONPATH")

    torch.set_num_threads(threads)
    if hasattr(backends, "keep_freed_memory"):  # as the command-line tools run; older checkouts lack it
        backends.keep_freed_memory()
    return torch


def _timed(fn, repeats: int) -> float:
    """common.timed on the CPU: best of ``repeats`` after one warm-up call."""
    return timed(fn, "cpu", repeats)


def _build(spec, checkpointing: bool = False):
    """A model as every section measures it: seed 0, and an H-Net's routers settled at their target
    compression (``common.settle_routing``: what trained routers do; an untrained one cuts at
    whatever its random encoder gives); with ``checkpointing``, each block recomputed in the
    backward (``gradient_checkpointing_enable``, as ``--model.gradient_checkpointing true``)."""
    import torch

    from hnet_dna.model.loading import build_model

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


def _measure(point: str, repo: Path, threads: int) -> dict:
    """What a fresh ``profile_step.py --point`` process measures, with ``repo``'s hnet_dna."""
    out = subprocess.run([sys.executable, str(SCRIPT), "--point", point], capture_output=True, text=True,
                         env=child_env(repo, threads), check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def throughput(repo: Path, args) -> str:
    """Training bases/s and peak memory per point, each in a fresh process (as scaling.py's points)."""
    specs = model_specs()
    names = [n for n in HNETS if n in args.hnets] + list(BASELINES)
    small = {name: spec for (name, d), spec in specs.items() if d < 256 and name in names}
    lines = ["| length | model | bases/s | peak MB | / Transformer bases/s | / Mamba-2 bases/s "
             "| / Transformer peak MB |", "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for length in args.lengths:
        batch = max(1, 16384 // length)
        r = {}
        for name in names:
            r[name] = _measure(_point_spec(name, small[name], length, batch, args, repo), repo, args.threads)
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

    specs = model_specs()
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

    try:
        from hnet_dna.protocols.data_efficiency.flops import count_training_flops
    except ImportError:  # an older checkout (--repo): before hnet_dna.protocols
        from hnet_dna.data_efficiency.flops import count_training_flops

    specs = model_specs()
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

    names = [n for n in HNETS if n in args.hnets] + list(BASELINES)
    small = {name: spec for (name, d), spec in model_specs().items() if d < 256 and name in names}
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
            resident = _measure(_point_spec(name, small[name], length, batch, args, repo), repo, args.threads)["peak_mb"]
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
    """A child (``profile_step.py --point``): one training point of the checkout first on PYTHONPATH,
    measured as scaling.run_point does."""
    _setup(Path(point["repo"]), point["threads"])
    import torch

    model = _build(point["spec"], point.get("checkpointing", False))
    ids = torch.randint(0, 4, (point["batch"], point["length"]))

    def step(x=ids):
        model(x, labels=x).loss.backward()
        model.zero_grad(set_to_none=True)

    step(torch.randint(0, 4, (1, min(point["length"], 128))))  # the kernels' code and one-time buffers
    reset_peak_memory()  # as scaling.py measures it: the peak over what the process holds now
    before = rss_mb()
    seconds = _timed(step, 3 if point["length"] <= 16384 else 1)
    peak = peak_rss_mb() - before
    return {"seconds": seconds, "peak_mb": peak}
