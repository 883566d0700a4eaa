"""Backbone features: one way to read an H-Net's hidden states and where it cut the sequence.

Classification heads, embeddings and boundary tracks all read :class:`BackboneFeatures`::

    hidden   (B, L, D_0)  the backbone's output at base resolution (what the LM head reads)
    mask     (B, L)       real positions
    levels   one ChunkLevel per chunking level, outer first:
      states          (B, M_s, D_s)  the inner network's output per chunk, before dechunking
      mask            (B, M_s)       real chunks
      boundaries      (B, L_s)       where chunks start, at this level's input resolution
      boundary_probs  (B, L_s)       p at this level (0 on padding)
      positions       (B, M_s)       each chunk's first base in the input sequence (0-based)

Level s's input resolution is level s-1's chunks (level 0: bases). Isotropic models have no level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["BackboneFeatures", "ChunkLevel", "backbone_features"]


@dataclass
class ChunkLevel:
    states: torch.Tensor
    mask: torch.Tensor
    boundaries: torch.Tensor
    boundary_probs: torch.Tensor
    positions: torch.Tensor


@dataclass
class BackboneFeatures:
    hidden: torch.Tensor
    mask: torch.Tensor
    levels: list[ChunkLevel] = field(default_factory=list)


def backbone_features(model, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> BackboneFeatures:
    """Run ``model`` (an :class:`~hnet_dna.model.HNetForCausalLM`) without its LM head."""
    mask = model._check_inputs(input_ids, mask, None, None)
    hidden, routes = model.backbone(model.embeddings(input_ids), mask)
    levels = []
    positions = None  # (B, L_s): the input base of each position of the current level
    for route in routes:
        index = route.chunk_index
        starts = index if positions is None else torch.gather(positions, 1, index)  # (B, M)
        levels.append(ChunkLevel(
            states=route.chunk_states,
            mask=route.chunk_mask,
            boundaries=route.boundary_mask,
            boundary_probs=route.boundary_prob.masked_fill(~route.mask, 0.0),
            positions=starts.masked_fill(~route.chunk_mask, -1),
        ))
        positions = starts
    return BackboneFeatures(hidden=hidden, mask=mask, levels=levels)
