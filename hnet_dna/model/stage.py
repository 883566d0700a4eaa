"""One H-Net stage, recursive, and its incremental decoding (one position, or a block continuing
from the cache).

A stage (outermost first) is ``[encoder, inner, decoder]``; the innermost is ``[main]``::

    xhat = encoder(x)                                   # full resolution of this stage
    p, b = route(xhat)                                  # boundary probability and decision
    z    = inner(xhat[b])                               # the next stage, or the main network
    y    = upsample(EMA(z, p[b])) * STE(c) + residual_proj(xhat)
    out  = decoder(y)

Widths grow inward: a stage wider than its parent pads its input with a learned vector
(``pad_dimension``) and its output is cut back to the parent's width.

A bidirectional stage (``config.bidirectional``, the masked-LM H-Net) routes the same way (cosine
of adjacent positions, the first base a boundary) but dechunks without the EMA, which is causal
(chunk j mixes in chunks before it only)::

    y_t = z_{j(t)} * STE(c_t) + residual_proj(xhat)_t,    j(t) = the chunk holding position t

Each chunk's state z_j already reads both sides (the inner network is bidirectional), so plain
upsampling loses no context; a two-sided EMA would blur chunks into their neighbours on both
sides, the oscillation the paper's EMA damps is a causal model's. The router learns through the
confidence ``c`` (straight-through) and the ratio loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .. import backends
from ..config import HNetConfig
from .chunking import (
    P_CLAMP,
    RoutingModule,
    boundary_index,
    confidence,
    dechunk,
    downsample,
    ema,
    ste,
    upsample,
)
from .isotropic import Isotropic
from .layers import HI_DTYPE, hi

__all__ = ["HNetStage", "HNetCache"]

@dataclass
class HNetCache:
    """Decoding state of one stage; the innermost stage uses ``main`` only."""

    main: list | None = None  # innermost: one cache per layer
    encoder: list | None = None
    routing: object | None = None
    inner: "HNetCache | None" = None
    last_value: torch.Tensor | None = None  # (B, D) fp32: the EMA's last output
    decoder: list | None = None


class HNetStage(nn.Module):
    def __init__(self, config: HNetConfig, stage: int):
        super().__init__()
        self.stage = stage
        d = config.d_model[stage]
        layout = config.stage_layout(stage)
        self.is_innermost = len(layout) == 1
        blocks = "".join(part for part in layout if isinstance(part, str))
        attn = config.stage_attn(stage) if any(ch in "tT" for ch in blocks) else None

        self.bidirectional = config.bidirectional

        def stack(spec: str) -> Isotropic:
            return Isotropic(spec, d, config.d_intermediate[stage], config.ssm_cfg.for_stage(stage), attn,
                             bidirectional=config.bidirectional)

        if self.is_innermost:
            self.main_network = stack(layout[0])
        else:
            self.encoder = stack(layout[0])
            self.main_network = HNetStage(config, stage + 1)
            self.decoder = stack(layout[2])
            self.routing_module = RoutingModule(d)
            # fp32 even when the rest of the model is cast down: see ``_apply``.
            self.residual_proj = nn.Linear(d, d)
            nn.init.zeros_(self.residual_proj.weight)
        self.levels = config.num_stages - 1 - stage  # chunking levels from this stage inward
        widen = d - config.d_model[stage - 1] if stage > 0 else 0
        self.pad_dimension = nn.Parameter(torch.zeros(widen)) if widen > 0 else None

    def _apply(self, fn, recurse=True):
        # Keep the residual projection in fp32 under model.to(bfloat16) / .half().
        super()._apply(fn, recurse)
        if not self.is_innermost:
            proj = self.residual_proj
            if proj.weight.dtype in (torch.float16, torch.bfloat16):
                proj.weight.data = proj.weight.data.float()
                proj.bias.data = proj.bias.data.float()
        return self

    def _widen(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_dimension is None:
            return x
        return torch.cat([x, self.pad_dimension.to(x.dtype).expand(*x.shape[:-1], -1)], dim=-1)

    def _residual(self, h: torch.Tensor) -> torch.Tensor:
        with torch.autocast(h.device.type, enabled=False):
            return self.residual_proj(h.to(self.residual_proj.weight.dtype))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: HNetCache | None = None):
        """x: (B, L, D_parent), mask: (B, L) -> ((B, L, D_parent), [RoutingOutput per level])."""
        width = x.shape[-1]
        x = self._widen(x)
        if self.is_innermost:
            out = self.main_network(x, mask, None if cache is None else cache.main)
            return out[..., :width], []

        h = self.encoder(x, mask, None if cache is None else cache.encoder)  # (B, L, D)
        residual = self._residual(h)  # (B, L, D) fp32
        route = self.routing_module(h, mask, None if cache is None else cache.routing)
        p, b = route.boundary_prob, route.boundary_mask
        index, inner_mask = boundary_index(b)  # (B, M)
        z, inner_routes = self.main_network(
            downsample(h, index), inner_mask, None if cache is None else cache.inner
        )  # (B, M, D)
        route.chunk_index, route.chunk_mask, route.chunk_states = index, inner_mask, z
        P = downsample(p, index).clamp(P_CLAMP, 1 - P_CLAMP)  # (B, M)
        c = confidence(p, b) if route.confidence is None else route.confidence  # (B, L)
        kernels = backends.chunking_kernels(z, residual)
        if self.bidirectional:  # no causal EMA: each position takes its chunk's state (module docstring)
            y = upsample(hi(z), b) * ste(c)[..., None] + residual  # (B, L, D) fp32
        elif kernels is None:
            y = dechunk(z, P, b, c, residual)  # (B, L, D) fp32
        else:  # CUDA + Triton: one fused pass (kernels/dechunk.py), written in the decoder's dtype
            y = kernels.fused_dechunk(z, P, b, c, residual, out_dtype=h.dtype)
        if cache is not None:
            last_chunk = (inner_mask.sum(-1) - 1).clamp(min=0)
            zbar = ema(z, P)
            cache.last_value = zbar[torch.arange(zbar.shape[0], device=zbar.device), last_chunk]
        out = self.decoder(y.to(h.dtype), mask, None if cache is None else cache.decoder)
        return out[..., :width], [route] + inner_routes

    # ------------------------------------------------------------------------------ decoding
    def allocate_cache(self, batch: int) -> HNetCache:
        if self.is_innermost:
            return HNetCache(main=self.main_network.allocate_cache(batch))
        d = self.residual_proj.weight.shape[0]
        return HNetCache(
            encoder=self.encoder.allocate_cache(batch),
            routing=self.routing_module.allocate_cache(batch),
            inner=self.main_network.allocate_cache(batch),
            last_value=torch.zeros(batch, d, device=self.residual_proj.weight.device, dtype=HI_DTYPE(self.residual_proj.weight)),
            decoder=self.decoder.allocate_cache(batch),
        )

    def step(self, x: torch.Tensor, cache: HNetCache, active: torch.Tensor):
        """One position per row. x: (B, D_parent); rows where ``active`` is False keep their state.

        Returns ((B, D_parent), [(p, b) per level, outer first]). The inner stage is stepped for
        every row in one batched call, and only rows that hit a boundary keep its new state.
        """
        width = x.shape[-1]
        x = self._widen(x)
        if self.is_innermost:
            return self.main_network.step(x, cache.main, active)[..., :width], []
        h = self.encoder.step(x, cache.encoder, active)  # (B, D)
        residual = self._residual(h)
        p = self.routing_module.step(h, cache.routing, active)  # (B,)
        b = (p > 0.5) & active
        if bool(b.any()):  # one host sync per stage and step; the inner stage idles most steps
            z, inner_routes = self.main_network.step(h, cache.inner, b)
            P = p.clamp(P_CLAMP, 1 - P_CLAMP)[:, None]
            cache.last_value = torch.where(b[:, None], P * hi(z) + (1 - P) * cache.last_value, cache.last_value)
        else:
            inner_routes = [(torch.zeros_like(p), torch.zeros_like(b))] * self.main_network.levels
        zbar = cache.last_value
        y = zbar * ste(confidence(p, b))[:, None] + residual
        out = self.decoder.step(y.to(h.dtype), cache.decoder, active)
        return out[..., :width], [(p, b)] + inner_routes


    @torch.no_grad()
    def extend(self, x: torch.Tensor, cache: HNetCache):
        """A block of positions continuing from ``cache``: x (1, K, D_parent) -> ((1, K, D_parent),
        [p per level, outer first: (1, K_s) fp32 at the level's inputs in the block], [chunk
        states per level: (1, M_s, D_s), the inner network's output for the chunks the block
        starts]), the same as one forward over everything seen so far. One row: rows would cut
        different numbers of chunks from the same block."""
        width = x.shape[-1]
        x = self._widen(x)
        if self.is_innermost:
            return self.main_network.extend(x, cache.main)[..., :width], [], []
        h = self.encoder.extend(x, cache.encoder)  # (1, K, D)
        residual = self._residual(h)  # fp32
        p = self.routing_module.extend(h, cache.routing)  # (1, K)
        b = p > 0.5
        index = b[0].nonzero()[:, 0]  # (M,) the block's chunk starts
        zbar = cache.last_value[:, None]  # (1, 1, D): the chunk open when the block starts
        if len(index):
            z, inner_probs, inner_states = self.main_network.extend(h[:, index], cache.inner)  # (1, M, D)
            P = p[:, index].clamp(P_CLAMP, 1 - P_CLAMP)
            new = ema(z, P, initial=cache.last_value)  # (1, M, D) fp32
            cache.last_value = new[:, -1]
            zbar = torch.cat([zbar, new], dim=1)
        else:  # nothing reaches the inner stages
            z = h.new_zeros(1, 0, h.shape[-1])
            inner_probs, inner_states = self.main_network._no_chunks(p)
        # position t takes the latest chunk started at or before it (0: the one open before the
        # block); the straight-through confidence is 1 in value
        plug = b.long().cumsum(-1)  # (1, K)
        y = torch.gather(zbar, 1, plug[..., None].expand(-1, -1, zbar.shape[-1])) + residual
        out = self.decoder.extend(y.to(h.dtype), cache.decoder)[..., :width]
        return out, [p] + inner_probs, [z] + inner_states

    def _no_chunks(self, like: torch.Tensor):
        """What :meth:`extend` reports for its levels when no chunk reaches this stage: empty
        probabilities (1, 0) and chunk states (1, 0, D_s) per level."""
        if self.is_innermost:
            return [], []
        probs, states = self.main_network._no_chunks(like)
        d = self.residual_proj.weight.shape[0]
        return [like.new_zeros(1, 0)] + probs, [like.new_zeros(1, 0, d)] + states

