"""Dynamic chunking in plain PyTorch: routing, downsampling, EMA dechunking, STE, ratio loss.

This file is the reference implementation (and the CPU path). Shapes use B batch rows, L
positions of the outer sequence, M chunks (positions of the inner sequence), D channels.
Batches are right-padded with a bool ``mask`` (True on real positions).

Routing (eq. 4)::

    p_t = clamp((1 - cos(W_q x_{t-1}, W_k x_t)) / 2, 0, 1),   p_0 = 1,   b_t = p_t > 0.5

(The official parameter names are swapped with respect to the paper: ``q_proj_layer`` is applied
to the PREVIOUS position and ``k_proj_layer`` to the current one. Routing runs in fp32, so that
decisions near p = 0.5 do not depend on the compute dtype.)

Dechunking (eqs. 5-9)::

    P_j    = clamp(p at the j-th boundary, 1e-4, 1 - 1e-4)
    zbar_j = P_j * z_j + (1 - P_j) * zbar_{j-1},  zbar_{-1} = 0         (fp32)
    out_t  = zbar[cumsum(b)_t - 1] * STE(c_t) + residual_t,   c_t = p_t if b_t else 1 - p_t
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .. import backends
from .layers import HI_DTYPE, hi
from .ssd import ssd_scan

__all__ = [
    "RoutingModule",
    "RoutingOutput",
    "RoutingCache",
    "routing_probs",
    "boundary_index",
    "downsample",
    "ema",
    "upsample",
    "ste",
    "confidence",
    "dechunk",
    "ratio_loss",
    "P_CLAMP",
]

P_CLAMP = 1e-4
EMA_CHUNK = 64


@dataclass
class RoutingOutput:
    boundary_prob: torch.Tensor  # (B, L) fp32, p_t
    boundary_mask: torch.Tensor  # (B, L) bool, b_t (False on padding)
    mask: torch.Tensor  # (B, L) bool, the real positions this router saw
    # Filled in by the stage once the inner network has run (what features and heads read):
    chunk_index: torch.Tensor | None = None  # (B, M) long: where each chunk starts (positions of this level)
    chunk_mask: torch.Tensor | None = None  # (B, M) bool: real chunks
    chunk_states: torch.Tensor | None = None  # (B, M, D) the inner network's output, before dechunking
    # c_t, when the fused routing kernel computed it with p and b (else the stage computes it)
    confidence: torch.Tensor | None = None  # (B, L) fp32


@dataclass
class RoutingCache:
    last_hidden: torch.Tensor  # (B, D) fp32: the previous position's encoder output
    has_seen: torch.Tensor  # (B,) bool: whether the row has seen any position yet


def routing_probs(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor) -> torch.Tensor:
    """Boundary probability p (B, L) from encoder outputs x (B, L, D); p[:, 0] = 1."""
    x = hi(x)
    # Project every position, then shift: a linear over a slice of x would keep a copy of it.
    prev = F.normalize(F.linear(x, hi(w_q))[:, :-1], dim=-1)
    cur = F.normalize(F.linear(x, hi(w_k))[:, 1:], dim=-1)
    cos = (prev * cur).sum(-1)
    p = torch.clamp((1 - cos) / 2, 0.0, 1.0)
    return F.pad(p, (1, 0), value=1.0)


class RoutingModule(nn.Module):
    """W_q, W_k (bias-free, identity-initialised) and the boundary decision."""

    def __init__(self, d_model: int):
        super().__init__()
        self.q_proj_layer = nn.Linear(d_model, d_model, bias=False)
        self.k_proj_layer = nn.Linear(d_model, d_model, bias=False)
        with torch.no_grad():
            self.q_proj_layer.weight.copy_(torch.eye(d_model))
            self.k_proj_layer.weight.copy_(torch.eye(d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: RoutingCache | None = None) -> RoutingOutput:
        kernels = backends.chunking_kernels(x, self.q_proj_layer.weight)
        c = None
        if kernels is not None:  # CUDA + Triton: one kernel after the projections (kernels/routing.py)
            p, b, c = kernels.fused_routing(x, self.q_proj_layer.weight, self.k_proj_layer.weight, mask)
        else:
            with torch.autocast(x.device.type, enabled=False):
                p = routing_probs(x, self.q_proj_layer.weight, self.k_proj_layer.weight)
            b = (p > 0.5) & mask
        if cache is not None:
            last = (mask.sum(-1) - 1).clamp(min=0)
            cache.last_hidden = hi(x[torch.arange(x.shape[0], device=x.device), last])
            cache.has_seen = mask.any(-1)
        return RoutingOutput(boundary_prob=p, boundary_mask=b, mask=mask, confidence=c)

    @torch.no_grad()
    def extend(self, x: torch.Tensor, cache: RoutingCache) -> torch.Tensor:
        """Boundary probabilities (B, K) fp32 of a block x (B, K, D) that continues from ``cache``
        (no padding): the block's first position is compared with the last one before it."""
        with torch.autocast(x.device.type, enabled=False):
            p = routing_probs(torch.cat([cache.last_hidden[:, None], hi(x)], dim=1),
                              self.q_proj_layer.weight, self.k_proj_layer.weight)[:, 1:]
        p[:, 0] = torch.where(cache.has_seen, p[:, 0], torch.ones_like(p[:, 0]))  # a row's first base: 1
        cache.last_hidden, cache.has_seen = hi(x[:, -1]), torch.ones_like(cache.has_seen)
        return p

    def allocate_cache(self, batch: int) -> RoutingCache:
        w = self.q_proj_layer.weight
        return RoutingCache(
            last_hidden=torch.zeros(batch, w.shape[1], device=w.device, dtype=HI_DTYPE(w)),
            has_seen=torch.zeros(batch, dtype=torch.bool, device=w.device),
        )

    def step(self, x: torch.Tensor, cache: RoutingCache, active: torch.Tensor | None = None):
        """x: (B, D) -> p (B,) fp32. The first position of a row has p = 1; rows where ``active``
        is False keep their state and report p = 0."""
        x32 = hi(x)
        with torch.autocast(x.device.type, enabled=False):
            prev = F.normalize(F.linear(cache.last_hidden, hi(self.q_proj_layer.weight)), dim=-1)
            cur = F.normalize(F.linear(x32, hi(self.k_proj_layer.weight)), dim=-1)
            p = torch.clamp((1 - (prev * cur).sum(-1)) / 2, 0.0, 1.0)
        p = torch.where(cache.has_seen, p, torch.ones_like(p))
        if active is None:
            cache.last_hidden, cache.has_seen = x32, torch.ones_like(cache.has_seen)
            return p
        cache.last_hidden = torch.where(active[:, None], x32, cache.last_hidden)
        cache.has_seen = cache.has_seen | active
        return torch.where(active, p, torch.zeros_like(p))  # rows not stepped report p = 0


