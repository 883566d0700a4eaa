"""Pooling: how a sequence's backbone features become what a head, a probe or an embedding reads.
One vocabulary (:data:`Pooling`), one check (:func:`check_pooling`), one implementation
(:func:`pool_features`), for the classification heads, the protocol's probe and ``embed``.

* ``mean``: the backbone's output averaged over the real bases (padding never counts);
* ``chunks``: the innermost chunking level's chunk states averaged over real chunks (H-Nets only:
  an isotropic model has no chunks);
* ``last``: the output at each row's last real base (it has seen the whole sequence);
* ``max``: the largest value of each feature over the real bases: a motif detected anywhere, as a
  CNN's global max pooling reads it;
* ``attention``: a weighted mean over the real bases, the weights a softmax of each position's
  features against a learned query (:class:`AttentionPooling`; padding gets weight 0). The query
  starts at zero, so at initialisation it IS ``mean`` pooling: a probe on frozen features (which has no
  query to learn) and a probe-initialised head read it as ``mean`` (:func:`frozen_pooling`);
* ``flatten``: every position kept, laid end to end (B, max_length * D_0), right-padded with zeros
  to ``max_length``: a head that reads *where* a signal lies. For short windows centred on a site
  (splice junctions, TSS) the position of a motif is the label, and mean pooling averages it away.
  (``embed`` writes the positions of each sequence without padding: ``position_embeddings``.)
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError
from .hnet import InputError

__all__ = ["Pooling", "POOLINGS", "FROZEN_POOLINGS", "AttentionPooling", "check_pooling", "frozen_pooling",
           "pool_features", "pooled_width", "pooled_features"]

Pooling = Literal["mean", "chunks", "last", "max", "attention", "flatten"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
FROZEN_POOLINGS: tuple[str, ...] = tuple(p for p in POOLINGS if p != "attention")  # no learned weights: embed, probes


def frozen_pooling(pooling: str) -> str:
    """What reads frozen features in place of ``pooling``: itself, but ``attention`` (which needs
    a trained query) is read as ``mean``, what it computes before training."""
    return "mean" if pooling == "attention" else pooling


class AttentionPooling(nn.Module):
    """A learned query over the real positions: ``softmax_i(h_i . q / sqrt(D)) h_i`` summed over i,
    padding masked out (weight 0). ``q`` starts at zero: uniform weights, i.e. ``mean`` pooling."""

    def __init__(self, width: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(width))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden (B, L, D), mask (B, L) True on bases -> (B, D)."""
        scores = (hidden.float() @ self.query.float()) * hidden.shape[-1] ** -0.5  # (B, L)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1).to(hidden.dtype)  # (B, L)
        return torch.einsum("bl,bld->bd", weights, hidden)


