"""Fused routing in Triton: normalisation, adjacent-position cosine, boundary probability,
boundary mask and confidence, forward and backward.

Computes what ``chunking.routing_probs`` + ``(p > 0.5) & mask`` + ``chunking.confidence`` (the
reference) compute. The projections stay one matmul, ``[q | k] = x W^T`` with ``W = [W_q; W_k]``
(B, L, 2D), in fp32 whatever x's dtype, so that decisions near p = 0.5 do not depend on it; the
kernel does everything after it, in fp32::

    cos_t = <q_{t-1}, k_t> / (max(|q_{t-1}|, eps) max(|k_t|, eps))       eps = 1e-12 (F.normalize)
    p_t   = clamp((1 - cos_t) / 2, 0, 1),  p_0 = 1
    b_t   = p_t > 0.5 and mask_t,          c_t = p_t if b_t else 1 - p_t

Backward, with ``gp_t = dL/dp_t + (dL/dc_t if b_t else -dL/dc_t)`` and ``gcos_t = -gp_t / 2``
where the clamp passes the gradient (0 <= (1 - cos_t) / 2 <= 1, t >= 1), else 0; hats are unit
vectors, n the clamped norms::

    dk_t     = gcos_t     (q^_{t-1} - cos_t     k^_t) / n(k_t)
    dq_t     = gcos_{t+1} (k^_{t+1} - cos_{t+1} q^_t) / n(q_t)

(where a norm is below eps the cos term drops: F.normalize divides by the constant eps there).
A program owns BLOCK_L positions and loops over D in BLOCK_D columns. The backward program of
rows t writes both halves of dQK for exactly those rows (dq_t from pair t+1, dk_t from pair t),
so nothing is zero-filled and nothing is written twice.

Memory traffic per row (fp32 q, k): forward reads [q | k] once (8 L D bytes; the q_{t-1} rows
one position back are the neighbouring tile's, from L2) and writes p, c (4 L each), b (L) and,
for the backward, cos_t, |q_{t-1}|, |k_t| (12 L). Backward reads [q | k] once more (plus the
shifted rows, cached), the saved per-position values and the incoming gradients (8 L), and
writes d[q | k] once (8 L D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .dechunk import MAX_GRID_Y, on_device

__all__ = ["routing", "RoutingFunction", "DEFAULT_BLOCKS"]

EPS = 1e-12  # F.normalize's default
# Chosen so that neither kernel spills registers when compiled for sm_90 with Triton 3.9 (80 and
# 168 registers); not yet timed on a GPU (benchmarks/kernel_speed.py sweeps them).
DEFAULT_BLOCKS = {"block_l": 16, "block_d": 64, "num_warps": 4}


@triton.jit
def _routing_fwd_kernel(
    qk_ptr, mask_ptr, p_ptr, b_ptr, c_ptr, cos_ptr, nq_ptr, nk_ptr, L, D,
    EPS: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)  # (BLOCK_L,)
    tm = t < L
    pair = tm & (t > 0)  # positions with a previous one
    qk_row = qk_ptr + row * L * 2 * D  # int64 once per program; int32 offsets inside the row
    dot = tl.zeros((BLOCK_L,), tl.float32)
    qq = tl.zeros((BLOCK_L,), tl.float32)
    kk = tl.zeros((BLOCK_L,), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        m2 = pair[:, None] & (d < D)[None, :]
        offs = t[:, None] * (2 * D) + d[None, :]  # row t, column d of the q half
        q = tl.load(qk_row + offs - 2 * D, mask=m2, other=0.0)  # q_{t-1}
        k = tl.load(qk_row + offs + D, mask=m2, other=0.0)  # k_t
        dot += tl.sum(q * k, 1)
        qq += tl.sum(q * q, 1)
        kk += tl.sum(k * k, 1)
    nq = tl.sqrt(qq)
    nk = tl.sqrt(kk)
    # NaN propagates as in the reference's torch.clamp (tl.maximum alone drops it): a diverged
    # model must not look like one with p = 0 everywhere.
    cos = dot / (tl.maximum(nq, EPS, propagate_nan=tl.PropagateNan.ALL)
                 * tl.maximum(nk, EPS, propagate_nan=tl.PropagateNan.ALL))
    p = tl.maximum((1.0 - cos) * 0.5, 0.0, propagate_nan=tl.PropagateNan.ALL)
    p = tl.minimum(p, 1.0, propagate_nan=tl.PropagateNan.ALL)
    p = tl.where(t == 0, 1.0, p)
    real = tl.load(mask_ptr + row * L + t, mask=tm, other=0) != 0
    b = (p > 0.5) & real
    c = tl.where(b, p, 1.0 - p)
    o = row * L + t
    tl.store(p_ptr + o, p, mask=tm)
    tl.store(b_ptr + o, b.to(tl.uint8), mask=tm)
    tl.store(c_ptr + o, c, mask=tm)
    tl.store(cos_ptr + o, cos, mask=tm)
    tl.store(nq_ptr + o, nq, mask=tm)
    tl.store(nk_ptr + o, nk, mask=tm)


@triton.jit
def _gcos(gp_ptr, gc_ptr, b_ptr, cos_ptr, row, t, L):
    """dL/dcos_t for positions t (0 outside 1 <= t < L and where the clamp blocks the gradient)."""
    pair = (t > 0) & (t < L)
    o = row * L + t
    cos = tl.load(cos_ptr + o, mask=pair, other=0.0)
    b = tl.load(b_ptr + o, mask=pair, other=0) != 0
    gc = tl.load(gc_ptr + o, mask=pair, other=0.0)
    gp = tl.load(gp_ptr + o, mask=pair, other=0.0) + tl.where(b, gc, -gc)
    v = (1.0 - cos) * 0.5
    return tl.where(pair & (v >= 0.0) & (v <= 1.0), -0.5 * gp, 0.0), cos


@triton.jit
def _routing_bwd_kernel(
    qk_ptr, gp_ptr, gc_ptr, b_ptr, cos_ptr, nq_ptr, nk_ptr, dqk_ptr, L, D,
    EPS: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    tm = t < L
    nxt = (t + 1) < L
    g_here, cos_here = _gcos(gp_ptr, gc_ptr, b_ptr, cos_ptr, row, t, L)  # pair (t-1, t): dk_t
    g_next, cos_next = _gcos(gp_ptr, gc_ptr, b_ptr, cos_ptr, row, t + 1, L)  # pair (t, t+1): dq_t
    nq_prev = tl.load(nq_ptr + row * L + t, mask=tm, other=0.0)  # |q_{t-1}|
    nk_here = tl.load(nk_ptr + row * L + t, mask=tm, other=0.0)  # |k_t|
    nq_here = tl.load(nq_ptr + row * L + t + 1, mask=nxt, other=0.0)  # |q_t|
    nk_next = tl.load(nk_ptr + row * L + t + 1, mask=nxt, other=0.0)  # |k_{t+1}|
    # cos term only where the norm is not clamped (F.normalize divides by a constant eps there)
    ck = tl.where(nk_here >= EPS, cos_here, 0.0)
    cq = tl.where(nq_here >= EPS, cos_next, 0.0)
    inq_prev = 1.0 / tl.maximum(nq_prev, EPS)
    ink_here = 1.0 / tl.maximum(nk_here, EPS)
    inq_here = 1.0 / tl.maximum(nq_here, EPS)
    ink_next = 1.0 / tl.maximum(nk_next, EPS)
    qk_row = qk_ptr + row * L * 2 * D
    dqk_row = dqk_ptr + row * L * 2 * D
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dm = (d < D)[None, :]
        base = t[:, None] * (2 * D) + d[None, :]  # row t, column d of the q half
        q_prev = tl.load(qk_row + base - 2 * D, mask=(tm & (t > 0))[:, None] & dm, other=0.0)
        k_here = tl.load(qk_row + base + D, mask=tm[:, None] & dm, other=0.0)
        q_here = tl.load(qk_row + base, mask=tm[:, None] & dm, other=0.0)
        k_next = tl.load(qk_row + base + 3 * D, mask=nxt[:, None] & dm, other=0.0)
        dk = g_here[:, None] * (q_prev * inq_prev[:, None] - ck[:, None] * k_here * ink_here[:, None]) * ink_here[:, None]
        dq = g_next[:, None] * (k_next * ink_next[:, None] - cq[:, None] * q_here * inq_here[:, None]) * inq_here[:, None]
        tl.store(dqk_row + base, dq, mask=tm[:, None] & dm)
        tl.store(dqk_row + base + D, dk, mask=tm[:, None] & dm)


class RoutingFunction(torch.autograd.Function):
    """[q | k] (B, L, 2D) fp32 and mask (B, L) -> p, b, c; use :func:`routing`."""

    @staticmethod
    def forward(ctx, qk, mask, blocks):
        Bn, L, D2 = qk.shape
        D = D2 // 2
        qk = qk.contiguous()
        f32 = dict(device=qk.device, dtype=torch.float32)
        p, c, cos, nq, nk = (torch.empty(Bn, L, **f32) for _ in range(5))
        b = torch.empty(Bn, L, device=qk.device, dtype=torch.bool)
        grid = (Bn, triton.cdiv(L, blocks["block_l"]))
        with on_device(qk):
            _routing_fwd_kernel[grid](
                qk, mask.contiguous().view(torch.uint8), p, b.view(torch.uint8), c, cos, nq, nk, L, D,
                EPS=EPS, BLOCK_L=blocks["block_l"], BLOCK_D=blocks["block_d"], num_warps=blocks["num_warps"],
            )
        ctx.save_for_backward(qk, b, cos, nq, nk)
        ctx.blocks = blocks
        ctx.mark_non_differentiable(b)
        return p, b, c

    @staticmethod
    def backward(ctx, grad_p, grad_b, grad_c):
        qk, b, cos, nq, nk = ctx.saved_tensors
        blocks = ctx.blocks
        Bn, L, D2 = qk.shape
        dqk = torch.empty_like(qk)
        grid = (Bn, triton.cdiv(L, blocks["block_l"]))
        with on_device(qk):
            _routing_bwd_kernel[grid](
                qk, grad_p.float().contiguous(), grad_c.float().contiguous(), b.view(torch.uint8), cos, nq, nk, dqk,
                L, D2 // 2, EPS=EPS, BLOCK_L=blocks["block_l"], BLOCK_D=blocks["block_d"], num_warps=blocks["num_warps"],
            )
        return dqk, None, None


def routing(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    mask: torch.Tensor,
    block_l: int = DEFAULT_BLOCKS["block_l"],
    block_d: int = DEFAULT_BLOCKS["block_d"],
    num_warps: int = DEFAULT_BLOCKS["num_warps"],
):
    """Fused routing: x (B, L, D) any float dtype, w_q / w_k (D, D), mask (B, L) bool ->
    p (B, L) fp32, b (B, L) bool, c (B, L) fp32, with gradients to x, w_q and w_k through p and c.

    block_l: positions per program; block_d: channels per step of the loop over D (powers of
    two); num_warps: per program (ignored by the interpreter).
    """
    if x.dim() != 3 or mask.shape != x.shape[:2] or w_q.shape != w_k.shape or w_q.shape[1] != x.shape[-1]:
        raise ValueError(
            f"routing: shapes x {tuple(x.shape)}, w_q {tuple(w_q.shape)}, w_k {tuple(w_k.shape)}, "
            f"mask {tuple(mask.shape)} do not agree"
        )
    L, D = x.shape[1], x.shape[2]
    if 2 * L * D >= 2**31:
        raise ValueError(f"routing: a row of {L} x {2 * D} projections is too long for int32 offsets")
    if triton.cdiv(L, block_l) > MAX_GRID_Y:
        raise ValueError(f"routing: {L:,} positions make more than {MAX_GRID_Y} blocks of {block_l}; "
                         "raise block_l or cut the sequence into windows")
    with torch.autocast(x.device.type, enabled=False):
        qk = F.linear(x.float(), torch.cat([w_q, w_k]).float())  # (B, L, 2D) fp32: one matmul
    blocks = {"block_l": block_l, "block_d": block_d, "num_warps": num_warps}
    return RoutingFunction.apply(qk, mask.bool(), blocks)
