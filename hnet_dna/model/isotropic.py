"""Pre-norm residual blocks and an isotropic stack of them built from a layout string.

Block kinds: ``m`` Mamba-2, ``M`` Mamba-2 + SwiGLU, ``t`` attention, ``T`` attention + SwiGLU.
``bidirectional``: Mamba-2 layers are :class:`~hnet_dna.model.mamba2.BiMamba2`, attention is two-way.
The residual stream is kept in fp32; each mixer sees ``norm(residual)`` in the weights' dtype.
A stack ends with an RMSNorm (eps 1e-5). Parameter names follow the official model:
``layers.{i}.norm1 / mixer / norm2 / mlp`` and ``rmsnorm``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..config import SSMConfig, parse_layout
from .attention import CausalSelfAttention
from .layers import RMSNorm, SwiGLU, hi
from .bimamba import BiMamba2
from .mamba2 import Mamba2

__all__ = ["Block", "Isotropic", "layout_height"]


def layout_height(layout: str) -> int:
    """Residual branches in a layout: 1 per lowercase block, 2 per uppercase (mixer + MLP)."""
    return sum(2 if b.isupper() else 1 for b in parse_layout(layout))


class Block(nn.Module):
    def __init__(self, kind: str, d_model: int, d_intermediate: int, ssm_cfg: SSMConfig, attn: dict,
                 bidirectional: bool = False):
        super().__init__()
        self.kind = kind
        self.norm1 = RMSNorm(d_model)
        if kind in "mM":
            self.mixer = (BiMamba2 if bidirectional else Mamba2)(
                d_model,
                d_state=ssm_cfg.d_state,
                d_conv=ssm_cfg.d_conv,
                expand=ssm_cfg.expand,
                headdim=ssm_cfg.headdim,
                ngroups=ssm_cfg.ngroups,
                chunk_size=ssm_cfg.chunk_size,
            )
        else:
            self.mixer = CausalSelfAttention(d_model, **attn, causal=not bidirectional)
        if kind in "MT":
            self.norm2 = RMSNorm(d_model)
            self.mlp = SwiGLU(d_model, d_intermediate)
        else:
            self.norm2 = self.mlp = None

    def forward(self, residual: torch.Tensor, mask=None, cache=None) -> torch.Tensor:
        """residual: (B, L, D) fp32 -> fp32."""
        residual = residual + self.mixer(self.norm1(residual), mask=mask, cache=cache).to(residual.dtype)
        if self.mlp is not None:
            residual = residual + self.mlp(self.norm2(residual)).to(residual.dtype)
        return residual

    def step(self, residual: torch.Tensor, cache, active=None) -> torch.Tensor:
        """residual: (B, D) fp32 -> fp32, one position."""
        residual = residual + self.mixer.step(self.norm1(residual), cache, active).to(residual.dtype)
        if self.mlp is not None:
            residual = residual + self.mlp(self.norm2(residual)).to(residual.dtype)
        return residual

    @torch.no_grad()
    def extend(self, residual: torch.Tensor, cache) -> torch.Tensor:
        """residual: (B, K, D) fp32 -> fp32, a block continuing from ``cache``."""
        residual = residual + self.mixer.extend(self.norm1(residual), cache).to(residual.dtype)
        if self.mlp is not None:
            residual = residual + self.mlp(self.norm2(residual)).to(residual.dtype)
        return residual

    def allocate_cache(self, batch: int):
        return self.mixer.allocate_cache(batch)


class Isotropic(nn.Module):
    """A stack of blocks from a layout string such as ``"m3T1"``, ending with an RMSNorm."""

    def __init__(self, layout: str, d_model: int, d_intermediate: int, ssm_cfg: SSMConfig, attn: dict | None,
                 bidirectional: bool = False):
        super().__init__()
        self.layout = layout
        self.height = layout_height(layout)
        self.layers = nn.ModuleList(
            Block(kind, d_model, d_intermediate, ssm_cfg, attn, bidirectional) for kind in parse_layout(layout)
        )
        self.rmsnorm = RMSNorm(d_model)
        # Activation checkpointing, per block: keep only each block's input for the backward and
        # run the block again there (see HNetForCausalLM.gradient_checkpointing_enable).
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, mask=None, caches: list | None = None) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, D) in x's dtype. ``caches``: one per layer, filled for decoding."""
        residual = hi(x)
        recompute = self.gradient_checkpointing and caches is None and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            if recompute:
                residual = checkpoint(layer, residual, mask, use_reentrant=False)
            else:
                residual = layer(residual, mask=mask, cache=None if caches is None else caches[i])
        return self.rmsnorm(residual).to(x.dtype)

    def step(self, x: torch.Tensor, caches: list, active=None) -> torch.Tensor:
        """x: (B, D) -> (B, D), one position per row."""
        residual = hi(x)
        for layer, cache in zip(self.layers, caches):
            residual = layer.step(residual, cache, active)
        return self.rmsnorm(residual).to(x.dtype)

    @torch.no_grad()
    def extend(self, x: torch.Tensor, caches: list) -> torch.Tensor:
        """x: (B, K, D) -> (B, K, D), a block of positions continuing from ``caches``."""
        residual = hi(x)
        for layer, cache in zip(self.layers, caches):
            residual = layer.extend(residual, cache)
        return self.rmsnorm(residual).to(x.dtype)

    def allocate_cache(self, batch: int) -> list:
        return [layer.allocate_cache(batch) for layer in self.layers]
