"""How the inference commands read sequences of any length: windows (tiles) that own each base
once, batches of similar length, or one exact read in blocks that continue from the model's caches;
and the device to read on.

Long sequences are cut into overlapping windows (:func:`tiles`): windows start every ``stride``
bases and are ``window`` long; each base is read from the earliest window that holds it, so every
base after the first window has at least ``window - stride`` bases of left context. With
``--exact-context`` a sequence is instead read once in blocks that continue from the model's
caches (:func:`read_exact`): every base with all the bases before it. ``ism`` keeps ``trail``
bases after each window's owned bases as right context (every mutated base then has that many
after it in its window), so its bases have ``window - stride - trail`` to ``window - trail - 1``
bases of left context.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..config import ConfigError

__all__ = ["Tile", "tiles", "length_batches", "check_windows", "window_help", "ExactBlock", "read_exact",
           "choose_device"]

def check_windows(window: int | None, stride: int | None, batch_size: int) -> None:
    """The window options every command takes: ``window`` >= 2 (or None: whole sequences),
    ``stride`` below it, ``batch_size`` >= 1."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if window is None:
        if stride is not None:
            raise ConfigError("--stride needs --window")
        return
    if window < 2:
        raise ConfigError(f"--window must be >= 2, got {window}")
    if stride is not None and not 0 < stride < window:
        raise ConfigError(f"--stride must be in 1..{window - 1} (below --window), got {stride}")


# Peak inference memory per base of window, shipped model, CPU fp32 (benchmarks/long_inputs.py,
# 2026-12-02: 22 MB for one 1,024-base window, 13 for 4,096, 10 for 16,384 and 8 x 4,096).
MB_PER_1000_BASES = 10


def window_help(default: int, batch_default: int, what: str = "read longer sequences in windows of this many bases",
                context: str = "window - stride to window - 1") -> str:
    """``--window``'s help: what a window costs in memory, so that users can fit a bound, and the left
    context a base is read with (``context``)."""
    return (f"{what} (default {default:,}). Memory grows with --window x --batch-size: the shipped model "
            f"needs about {MB_PER_1000_BASES} MB per 1,000 bases of each window in a batch (so the defaults "
            f"need about {MB_PER_1000_BASES * default * batch_default / 1000:,.0f} MB over the loaded model; "
            "a model of width d about d/64 times as much); lower either to fit. Past the first window each "
            f"base is read with {context} bases of left context")



# ---------------------------------------------------------------------------- batching
def length_batches(lengths, max_bases: int, max_batch: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks early):
    at most ``max_batch`` rows and about ``max_bases`` padded positions per batch."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current = [], []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= max_batch or longest * (len(current) + 1) > max_bases):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True)
class Tile:
    start: int  # the window [start, end) of the sequence the model reads
    end: int
    own_start: int  # the bases [own_start, own_end) taken from this window
    own_end: int


def tiles(length: int, window: int | None, stride: int | None, trail: int = 0) -> list[Tile]:
    """Windows over a sequence of ``length`` bases (one window when ``window`` is None or the
    sequence fits); see the module docstring. ``trail``: each window but the last keeps its last
    ``trail`` bases as right context and owns the ``stride`` bases before them (``ism``: every
    mutated base then has at least ``trail`` bases after it in its window, to the sequence's end)."""
    if window is None or length <= window:
        return [Tile(0, length, 0, length)]
    stride = stride or window // 2
    if not 0 < stride <= window:
        raise ConfigError(f"--stride must be in 1..--window ({window}), got {stride}")
    if not 0 <= trail <= window - stride:
        raise ConfigError(f"the right context must be in 0..window - stride ({window - stride}), got {trail}")
    out, start = [], 0
    while True:
        end = min(start + window, length)
        own_start = 0 if start == 0 else out[-1].own_end
        out.append(Tile(start, end, own_start, end if end == length else end - trail))
        if end == length:
            return out
        start += stride


@dataclass
class ExactBlock:
    """One block of :func:`read_exact`: the model's outputs for bases ``start`` .. ``start + K - 1``
    of the sequence, made with all the bases before them."""

    start: int
    hidden: torch.Tensor  # (K, D_0) the backbone's output (what the LM head reads), on the model's device
    inputs: list  # per chunking level: (K_s,) long, CPU: the sequence position of each of the level's inputs
    probs: list  # per level: (K_s,) fp32, CPU: the boundary probability at those inputs
    states: list  # per level: (M_s, D_s) the chunk states of the chunks the block starts

    def chunk_starts(self, level: int) -> torch.Tensor:
        """Sequence positions where the level's chunks in this block start."""
        return self.inputs[level][self.probs[level] > 0.5]


def read_exact(model, ids: torch.Tensor, block: int, device) -> Iterator[ExactBlock]:
    """Read one id sequence (L,) from its start in blocks of ``block`` bases, each continuing from
    the model's caches (:meth:`~hnet_dna.model.HNetForCausalLM.extend_features`); yields one
    :class:`ExactBlock` per block. Call it under ``torch.inference_mode()``."""
    cache = model.allocate_cache(1)
    for start in range(0, len(ids), block):
        piece = ids[start:start + block]
        hidden, probs, states = model.extend_features(piece[None].to(device), cache)
        inputs, level_probs = [], []
        base_of = torch.arange(start, start + len(piece))  # level 0's inputs: the bases
        for p in probs:
            p = p[0].float().cpu()
            inputs.append(base_of)
            level_probs.append(p)
            base_of = base_of[p > 0.5]  # the next level's inputs: this level's chunk starts
        yield ExactBlock(start, hidden[0], inputs, level_probs, [z[0] for z in states])



# ----------------------------------------------------------------------------- device
def choose_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: not a device (cpu, cuda, cuda:1, auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device

