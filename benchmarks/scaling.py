"""Cost against input length: training step and inference time and peak memory of the tiny H-Nets
(1-stage with an attention or a Mamba-2 main network, 2-stage), the Transformer and Mamba-2, from
1 kb to 64 kb, at the ``cpu_small`` sizes and at d 256.

    python benchmarks/scaling.py --out benchmarks/results/scaling            # the full sweep
    python benchmarks/scaling.py --smoke --out /tmp/scaling                  # seconds (the suite runs it)
    taskset -c 1 python benchmarks/scaling.py --threads 1 --out DIR          # what RESULTS.md ran
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import MODELS, git_commit, model_specs, peak_rss_mb, reset_peak_memory, rss_mb, settle_routing, status_mb

DETAILS = """\
The models are freshly initialised; an H-Net's routers are first fitted on the ratio loss alone until
each level cuts at its target compression (3 bases per chunk: ``common.settle_routing``), as
trained routers do, so that its inner networks see as many positions as they would in training.

Every point (model, width, length, mode) runs in a fresh process, so its peak memory is its own:
the high-water mark of the process's resident memory from the first step on (the kernel's mark is
reset after the model is built and has taken one short step of 128 bases, which maps the
kernels' library code and one-time buffers), less what the process held then (interpreter,
weights, inputs, libraries). Modes: ``train`` (forward +
backward of the LM loss), ``train_ckpt`` (the same with activation checkpointing per block) and
``infer`` (forward under ``torch.inference_mode``, what ``embed`` runs). A step holds
``--bases`` bases (batch = bases / length) up to that length, then one sequence.

A point that takes longer than ``--time-cap`` seconds for its first (warm-up) step, or needs more
than ``--memory-cap`` MB, is written with that status (``time_cap`` / ``memory_cap``) and the
longer lengths of its series are written as ``not_run``: nothing is dropped silently.

