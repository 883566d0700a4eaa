"""Where a model cuts a genomic region into chunks: the routing module's boundary probability and
the chunk starts of every chunking level, in genome coordinates (what ``python -m
hnet_dna.boundaries`` writes as tracks).

The region is read in overlapping windows (``window``, every ``stride`` bases) after up to
``window - stride`` bases of left context, and every base is taken from the earliest window that
holds it: every decision is made with at least ``window - stride`` bases of left context (fewer
only at the start of a chromosome), and the forced boundary at each window's first position never
reaches the tracks. With ``exact_context`` the region (after the same context) is read once, in
blocks that continue from the model's caches: every decision is the one a single forward pass
over the whole region would make.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import ConfigError
from ..inference.tiling import check_windows, choose_device, read_exact, tiles
from ..model.hnet import HNetForCausalLM
from ..runs import Progress

__all__ = ["region_boundaries", "RegionBoundaries"]

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
    if exact_context and model.config.bidirectional:
        raise ConfigError("--exact-context reads left to right through a causal model's caches; a masked LM (bidirectional) "
                          "reads each window whole, both ways: leave --exact-context out")
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

