"""The chunked SSD scan in plain PyTorch (Mamba-2's state-space duality, Dao & Gu 2024).

It computes the linear recurrence, per batch row b and head h::

    state_t = exp(log_decay_t) * state_{t-1} + x_t ⊗ B_t        # (P, N) per head
    y_t     = state_t · C_t                                        # (P,)

with the state starting at ``initial_state`` (zeros by default). Mamba-2 uses it with
``x = dt * x``, ``log_decay = dt * A``; the H-Net dechunking EMA uses it with N = 1,
``x = P * z``, ``log_decay = log(1 - P)``, ``B = C = 1``.

Instead of a loop over positions, the sequence is cut into chunks of ``chunk_size``:

1. inside a chunk, outputs are a masked (T, T) "attention" ``(C_i · B_j) exp(sum log_decay_{j+1..i})``;
2. each chunk's contribution to the state at its end is a weighted sum over its positions;
3. chunk-end states are propagated across chunks with a (chunks+1, chunks+1) decay matrix;
4. each position adds the state carried into its chunk, decayed to that position.

Every exponent is a sum of log decays (<= 0), so nothing overflows. Chunk size changes only
speed, memory and float rounding, not the result: segment sums are differences of cumulative sums
within a chunk (as in mamba_ssm's kernels), so the fp32 rounding error of a decay factor grows
with the chunk's total log decay (about 1e-7 relative per unit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["ssd_scan", "ssd_sequential_ref", "segment_sum"]


def segment_sum(x: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T) with ``out[..., i, j] = x[j+1] + ... + x[i]`` for j <= i, else -inf.

    Taken as a difference of cumulative sums, as mamba_ssm's kernels do: in fp32 the error of a
    segment is about 1e-7 times the chunk's total, which bounds chunk sizes (module docstring).
    """
    T = x.shape[-1]
    cs = x.cumsum(dim=-1)
    out = cs[..., :, None] - cs[..., None, :]
    lower = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(0)
    return out.masked_fill(~lower, float("-inf"))


def ssd_scan(
    x: torch.Tensor,
    log_decay: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
):
    """Chunked scan of the recurrence in the module docstring.

    Args:
        x: (batch, L, H, P) inputs, already scaled (Mamba-2: ``dt * x``).
        log_decay: (batch, L, H) log of the per-step decay (<= 0; Mamba-2: ``dt * A``).
        B, C: (batch, L, G, N) with H a multiple of G (heads share a group's B and C).
        chunk_size: chunk length T.
        initial_state: (batch, H, P, N) or None (zeros).
        return_final_state: also return the state after the last position.

    Returns:
        y (batch, L, H, P) in x's dtype, and the final state (batch, H, P, N) when asked.

    Runs in the inputs' dtype even under autocast (which would otherwise drop the einsums to
    bf16): callers pass fp32 (or fp64) to get an fp32 (fp64) scan.
    """
    with torch.autocast(x.device.type, enabled=False):
        return _ssd_scan(x, log_decay, B, C, chunk_size, initial_state, return_final_state)


def _ssd_scan(x, log_decay, B, C, chunk_size, initial_state, return_final_state):
    batch, length, heads, _ = x.shape
    groups = B.shape[2]
    if heads % groups:
        raise ValueError(f"{heads} heads cannot share {groups} groups of B and C")
    r = heads // groups  # heads of a group are contiguous: head h uses group h // r

    pad = (-length) % chunk_size
    if pad:
        # Zero input and zero log decay (decay 1) leave the state untouched: the final state is
        # still the state after the last real position.
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        log_decay = F.pad(log_decay, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))

    x = rearrange(x, "b (c l) (g r) p -> b c l g r p", l=chunk_size, r=r)
    B, C = (rearrange(t, "b (c l) g n -> b c l g n", l=chunk_size) for t in (B, C))
    a = rearrange(log_decay, "b (c l) (g r) -> b g r c l", l=chunk_size, r=r)
    a_cum = a.cumsum(dim=-1)  # (b, g, r, c, T)

    # 1. within each chunk: (C_i · B_j) is shared by the heads of a group. The causal mask goes
    # on this small tensor; the per-head decay exp(a_cum_i - a_cum_j) is clamped at 0 instead of
    # masked, so j > i cannot overflow and is zeroed by the mask.
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).tril()
    cb = torch.einsum("bclgn,bcsgn->bgcls", C, B) * causal  # (b, g, c, T, T)
    decay = torch.exp((a_cum[..., :, None] - a_cum[..., None, :]).clamp(max=0.0))  # (b, g, r, c, T, T)
    scores = cb[:, :, None] * decay
    x_heads = rearrange(x, "b c l g r p -> b g r c l p")
    y_within = rearrange(scores.to(x.dtype) @ x_heads, "b g r c l p -> b c l g r p")

    # 2. each chunk's contribution to the state at its end
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, g, r, c, T)
    x_weighted = x * rearrange(decay_to_end, "b g r c l -> b c l g r 1").to(x.dtype)
    chunk_states = torch.einsum("bclgn,bclgrp->bcgrpn", B, x_weighted)

    # 3. carry states across chunks
    if initial_state is None:
        initial = torch.zeros_like(chunk_states[:, :1])
    else:
        initial = rearrange(initial_state, "b (g r) p n -> b 1 g r p n", r=r).to(chunk_states.dtype)
    chunk_states = torch.cat([initial, chunk_states], dim=1)  # (b, c+1, g, r, p, n)
    decay_chunks = torch.exp(segment_sum(F.pad(a_cum[..., -1], (1, 0))))  # (b, g, r, c+1, c+1)
    carried = torch.einsum("bgrzc,bcgrpn->bzgrpn", decay_chunks.to(x.dtype), chunk_states)
    states_in, final_state = carried[:, :-1], carried[:, -1]

    # 4. the carried-in state's contribution at each position
    y_carried = torch.einsum("bclgn,bcgrpn->bclgrp", C, states_in)
    y_carried = y_carried * rearrange(torch.exp(a_cum), "b g r c l -> b c l g r 1").to(x.dtype)

    y = rearrange(y_within + y_carried, "b c l g r p -> b (c l) (g r) p")[:, :length]
    if return_final_state:
        return y, rearrange(final_state, "b g r p n -> b (g r) p n")
    return y


def ssd_sequential_ref(x, log_decay, B, C, initial_state=None, return_final_state=False):
    """The same recurrence one position at a time: the readable reference ``ssd_scan`` is tested
    (and benchmarked) against. Same arguments and results as :func:`ssd_scan`."""
    batch, length, heads, p = x.shape
    rep = heads // B.shape[2]
    B, C = B.repeat_interleave(rep, 2), C.repeat_interleave(rep, 2)
    if initial_state is None:
        state = x.new_zeros(batch, heads, p, B.shape[-1])
    else:
        state = initial_state
    ys = []
    for t in range(length):
        state = state * torch.exp(log_decay[:, t])[..., None, None] + x[:, t, :, :, None] * B[:, t, :, None, :]
        ys.append((state * C[:, t, :, None, :]).sum(-1))
    y = torch.stack(ys, 1)
    return (y, state) if return_final_state else y
