"""Embeddings of DNA sequences from a pretrained model: what ``python -m hnet_dna.embed`` computes
(the arrays of its ``.npz``; see :mod:`hnet_dna.embed` for the layout).

Sequences longer than ``window`` are read in windows every ``stride`` bases (default half a
window); each base's output, and each chunk (by its first base), is taken from the earliest window
holding it, so pooling over a long sequence is pooling over its bases (or chunks) each counted
once; ``exact_context`` instead reads each sequence once in blocks that continue from the model's
caches, every base's output made with all the bases before it. ``rc_average`` averages the pooled
vectors (or, per position, each position's vectors) of a sequence and of its reverse complement;
boundaries are always those of the sequence as given.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import ConfigError
from ..io import InputSequence, encode_sequences
from ..model.hnet import HNetForCausalLM
from ..model.loading import load_model
from ..model.pooling import FROZEN_POOLINGS, check_pooling
from ..runs import Progress, ResumableParts
from .tiling import check_windows, choose_device, length_batches, read_exact, tiles

__all__ = ["embed_sequences", "DEFAULT_WINDOW"]



PART_BASES = 1 << 20  # bases per resumable part


DEFAULT_WINDOW = 4096  # long inputs (a chromosome) never reach the model whole



@dataclass
class _Strand:
    hidden: list = field(default_factory=list)  # owned (n, D) blocks, in order
    chunks: list = field(default_factory=list)  # owned innermost chunk states (m, D_in)
    boundaries: list = field(default_factory=list)  # per level: lists of owned start positions


def _run_windows(model, jobs, batch_size: int, device):
    """Forward each job (ids (n,), Tile) in batches of similar length; yields (job index, hidden
    (n_own, D), innermost chunk states owned, [owned chunk starts per level])."""
    order = sorted(range(len(jobs)), key=lambda j: -len(jobs[j][0]))
    for k in range(0, len(order), batch_size):
        chunk = order[k:k + batch_size]
        batch = model.tokenizer.pad_ids([jobs[j][0] for j in chunk])
        feats = model.features(batch["input_ids"].to(device), batch["mask"].to(device))
        hidden = feats.hidden.float().cpu()
        levels = [(lv.positions.cpu(), lv.states.float().cpu()) for lv in feats.levels]
        for row, j in enumerate(chunk):
            tile = jobs[j][1]
            lo, hi = tile.own_start - tile.start, tile.own_end - tile.start  # owned, local
            owned_hidden = hidden[row, lo:hi]
            starts, inner = [], None
            for s, (positions, states) in enumerate(levels):
                pos = positions[row]
                keep = (pos >= lo) & (pos < hi)
                starts.append((pos[keep] + tile.start).numpy())
                if s == len(levels) - 1:
                    inner = states[row][keep]
            yield j, owned_hidden, inner, starts


def _run_exact(model, jobs, block: int, device):
    """Read each job's whole sequence once (:func:`~hnet_dna.inference.tiling.read_exact`); yields what
    :func:`_run_windows` yields, every base and chunk owned."""
    levels = range(model.config.num_stages - 1)
    for j, (ids, _) in enumerate(jobs):
        hidden, inner, starts = [], [], [[] for _ in levels]
        for blk in read_exact(model, ids, block, device):
            hidden.append(blk.hidden.float().cpu())
            if levels:
                inner.append(blk.states[-1].float().cpu())  # the innermost level's chunks
            for s in levels:
                starts[s].append(blk.chunk_starts(s))
        yield j, torch.cat(hidden), torch.cat(inner) if levels else None, [torch.cat(x).numpy() for x in starts]


def _embed_part(model, ids_list, pooling, rc_average, boundaries, batch_size, device, window, stride,
                exact_context=False):
    """Per sequence of the part: (pooled vector or per-position array, [boundary arrays])."""
    tokenizer = model.tokenizer
    strands = [(i, 0) for i in range(len(ids_list))] + ([(i, 1) for i in range(len(ids_list))] if rc_average else [])
    jobs, owner = [], []
    for i, strand in strands:
        ids = ids_list[i] if strand == 0 else tokenizer.reverse_complement(ids_list[i])
        for tile in tiles(len(ids), None if exact_context else window, stride):
            jobs.append((ids[tile.start:tile.end], tile))
            owner.append((i, strand))
    acc = {key: _Strand() for key in strands}
    run = (_run_exact(model, jobs, window or DEFAULT_WINDOW, device) if exact_context
           else _run_windows(model, jobs, batch_size, device))
    results = sorted(run, key=lambda r: r[0])  # tile order within each sequence
    for j, hidden, inner, starts in results:
        st = acc[owner[j]]
        st.hidden.append(hidden)
        if inner is not None:
            st.chunks.append(inner)
        if not st.boundaries:
            st.boundaries = [[] for _ in starts]
        for s, pos in enumerate(starts):
            st.boundaries[s].append(pos)

    def value(i, strand):
        st = acc[(i, strand)]
        if pooling == "mean":
            return torch.cat(st.hidden).mean(0)
        if pooling == "chunks":
            return torch.cat(st.chunks).mean(0)
        if pooling == "last":
            return torch.cat(st.hidden)[-1]
        if pooling == "max":
            return torch.cat(st.hidden).amax(0)
        per_position = torch.cat(st.hidden)  # (L, D)
        return per_position if strand == 0 else per_position.flip(0)  # back to forward positions

    out = []
    for i in range(len(ids_list)):
        vec = value(i, 0)
        if rc_average:
            vec = (vec + value(i, 1)) / 2
        bounds = [np.concatenate(b).astype(np.int64) for b in acc[(i, 0)].boundaries] if boundaries else []
        out.append((vec.numpy().astype(np.float32), bounds))
    return out


def _check_options(model: HNetForCausalLM, pooling: str, boundaries: bool, window, stride, batch_size: int) -> str:
    """The pooling to run (``none``: the older name of ``flatten``), once every option is checked."""
    pooling = "flatten" if pooling == "none" else pooling
    check_pooling(pooling, model.config.num_stages, flag="--pooling")
    if pooling not in FROZEN_POOLINGS:
        raise ConfigError(f"--pooling {pooling}: needs a trained head's weights; embed reads a backbone alone "
                          f"(use one of {', '.join(FROZEN_POOLINGS)})")
    if boundaries and model.config.num_stages < 2:
        raise ConfigError("--boundaries needs an H-Net: an isotropic model does not cut its input into chunks")
    check_windows(window, stride, batch_size)
    return pooling


def _parts(lengths, batch_size: int) -> list[list[int]]:
    return length_batches(lengths, max_bases=max(PART_BASES, max(lengths)), max_batch=batch_size * 4)


def embed_sequences(
    sequences,
    model=None,
    *,
    pooling: str = "mean",
    rc_average: bool = False,
    boundaries: bool = False,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    window: int | None = DEFAULT_WINDOW,
    stride: int | None = None,
    exact_context: bool = False,
    progress: bool = False,
    _resume_at: tuple | None = None,
) -> dict[str, np.ndarray]:
    """Embeddings of ``sequences`` (strings, or :class:`~hnet_dna.io.InputSequence`).

    ``model``: an :class:`HNetForCausalLM`, or anything ``--model`` takes (None = the default
    model). Returns the arrays of the ``.npz`` the command writes (module docstring), without
    ``ids`` when plain strings are given. ``exact_context``: each sequence read once in blocks of
    ``window`` bases continuing from the model's caches, one at a time (as one whole read would).
    """
    records = [s if isinstance(s, InputSequence) else InputSequence(str(i), s, f"sequence {i}")
               for i, s in enumerate(sequences)]
    if not records:
        raise ConfigError("embed_sequences got no sequences")
    if not isinstance(model, HNetForCausalLM):
        model = load_model(model)
    if exact_context and model.config.bidirectional:
        raise ConfigError("--exact-context reads left to right through a causal model's caches; a masked LM (bidirectional) "
                          "reads each window whole, both ways: leave --exact-context out")
    pooling = _check_options(model, pooling, boundaries, window, stride, batch_size)
    ids_list = encode_sequences(records, model.tokenizer)  # every letter checked before anything is written
    _resume = ResumableParts(*_resume_at) if _resume_at is not None else None  # (output, fingerprint)
    device = choose_device(device) if not isinstance(device, torch.device) else device
    model = model.to(device).eval()
    lengths = [len(x) for x in ids_list]
    parts = _parts(lengths, batch_size)
    results: list = [None] * len(records)
    if _resume is not None and _resume.done:
        done = len(_resume.done & set(range(len(parts))))
        print(f"hnet_dna.embed: continuing: {done} of {len(parts)} parts already done", file=sys.stderr)
    bar = Progress(len(records), sum(lengths), "embed", enabled=progress)
    with torch.inference_mode():
        for p, members in enumerate(parts):
            if _resume is not None and p in _resume:
                part = _resume.load(p)
                rows = _unpack_part(part, len(members), pooled=pooling != "flatten")
            else:
                rows = _embed_part(model, [ids_list[i] for i in members], pooling, rc_average, boundaries,
                                   batch_size, device, window, stride, exact_context)
                if _resume is not None:
                    _resume.save(p, _pack_part(rows))
            for i, row in zip(members, rows):
                results[i] = row
            bar.update(len(members), sum(lengths[i] for i in members))
    bar.close()
    return _assemble(results, lengths, pooling, boundaries)


def _pack_part(rows) -> dict[str, np.ndarray]:
    out = {"values": np.concatenate([r[0].reshape(-1, r[0].shape[-1]) for r in rows]),
           "value_rows": np.array([r[0].reshape(-1, r[0].shape[-1]).shape[0] for r in rows])}
    for s in range(len(rows[0][1])):
        out[f"b{s}"] = np.concatenate([r[1][s] for r in rows])
        out[f"n{s}"] = np.array([len(r[1][s]) for r in rows])
    return out


def _unpack_part(part, n: int, pooled: bool):
    values = np.split(part["values"], np.cumsum(part["value_rows"])[:-1])
    levels = sorted(int(k[1:]) for k in part if k.startswith("b"))
    bounds = [np.split(part[f"b{s}"], np.cumsum(part[f"n{s}"])[:-1]) for s in levels]
    return [(values[i][0] if pooled else values[i], [bounds[s][i] for s in range(len(levels))]) for i in range(n)]


def _assemble(results, lengths, pooling, boundaries) -> dict[str, np.ndarray]:
    out = {"lengths": np.asarray(lengths, dtype=np.int64)}
    if pooling == "flatten":
        out["position_embeddings"] = np.concatenate([r[0] for r in results]).astype(np.float32)
        out["position_offsets"] = np.concatenate([[0], np.cumsum([r[0].shape[0] for r in results])]).astype(np.int64)
    else:
        out["embeddings"] = np.stack([r[0].reshape(-1) for r in results]).astype(np.float32)
    if boundaries:
        for s in range(len(results[0][1])):
            out[f"boundaries_{s}"] = np.concatenate([r[1][s] for r in results]).astype(np.int64)
            out[f"boundary_offsets_{s}"] = np.concatenate([[0], np.cumsum([len(r[1][s]) for r in results])]).astype(np.int64)
    return out