Writes ``DIR/scaling.csv`` (``model,d_model,length,mode,batch,seconds,bases_per_s,peak_mb,status``;
seconds and peak_mb per step), ``DIR/scaling.png`` (log-log time and memory per sequence against
length) and ``DIR/scaling.md`` (machine, date, commit, command, the exponents), and prints the
fitted exponents of time and memory per sequence against length over each series' longest three
points. Rows are appended as they are measured; a rerun with the same ``--out`` skips points
already in the CSV.
"""

COLUMNS = ["model", "d_model", "length", "mode", "batch", "seconds", "bases_per_s", "peak_mb", "status"]
MODES = ("train", "train_ckpt", "infer")
LENGTHS = [1024 * 2**i for i in range(7)]  # 1 k .. 64 k


# ------------------------------------------------------------------------------ one point
def run_point(spec, length: int, batch: int, mode: str, time_cap: float, memory_cap: float, threads: int) -> dict:
    """Measure one point in this process (a fresh one: see :func:`measure`)."""
    import torch

    from hnet_dna import backends
    from hnet_dna.model.loading import build_model

    torch.set_num_threads(threads)
    backends.keep_freed_memory()  # as the command-line tools run (every model alike)

    torch.manual_seed(0)
    model = build_model(spec)
    settle_routing(model)  # an H-Net compresses as a trained one does, not as its random init happens to
    ids = torch.randint(0, 4, (batch, length))
    if mode == "infer":
        model.eval()
    model.gradient_checkpointing_enable(mode == "train_ckpt")

    def step(x=ids):
        if mode == "infer":
            with torch.inference_mode():
                return model(x).compression()
        out = model(x, labels=x)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        return out.compression()

    # One short step first, not counted: a kernel's first use maps its library's code and sets up
    # its one-time buffers (about 180 MB for the Mamba-2 layers' kernels, 20 MB for attention's,
    # whatever the length), which is not memory the step needs.
    step(torch.randint(0, 4, (1, min(length, 128))))

    # The guard behind the cap: past it an allocation fails instead of swapping the machine.
    # Address space over what the process holds now, with room for allocator slack.
    if memory_cap > 0 and Path("/proc/self/status").is_file():
        limit = int(((status_mb("VmSize") or 0) + 1.5 * memory_cap + 512) * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    reset_peak_memory()
    before = rss_mb()
    try:
        start = time.perf_counter()
        compression = step()  # warm-up; allocates the gradients
        first = time.perf_counter() - start
        times = [first]
        # Best of 3 timed steps for short points, 1 for long ones; a point whose warm-up took over
        # half the cap reports the warm-up itself (which also allocated the gradients).
        repeats = 3 if first < 2 else 1 if first <= time_cap / 2 else 0
        if repeats:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, MemoryError) or "alloc" in str(e).lower():
            return {"status": "memory_cap", "seconds": None, "peak_mb": None}
        raise
    peak = peak_rss_mb() - before
    seconds = min(times)
    status = "ok"
    if first > time_cap:
        status = "time_cap"
    elif memory_cap > 0 and peak > memory_cap:
        status = "memory_cap"
    return {"status": status, "seconds": seconds, "peak_mb": peak, "compression": compression}


def measure(spec, length: int, batch: int, mode: str, args) -> dict:
    """Run one point in a child process; a child that outlives the time cap by far is killed."""
    point = json.dumps({"spec": spec, "length": length, "batch": batch, "mode": mode,
                        "time_cap": args.time_cap, "memory_cap": args.memory_cap, "threads": args.threads})
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    try:
        done = subprocess.run([sys.executable, __file__, "--point", point], capture_output=True, text=True,
                              timeout=2 * args.time_cap + 120, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "time_cap", "seconds": None, "peak_mb": None}
    if done.returncode != 0:
        if done.returncode < 0 or "MemoryError" in done.stderr or "alloc" in done.stderr:  # killed, or out of memory
            return {"status": "memory_cap", "seconds": None, "peak_mb": None}
        raise RuntimeError(f"point {point} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------- sweep
def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def sweep(specs: dict, lengths: list[int], modes: list[str], args, measure_point=measure) -> list[dict]:
    """Measure every series (model, width, mode) over ``lengths``, shortest first; after a capped
    point the rest of the series is written as ``not_run``. Returns every row of the CSV."""
    path = args.out / "scaling.csv"
    done = {(r["model"], r["d_model"], r["length"], r["mode"]): r["status"] for r in read_rows(path)}
    for (name, d), spec in specs.items():
        for mode in modes:
            capped = None
            for length in lengths:
                key = (name, str(d), str(length), mode)
                if key in done:  # measured by an earlier run with this --out
                    if done[key] != "ok":
                        capped = capped or done[key]
                    continue
                batch = max(1, args.bases // length)
                row = {"model": name, "d_model": d, "length": length, "mode": mode, "batch": batch,
                       "seconds": "", "bases_per_s": "", "peak_mb": "", "status": "not_run"}
                compression = []  # bases per chunk per level in the measured step (H-Nets)
                if capped is None:
                    r = measure_point(spec, length, batch, mode, args)
                    compression = r.get("compression") or []
                    row["status"] = r["status"]
                    if r["seconds"] is not None:
                        row["seconds"] = f"{r['seconds']:.6g}"
                        row["bases_per_s"] = f"{batch * length / r['seconds']:.0f}"
                    if r["peak_mb"] is not None:
                        row["peak_mb"] = f"{r['peak_mb']:.1f}"
                    if r["status"] != "ok":
                        capped = r["status"]
                append_row(path, row)
                chunks = "/".join(f"{c:.2f}" for c in compression)
                print(" ".join(f"{k}={row[k]}" for k in COLUMNS) + (f" bases_per_chunk={chunks}" if chunks else ""),
                      flush=True)
    return read_rows(path)


def exponents(rows: list[dict], points: int = 3) -> list[dict]:
    """Least-squares slope of log(time per sequence) and log(peak memory per sequence) against
    log(length) over each series' longest ``points`` measured points."""
    import numpy as np

    series: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "ok" and r["seconds"]:
            series.setdefault((r["model"], int(r["d_model"]), r["mode"]), []).append(r)
    out = []
    for (name, d, mode), rs in series.items():
        rs = sorted(rs, key=lambda r: int(r["length"]))
        longest = int(rs[-1]["length"])
        fit = rs[-points:]
        entry = {"model": name, "d_model": d, "mode": mode, "longest": longest, "lengths": f"{fit[0]['length']}-{longest}",
                 "time_exponent": None, "memory_exponent": None}
        if len(fit) >= 2:
            x = np.log([int(r["length"]) for r in fit])
            t = np.log([float(r["seconds"]) / int(r["batch"]) for r in fit])
            entry["time_exponent"] = float(np.polyfit(x, t, 1)[0])
            mem = [float(r["peak_mb"]) / int(r["batch"]) for r in fit]
            if all(m > 0 for m in mem):
                entry["memory_exponent"] = float(np.polyfit(x, np.log(mem), 1)[0])
        out.append(entry)
    return out


def _series_order(name: str, d: int, mode: str) -> tuple:
    """Tables list the small models before the wide ones, each in MODELS order, modes in MODES order."""
    return (d >= 256, MODELS.index(name) if name in MODELS else len(MODELS), d,
            MODES.index(mode) if mode in MODES else len(MODES))


