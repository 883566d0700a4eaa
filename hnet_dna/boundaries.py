"""``python -m hnet_dna.boundaries``: where the model cuts a genomic region into chunks, as genome
browser tracks, and whether the cuts fall at annotated feature edges.

::

    python -m hnet_dna.boundaries --fasta GRCh37_chr20.fa.gz --region 20:30,000,001-31,000,000 --out runs/b/chr20 \\
        --annotation exons=hg19_chr20_refseq_exons.saf tss=hg19_chr20_refseq_tss.txt cpg=hg19_chr20_cpg_islands.bed

Writes, per chunking level s (0 = outermost):

* ``PREFIX.level<s>.prob.bw``: the routing module's boundary probability p in genome coordinates
  (bigWig). Level 0 decides at every base; level s > 0 decides at the bases where level s-1's
  chunks start, so its track has values only there.
* ``PREFIX.level<s>.chunks.bed``: one interval per chunk (0-based, half-open; the first and last
  are clipped to the region).

The region is read in overlapping windows (``--window``, every ``--stride`` bases) after up to
``window - stride`` bases of left context, and every base is taken from the earliest window that
holds it: every decision is made with at least ``window - stride`` bases of left context (fewer
only at the start of a chromosome), and the forced boundary at each window's first position never
reaches the tracks. With ``--exact-context`` the region (after the same context) is read once, in
blocks that continue from the model's caches: every decision is the one a single forward pass
over the whole region would make. Chromosome names in the outputs are written as in ``--region``.

With ``--annotation NAME=FILE ...`` (BED, 3+ columns, 0-based; SAF ``GeneID Chr Start End
Strand``, 1-based inclusive, by the ``.saf`` suffix; or a ``chrom pos strand`` TSS list, 0-based),
feature edges in the region are the first base of each feature and the base after it (a TSS list:
the TSS). For each level and annotation, ``PREFIX.enrichment.tsv`` (also printed) counts the
boundaries within ``--flank`` bases of an edge (``observed``; bases in N runs never count) against
two controls, ``--shifts`` draws each, with expected count, fold and one-sided p-values (1 + #draws
with at least as many hits) / (1 + draws), and ``p_depletion`` (at most as many):

* ``shift``: all boundaries moved by one random circular shift along the region's non-N bases
  (keeps their number and spacing; N runs are cut out, so no boundary lands in a gap);
* ``gc`` (the headline ``p_value``): each boundary moved to a random non-N base of the same
  ``--control-window`` window whose local GC (``--gc-flank`` bases either side) is in the same
  decile (keeps local density and composition: enrichment that composition explains vanishes).

``PREFIX.chunks.tsv`` (also printed, and a panel of the PNG) gives chunk lengths by where chunks
start: in homopolymer runs (one base >= 8 times), short tandem repeats (a 2-6 base unit, >= 3
copies, >= 12 bases) found in the sequence, and each interval annotation (CpG islands, exons ...),
against the region's: bases per chunk, its ratio to the region's, the chunks' mean length and
the fraction of one-base chunks. ``PREFIX.png`` plots the tracks over ``--plot-region`` (default: 2 kb around the
first annotated edge in the region). Chromosome names match through aliases (``chr20`` = ``20``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .commands import (
    Progress,
    atomic_path,
    check_windows,
    window_help,
    choose_device,
    exit_on_user_error,
    parse_region,
    read_exact,
    read_text_lines,
    resolve_region,
    tiles,
    write_bigwig,
)
from .config import ConfigError
from .data.genome import DataError, chrom_aliases, open_fasta
from .model.hnet import HNetForCausalLM
from .model.loading import load_model

__all__ = ["region_boundaries", "RegionBoundaries", "read_feature_edges", "boundary_enrichment", "local_gc",
           "repeat_intervals", "chunk_length_stats", "main"]


@dataclass
class RegionBoundaries:
    start: int  # the region, 0-based half-open
    end: int
    probs: list[tuple[np.ndarray, np.ndarray]]  # per level: (genome positions, p) in position order
    starts: list[np.ndarray]  # per level: genome positions where chunks start, in [start, end)


def region_boundaries(model: HNetForCausalLM, genome, record: str, start: int, end: int, *, window: int = 4096,
                      stride: int | None = None, batch_size: int = 8, device=None, exact_context: bool = False,
                      progress: bool = False) -> RegionBoundaries:
    """Boundary probabilities and chunk starts of every level over ``record[start:end)``; with
    ``exact_context``, read once from its start in blocks of ``window`` bases that continue from
    the model's caches (every decision made with all the bases before it)."""
    check_windows(window, stride, batch_size)
    stride = stride or window // 2
    if model.config.num_stages < 2:
        raise ConfigError("the model is isotropic: it has no chunk boundaries (give an H-Net)")
    device = device if isinstance(device, torch.device) else choose_device(device)
    model = model.to(device).eval()
    context = min(start, window - stride)
    offset = start - context  # genome position of sequence position 0
    letters = genome.fetch(record, offset, end)
    ids = model.tokenizer.encode(letters, record=f"{record}:{offset + 1}-{end}")
    levels = model.config.num_stages - 1
    probs = [([], []) for _ in range(levels)]
    starts = [[] for _ in range(levels)]
    if exact_context:
        _read_once(model, ids, window, context, offset, device, probs, starts, progress)
        return _collected(start, end, probs, starts)
    work = tiles(len(ids), window, stride)
    bar = Progress(len(work), len(ids), "boundaries", enabled=progress, unit="window")
    with torch.inference_mode():
        for k in range(0, len(work), batch_size):
            chunk = work[k:k + batch_size]
            batch = model.tokenizer.pad_ids([ids[t.start:t.end] for t in chunk])
            feats = model.features(batch["input_ids"].to(device), batch["mask"].to(device))
            # One transfer per level and batch: (probabilities, chunk starts, real chunks).
            levels = [(lv.boundary_probs.float().cpu(), lv.positions.cpu(), lv.mask.cpu()) for lv in feats.levels]
            for row, t in enumerate(chunk):
                lo = max(t.own_start, context) - t.start  # tile-local owned range, region only
                hi = t.own_end - t.start
                base_of = torch.arange(t.end - t.start)  # (L_s,) base of each position of this level
                for s, (level_probs, level_positions, level_mask) in enumerate(levels):
                    p = level_probs[row, :len(base_of)]  # the level decides at each of its inputs
                    keep = (base_of >= lo) & (base_of < hi)
                    probs[s][0].append((base_of[keep] + t.start + offset).numpy())
                    probs[s][1].append(p[keep].numpy())
                    pos = level_positions[row][level_mask[row]]
                    chosen = pos[(pos >= lo) & (pos < hi)]
                    starts[s].append((chosen + t.start + offset).numpy())
                    base_of = pos  # the next level decides at this level's chunk starts
            bar.update(len(chunk), sum(t.end - t.start for t in chunk))
    bar.close()
    return _collected(start, end, probs, starts)


