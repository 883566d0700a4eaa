"""Fused dechunking in Triton: EMA over the chunks, upsampling, STE confidence and residual add.

Computes what :func:`hnet_dna.model.chunking.dechunk` (the reference) computes, forward and
backward, in three kernel launches each way and without a (B, M, D) intermediate in memory.
Shapes: B rows, L positions of the outer sequence, M chunks, D channels; right-padded rows.

The EMA and the upsampling as one recurrence over positions
-----------------------------------------------------------
With the plug-back index ``idx_t = max(cumsum(b)_t - 1, 0)`` (the chunk position t takes), let
``e_t = idx_t != idx_{t-1}`` (t is the first position of its chunk; ``e_0`` is always true) and::

    a_t = 1 - P[idx_t]  if e_t else 1            decay
    x_t = P[idx_t] z[idx_t]  if e_t else 0       input, read from z only where a chunk starts
    s_t = a_t s_{t-1} + x_t,   s_{-1} = 0        (fp32)
    out_t = s_t * STE(c_t) + residual_t = s_t + residual_t     (STE's forward value is 1)

At a chunk's first position s_t is that chunk's EMA value zbar_j = P_j z_j + (1 - P_j) zbar_{j-1},
and it stays constant until the next chunk starts, so ``s_t = zbar[idx_t]`` everywhere: the EMA
over the M chunks and the upsampling are one first-order linear recurrence over the L positions.
Scanning positions rather than chunks means the program that computes a position's state also
writes its output: no zbar buffer, no gather. (Positions before a row's first boundary take
zbar_0 in the reference; ``e_0`` gives them exactly that. The model always has ``b_0`` true.)

Parallel scan over tiles of BLOCK_L positions x BLOCK_D channels (forward)
--------------------------------------------------------------------------
Elements (a, x) compose as affine maps, ``(a1, x1) then (a2, x2) = (a1 a2, a2 x1 + x2)``, an
associative operation, so a tile is scanned with ``tl.associative_scan`` in registers:

1. ``_tile_kernel`` (grid B x L/BLOCK_L x D/BLOCK_D): each tile scans its positions from a zero
   state and writes its summary (product of a, end state) (B, T) and (B, T, D), T tiles per row.
2. ``_carry_kernel`` (grid B x D/BLOCK_D): ``S_k = A_k S_{k-1} + X_k``, the state at the end of
   tile k, over groups of BLOCK_C tiles (an associative scan within a group, a loop across
   groups), written over the summaries.
3. ``_fwd_kernel`` (grid as 1): re-scans its tile starting from ``S_{k-1}``, adds the residual and
   writes the output in ``out_dtype``.

Backward
--------
With ``g = dL/dout``: ``grad_residual = g``; ``grad_c_t = sum_d g_t s_t`` (the STE passes the
gradient of its forward value 1 to c); and with the reverse recurrence
``r_t = g_t + a_{t+1} r_{t+1}, r_L = 0`` (``r_t = dL/ds_t``), at each chunk start t (chunk j)::

    grad_z_j = P_j r_t,      grad_P_j = sum_d r_t (z_j - s_{t-1})

The same three passes run right to left on ``(a_{t+1}, g_t)`` (``_tile_kernel`` with
``REVERSE``, ``_carry_kernel`` with ``REVERSE``); the last, ``_bwd_kernel``, re-scans the forward
state from the saved tile-end states (an inclusive and an exclusive scan at once, for s_t and
s_{t-1}) and the reverse state from its carry, and writes grad_z, grad_residual (only when its
dtype differs from g's; otherwise g itself is returned) and per-D-block partial sums of grad_P and
grad_c, which PyTorch adds up (deterministic: no atomics).

Memory traffic
--------------
Forward: residual read once (4 L D bytes per row in fp32), out written once (L D size(out)), z
read twice where chunks start (M D size(z); the second time partly from L2), idx and P (4 L and
4 M bytes per row and D-block, mostly from L2), tile summaries (4 T D bytes per row, T = L /
BLOCK_L) written, read and rewritten by the carry pass, read once more. At B=8 L=8192 D=512
M=2790 with bf16 z and out and fp32 residual, the fewest bytes are 224.5 MB (read z, P, b,
residual; write out) and this moves about 266 MB (at the default BLOCK_L = 32; 84 % useful).
Backward: g read twice (tile summaries, then the gradients) and z twice; grad_z written once;
grad_residual written once when its dtype is not g's (otherwise g itself is returned); the tile
summaries as in the forward, plus reading the forward's saved tile-end states once; the
(B, L, D/BLOCK_D) and (B, M, D/BLOCK_D) fp32 partial sums of grad_c and grad_P.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

__all__ = ["dechunk", "DechunkFunction", "DEFAULT_BLOCKS"]

# Chosen so that no kernel spills registers when compiled for sm_90 with Triton 3.9 (forward 48,
# backward 132 registers per thread); not yet timed on a GPU (benchmarks/kernel_speed.py sweeps them).
# Every scanned tensor holds BLOCK_L x BLOCK_D fp32 values across the program's threads.
DEFAULT_BLOCKS = {"block_l": 32, "block_d": 64, "block_c": 32, "num_warps": 8}


@triton.jit
def _affine(a1, x1, a2, x2):
    # x -> a1 x + x1, then x -> a2 x + x2
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _affine_incl_excl(a1, x1, e1, f1, a2, x2, e2, f2):
    # (inclusive, exclusive) prefixes at once: the exclusive prefix of a segment is the segment
    # without its last element, so for "1 then 2" it is all of 1 then 2's exclusive prefix.
    return a1 * a2, a2 * x1 + x2, a1 * e2, e2 * x1 + f2


@triton.jit
def _starts(idx_row, P_row, t, L, M):
    """For positions t (BLOCK_L,) of one row: whether a chunk starts there, its chunk j, P_j (fp32)
    and the decay a_t. Positions outside [0, L) are identity elements (a = 1, no start)."""
    in_seq = (t >= 0) & (t < L)
    j = tl.load(idx_row + t, mask=in_seq, other=0)
    j_prev = tl.load(idx_row + t - 1, mask=in_seq & (t > 0), other=-1)
    start = in_seq & (j != j_prev)
    j = tl.minimum(j, M - 1)  # a row with more boundaries than M is a caller error: stay in bounds
    Pj = tl.load(P_row + j, mask=start, other=0.0).to(tl.float32)
    a = tl.where(start, 1.0 - Pj, 1.0)
    return start, j, Pj, a


# Addressing: each program adds its row's int64 offset to the base pointers once; offsets inside
# a row are int32 (the wrapper checks L * D < 2**31), which halves the registers they take.
# Scalar conditions in masks are written as vectors (d * 0 + k > 0): the interpreter types a
# scalar bool & a vector bool as int32 and then refuses it as a mask.


@triton.jit
def _tile_kernel(
    src_ptr, P_ptr, idx_ptr, A_ptr, X_ptr, L, M, D, T,
    REVERSE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Summary (A, X) of one tile scanned from a zero state.

    Forward (REVERSE false): elements (a_t, P z[idx_t] at chunk starts), src = z (B, M, D);
    summary = the tile's end. Backward (REVERSE true): elements (a_{t+1}, g_t) scanned right to
    left, src = g (B, L, D); summary = the tile's start.
    """
    row = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1)
    pd = tl.program_id(2)
    idx_row, P_row = idx_ptr + row * L, P_ptr + row * M
    lane = tl.arange(0, BLOCK_L)
    t = k * BLOCK_L + lane  # (BLOCK_L,)
    d = pd * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    dm = d < D
    if REVERSE:
        _, _, _, a = _starts(idx_row, P_row, t + 1, L, M)
        m2 = (t < L)[:, None] & dm[None, :]
        x = tl.load(src_ptr + row * L * D + t[:, None] * D + d[None, :], mask=m2, other=0.0).to(tl.float32)
        A, X = tl.associative_scan((tl.broadcast_to(a[:, None], (BLOCK_L, BLOCK_D)), x), 0, _affine, reverse=True)
        edge = (lane == 0)[:, None]
    else:
        start, j, Pj, a = _starts(idx_row, P_row, t, L, M)
        zm = start[:, None] & dm[None, :]
        z = tl.load(src_ptr + row * M * D + j[:, None] * D + d[None, :], mask=zm, other=0.0)
        x = Pj[:, None] * z.to(tl.float32)  # (BLOCK_L, BLOCK_D)
        A, X = tl.associative_scan((tl.broadcast_to(a[:, None], (BLOCK_L, BLOCK_D)), x), 0, _affine)
        edge = (lane == BLOCK_L - 1)[:, None]
    # Padding positions beyond L are identity elements, so the tile's last row is its end state.
    A_edge = tl.sum(tl.where(edge, A, 0.0), 0)  # (BLOCK_D,), equal entries
    X_edge = tl.sum(tl.where(edge, X, 0.0), 0)
    tl.store(A_ptr + row * T + k + d * 0, A_edge, mask=d == 0)  # one scalar per tile
    tl.store(X_ptr + (row * T + k) * D + d, X_edge, mask=dm)


