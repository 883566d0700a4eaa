"""The chunked SSD scan in plain PyTorch (Mamba-2's state-space duality, Dao & Gu 2024).

It computes the linear recurrence, per batch row b and head h::

    state_t = exp(log_decay_t) * state_{t-1} + x_t ⊗ B_t        # (P, N) per head
    y_t     = state_t · C_t                                        # (P,)

with the state starting at ``initial_state`` (zeros by default). Mamba-2 uses it with
``x = dt * x`` (passed as x and ``x_scale = dt``), ``log_decay = dt * A``; the H-Net dechunking EMA uses it with N = 1,
``x = P * z``, ``log_decay = log(1 - P)``, ``B = C = 1``.

Instead of a loop over positions, the sequence is cut into chunks of ``chunk_size``:

1. inside a chunk, outputs are a masked (T, T) "attention" ``(C_i · B_j) exp(sum log_decay_{j+1..i})``;
2. each chunk's contribution to the state at its end is a weighted sum over its positions;
3. chunk-end states are propagated across chunks with a (chunks+1, chunks+1) decay matrix;
4. each position adds the state carried into its chunk, decayed to that position.

Step 3 is the same recurrence again, one position per chunk: past ``chunk_size`` chunks it runs
as a scan of its own (recursively), so the cost grows linearly with length rather than with the
square of the number of chunks. In step 1 the decay ``exp(a_i - a_j)`` (a: cumulative log decay)
factors as ``exp(a_i - m) * exp(m - a_j)``: a row scale and a column scale around the diagonal
``C_i · B_j``, which the heads of a group share, so a chunk costs one matrix product for all its
heads and nothing of size (T, T) per head; step 4 joins it before the row scale, as one
multiply-add. On CPU the scan is bound by passes over activations (each a trip through memory),
so what can be folded into those per-position scales is (Mamba-2's dt: ``x_scale``). The
factors stay far from overflow while the chunk's log decay spans at most ``FACTORED_RANGE``;
wider chunks (decays fast enough to forget their start within the chunk) take the direct form,
``_WithinChunk``, whose hand-written backward rebuilds the (T, T) scores per head instead of
keeping them.

Nothing overflows: the direct form's exponents are sums of log decays (<= 0), the factored
form's lie within +-FACTORED_RANGE / 2. Chunk size changes only speed, memory and float rounding,
not the result: segment sums are differences of cumulative sums within a chunk (as in mamba_ssm's
kernels), so the fp32 rounding error of a decay factor grows with the chunk's total log decay
(about 1e-7 relative per unit; the factored form's error is the same, measured against fp64).
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
    x_scale: torch.Tensor | None = None,
):
    """Chunked scan of the recurrence in the module docstring.

    Args:
        x: (batch, L, H, P) inputs, already scaled (Mamba-2: ``dt * x``).
        log_decay: (batch, L, H) log of the per-step decay (<= 0; Mamba-2: ``dt * A``).
        B, C: (batch, L, G, N) with H a multiple of G (heads share a group's B and C).
        chunk_size: chunk length T.
        initial_state: (batch, H, P, N) or None (zeros).
        return_final_state: also return the state after the last position.
        x_scale: (batch, L, H) or None: scan ``x * x_scale[..., None]`` (Mamba-2 passes x and dt).
            The scale joins the per-position decay factors, which are H values per position
            rather than H * P: one pass less over x forward and backward.

    Returns:
        y (batch, L, H, P) in x's dtype, and the final state (batch, H, P, N) when asked.

    Runs in the inputs' dtype even under autocast (which would otherwise drop the einsums to
    bf16): callers pass fp32 (or fp64) to get an fp32 (fp64) scan.
    """
    with torch.autocast(x.device.type, enabled=False):
        return _ssd_scan(x, log_decay, B, C, chunk_size, initial_state, return_final_state, x_scale)


def _ssd_scan(x, log_decay, B, C, chunk_size, initial_state, return_final_state, x_scale=None):
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
        x_scale = None if x_scale is None else F.pad(x_scale, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))

    # Layout (batch, group, chunk, position, head in group, channels): the input's own order when
    # there is one group (no copy), and the heads of a group sit side by side in the channels of
    # one matrix product with the (T, T) matrix C_i · B_j they share.
    x = rearrange(x, "b (c l) (g r) p -> b g c l r p", l=chunk_size, r=r)
    B, C = (rearrange(t, "b (c l) g n -> b g c l n", l=chunk_size) for t in (B, C))
    a_cum = rearrange(log_decay, "b (c l) (g r) -> b g c r l", l=chunk_size, r=r).cumsum(dim=-1)  # (b, g, c, r, T)

    scale = None if x_scale is None else rearrange(x_scale, "b (c l) (g r) -> b g c r l", l=chunk_size, r=r)

    # 2. each chunk's contribution to the state at its end
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, g, c, r, T)
    if scale is not None:
        decay_to_end = decay_to_end * scale
    chunk_states = _ChunkStates.apply(  # (b*g*c, r*p, n)
        x.flatten(0, 2), rearrange(decay_to_end, "b g c r l -> (b g c) l r").to(x.dtype), B.flatten(0, 2)
    )
    chunk_states = rearrange(chunk_states, "(b g c) (r p) n -> b g r c p n", b=x.shape[0], g=groups, r=r)

    # 3. carry states across chunks: state after chunk k = its decay * state after k-1 + its own
    chunk_decay = rearrange(a_cum[..., -1], "b g c r -> b g r c")
    states_in, final_state = _carry_states(chunk_states, chunk_decay, initial_state, r, chunk_size)

    # 1 and 4. within each chunk, plus the carried-in state decayed to each position
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).tril()
    cb = (C @ B.transpose(-1, -2)) * causal  # (b, g, c, T, T)
    y = _within_chunk_and_carried(cb, a_cum, x, scale, C, states_in)  # (b, g, c, T, r, p)

    y = rearrange(y, "b g c l r p -> b (c l) (g r) p")[:, :length]
    if return_final_state:
        return y, rearrange(final_state, "b g r p n -> b (g r) p n")
    return y


# Step 1 factors exp(a_i - a_j) = exp(a_i - m) * exp(m - a_j) (m: the middle of the chunk's range)
# where a chunk's total log decay is at most this: each factor then lies within e^+-40, far from
# fp32's overflow (e^88) and underflow, and the product is as exact as the direct exponential.
FACTORED_RANGE = 80.0


def _within_chunk_and_carried(cb, a_cum, x, scale, C, states_in):
    """Steps 1 and 4: ``y_i = sum_{j <= i} cb_ij exp(a_i - a_j) s_j x_j + exp(a_i) C_i · state_in``
    within each chunk, per head (a: a_cum, s: the x scale or 1).

    cb (b, g, c, T, T), causal-masked; a_cum and scale (b, g, c, r, T); x (b, g, c, T, r, p);
    C (b, g, c, T, n); states_in (b, g, r, c, p, n) -> y like x.

    Where a chunk's decay range (over the heads of a group) is at most ``FACTORED_RANGE``, the
    decays factor into a row and a column scale around ``m``, the middle of the range:
    ``exp(a_i - a_j) = e_i f_j`` with ``e_i = exp(a_i - m)``, ``f_j = exp(m - a_j)``, and
    ``exp(a_i) = e_i exp(m)``. So ``y = e * (cb @ (f s x) + C @ (exp(m) state_in))``: one
    matrix product and one multiply-add for all heads of a group, nothing of size (T, T) per head,
    and the carried state folded in before the row scale (on CPU the scan is bound by passes over
    activations). ``exp(m) <= 1``: where it underflows, the carried state's true contribution is
    below ``e^-47`` of it. The chunks with a wider range (fast decays: their early positions are
    forgotten within the chunk) take the direct form of :class:`_WithinChunk`, computed for them
    alone.
    """
    first, last = a_cum[..., :1], a_cum[..., -1:]
    mid = ((first + last) / 2).detach()  # y does not depend on m: no gradient to send through it
    # Within the range the clamps do nothing; they keep the wide chunks' factors finite (their
    # results are replaced below, and a replaced inf would still turn its zero gradient into NaN).
    half = FACTORED_RANGE / 2
    e = torch.exp((a_cum - mid).clamp(-half, half))  # (b, g, c, r, T)
    f = torch.exp((mid - a_cum).clamp(-half, half))
    if scale is not None:
        f = f * scale
    states_scaled = states_in * rearrange(torch.exp(mid), "b g c r 1 -> b g r c 1 1").to(states_in.dtype)
    y = _FactoredChunks.apply(
        cb.to(x.dtype).flatten(0, 2), x.flatten(0, 2),
        *(rearrange(t, "b g c r l -> (b g c) l r").to(x.dtype) for t in (f, e)),
        C.flatten(0, 2), rearrange(states_scaled, "b g r c p n -> (b g c) n (r p)"),
    ).view(x.shape)
    wide = ((first - last)[..., 0] > FACTORED_RANGE).any(-1)  # (b, g, c)
    # One host sync per scan, on purpose: the direct form runs for the wide chunks alone (on CUDA
    # Mamba-2 takes mamba_ssm's kernel and the dechunking EMA Triton's, not this scan).
    if not bool(wide.any()):
        return y
    index = wide.nonzero(as_tuple=True)
    xs = x[index] if scale is None else x[index] * rearrange(scale[index], "u r l -> u l r 1").to(x.dtype)
    direct = _WithinChunk.apply(  # (U, r, T, p) for the U wide chunks
        cb[index].unsqueeze(1), a_cum[index], rearrange(xs, "u l r p -> u r l p")
    )
    carried = C[index] @ rearrange(states_in.permute(0, 1, 3, 2, 4, 5)[index], "u r p n -> u n (r p)")
    carried = carried.unflatten(-1, x.shape[-2:]) * rearrange(torch.exp(a_cum[index]), "u r l -> u l r 1").to(x.dtype)
    return y.index_put(index, rearrange(direct, "u r l p -> u l r p") + carried)


class _ChunkStates(torch.autograd.Function):
    """Step 2: each chunk's contribution to the state at its end, ``sum_j w_j x_j ⊗ B_j``.

    x (N, T, r, p), w (N, T, r) (decay to the chunk's end, times the x scale), B (N, T, n) ->
    (N, r*p, n). Keeps its inputs only (autograd would also keep ``w * x``, an activation of
    x's size) and rebuilds ``w * x`` for B's gradient.
    """

    @staticmethod
    def forward(ctx, x, w, B):
        ctx.save_for_backward(x, w, B)
        weighted = (x * w.unsqueeze(-1)).flatten(-2)  # (N, T, r*p)
        return weighted.transpose(-1, -2) @ B

    @staticmethod
    def backward(ctx, grad):
        x, w, B = ctx.saved_tensors
        grad_weighted = (B @ grad.transpose(-1, -2)).view(x.shape)  # (N, T, r, p)
        grad_x = grad_weighted * w.unsqueeze(-1) if ctx.needs_input_grad[0] else None
        grad_w = (grad_weighted * x).sum(-1) if ctx.needs_input_grad[1] else None
        grad_B = None
        if ctx.needs_input_grad[2]:
            grad_B = (x * w.unsqueeze(-1)).flatten(-2) @ grad
        return grad_x, grad_w, grad_B


class _FactoredChunks(torch.autograd.Function):
    """Steps 1 and 4 in the factored form: ``y = e * (cb @ (f * x) + C @ S)`` per chunk.

    cb (N, T, T); x (N, T, r, p); f, e (N, T, r); C (N, T, n); S (N, n, r*p) -> y like x.
    Keeps its inputs only (autograd would keep ``f * x`` and the product before the row scale,
    two activations of x's size) and recomputes both in the backward: one multiply and two
    small matrix products.
    """

    @staticmethod
    def forward(ctx, cb, x, f, e, C, S):
        ctx.save_for_backward(cb, x, f, e, C, S)
        return _FactoredChunks._inner(cb, x, f, C, S)[0].view(x.shape).mul_(e.unsqueeze(-1))

    @staticmethod
    def _inner(cb, x, f, C, S):
        """``cb @ (f * x) + C @ S`` (N, T, r*p), and ``f * x`` flattened like it."""
        fx = (x * f.unsqueeze(-1)).flatten(-2)
        return (C @ S).baddbmm_(cb, fx), fx

    @staticmethod
    def backward(ctx, grad):
        cb, x, f, e, C, S = ctx.saved_tensors
        need_cb, need_x, need_f, need_e, need_C, need_S = ctx.needs_input_grad
        inner, fx = _FactoredChunks._inner(cb, x, f, C, S)
        # In place where a product is not needed again: this backward runs where the live memory
        # of a training step peaks (every activation still kept), so its temporaries count.
        grad_e = inner.view(x.shape).mul_(grad).sum(-1) if need_e else None
        del inner
        grad_inner = (grad * e.unsqueeze(-1)).flatten(-2)  # (N, T, r*p)
        grad_cb = grad_inner @ fx.transpose(-1, -2) if need_cb else None
        del fx
        grad_C = grad_inner @ S.transpose(-1, -2) if need_C else None
        grad_S = C.transpose(-1, -2) @ grad_inner if need_S else None
        grad_x = grad_f = None
        if need_x or need_f:
            grad_fx = (cb.transpose(-1, -2) @ grad_inner).view(x.shape)
            del grad_inner
            grad_x = grad_fx * f.unsqueeze(-1) if need_x else None
            grad_f = grad_fx.mul_(x).sum(-1) if need_f else None
        return grad_cb, grad_x, grad_f, grad_e, grad_C, grad_S


def _carry_states(chunk_states, chunk_decay, initial_state, r: int, chunk_size: int):
    """States entering each chunk and the final state, from each chunk's own end-state
    contribution ``chunk_states`` (b, g, r, c, p, n) and log decay ``chunk_decay`` (b, g, r, c).

    Up to ``chunk_size`` chunks: one (c + 1, c + 1) matrix of decays between chunk ends. Past
    that, the same recurrence runs as a scan over the chunks (state size 1, one channel per state
    entry): the matrix would grow with the square of the length.
    """
    batch, g, _, chunks, p, n = chunk_states.shape
    if initial_state is None:
        initial = chunk_states.new_zeros(batch, g, r, 1, p, n)
    else:
        initial = rearrange(initial_state, "b (g r) p n -> b g r 1 p n", r=r).to(chunk_states.dtype)
    if chunks <= chunk_size:
        states = torch.cat([initial, chunk_states], dim=3).flatten(-2)  # (b, g, r, c+1, p*n)
        decay_chunks = torch.exp(segment_sum(F.pad(chunk_decay, (1, 0))))  # (b, g, r, c+1, c+1)
        carried = (decay_chunks.to(states.dtype) @ states).unflatten(-1, (p, n))
        return carried[:, :, :, :-1], carried[:, :, :, -1]
    x = rearrange(chunk_states, "b g r c p n -> b c (g r) (p n)")
    ones = x.new_ones(batch, chunks, 1, 1)
    after = _ssd_scan(  # (b, c, heads, p*n): the state after each chunk
        x, rearrange(chunk_decay, "b g r c -> b c (g r)"), ones, ones, chunk_size,
        rearrange(initial, "b g r 1 p n -> b (g r) (p n) 1"), False,
    )
    after = rearrange(after, "b c (g r) (p n) -> b g r c p n", r=r, p=p)
    return torch.cat([initial, after[:, :, :, :-1]], dim=3), after[:, :, :, -1]


class _WithinChunk(torch.autograd.Function):
    """Step 1 in its direct form: ``y_i = sum_{j <= i} cb_ij exp(a_cum_i - a_cum_j) x_j``, per head.

    cb (..., 1, T, T), causal-masked; a_cum (..., r, T); x (..., r, T, p) -> y like x.
    The (T, T) scores per head are the scan's largest tensor: the forward does not keep them, and
    the backward rebuilds them in two passes rather than autograd's six (sub, clamp, exp, mul and
    their gradients). The clamp only touches j > i, where cb is 0, so d scores / d a_cum_i =
    scores and d scores / d a_cum_j = -scores.
    """

    @staticmethod
    def forward(ctx, cb, a_cum, x):
        scores = _decays(a_cum).mul_(cb)  # (..., r, T, T)
        ctx.save_for_backward(cb, a_cum, x)
        return scores.to(x.dtype) @ x

    @staticmethod
    def backward(ctx, grad):
        cb, a_cum, x = ctx.saved_tensors
        decays = _decays(a_cum)
        scores = decays * cb
        grad_x = scores.transpose(-1, -2).to(grad.dtype) @ grad if ctx.needs_input_grad[2] else None
        grad_scores = (grad @ x.transpose(-1, -2)).to(scores.dtype)  # (..., r, T, T)
        grad_cb = (grad_scores * decays).sum_to_size(cb.shape) if ctx.needs_input_grad[0] else None
        grad_a = None
        if ctx.needs_input_grad[1]:
            grad_seg = grad_scores.mul_(scores)  # d loss / d (a_cum_i - a_cum_j)
            grad_a = grad_seg.sum(-1) - grad_seg.sum(-2)
        return grad_cb, grad_a, grad_x


def _decays(a_cum: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T): exp(min(a_cum_i - a_cum_j, 0)), in one buffer."""
    return (a_cum[..., :, None] - a_cum[..., None, :]).clamp_(max=0.0).exp_()


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