def exponent_table(rows: list[dict]) -> str:
    lines = ["| model | d_model | mode | longest length measured | fitted over | time exponent | memory exponent |",
             "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for e in sorted(exponents(rows), key=lambda e: _series_order(e["model"], e["d_model"], e["mode"])):
        lines.append(f"| {e['model']} | {e['d_model']} | {e['mode']} | {e['longest']:,} | {e['lengths']} | "
                     f"{fmt(e['time_exponent'])} | {fmt(e['memory_exponent'])} |")
    return "\n".join(lines)


def pivot_table(rows: list[dict]) -> str:
    """One row per series, one column per length: bases/s and peak MB, or the status."""
    lengths = sorted({int(r["length"]) for r in rows})
    lines = ["| model | d_model | mode | " + " | ".join(f"{n // 1024} k" for n in lengths) + " |",
             "|---|---|---|" + "---|" * len(lengths)]
    series: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        series.setdefault((r["model"], int(r["d_model"]), r["mode"]), {})[int(r["length"])] = r
    for (name, d, mode), by_length in sorted(series.items(), key=lambda kv: _series_order(*kv[0])):
        cells = []
        for n in lengths:
            r = by_length.get(n)
            if r is None:
                cells.append("")
            elif r["status"] == "ok":
                cells.append(f"{float(r['bases_per_s']):,.0f} / {float(r['peak_mb']):,.0f}")
            elif r["seconds"]:
                cells.append(f"{r['status']} ({float(r['seconds']):.0f} s, {float(r['peak_mb'] or 0):,.0f})")
            else:
                cells.append(r["status"])
        lines.append(f"| {name} | {d} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Time and memory per sequence against length, log-log: one line per model and width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    fig, axes = plt.subplots(len(modes), 2, figsize=(11, 4 * len(modes)), squeeze=False)
    colours = dict(zip(MODELS, ["C0", "C4", "C1", "C3", "C2"]))
    widths = sorted({int(r["d_model"]) for r in rows})
    for i, mode in enumerate(modes):
        for name in MODELS:
            for d in widths:
                rs = sorted((r for r in rows if r["model"] == name and int(r["d_model"]) == d and r["mode"] == mode
                             and r["status"] == "ok" and r["seconds"]), key=lambda r: int(r["length"]))
                if not rs:
                    continue
                x = [int(r["length"]) for r in rs]
                style = dict(color=colours.get(name, "k"), marker="o", ls="-" if d < 256 else "--",
                             label=f"{name} d{d}")
                axes[i][0].plot(x, [float(r["seconds"]) / int(r["batch"]) for r in rs], **style)
                axes[i][1].plot(x, [float(r["peak_mb"]) / int(r["batch"]) for r in rs], **style)
        for j, what in enumerate(["seconds per sequence", "peak MB per sequence"]):
            ax = axes[i][j]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("length (bases)")
            ax.set_ylabel(what)
            ax.set_title(f"{mode}: {what}")
            ax.grid(True, which="both", alpha=0.3)
        axes[i][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, epilog=DETAILS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=False)
    p.add_argument("--smoke", action="store_true", help="two short lengths, two small models: seconds")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--widths", nargs="+", type=int, default=None, help="outer d_model values to run (default: both sizes)")
    p.add_argument("--lengths", nargs="+", type=int, default=LENGTHS)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--bases", type=int, default=16384, help="bases per step (batch = bases / length, at least 1)")
    p.add_argument("--time-cap", type=float, default=60.0, help="seconds a point's first step may take")
    p.add_argument("--memory-cap", type=float, default=8192.0, help="MB a point may need (0 = no cap)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", action="store_true", help="measure nothing: redraw the plot and tables from DIR/scaling.csv")
    p.add_argument("--point", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.point:  # a child: one point
        pt = json.loads(args.point)
        print(json.dumps(run_point(pt["spec"], pt["length"], pt["batch"], pt["mode"], pt["time_cap"],
                                   pt["memory_cap"], pt["threads"])))
        return
    if args.out is None:
        p.error("--out is required")
    if args.smoke:
        # The Mamba-main H-Net: its untrained router is far off its target, so a point that skipped
        # the routing fit would show (1.9 bases per chunk, not 3).
        args.models, args.widths, args.lengths, args.modes, args.bases = ["hnet_1stage_mamba", "transformer"], None, [256, 512], ["train", "infer"], 1024
    specs = {k: v for k, v in model_specs().items() if k[0] in args.models}
    if args.smoke:
        specs = {k: v for k, v in specs.items() if k[1] < 256}
    elif args.widths:
        specs = {k: v for k, v in specs.items() if k[1] in args.widths}
    args.out.mkdir(parents=True, exist_ok=True)

    import torch

    from hnet_dna.backends import cpu_name

    started = datetime.datetime.now(datetime.timezone.utc)
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + (sys.argv[1:] if argv is None else list(argv)))
    print(f"# scaling: {cpu_name()}, {args.threads} thread(s), torch {torch.__version__}, commit {git_commit()}", flush=True)
    rows = read_rows(args.out / "scaling.csv") if args.report else sweep(specs, sorted(args.lengths), args.modes, args)
    plot(rows, args.out / "scaling.png")
    table = exponent_table(rows)
    print(table)
    finished = datetime.datetime.now(datetime.timezone.utc)
    (args.out / "scaling.md").write_text(
        f"Scaling sweep: {cpu_name()}, {'threads as measured' if args.report else f'{args.threads} thread(s) per point'}, "
        f"torch {torch.__version__}, commit "
        f"{git_commit()}, {started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC.\n\nCommand: `{cmd}`\n\n"
        f"Training or inference bases/s / peak MB per step, by length (a step holds the CSV's batch x length "
        f"bases; a capped point gives its first step's seconds and peak):\n\n{pivot_table(rows)}\n\n"
        f"Exponents of time and peak memory per sequence against length (longest three measured points):\n\n"
        f"{table}\n"
    )


if __name__ == "__main__":
    main()
