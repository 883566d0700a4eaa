"""The pictures of the interpretation commands (matplotlib PNG, written atomically): boundary
tracks over a region with annotations and chunk lengths by class (``boundaries``), and ISM maps
(``ism``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runs import atomic_path
from .boundaries import RegionBoundaries
from .ism import BASES, ISMResult

__all__ = ["plot_boundaries", "plot_ism"]

def plot_boundaries(path: Path, chrom: str, result: RegionBoundaries, annotations: dict, lo: int, hi: int,
          chunk_rows: list[dict] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    levels = len(result.probs)
    extra = 1 if chunk_rows else 0
    fig, axes = plt.subplots(levels + 1 + extra, 1, figsize=(11, 2.0 * (levels + 1) + 2.6 * extra),
                             gridspec_kw={"height_ratios": [3] * levels + [max(1, len(annotations))] + [4] * extra})
    for ax in axes[1:levels + 1]:
        ax.sharex(axes[0])
    if chunk_rows:
        _plot_chunks(axes[-1], chunk_rows)
        axes = axes[:-1]
    for s in range(levels):
        ax = axes[s]
        pos, p = result.probs[s]
        keep = (pos >= lo) & (pos < hi)
        ax.plot(pos[keep], p[keep], lw=0.6 if s == 0 else 0, marker=None if s == 0 else ".", ms=3, color=f"C{s}")
        b = result.starts[s][(result.starts[s] >= lo) & (result.starts[s] < hi)]
        ax.vlines(b, 1.02, 1.12, color="k", lw=0.5)
        ax.set_ylim(0, 1.15)
        ax.set_ylabel(f"level {s}\np(boundary)")
    ax = axes[-1]
    for row, (name, (_, features)) in enumerate(annotations.items()):
        for a, b in features:
            if b > lo and a < hi:
                ax.add_patch(plt.Rectangle((max(a, lo), row - 0.3), min(b, hi) - max(a, lo) + (b - a == 1), 0.6, color=f"C{row + 3}"))
    ax.set_yticks(range(len(annotations)), list(annotations))
    ax.set_ylim(-0.6, max(len(annotations), 1) - 0.4)
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{int(x):,}"))
    ax.set_xlabel(f"{chrom} (0-based)")
    fig.suptitle(f"hnet_dna boundaries, {chrom}:{lo + 1:,}-{hi:,} (ticks: chunk starts)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _plot_chunks(ax, rows: list[dict]) -> None:
    """Bases per chunk by class (bars, one colour per level) against the region's (dashed)."""
    classes = list(dict.fromkeys(r["class"] for r in rows))
    levels = sorted({r["level"] for r in rows})
    width = 0.8 / len(levels)
    for k, s in enumerate(levels):
        by = {r["class"]: r for r in rows if r["level"] == s}
        x = np.arange(len(classes)) + (k - (len(levels) - 1) / 2) * width
        ax.bar(x, [by[c]["bases_per_chunk"] for c in classes], width, color=f"C{k}", label=f"level {s}")
        ax.axhline(by["region"]["bases_per_chunk"], color=f"C{k}", ls="--", lw=0.8)
    ax.set_xticks(range(len(classes)), [f"{c}\n({next(r['features'] for r in rows if r['class'] == c):,})" for c in classes],
                  fontsize=8)
    ax.set_ylabel("bases per chunk")
    ax.set_title("chunk length by where chunks start (dashed: the region's)", fontsize=9)
    ax.legend(fontsize=8)



def plot_ism(result: ISMResult, path: Path, which: list[int], offset: int = 0, xlabel: str = "position (0-based)") -> None:
    """Per chosen sequence: the importance track, the effect heatmap (rows A, C, G, T) and the
    reference below (letters when they fit); positions drawn from ``offset``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 * len(which), 1, figsize=(12, 3.2 * len(which)), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": [1, 1.4] * len(which)})
    what = {"lm": "change in log2 likelihood (bits)", "masked_lm": "masked marginal log2 p(alt) - log2 p(ref) (bits)",
            "regression": f"change in the predicted {result.target!r} (its units)",
            "segmentation": f"change in the {result.target!r} logit at base {(result.position or 0) + offset:,}"}.get(
        result.scorer, f"change in the {result.target!r} logit")
    for k, i in enumerate(which):
        seq, e, imp = result.sequences[i], result.effects[i], result.importance(i)
        x = np.arange(len(seq)) + offset
        top, heat = axes[2 * k, 0], axes[2 * k + 1, 0]
        top.bar(x, np.nan_to_num(imp), width=1.0, color="0.3")
        top.set_xlim(x[0] - 0.5, x[-1] + 0.5)
        top.set_ylabel("importance")
        top.set_title(f"{result.ids[i]} ({len(seq):,} bases): {what}", fontsize=9, loc="left")
        top.tick_params(labelbottom=False)
        bound = float(np.nanmax(np.abs(e))) if np.isfinite(e).any() else 1.0
        im = heat.imshow(e.T, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest",
                         extent=(x[0] - 0.5, x[-1] + 0.5, 3.5, -0.5))
        heat.set_yticks(range(4), list(BASES))
        if len(seq) <= 120:  # the reference, letter by letter
            heat.set_xticks(x, list(seq.upper()), fontsize=7, family="monospace")
        else:
            heat.set_xlabel(xlabel)
        fig.colorbar(im, ax=[top, heat], fraction=0.02, pad=0.01, label="effect")  # one for both: x stays aligned
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)

