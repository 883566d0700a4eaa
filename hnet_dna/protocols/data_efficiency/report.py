"""What a finished run writes: ``curves.csv``, ``summary.json`` (per model compute and final bits,
multipliers of every H-Net against every baseline), ``curves.png`` and the printed table."""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ... import backends
from ...runs import atomic_path, json_text
from .config import BenchmarkConfig
from .multiplier import multiplier_is_lower_bound, data_multiplier, multiplier_summary
from .plan import Plan

__all__ = ["write_results", "format_summary", "plot_curves", "run_provenance", "CURVE_COLUMNS"]

CURVE_COLUMNS = ["model", "seed", "bases_seen", "heldout", "bits_per_base", "compression", "wall_s"]


def _read_runs(plan: Plan, config: BenchmarkConfig, out: Path):
    rows, results = [], {}
    for name in plan.model_names:
        for seed in config.seeds:
            run_dir = out / "runs" / name / f"seed{seed}"
            result = json.loads((run_dir / "result.json").read_text())
            if result.get("decayed_bits_per_base"):  # a diverged score was written as null (JSON has no NaN)
                result["decayed_bits_per_base"] = {h: math.nan if v is None else v
                                                   for h, v in result["decayed_bits_per_base"].items()}
            results[(name, seed)] = result
            with (run_dir / "points.csv").open() as f:
                for r in csv.DictReader(f):
                    rows.append({"model": name, "seed": seed, "bases_seen": int(r["bases_seen"]), "heldout": r["heldout"],
                                 "bits_per_base": float(r["bits_per_base"]),
                                 "compression": float(r["compression"]) if r["compression"] else None,
                                 "wall_s": float(r["wall_s"])})
    return rows, results