def check_pooling(pooling: str, num_stages: int | None = None, flag: str = "pooling") -> None:
    """The one check: ``pooling`` is a word of :data:`Pooling`, and one that a model of
    ``num_stages`` stages (its config's; 1 = isotropic) can serve."""
    if pooling not in POOLINGS:
        raise ConfigError(f"{flag} must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if pooling == "chunks" and num_stages is not None and num_stages < 2:
        raise ConfigError(f"{flag} 'chunks' needs an H-Net: an isotropic model has no chunks (use 'mean' or 'last')")


def pooled_width(pooling: str, config) -> int:
    """The width of one pooled position: chunk states have the width of the stage that dechunks
    them (the innermost level's parent), everything else the outer width."""
    return config.d_model[config.num_stages - 2 if pooling == "chunks" else 0]


def pool_features(features, pooling: str, *, max_length: int | None = None, position_norm=None,
                  dtype: torch.dtype | None = None, attention: AttentionPooling | None = None) -> torch.Tensor:
    """(B, D), or (B, max_length * D) for ``flatten``, from
    :class:`~hnet_dna.model.features.BackboneFeatures` (see the module docstring).

    ``flatten`` needs ``max_length``; ``position_norm`` (a module, e.g. a head's LayerNorm) is
    applied to each position before it is laid down, and padding lays down zeros. ``attention``
    needs its :class:`AttentionPooling` module. ``dtype``: the features are cast to it first (a
    head's weight dtype)."""
    hidden = features.hidden if dtype is None else features.hidden.to(dtype)
    if pooling == "mean":
        weights = features.mask.to(hidden.dtype)[..., None]  # (B, L, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    if pooling == "max":
        return hidden.masked_fill(~features.mask[..., None], float("-inf")).amax(1)  # padding never wins
    if pooling == "attention":
        if attention is None:
            raise ConfigError("pooling 'attention' needs its AttentionPooling module (a head's learned query)")
        return attention(hidden, features.mask)
    if pooling == "last":
        last = features.mask.sum(-1) - 1  # (B,)
        return hidden[torch.arange(last.shape[0], device=last.device), last]
    if pooling == "chunks":
        if not features.levels:
            check_pooling(pooling, num_stages=1)  # raises: no chunks to pool
        level = features.levels[-1]
        states = level.states if dtype is None else level.states.to(dtype)
        weights = level.mask.to(states.dtype)[..., None]  # (B, M, 1)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1)
    if pooling == "flatten":
        if not (max_length or 0) > 0:
            raise ConfigError("pooling 'flatten' needs max_length, the longest sequence it lays down")
        batch, length, _ = hidden.shape
        if length > max_length:
            raise InputError(f"a sequence of {length} bases is longer than max_length {max_length} "
                             "(pooling 'flatten' reads a fixed number of positions)")
        if position_norm is not None:
            hidden = position_norm(hidden)  # (B, L, D)
        hidden = hidden * features.mask[..., None].to(hidden.dtype)  # padding lays down zeros
        return F.pad(hidden, (0, 0, 0, max_length - length)).reshape(batch, -1)  # (B, max_length * D)
    check_pooling(pooling)  # raises: not a word of the vocabulary
    raise AssertionError(pooling)


def pooled_features(model, sequences: list[str], pooling: str, *, max_length: int | None = None,
                    rc_average: bool = False, batch_size: int = 64) -> np.ndarray:
    """Pooled features (N, D) of DNA strings under a frozen ``model`` (an
    :class:`~hnet_dna.model.HNetForCausalLM`), batched by length, pooled as a head pools them
    (:func:`pool_features`, without the head's own norm); what the fine-tuning protocol's probe
    fits. ``rc_average``: averaged with the reverse complement's (with ``flatten`` position by
    position, the reverse complement's positions first put back in the forward orientation).
    ``attention`` is read as ``mean`` (:func:`frozen_pooling`)."""
    pooling = frozen_pooling(pooling)
    tokenizer = model.tokenizer
    device = next(model.parameters()).device
    ids = [tokenizer.encode(s) for s in sequences]
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    out: list = [None] * len(ids)
    model.eval()
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            rows = order[k:k + batch_size]
            strands = [[ids[i] for i in rows]]
            if rc_average:
                strands.append([tokenizer.reverse_complement(ids[i]) for i in rows])
            pooled = []
            for strand, strand_ids in enumerate(strands):
                batch = tokenizer.pad_ids(strand_ids)
                features = model.features(batch["input_ids"].to(device), batch["mask"].to(device))
                if strand == 1 and pooling == "flatten":
                    features = _in_forward_orientation(features)
                pooled.append(pool_features(features, pooling, max_length=max_length).float().cpu())
            mean = sum(pooled) / len(pooled)  # (b, D)
            for row, i in enumerate(rows):
                out[i] = mean[row].numpy()
    return np.stack(out)


def _in_forward_orientation(features):
    """Features of reverse-complemented rows with each row's real positions reversed (B, L, D): the
    reverse complement's outputs at the forward sequence's positions."""
    lengths = features.mask.sum(-1, keepdim=True)  # (B, 1)
    positions = torch.arange(features.hidden.shape[1], device=lengths.device)[None]  # (1, L)
    index = (lengths - 1 - positions).clamp(min=0)  # (B, L); padding reads position 0, masked later
    hidden = torch.gather(features.hidden, 1, index[..., None].expand_as(features.hidden))
    return dataclasses.replace(features, hidden=hidden)
