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
from einops import rearrange, repeat

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
    """
    batch, length, heads, _ = x.shape
    groups = B.shape[2]
    if heads % groups:
        raise ValueError(f"{heads} heads cannot share {groups} groups of B and C")
    B = repeat(B, "b l g n -> b l (g r) n", r=heads // groups)
    C = repeat(C, "b l g n -> b l (g r) n", r=heads // groups)

    pad = (-length) % chunk_size
    if pad:
        # Zero input and zero log decay (decay 1) leave the state untouched: the final state is
        # still the state after the last real position.
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        log_decay = F.pad(log_decay, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))

    x, B, C = (rearrange(t, "b (c l) h d -> b c l h d", l=chunk_size) for t in (x, B, C))
    a = rearrange(log_decay, "b (c l) h -> b h c l", l=chunk_size)  # (b, h, c, T)
    a_cum = a.cumsum(dim=-1)

    # 1. within each chunk
    decay_within = torch.exp(segment_sum(a))  # (b, h, c, T, T)
    scores = torch.einsum("bclhn,bcshn->bhcls", C, B) * decay_within
    y_within = torch.einsum("bhcls,bcshp->bclhp", scores.to(x.dtype), x)

    # 2. each chunk's contribution to the state at its end
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, T)
    chunk_states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_to_end.to(x.dtype), x)

    # 3. carry states across chunks
    if initial_state is None:
        initial_state = torch.zeros_like(chunk_states[:, :1])
    else:
        initial_state = initial_state[:, None].to(chunk_states.dtype)
    chunk_states = torch.cat([initial_state, chunk_states], dim=1)  # (b, c+1, h, p, n)
    decay_chunks = torch.exp(segment_sum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    carried = torch.einsum("bhzc,bchpn->bzhpn", decay_chunks.to(x.dtype), chunk_states)
    states_in, final_state = carried[:, :-1], carried[:, -1]

    # 4. the carried-in state's contribution at each position
    y_carried = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states_in, torch.exp(a_cum).to(x.dtype))

    y = rearrange(y_within + y_carried, "b c l h p -> b (c l) h p")[:, :length]
    if return_final_state:
        return y, final_state
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