def write_results(plan: Plan, config: BenchmarkConfig, out: Path, provenance: dict | None = None) -> dict:
    rows, results = _read_runs(plan, config, out)
    with atomic_path(out / "curves.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CURVE_COLUMNS)
        for r in rows:
            comp = "" if r["compression"] is None else f"{r['compression']:.4f}"
            w.writerow([r["model"], r["seed"], r["bases_seen"], r["heldout"], f"{r['bits_per_base']:.6f}", comp,
                        f"{r['wall_s']:.2f}"])
    curves = {}  # (model, seed, heldout) -> [(bases, bits)]
    for r in rows:
        curves.setdefault((r["model"], r["seed"], r["heldout"]), []).append((r["bases_seen"], r["bits_per_base"]))
    heldouts = list(config.heldout)
    models = {}
    for name in plan.model_names:
        res = [results[(name, s)] for s in config.seeds]
        finals = {h: {str(s): sorted(curves[(name, s, h)])[-1][1] for s in config.seeds} for h in heldouts}
        comp = [r["compression"] for r in rows if r["model"] == name and r["compression"] is not None
                and r["bases_seen"] == plan.eval_steps[-1] * plan.bases_per_step]
        causal = [r.get("flops_per_base_causal") for r in res]
        models[name] = {
            "kind": plan.kinds[name], "params": res[0]["params"],
            "flops_per_base": float(np.mean([r["flops_per_base"] for r in res])),
            # runs from before the causal count have none
            "flops_per_base_causal": float(np.mean(causal)) if None not in causal else None,
            # [min, max] over every seed's counted batches (runs from before the spread have none)
            "flops_spread": _spread([r.get("flops_spread") for r in res]),
            "final_bits_per_base": {h: float(np.mean(list(v.values()))) for h, v in finals.items()},
            "final_bits_per_base_per_seed": finals,
            "final_compression": float(np.mean(comp)) if comp else None,
            "train_bases_per_s": float(np.mean([r["train_bases_per_s"] for r in res])),
            "peak_memory_mb": float(max(r["peak_memory_mb"] for r in res)),
            "peak_memory_kind": res[0]["peak_memory_kind"], "device": res[0]["device"],
            "lr": config.models[name].get("lr", config.lr),
        }
        if plan.decay_steps:
            models[name]["decayed_bits_per_base"] = {
                h: float(np.mean([r["decayed_bits_per_base"][h] for r in res])) for h in heldouts}
            models[name]["decayed_bits_per_base_per_seed"] = {
                h: {str(s): r["decayed_bits_per_base"][h] for s, r in zip(config.seeds, res)} for h in heldouts}
    ref = config.reference
    for name, m in models.items():
        for key, suffix in (("flops_per_base", ""), ("flops_per_base_causal", "_causal")):
            mine, theirs = m[key], models[ref][key]
            m[f"flops_ratio_to_reference{suffix}"] = mine / theirs if mine is not None and theirs else None
        matched_on = m["flops_ratio_to_reference_causal" if config.flops_convention == "causal" else "flops_ratio_to_reference"]
        m["compute_matched"] = matched_on is not None and abs(matched_on - 1) <= config.flops_tolerance
    hnets = [n for n in plan.model_names if plan.kinds[n] == "H-Net"]

    def multipliers_of(hnet: str) -> dict:
        def one(b: str, h: str) -> dict:
            sustained, first, bound = {}, {}, {}
            for s in config.seeds:
                mine, theirs = curves[(hnet, s, h)], curves[(b, s, h)]
                sustained[s] = data_multiplier(mine, theirs, "sustained")
                first[s] = data_multiplier(mine, theirs, "first")
                bound[s] = multiplier_is_lower_bound(mine, theirs, "sustained")
            return multiplier_summary(sustained, bound, first_crossing=first)

        return {b: {h: one(b, h) for h in heldouts} for b in plan.baselines if b != hnet}

    summary = {
        "reference": ref, "baselines": plan.baselines, "heldout": heldouts, "seeds": config.seeds,
        "bases_per_step": plan.bases_per_step, "steps": plan.steps, "warmup_steps": plan.warmup_steps,
        "decay_steps": plan.decay_steps, "flops_convention": config.flops_convention,
        "flops_tolerance": config.flops_tolerance,
        "multiplier_rule": "sustained: from the crossing on, the H-Net stays at or below the baseline's final "
                           "bits per base; first_crossing_per_seed: the first point at or below it",
        "eval_bases": [s * plan.bases_per_step for s in plan.eval_steps],
        "models": models,
        "multipliers": multipliers_of(ref),
        "multipliers_by_hnet": {h: multipliers_of(h) for h in hnets},
        # reference training bases/s over each model's (> 1: the reference trains faster)
        "reference_speed_ratio": {n: models[ref]["train_bases_per_s"] / m["train_bases_per_s"] for n, m in models.items()},
        "provenance": provenance or {},
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json_text(summary))
    try:
        plot_curves(rows, summary, out / "curves.png")
    except ImportError as e:  # matplotlib is a dependency; a bare GPU image may lack it
        print(f"hnet_dna.data_efficiency: no curves.png ({e}); curves.csv and summary.json are written",
              file=sys.stderr)
    return summary


def _spread(per_seed: list) -> dict | None:
    """The FLOP counts' range over the batches of every seed (each seed's ``flops_spread``)."""
    if any(s is None for s in per_seed):
        return None
    return {"batches": sum(s["batches"] for s in per_seed),
            **{c: [min(s[c][0] for s in per_seed), max(s[c][1] for s in per_seed)] for c in ("torch", "causal")}}


def run_provenance(command: str) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "command": command, "machine": f"{backends.cpu_name()} ({os.cpu_count()} cores)",
            "torch": torch.__version__}


