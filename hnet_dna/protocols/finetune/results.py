"""What the fine-tuning protocol reports: per system and test metric the mean and sd over runs,
the mean of what the runs spent (:data:`SPENT`), the winner per metric with its margin in sd units,
and the Markdown table."""

from __future__ import annotations

import math

__all__ = ["METRICS", "SYSTEMS", "task_metrics", "LOWER_IS_BETTER", "SPENT", "DETERMINISTIC", "summarise", "winners", "results_table", "winner_lines"]

METRICS = ("test/mcc", "test/accuracy", "test/f1_macro", "test/auroc")


SYSTEMS = ("model", "lpft", "lora", "scratch", "cnn", "probe", "kmer_lr")

SPENT = ("epochs", "optimizer_steps", "training_flops", "wall_seconds", "trainable_parameters", "total_parameters")


DETERMINISTIC = ("probe", "kmer_lr")  # no seed enters their fit



LOWER_IS_BETTER = ("mse",)  # metrics (by name, per output too) where the lower mean wins


def task_metrics(task: str, names: list[str]) -> tuple[str, ...]:
    """A multilabel or regression table's metrics: the means over outputs, then each output's
    AUPRC (multilabel) or Pearson r (regression)."""
    if task == "multilabel":
        return ("test/auroc", "test/auprc", "test/best_f1", *(f"test/auprc/{n}" for n in names))
    return ("test/pearson", "test/spearman", "test/mse", *(f"test/pearson/{n}" for n in names))


def segmentation_metrics(class_names: list[str]) -> tuple[str, ...]:
    """A segmentation table's metrics: the means over elements, then each element's MCC and edge recall."""
    return ("test/mcc", "test/auprc", "test/edge_recall", *(f"test/mcc/{e}" for e in class_names),
            *(f"test/edge_recall/{e}" for e in class_names))


def _metrics(summary: dict) -> list[str]:
    """The metrics a summary holds, in its order."""
    first = next(iter(summary.values()), {})
    return [m for m in first if m != "spent"]


def summarise(runs: list[dict], metrics: tuple[str, ...] = METRICS) -> dict:
    out: dict[str, dict] = {}
    present = {r["system"] for r in runs}
    for system in [s for s in SYSTEMS if s in present] + sorted(present - set(SYSTEMS)):
        rows = [r for r in runs if r["system"] == system]
        if system in DETERMINISTIC:  # one fit per split, recorded per seed: count it once
            rows = list({r.get("fold"): r for r in rows}.values())
        out[system] = {}
        for metric in metrics:
            values = [r["test"][metric] for r in rows if r["test"].get(metric) is not None and r["test"][metric] == r["test"][metric]]
            mean = sum(values) / len(values) if values else None
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
            out[system][metric] = {"mean": mean, "sd": sd, "n": len(values)}
        spent = {}
        for count in SPENT:  # not a metric: averaged, never ranked
            values = [r[count] for r in rows if r.get(count) is not None]
            spent[count] = sum(values) / len(values) if values else None
        out[system]["spent"] = spent
    return out


def _spent_cells(spent: dict) -> list[str]:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)
    trainable, total = spent.get("trainable_parameters"), spent.get("total_parameters")
    params = "-" if trainable is None else f"{trainable:,.0f} / {total:,.0f}"
    return [fmt(spent.get("epochs"), ".2f"), fmt(spent.get("optimizer_steps"), ",.0f"),
            fmt(spent.get("training_flops"), ".3g"), fmt(spent.get("wall_seconds"), ".0f"), params]


def results_table(summary: dict) -> str:
    """Test metrics (mean ± sd) and, beside them, what a run spent (means over runs)."""
    names = _metrics(summary)
    lines = ["| system | " + " | ".join(m.removeprefix("test/") for m in names)
             + " | epochs | steps | training FLOPs | wall s | trainable / total parameters |",
             "|---|" + "---|" * (len(names) + 5)]
    for system, metrics in summary.items():
        cells = []
        for m in names:
            s = metrics[m]
            cells.append("-" if s["mean"] is None else f"{s['mean']:.3f}" + (f" ± {s['sd']:.3f}" if s["sd"] is not None else ""))
        cells += _spent_cells(metrics.get("spent", {}))
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def winners(summary: dict) -> dict:
    """Per metric: the system with the best mean, the runner-up, the margin, and the margin in units
    of the larger sd of the two (None where both are deterministic or seen once)."""
    out = {}
    for metric in _metrics(summary):
        lower = metric.split("/")[1] in LOWER_IS_BETTER
        ranked = sorted((s for s in summary if summary[s][metric]["mean"] is not None),
                        key=lambda s: summary[s][metric]["mean"], reverse=not lower)
        if len(ranked) < 2:
            continue
        first, second = (summary[s][metric] for s in ranked[:2])
        sds = [x["sd"] for x in (first, second) if x["sd"]]
        margin = abs(first["mean"] - second["mean"])
        out[metric] = {"best": ranked[0], "runner_up": ranked[1], "margin": margin,
                       "margin_sd": margin / max(sds) if sds else None}
    return out


def winner_lines(summary: dict) -> str:
    lines = []
    for metric, w in winners(summary).items():
        name = metric.removeprefix("test/")
        if w["margin"] == 0:
            lines.append(f"- {name}: **{w['best']}** and {w['runner_up']} tie")
            continue
        units = f" = {w['margin_sd']:.1f} sd" if w["margin_sd"] is not None else " (no spread to compare with)"
        lines.append(f"- {name}: **{w['best']}** wins, ahead of {w['runner_up']} by {w['margin']:.3f}{units}")
    return "\n".join(lines)