@triton.jit
def _carry_kernel(A_ptr, X_ptr, T, D, REVERSE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    """Tile summaries (A_k, X_k) -> states S_k = A_k S_{k-1} + X_k (S_{k+1} when REVERSE), in place."""
    row = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dm = d < D
    A_row, X_row = A_ptr + row * T, X_ptr + row * T * D
    lane = tl.arange(0, BLOCK_C)
    carry = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for c0 in range(0, T, BLOCK_C):
        i = c0 + lane
        im = i < T
        if REVERSE:
            k = T - 1 - i
        else:
            k = i
        A = tl.load(A_row + k, mask=im, other=1.0)  # (BLOCK_C,)
        m2 = im[:, None] & dm[None, :]
        X = tl.load(X_row + k[:, None] * D + d[None, :], mask=m2, other=0.0)  # (BLOCK_C, BLOCK_D)
        Ac, Xc = tl.associative_scan((tl.broadcast_to(A[:, None], (BLOCK_C, BLOCK_D)), X), 0, _affine)
        S = Ac * carry[None, :] + Xc
        tl.store(X_row + k[:, None] * D + d[None, :], S, mask=m2)
        carry = tl.sum(tl.where((lane == BLOCK_C - 1)[:, None], S, 0.0), 0)  # identity rows past T


@triton.jit
def _fwd_kernel(
    z_ptr, P_ptr, idx_ptr, S_ptr, res_ptr, out_ptr, L, M, D, T,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1)
    pd = tl.program_id(2)
    t = k * BLOCK_L + tl.arange(0, BLOCK_L)
    d = pd * BLOCK_D + tl.arange(0, BLOCK_D)
    dm = d < D
    start, j, Pj, a = _starts(idx_ptr + row * L, P_ptr + row * M, t, L, M)
    z = tl.load(z_ptr + row * M * D + j[:, None] * D + d[None, :], mask=start[:, None] & dm[None, :], other=0.0)
    A, X = tl.associative_scan((tl.broadcast_to(a[:, None], (BLOCK_L, BLOCK_D)), Pj[:, None] * z.to(tl.float32)), 0, _affine)
    s_in = tl.load(S_ptr + (row * T + k - 1) * D + d, mask=dm & (d * 0 + k > 0), other=0.0)  # state before the tile
    s = A * s_in[None, :] + X  # (BLOCK_L, BLOCK_D) = zbar[idx_t]
    m2 = (t < L)[:, None] & dm[None, :]
    offs = t[:, None] * D + d[None, :]
    res = tl.load(res_ptr + row * L * D + offs, mask=m2, other=0.0).to(tl.float32)
    out_row = out_ptr + row * L * D
    tl.store(out_row + offs, (s + res).to(out_row.dtype.element_ty), mask=m2)


@triton.jit
def _bwd_kernel(
    g_ptr, z_ptr, P_ptr, idx_ptr, S_ptr, R_ptr, dz_ptr, dP_ptr, dc_ptr, dres_ptr, L, M, D, T, ND,
    WRITE_DRES: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1)
    pd = tl.program_id(2)
    t = k * BLOCK_L + tl.arange(0, BLOCK_L)
    d = pd * BLOCK_D + tl.arange(0, BLOCK_D)
    dm = d < D
    tm = t < L
    m2 = tm[:, None] & dm[None, :]
    idx_row, P_row = idx_ptr + row * L, P_ptr + row * M
    # forward state s_t and s_{t-1}, from the state at the end of the previous tile
    start, j, Pj, a = _starts(idx_row, P_row, t, L, M)
    zoffs = j[:, None] * D + d[None, :]
    zm = start[:, None] & dm[None, :]
    z = tl.load(z_ptr + row * M * D + zoffs, mask=zm, other=0.0).to(tl.float32)
    a2 = tl.broadcast_to(a[:, None], (BLOCK_L, BLOCK_D))
    ones = tl.full((BLOCK_L, BLOCK_D), 1.0, tl.float32)
    zeros = tl.zeros((BLOCK_L, BLOCK_D), tl.float32)
    A, X, E, F = tl.associative_scan((a2, Pj[:, None] * z, ones, zeros), 0, _affine_incl_excl)
    s_in = tl.load(S_ptr + (row * T + k - 1) * D + d, mask=dm & (d * 0 + k > 0), other=0.0)[None, :]
    s = A * s_in + X
    s_prev = E * s_in + F
    # reverse state r_t = dL/ds_t, from the state at the start of the next tile
    _, _, _, a_next = _starts(idx_row, P_row, t + 1, L, M)
    offs = t[:, None] * D + d[None, :]
    g = tl.load(g_ptr + row * L * D + offs, mask=m2, other=0.0).to(tl.float32)
    Ar, Rr = tl.associative_scan((tl.broadcast_to(a_next[:, None], (BLOCK_L, BLOCK_D)), g), 0, _affine, reverse=True)
    r_in = tl.load(R_ptr + (row * T + k + 1) * D + d, mask=dm & (d * 0 + k + 1 < T), other=0.0)[None, :]
    r = Ar * r_in + Rr
    # gradients
    tl.store(dc_ptr + (row * L + t) * ND + pd, tl.sum(g * s, 1), mask=tm)
    dz_row = dz_ptr + row * M * D
    tl.store(dz_row + zoffs, (Pj[:, None] * r).to(dz_row.dtype.element_ty), mask=zm)
    tl.store(dP_ptr + (row * M + j) * ND + pd, tl.sum(r * (z - s_prev), 1), mask=start)
    if WRITE_DRES:
        dres_row = dres_ptr + row * L * D
        tl.store(dres_row + offs, g.to(dres_row.dtype.element_ty), mask=m2)


def _grid_sizes(L: int, D: int, block_l: int, block_d: int):
    return triton.cdiv(L, block_l), triton.cdiv(D, block_d)


def on_device(t: torch.Tensor):
    """Launch on ``t``'s GPU: Triton takes the device (and stream) from the current CUDA device,
    which need not be the tensors' (a model on cuda:1)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


MAX_GRID_Y = 65535  # CUDA's limit on the second grid dimension (the tiles of a row here)


class DechunkFunction(torch.autograd.Function):
    """Autograd wrapper of the kernels; use :func:`dechunk`."""

    @staticmethod
    def forward(ctx, z, P, boundary_mask, c, residual, out_dtype, blocks):
        Bn, M, D = z.shape
        L = boundary_mask.shape[1]
        bl, bd, bc, nw = blocks["block_l"], blocks["block_d"], blocks["block_c"], blocks["num_warps"]
        z, P, residual = z.contiguous(), P.contiguous(), residual.contiguous()
        idx = torch.cumsum(boundary_mask, -1, dtype=torch.int32).sub_(1).clamp_(min=0)  # (B, L)
        T, ND = _grid_sizes(L, D, bl, bd)
        A = torch.empty(Bn, T, device=z.device, dtype=torch.float32)
        S = torch.empty(Bn, T, D, device=z.device, dtype=torch.float32)
        out = torch.empty(Bn, L, D, device=z.device, dtype=out_dtype)
        with on_device(z):
            _tile_kernel[(Bn, T, ND)](z, P, idx, A, S, L, M, D, T, REVERSE=False, BLOCK_L=bl, BLOCK_D=bd, num_warps=nw)
            _carry_kernel[(Bn, ND)](A, S, T, D, REVERSE=False, BLOCK_C=bc, BLOCK_D=bd, num_warps=nw)
            _fwd_kernel[(Bn, T, ND)](z, P, idx, S, residual, out, L, M, D, T, BLOCK_L=bl, BLOCK_D=bd, num_warps=nw)
        ctx.save_for_backward(z, P, idx, S)
        ctx.blocks = blocks
        ctx.dtypes = (c.dtype, residual.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        z, P, idx, S = ctx.saved_tensors
        c_dtype, res_dtype = ctx.dtypes
        blocks = ctx.blocks
        bl, bd, bc, nw = blocks["block_l"], blocks["block_d"], blocks["block_c"], blocks["num_warps"]
        Bn, M, D = z.shape
        L = idx.shape[1]
        T, ND = _grid_sizes(L, D, bl, bd)
        g = grad_out.contiguous()
        A = torch.empty(Bn, T, device=z.device, dtype=torch.float32)
        R = torch.empty(Bn, T, D, device=z.device, dtype=torch.float32)
        with on_device(z):
            _tile_kernel[(Bn, T, ND)](g, P, idx, A, R, L, M, D, T, REVERSE=True, BLOCK_L=bl, BLOCK_D=bd, num_warps=nw)
            _carry_kernel[(Bn, ND)](A, R, T, D, REVERSE=True, BLOCK_C=bc, BLOCK_D=bd, num_warps=nw)
        # Chunks no position starts (padding of the inner sequence) get no gradient: zeros.
        dz = torch.zeros_like(z)
        dP = torch.zeros(Bn, M, ND, device=z.device, dtype=torch.float32)
        dc = torch.empty(Bn, L, ND, device=z.device, dtype=torch.float32)
        write_dres = ctx.needs_input_grad[4] and g.dtype != res_dtype
        dres = torch.empty(Bn, L, D, device=z.device, dtype=res_dtype) if write_dres else g
        with on_device(z):
            _bwd_kernel[(Bn, T, ND)](
                g, z, P, idx, S, R, dz, dP, dc, dres, L, M, D, T, ND,
                WRITE_DRES=write_dres, BLOCK_L=bl, BLOCK_D=bd, num_warps=nw,
            )
        grad_res = dres if ctx.needs_input_grad[4] else None
        return dz, dP.sum(-1).to(P.dtype), None, dc.sum(-1).to(c_dtype), grad_res, None, None


def dechunk(
    z_inner: torch.Tensor,
    P: torch.Tensor,
    boundary_mask: torch.Tensor,
    c: torch.Tensor,
    residual: torch.Tensor,
    out_dtype: torch.dtype | None = None,
    block_l: int = DEFAULT_BLOCKS["block_l"],
    block_d: int = DEFAULT_BLOCKS["block_d"],
    block_c: int = DEFAULT_BLOCKS["block_c"],
    num_warps: int = DEFAULT_BLOCKS["num_warps"],
) -> torch.Tensor:
    """Fused ``chunking.dechunk``: EMA over the chunks, upsample, STE(c), + residual -> (B, L, D).

    z_inner: (B, M, D) bf16, fp16 or fp32; P: (B, M) clamped chunk probabilities; boundary_mask:
    (B, L) bool with at most M boundaries per row; c: (B, L); residual: (B, L, D). The recurrence
    runs in fp32 whatever the input dtypes. out_dtype: fp32 by default (as the reference), or the
    compute dtype (half the output bytes). block_l, block_d: positions and channels of a tile
    (powers of two); block_c: tile summaries combined per step of the carry pass; num_warps: per
    program (ignored by the interpreter). See the module docstring for the scheme and its traffic.
    """
    Bn, M, D = z_inner.shape
    L = boundary_mask.shape[1]
    if P.shape != (Bn, M) or c.shape != (Bn, L) or residual.shape != (Bn, L, D) or boundary_mask.shape[0] != Bn:
        raise ValueError(
            f"dechunk: shapes z {tuple(z_inner.shape)}, P {tuple(P.shape)}, boundary_mask "
            f"{tuple(boundary_mask.shape)}, c {tuple(c.shape)}, residual {tuple(residual.shape)} do not agree"
        )
    if M == 0:
        raise ValueError("dechunk: no chunks (M = 0); every row needs at least one boundary")
    if max(L, M) * D >= 2**31:
        raise ValueError(f"dechunk: a row of {max(L, M)} x {D} values is too long for int32 offsets")
    if triton.cdiv(L, block_l) > MAX_GRID_Y:
        raise ValueError(f"dechunk: {L:,} positions make more than {MAX_GRID_Y} tiles of {block_l}; "
                         "raise block_l or cut the sequence into windows")
    if boundary_mask.dtype != torch.bool:
        raise ValueError(f"dechunk: boundary_mask must be bool, got {boundary_mask.dtype}")
    blocks = {"block_l": block_l, "block_d": block_d, "block_c": block_c, "num_warps": num_warps}
    return DechunkFunction.apply(z_inner, P, boundary_mask, c, residual, out_dtype or torch.float32, blocks)