def boundary_index(boundary_mask: torch.Tensor):
    """Where each row's chunks start. boundary_mask: (B, L) -> (index (B, M) long, mask (B, M)).

    ``index[b, j]`` is the position of row b's j-th boundary; rows with fewer than M boundaries
    are right-padded (``mask`` False). M, the most boundaries in a row, is read on the host: the
    inner sequence has a data-dependent length.
    """
    counts = boundary_mask.sum(-1)  # (B,)
    m = int(counts.max())
    # A stable sort on "is not a boundary" puts each row's boundary positions first, in order.
    index = torch.argsort((~boundary_mask).to(torch.int8), dim=1, stable=True)[:, :m]
    inner_mask = torch.arange(m, device=boundary_mask.device)[None, :] < counts[:, None]
    return index, inner_mask


def downsample(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of x at the boundary positions: (B, L, ...) -> (B, M, ...)."""
    idx = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, idx)


def ema(z: torch.Tensor, P: torch.Tensor, initial: torch.Tensor | None = None, chunk_size: int = EMA_CHUNK):
    """zbar_j = P_j z_j + (1 - P_j) zbar_{j-1} along dim 1, state starting at ``initial`` (or 0).

    z: (B, M, D), P: (B, M) in (0, 1). Returns fp32 (B, M, D). A chunked parallel scan (``ssd_scan``
    with one head of D channels and state size 1), not a loop over positions.
    """
    z32, P32 = hi(z), hi(P)
    log_decay = torch.log1p(-P32)[..., None]  # (B, M, 1)
    ones = torch.ones(z.shape[0], z.shape[1], 1, 1, device=z.device, dtype=z32.dtype)
    init = None if initial is None else rearrange(hi(initial), "b d -> b 1 d 1")
    # the scan of P z, P passed as the scan's x scale (no product of z's size)
    y = ssd_scan(rearrange(z32, "b m d -> b m 1 d"), log_decay, ones, ones, chunk_size=chunk_size,
                 initial_state=init, x_scale=P32[..., None])
    return rearrange(y, "b m 1 d -> b m d")


def upsample(zbar: torch.Tensor, boundary_mask: torch.Tensor) -> torch.Tensor:
    """Position t takes chunk ``cumsum(b)_t - 1``: each chunk repeats until the next boundary.

    zbar: (B, M, D), boundary_mask: (B, L) -> (B, L, D).
    """
    plug_back = (boundary_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, L)
    return torch.gather(zbar, 1, plug_back[..., None].expand(-1, -1, zbar.shape[-1]))


class _StraightThrough(torch.autograd.Function):
    """Forward 1, backward the identity: STE(c) = c + stopgrad(1 - c)."""

    @staticmethod
    def forward(ctx, c):
        return torch.ones_like(c)

    @staticmethod
    def backward(ctx, grad):
        return grad


def ste(c: torch.Tensor) -> torch.Tensor:
    return _StraightThrough.apply(c)


def confidence(p: torch.Tensor, boundary_mask: torch.Tensor) -> torch.Tensor:
    """c_t = p_t where b_t, else 1 - p_t."""
    return torch.where(boundary_mask, p, 1 - p)


def dechunk(
    z_inner: torch.Tensor,
    P: torch.Tensor,
    boundary_mask: torch.Tensor,
    c: torch.Tensor,
    residual: torch.Tensor,
) -> torch.Tensor:
    """EMA over the chunks, upsample, STE confidence, residual add -> (B, L, D) fp32.

    z_inner: (B, M, D) inner outputs; P: (B, M) clamped boundary probabilities of the chunks;
    boundary_mask, c: (B, L); residual: (B, L, D) fp32.
    """
    zbar = ema(z_inner, P)
    return upsample(zbar, boundary_mask) * ste(c)[..., None] + residual


def ratio_loss(boundary_mask: torch.Tensor, p: torch.Tensor, mask: torch.Tensor, target: float):
    """Eq. 10 over the real positions: N/(N-1) * ((N-1) F G + (1-F)(1-G)).

    F = fraction of real positions that are boundaries (no gradient), G = mean p over them.
    Returns (loss, F, G), scalars.
    """
    m = mask.to(p.dtype)
    n_real = m.sum().clamp(min=1)
    frac_f = (boundary_mask.to(p.dtype) * m).sum() / n_real
    mean_g = (p * m).sum() / n_real
    n = float(target)
    loss = n / (n - 1) * ((n - 1) * frac_f * mean_g + (1 - frac_f) * (1 - mean_g))
    return loss, frac_f.detach(), mean_g