def plot_curves(rows: list[dict], summary: dict, path: Path) -> None:
    """Bits per base against bases seen (log x), one panel per held-out set: each seed thin, the
    mean over seeds thick; each baseline's final value as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heldouts = summary["heldout"]
    names = list(summary["models"])
    fig, axes = plt.subplots(1, len(heldouts), figsize=(6.2 * len(heldouts), 4.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, h in zip(axes[0], heldouts):
        for i, name in enumerate(names):
            colour = colours[i % len(colours)]
            mine = [r for r in rows if r["model"] == name and r["heldout"] == h]
            for seed in summary["seeds"]:
                pts = sorted((r["bases_seen"], r["bits_per_base"]) for r in mine if r["seed"] == seed)
                ax.plot(*zip(*pts), color=colour, lw=0.7, alpha=0.45)
            xs = sorted({r["bases_seen"] for r in mine})
            mean = [np.mean([r["bits_per_base"] for r in mine if r["bases_seen"] == x]) for x in xs]
            m = summary["models"][name]
            causal = summary.get("flops_convention") == "causal" and m.get("flops_per_base_causal")
            flops = m["flops_per_base_causal"] if causal else m["flops_per_base"]
            label = f"{name} ({m['params'] / 1e6:.2f} M, {flops / 1e6:.2f} MFLOP/base)"
            ax.plot(xs, mean, "o-", color=colour, lw=2, ms=3.5, label=label)
            if name in summary["baselines"]:
                ax.axhline(m["final_bits_per_base"][h], color=colour, ls=":", lw=1)
        by_hnet = summary.get("multipliers_by_hnet", {summary["reference"]: summary["multipliers"]})
        text = [f"{hnet} vs {b}: {_multiplier_text(v[h])}" for hnet, mult in by_hnet.items() for b, v in mult.items()]
        ax.text(0.98, 0.97, "\n".join(text), transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
        ax.set(xscale="log", xlabel="training bases seen", ylabel="held-out bits per base", title=f"held out: {h}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Data efficiency (constant learning rate; thin: seeds, thick: mean; dotted: baselines' final; "
                 f"FLOPs: {summary.get('flops_convention', 'torch')} count; multipliers: sustained crossing)",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _multiplier_text(v: dict) -> str:
    if not v["reached"]:
        return f"not reached ({v['seeds_reached']} of {len(v['per_seed'])} seeds did)"
    return f"{'>= ' if v['lower_bound'] else ''}{v['mean']:.2f}x ± {v['sd']:.2f}"


def format_summary(summary: dict) -> str:
    """A plain-text table of the summary (what the command prints at the end)."""
    heldouts = summary["heldout"]
    conv = summary.get("flops_convention", "torch")
    lines = ["", "| model | params | MFLOP/base torch | MFLOP/base causal (x ref) | "
             + " | ".join(f"final bits {h}" for h in heldouts) + " | bases/s | peak MB |",
             "|" + "---|" * (6 + len(heldouts))]
    for name, m in summary["models"].items():
        finals = " | ".join(f"{m['final_bits_per_base'][h]:.4f}" for h in heldouts)
        causal = m.get("flops_per_base_causal")
        causal = "-" if causal is None else f"{causal / 1e6:.2f} ({m['flops_ratio_to_reference_causal']:.2f})"
        lines.append(f"| {name} | {m['params'] / 1e6:.2f} M | {m['flops_per_base'] / 1e6:.2f} "
                     f"({m['flops_ratio_to_reference']:.2f}) | {causal} | {finals} | {m['train_bases_per_s']:,.0f} | "
                     f"{m['peak_memory_mb']:,.0f} |")
    lines.append(f"(compute matched on the {conv} count within ±{summary.get('flops_tolerance', 0.15):.0%}: "
                 + ", ".join(n for n, m in summary["models"].items() if m["compute_matched"]) + ")")
    if summary["decay_steps"]:
        lines.append("")
        for name, m in summary["models"].items():
            after = ", ".join(f"{h} {m['decayed_bits_per_base'][h]:.4f}" for h in heldouts)
            lines.append(f"{name} after the {summary['decay_steps']}-step decay: {after} bits/base")
    lines.append("")
    for hnet, per_baseline in summary.get("multipliers_by_hnet", {summary["reference"]: summary["multipliers"]}).items():
        for b, per in per_baseline.items():
            for h, v in per.items():
                seeds = ", ".join("-" if x is None else f"{x:.2f}" for x in v["per_seed"].values())
                first = v.get("first_crossing_per_seed")
                first = "" if first is None else "; first crossing: " + ", ".join(
                    "-" if x is None else f"{x:.2f}" for x in first.values())
                lines.append(f"{hnet} vs {b} on {h}: {_multiplier_text(v)} (per seed: {seeds}{first})")
    return "\n".join(lines)