def _read_once(model, ids, block: int, context: int, offset: int, device, probs, starts, progress: bool) -> None:
    """The exact-context reading of :func:`region_boundaries`: blocks continuing from the caches;
    appends to ``probs`` and ``starts`` (per level) the region's part of each block."""
    bar = Progress(-(-len(ids) // block), len(ids), "boundaries", enabled=progress, unit="block")
    with torch.inference_mode():
        for blk in read_exact(model, ids, block, device):
            for s, (inputs, p) in enumerate(zip(blk.inputs, blk.probs)):
                keep = inputs >= context  # the region, not the context before it
                probs[s][0].append((inputs[keep] + offset).numpy())
                probs[s][1].append(p[keep].numpy())
                chosen = blk.chunk_starts(s)
                starts[s].append((chosen[chosen >= context] + offset).numpy())
            bar.update(1, len(blk.hidden))
    bar.close()


def _collected(start: int, end: int, probs, starts) -> RegionBoundaries:
    return RegionBoundaries(
        start, end,
        [(np.concatenate(p).astype(np.int64), np.concatenate(v).astype(np.float32)) for p, v in probs],
        [np.unique(np.concatenate(s)).astype(np.int64) for s in starts],
    )


# ------------------------------------------------------------------------------- annotation
def read_feature_edges(path, record_names: set[str], start: int, end: int) -> tuple[np.ndarray, list]:
    """Sorted unique feature edges of ``path`` within [start, end) on a chromosome named by one of
    ``record_names``, and the features themselves (for plots) as (start, end) pairs."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such annotation file")
    name = path.name.lower().removesuffix(".gz")
    edges, features = [], []
    kind = "saf" if name.endswith(".saf") else "bed" if name.endswith(".bed") else None
    for lineno, line in read_text_lines(path):
        fields = line.split()
        if not fields or fields[0].startswith(("#", "track", "browser")) or fields[0] == "GeneID":
            continue
        where = f"{path}, line {lineno}"
        if kind is None:
            kind = "tss" if len(fields) == 3 and fields[2] in ("+", "-", ".") else "bed"
        try:
            if kind == "saf":
                chrom, a, b = fields[1], int(fields[2]) - 1, int(fields[3])
            elif kind == "bed":
                chrom, a, b = fields[0], int(fields[1]), int(fields[2])
            else:
                chrom, a = fields[0], int(fields[1])
                b = a + 1
        except (ValueError, IndexError):
            raise DataError(f"{where}: not a {kind.upper()} line ({line.strip()[:60]!r})") from None
        if chrom not in record_names:
            continue
        features.append((a, b))
        for e in ((a,) if kind == "tss" else (a, b)):
            if start <= e < end:
                edges.append(e)
    return np.unique(np.asarray(edges, dtype=np.int64)), features


def local_gc(letters: str, flank: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(valid, gc): ``valid`` (L,) True at A/C/G/T (N runs and other letters False); ``gc`` (L,)
    the G+C fraction of the valid bases within ``flank`` bases either side (NaN where none)."""
    upper = np.frombuffer(letters.upper().encode(), dtype=np.uint8)
    valid = np.isin(upper, np.frombuffer(b"ACGT", dtype=np.uint8))
    strong = np.isin(upper, np.frombuffer(b"CG", dtype=np.uint8))
    def window_sum(x):
        c = np.concatenate([[0], np.cumsum(x, dtype=np.int64)])
        idx = np.arange(len(x))
        return c[np.minimum(idx + flank + 1, len(x))] - c[np.maximum(idx - flank, 0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        gc = window_sum(strong) / window_sum(valid)
    return valid, gc


def boundary_enrichment(boundaries: np.ndarray, edges: np.ndarray, start: int, end: int, *, flank: int = 2,
                        shifts: int = 1000, seed: int = 0, valid: np.ndarray | None = None,
                        gc: np.ndarray | None = None, control_window: int = 10_000, gc_bins: int = 10) -> dict:
    """Boundaries within ``flank`` bases of an edge, observed vs two controls (module docstring).

    ``valid`` (L,) marks the bases that count (False in N runs: no boundary there is counted and no
    control puts one there); ``gc`` (L,) each base's local G+C fraction (:func:`local_gc`), for the
    composition-matched control (skipped when None). ``p_value`` / ``p_depletion`` are the matched
    control's when it ran, else the shift control's."""
    length = end - start
    valid = np.ones(length, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    near = np.zeros(length, dtype=bool)
    for e in edges - start:
        near[max(0, e - flank):min(length, e + flank + 1)] = True
    local = boundaries - start
    local = local[valid[local]]  # a boundary in an N run is no boundary of the sequence
    observed = int(near[local].sum())
    places = np.flatnonzero(valid)  # (V,) the bases a control may move a boundary to
    near_at = near[places]  # (V,)
    rank = np.searchsorted(places, local)  # each boundary's index among the valid bases
    block = max(1, 20_000_000 // max(len(local), 1))  # draws per step: memory stays ~ 160 MB on a chromosome

    # Control 1: one circular shift of all boundaries along the valid bases (N runs cut out): keeps
    # the boundaries' number and spacing, not the sequence under them.
    rng = np.random.default_rng(seed)
    offsets = rng.integers(1, max(len(places), 2), size=shifts)
    shifted = np.concatenate([near_at[(rank[None, :] + offsets[k:k + block, None]) % len(places)].sum(1)
                              for k in range(0, shifts, block)])  # (shifts,)
    out = {"edges": int(len(edges)), "boundaries": int(len(local)), "observed": observed,
           **_control("shift", observed, shifted)}
    if gc is not None:
        # Control 2: each boundary moved to a random valid base of the same control_window-base
        # window and the same local-GC decile: keeps local density and composition, not spacing.
        g = np.asarray(gc)[places]
        cuts = np.nanquantile(g, np.linspace(0, 1, gc_bins + 1)[1:-1]) if np.isfinite(g).any() else np.array([])
        key = (places // control_window) * (gc_bins + 1) + np.searchsorted(cuts, np.nan_to_num(g, nan=-1.0), side="right")
        order = np.argsort(key, kind="stable")
        strata, first, size = np.unique(key[order], return_index=True, return_counts=True)
        k = np.searchsorted(strata, key[rank])
        lo, n = first[k], size[k]  # (B,) each boundary's stratum in near_at[order]
        near_sorted = near_at[order]
        rng = np.random.default_rng([seed, 1])
        matched = np.concatenate([near_sorted[lo + (rng.random((min(block, shifts - j), len(lo))) * n).astype(np.int64)].sum(1)
                                  for j in range(0, shifts, block)])
        out.update(_control("gc", observed, matched))
    headline = "gc" if gc is not None else "shift"
    out["p_value"], out["p_depletion"] = out[f"p_{headline}"], out[f"p_depletion_{headline}"]
    out["control"] = headline
    return out


def _control(name: str, observed: int, draws: np.ndarray) -> dict:
    expected = float(draws.mean())
    return {
        f"expected_{name}": expected,
        f"fold_{name}": observed / expected if expected > 0 else float("nan"),
        f"p_{name}": (1 + int((draws >= observed).sum())) / (1 + len(draws)),
        f"p_depletion_{name}": (1 + int((draws <= observed).sum())) / (1 + len(draws)),
    }


# ------------------------------------------------------------------------ repeats and motifs
def repeat_intervals(letters: str, offset: int = 0, *, min_homopolymer: int = 8, min_str: int = 12) -> dict:
    """Homopolymer runs (one base repeated >= ``min_homopolymer`` times) and short tandem repeats
    (a 2-6 base unit, not itself one base repeated, >= 3 copies and >= ``min_str`` bases) of
    ``letters``, as (n, 2) arrays of half-open intervals at ``offset + position``."""
    import re

    upper = letters.upper()
    found = {"homopolymer": [m.span() for m in re.finditer(rf"([ACGT])\1{{{min_homopolymer - 1},}}", upper)]}
    strs = []
    for unit in range(2, 7):
        for m in re.finditer(rf"([ACGT]{{{unit}}})\1{{2,}}", upper):
            if len(set(m.group(1))) > 1 and m.end() - m.start() >= min_str:
                strs.append(m.span())
    merged = []  # a repeat of "CA" is also one of "CACA": one interval per stretch
    for a, b in sorted(strs):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    found["tandem_repeat"] = merged
    return {k: np.asarray(v, dtype=np.int64).reshape(-1, 2) + offset for k, v in found.items()}


def chunk_length_stats(starts: np.ndarray, start: int, end: int, classes: dict, valid: np.ndarray | None = None) -> list[dict]:
    """Chunks by where they start: for each class of intervals (name -> (n, 2) genome intervals;
    ``features`` counts those in the region) and for the whole region, the bases covered, the chunks starting there, bases per chunk, their
    mean length and the fraction of one-base chunks."""
    length = end - start
    valid = np.ones(length, dtype=bool) if valid is None else valid
    local = np.sort(starts - start)
    lengths = np.diff(np.append(local, length))  # (C,) each chunk's length, the last clipped to the region
    rows = []
    for name, intervals in {"region": np.array([[start, end]]), **classes}.items():
        inside = np.zeros(length, dtype=bool)
        intervals = np.asarray(intervals).reshape(-1, 2)
        intervals = intervals[(intervals[:, 1] > start) & (intervals[:, 0] < end)]  # those in the region
        for a, b in intervals:
            inside[max(a - start, 0):min(b - start, length)] = True
        inside &= valid
        chosen = lengths[inside[local]]
        bases = int(inside.sum())
        rows.append({"class": name, "features": int(len(intervals)), "bases": bases, "chunks": int(len(chosen)),
                     "bases_per_chunk": bases / len(chosen) if len(chosen) else float("nan"),
                     "mean_chunk_length": float(chosen.mean()) if len(chosen) else float("nan"),
                     "one_base_chunks": float((chosen == 1).mean()) if len(chosen) else float("nan")})
    overall = rows[0]["bases_per_chunk"]
    for r in rows:
        r["vs_region"] = r["bases_per_chunk"] / overall if overall == overall and overall > 0 else float("nan")
    return rows


# ---------------------------------------------------------------------------------- outputs
def _write_chunks(path: Path, chrom: str, start: int, end: int, starts: np.ndarray) -> None:
    edges = np.unique(np.concatenate([[start], starts, [end]]))
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            f.write(f"{chrom}\t{a}\t{b}\tchunk{k}\n")


def _plot(path: Path, chrom: str, result: RegionBoundaries, annotations: dict, lo: int, hi: int,
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hnet_dna.boundaries", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fasta", required=True)
    p.add_argument("--region", required=True, help="CHROM:START-END, 1-based inclusive")
    p.add_argument("--out", required=True, help="output prefix (PREFIX.level0.prob.bw, ...)")
    p.add_argument("--model", default=None,
                   help="preset, save_pretrained folder, or pretraining .ckpt (default: the shipped tiny chr20 model)")
    p.add_argument("--annotation", nargs="*", default=[], metavar="NAME=FILE")
    p.add_argument("--flank", type=int, default=2, help="a boundary within this many bases of an edge is a hit")
    p.add_argument("--shifts", type=int, default=1000, help="random circular shifts in the control")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gc-flank", type=int, default=50, help="local GC of a base: bases within this many either side (default 50)")
    p.add_argument("--control-window", type=int, default=10_000,
                   help="the GC-matched control moves a boundary within windows of this many bases (default 10,000)")
    p.add_argument("--plot-region", default=None, help="CHROM:START-END for the PNG")
    p.add_argument("--window", type=int, default=4096, help=window_help(4096, 8, "read the region in windows of this many bases"))
    p.add_argument("--stride", type=int, default=None, help="bases between window starts (default window/2)")
    p.add_argument("--exact-context", action="store_true",
                   help="decide every boundary with ALL the bases before it in the region (after the same "
                        "window - stride bases of context before it): one read from the start in blocks of "
                        "--window bases that continue from the model's caches (--batch-size does not apply); "
                        "global attention layers keep keys for every chunk read (see score --help)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--index-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    return p


def run(args) -> None:
    prefix = Path(args.out)
    if not prefix.parent.is_dir():
        raise DataError(f"--out {prefix}: no such folder {prefix.parent}")
    genome = open_fasta(args.fasta, index_dir=args.index_dir)
    chrom, record, start, end = resolve_region(genome, args.region)
    if args.flank < 0 or args.shifts < 1 or args.gc_flank < 1 or args.control_window < 1:
        raise ConfigError("--flank must be >= 0, and --shifts, --gc-flank and --control-window >= 1")
    check_windows(args.window, args.stride, args.batch_size)
    names = set(chrom_aliases(record)) | set(chrom_aliases(chrom))
    annotations = {}
    for item in args.annotation:
        if "=" not in item:
            raise DataError(f"--annotation {item!r}: expected NAME=FILE")
        name, file = item.split("=", 1)
        annotations[name] = read_feature_edges(file, names, start, end)
    plot = (start, min(end, start + 2000))
    if args.plot_region:
        pc, plo, phi = parse_region(args.plot_region)
        if genome.resolve(pc) != record or plo < start or phi > end:
            raise DataError(f"--plot-region {args.plot_region}: must lie inside --region {args.region}")
        plot = (plo, phi)
    else:
        firsts = [e[0] for e, _ in annotations.values() if len(e)]
        if firsts:
            centre = min(firsts)
            plot = (max(start, centre - 1000), min(end, centre + 1000))
    model = load_model(args.model, warn_untrained=True)
    if model.config.num_stages < 2:
        raise ConfigError(f"--model {args.model}: an isotropic model has no chunk boundaries; give an H-Net")
    result = region_boundaries(model, genome, record, start, end, window=args.window, stride=args.stride,
                               batch_size=args.batch_size, device=args.device, exact_context=args.exact_context,
                               progress=not args.quiet)
    chrom_length = genome.records[record]
    for s in range(len(result.probs)):
        write_bigwig(Path(f"{prefix}.level{s}.prob.bw"), chrom, chrom_length, *result.probs[s])
        _write_chunks(Path(f"{prefix}.level{s}.chunks.bed"), chrom, start, end, result.starts[s])
        print(f"hnet_dna.boundaries: level {s}: {len(result.starts[s]):,} chunks over {end - start:,} bases "
              f"({(end - start) / max(len(result.starts[s]), 1):.2f} bases per chunk)")
    letters = genome.fetch(record, start, end)
    valid, gc = local_gc(letters, flank=args.gc_flank)
    if annotations:
        rows = []
        for s in range(len(result.starts)):
            for name, (edges, _) in annotations.items():
                rows.append({"level": s, "annotation": name, **boundary_enrichment(
                    result.starts[s], edges, start, end, flank=args.flank, shifts=args.shifts, seed=args.seed,
                    valid=valid, gc=gc, control_window=args.control_window)})
        _table(Path(f"{prefix}.enrichment.tsv"), rows, ENRICHMENT_COLUMNS,
               f"boundaries within {args.flank} bases of a feature edge (N runs excluded); controls: {args.shifts} "
               f"circular shifts along the non-N bases (shift) and {args.shifts} draws matched on local GC within "
               f"{args.control_window:,}-base windows (gc); p_value is the gc control's:")
    classes = repeat_intervals(letters, start)
    for name, (_, features) in annotations.items():
        if features and any(b - a > 1 for a, b in features):  # intervals (a TSS list has points only)
            classes[name] = np.asarray(features, dtype=np.int64).reshape(-1, 2)
    chunk_rows = [{"level": s, **r} for s in range(len(result.starts))
                  for r in chunk_length_stats(result.starts[s], start, end, classes, valid)]
    _table(Path(f"{prefix}.chunks.tsv"), chunk_rows, CHUNK_COLUMNS,
           "chunks by where they start (homopolymers >= 8 bases, tandem repeats of 2-6 base units, annotations):")
    _plot(Path(f"{prefix}.png"), chrom, result, annotations, *plot, chunk_rows=chunk_rows)
    print(f"hnet_dna.boundaries: wrote {prefix}.level*.prob.bw, {prefix}.level*.chunks.bed"
          + (f", {prefix}.enrichment.tsv" if annotations else "") + f", {prefix}.chunks.tsv, {prefix}.png")


ENRICHMENT_COLUMNS = ["level", "annotation", "edges", "boundaries", "observed", "expected_shift", "fold_shift", "p_shift",
                      "expected_gc", "fold_gc", "p_gc", "p_depletion_gc", "p_value"]
CHUNK_COLUMNS = ["level", "class", "features", "bases", "chunks", "bases_per_chunk", "vs_region", "mean_chunk_length",
                 "one_base_chunks"]


def _table(path: Path, rows: list[dict], header: list[str], title: str) -> None:
    """``rows`` as a TSV at ``path`` and as a Markdown table on stdout."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(_fmt(r[h]) for h in header) + "\n")
    print(title)
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(_fmt(r[h]) for h in header) + " |")


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e-2 else f"{x:.3f}"
    return str(x)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    exit_on_user_error(lambda: run(args), prog="hnet_dna.boundaries")


if __name__ == "__main__":
    from . import backends

    backends.keep_freed_memory()  # long inputs: large activations are not page-faulted afresh per batch
    main()
