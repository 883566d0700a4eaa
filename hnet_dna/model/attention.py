"""Causal self-attention with partial rotary embeddings and an optional sliding window.

Conventions of the official H-Net (flash-attn's ``MHA``):

* ``Wqkv`` packs q, k, v as ``(three, heads, head_dim)`` along the output, no bias; ``out_proj``
  has no bias.
* Rotary is non-interleaved ("rotate half"), base 10000, on the first ``rotary_emb_dim`` channels
  of each head of q and k; the rest pass through.
* Window W: query i attends to keys i - W .. i (flash-attn's ``window_size=(W, -1)``); -1 = global.
* ``causal=False`` (the masked-LM H-Net): query i attends to every real key, or with a window to
  keys i - W .. i + W; padding keys are masked out (:func:`two_way_attention`). Its mask is a
  (B, 1, L, L) boolean tensor, so memory grows with L squared: fine for the windows a masked LM
  is pretrained on, not for whole chromosomes.

Decoding keeps a key/value cache per layer. A windowed layer keeps a ring buffer of W + 1 slots,
so its cost per new position does not grow with the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .layers import HI_DTYPE, hi
from .window_attention import blocked_sliding_window_attention, sliding_window_attention

__all__ = ["CausalSelfAttention", "AttentionCache", "apply_rotary", "sliding_window_attention",
           "blocked_sliding_window_attention", "attend_after_prefix", "two_way_attention"]


def two_way_attention(q, k, v, mask: torch.Tensor | None, window: int) -> torch.Tensor:
    """Attention without a causal mask: query i sees every real key j (``mask``: (B, L) True on
    real positions; None = all real), and with ``window`` >= 0 only those with |i - j| <= window.
    q, k, v: (B, H, L, Dh). Queries at padding see every key (their outputs are unused; no row is
    left without a key)."""
    length = q.shape[2]
    allowed = None
    if window >= 0 and window + 1 < length:
        pos = torch.arange(length, device=q.device)
        allowed = (pos[:, None] - pos[None, :]).abs() <= window  # (L, L)
    if mask is not None:
        keys = mask[:, None, None, :]  # (B, 1, 1, L)
        allowed = keys if allowed is None else keys & allowed
        # a padding query may see every key: with a window, one far past the last real base would
        # otherwise have none, and a row of -inf scores is NaN on some backends (its output is unused)
        allowed = allowed | ~mask[:, None, :, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``2 * len(inv_freq)`` channels of x (..., L, H, Dh) by angle pos * freq.

    positions: (L,) or (B, L) broadcastable to x's leading dims. Computed in fp32.
    """
    rot = 2 * inv_freq.numel()
    angles = positions.to(HI_DTYPE(x))[..., None] * inv_freq.to(HI_DTYPE(x))  # (..., L, rot/2)
    cos, sin = angles.cos()[..., None, :], angles.sin()[..., None, :]  # (..., L, 1, rot/2)
    x_rot = hi(x[..., :rot])
    x1, x2 = x_rot.chunk(2, dim=-1)
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
    return torch.cat([rotated, x[..., rot:]], dim=-1)


def attend_after_prefix(q, k, v, prefix: int, max_scores: int = 1 << 25) -> torch.Tensor:
    """Causal attention of queries at positions ``prefix`` .. ``prefix + K - 1`` over keys
    0 .. ``prefix + K - 1``: q (B, H, K, Dh), k and v (B, H, prefix + K, Dh) -> (B, H, K, Dh).

    Query i sees keys up to prefix + i (the causal mask aligned at the bottom right). On CPU
    without gradients, two flash attentions merged by their log-sum-exps (autograd does not
    differentiate the merge); on CUDA, SDPA with PyTorch's bottom-right causal bias; otherwise
    queries go in groups small enough that a group's scores stay under ``max_scores`` elements,
    whatever the prefix's length.
    """
    if prefix == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if q.device.type == "cuda":
        # a causal bias aligned at the bottom right: SDPA's fused kernels take it without a mask
        from torch.nn.attention.bias import causal_lower_right

        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[2], k.shape[2]))
    cpu_flash = hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
    if q.device.type == "cpu" and cpu_flash and not needs_grad:
        # The prefix (every key visible) and the block (a causal square) as two flash attentions
        # merged by their log-sum-exps, as in window_attention._BandAttentionCPU: no mask, no scores kept (about
        # twice as fast as the masked groups below over a 50 k-key prefix, measured).
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        out_p, lse_p = flash(q, k[:, :, :prefix], v[:, :, :prefix], 0.0, False)
        out_b, lse_b = flash(q, k[:, :, prefix:], v[:, :, prefix:], 0.0, True)
        merged = torch.logaddexp(lse_p, lse_b)
        w_p, w_b = torch.exp(lse_p - merged)[..., None], torch.exp(lse_b - merged)[..., None]
        return (out_p.to(w_p.dtype) * w_p + out_b.to(w_b.dtype) * w_b).to(q.dtype)
    return _grouped_after_prefix(q, k, v, prefix, max_scores)


def _grouped_after_prefix(q, k, v, prefix: int, max_scores: int) -> torch.Tensor:
    """:func:`attend_after_prefix` with a mask, in groups of queries (any device)."""
    batch, heads, length, _ = q.shape
    group = max(1, max_scores // (batch * heads * k.shape[2]))
    outs = []
    for start in range(0, length, group):
        end = min(length, start + group)
        keys = prefix + end  # the group's last query sees this many keys
        i = torch.arange(prefix + start, prefix + end, device=q.device)[:, None]
        visible = torch.arange(keys, device=q.device)[None, :] <= i  # (group, keys)
        outs.append(F.scaled_dot_product_attention(q[:, :, start:end], k[:, :, :keys], v[:, :, :keys],
                                                   attn_mask=visible))
    return torch.cat(outs, dim=2)


@dataclass
class AttentionCache:
    """Keys (after rotary) and values of one layer. Slot of position t: ``t % capacity`` for a
    windowed layer (ring of W + 1 slots), ``t`` for a global one (grown as needed)."""

    k: torch.Tensor  # (B, H, capacity, Dh)
    v: torch.Tensor  # (B, H, capacity, Dh)
    lengths: torch.Tensor  # (B,) positions seen per row
    ring: bool
    max_length: int = 0  # an upper bound of lengths, kept on the host to avoid a device sync


class CausalSelfAttention(nn.Module):
    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rotary_emb_dim: int = 0,
        window_size: int = -1,
        rotary_base: float = 10000.0,
        causal: bool = True,
    ):
        super().__init__()
        self.causal = causal
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.window_size = window_size
        self.rotary_emb_dim = rotary_emb_dim
        self.Wqkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.rotary_base = rotary_base
        self.register_buffer("inv_freq", self._frequencies(None), persistent=False)

    def _frequencies(self, device) -> torch.Tensor:
        """Rotary frequencies, always fp32 (as flash-attn computes them)."""
        steps = torch.arange(0, self.rotary_emb_dim, 2, dtype=torch.float32, device=device)
        return 1.0 / self.rotary_base ** (steps / self.rotary_emb_dim)

    def _apply(self, fn, recurse=True):
        # model.to(bfloat16) would round the frequencies (0.7 rad of angle error at position 4000).
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32:
            self.inv_freq = self._frequencies(self.inv_freq.device)
        return self

    def _qkv(self, x: torch.Tensor, positions: torch.Tensor):
        qkv = rearrange(self.Wqkv(x), "... (three h d) -> ... three h d", three=3, d=self.head_dim)
        q, k, v = qkv.unbind(dim=-3)  # each (..., H, Dh)
        if self.rotary_emb_dim > 0:
            q = apply_rotary(q, positions, self.inv_freq)
            k = apply_rotary(k, positions, self.inv_freq)
        return q, k, v

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: AttentionCache | None = None
    ) -> torch.Tensor:
        """x: (B, L, D). Right padding needs no mask: a real position never sees a later one.
        With ``cache``, fill it with each row's keys and values (for decoding that follows)."""
        batch, length, _ = x.shape
        positions = torch.arange(length, device=x.device)
        q, k, v = (rearrange(t, "b l h d -> b h l d") for t in self._qkv(x, positions))
        if not self.causal:
            if cache is not None:
                raise NotImplementedError("a two-way attention layer (masked LM) does not decode position by position")
            out = two_way_attention(q, k, v, mask, self.window_size)
        elif self.window_size < 0 or self.window_size + 1 >= length:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = sliding_window_attention(q, k, v, self.window_size)
        if cache is not None:
            self._fill_cache(cache, k, v, mask)
        return self.out_proj(rearrange(out, "b h l d -> b l (h d)"))

    # ------------------------------------------------------------------------------ decoding
    @torch.no_grad()
    def extend(self, x: torch.Tensor, cache: AttentionCache) -> torch.Tensor:
        """Continue from ``cache`` over a block of positions: x (B, K, D) -> (B, K, D), every row
        at the same position and no padding; the cache moves past the block. A windowed layer
        reads its ring (the last W + 1 keys) in position order before the block; a global one
        attends over every key so far, so its cost per position grows with them."""
        batch, length, _ = x.shape
        seen = int(cache.lengths.max())  # max_length only bounds it (a padded prefill)
        if batch > 1 and bool((cache.lengths != seen).any()):
            raise ValueError(f"extend needs every row at the same position; the cache's rows have seen "
                             f"{cache.lengths.tolist()} positions")
        positions = torch.arange(seen, seen + length, device=x.device)
        q, k, v = (rearrange(t, "b l h d -> b h l d") for t in self._qkv(x, positions))
        if cache.ring:
            capacity = cache.k.shape[2]
            held = min(seen, capacity)
            slots = torch.arange(seen - held, seen, device=x.device) % capacity  # in position order
            keys = torch.cat([cache.k[:, :, slots].to(k.dtype), k], dim=2)  # positions seen-held ..
            values = torch.cat([cache.v[:, :, slots].to(v.dtype), v], dim=2)
            # Queries of the held positions are zeros: their outputs are dropped.
            q_all = F.pad(q, (0, 0, held, 0))
            if self.window_size + 1 >= held + length:
                out = F.scaled_dot_product_attention(q_all, keys, values, is_causal=True)
            else:
                out = sliding_window_attention(q_all, keys, values, self.window_size)
            out = out[:, :, held:]
            kept = min(capacity, held + length)  # the ring now holds the last `kept` positions
            slots = torch.arange(seen + length - kept, seen + length, device=x.device) % capacity
            cache.k[:, :, slots] = keys[:, :, -kept:].to(cache.k.dtype)
            cache.v[:, :, slots] = values[:, :, -kept:].to(cache.v.dtype)
        else:
            if seen + length > cache.k.shape[2]:  # grow by doubling: copies stay linear in the length
                grown = (batch, cache.k.shape[1], max(2 * cache.k.shape[2], seen + length), cache.k.shape[3])
                for name in ("k", "v"):
                    old = getattr(cache, name)
                    new = old.new_zeros(grown)
                    new[:, :, :seen] = old[:, :, :seen]
                    setattr(cache, name, new)
            cache.k[:, :, seen:seen + length] = k.to(cache.k.dtype)
            cache.v[:, :, seen:seen + length] = v.to(cache.v.dtype)
            keys, values = cache.k[:, :, :seen + length], cache.v[:, :, :seen + length]  # (B, H, seen + K, Dh)
            out = attend_after_prefix(q, keys.to(q.dtype), values.to(q.dtype), seen)
        cache.lengths = cache.lengths + length
        cache.max_length = seen + length
        return self.out_proj(rearrange(out, "b h l d -> b l (h d)"))

    def allocate_cache(self, batch: int, capacity: int = 256, device=None, dtype=None) -> AttentionCache:
        device = device or self.Wqkv.weight.device
        dtype = dtype or self.Wqkv.weight.dtype
        ring = self.window_size >= 0
        capacity = self.window_size + 1 if ring else capacity
        shape = (batch, self.num_heads, capacity, self.head_dim)
        return AttentionCache(
            k=torch.zeros(shape, device=device, dtype=dtype),
            v=torch.zeros(shape, device=device, dtype=dtype),
            lengths=torch.zeros(batch, dtype=torch.long, device=device),
            ring=ring,
        )

    def _fill_cache(self, cache: AttentionCache, k, v, mask) -> None:
        batch, _, length, _ = k.shape
        lengths = mask.sum(-1) if mask is not None else torch.full((batch,), length, device=k.device)
        cache.lengths = lengths.to(torch.long)
        cache.max_length = length
        if not cache.ring:
            # slots = positions; slots >= a row's length are never read. Copied: steps write in place.
            cache.k = k.clone(memory_format=torch.contiguous_format)
            cache.v = v.clone(memory_format=torch.contiguous_format)
            return
        capacity = cache.k.shape[2]
        # Slot s holds the latest position p < length with p % capacity == s.
        slots = torch.arange(capacity, device=k.device)[None, :]  # (1, C)
        last = lengths[:, None] - 1
        src = slots + capacity * torch.div(last - slots, capacity, rounding_mode="floor")
        src = src.clamp(min=0, max=length - 1)  # slots never written yet hold junk, never read
        idx = src[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[-1])
        cache.k, cache.v = torch.gather(k, 2, idx), torch.gather(v, 2, idx)

    def step(self, x: torch.Tensor, cache: AttentionCache, active: torch.Tensor | None = None) -> torch.Tensor:
        """One position per row. x: (B, D) -> (B, D). Each row is at its own position
        ``cache.lengths``; rows where ``active`` is False leave the cache untouched."""
        pos = cache.lengths  # (B,)
        q, k, v = self._qkv(x[:, None], pos[:, None])  # (B, 1, H, Dh)
        capacity = cache.k.shape[2]
        if not cache.ring and cache.max_length >= capacity:
            grow = torch.zeros_like(cache.k)
            cache.k, cache.v = torch.cat([cache.k, grow], 2), torch.cat([cache.v, grow], 2)
            capacity *= 2
        slot = pos % capacity if cache.ring else pos
        rows = torch.arange(x.shape[0], device=x.device)
        k_new, v_new = k[:, 0], v[:, 0]  # (B, H, Dh)
        if active is not None:
            # inactive rows write their old entry back: no host sync, no copy of the whole cache
            keep = active[:, None, None]
            k_new = torch.where(keep, k_new, cache.k[rows, :, slot])
            v_new = torch.where(keep, v_new, cache.v[rows, :, slot])
        cache.k[rows, :, slot] = k_new.to(cache.k.dtype)
        cache.v[rows, :, slot] = v_new.to(cache.v.dtype)
        # An inactive row's query attends to its own old slot too: its output is discarded.
        seen = torch.clamp(pos + 1, max=capacity)  # slots holding this row's last positions
        used = min(capacity, cache.max_length + 1)  # slots any row has filled
        valid = torch.arange(used, device=x.device)[None, :] < seen[:, None]  # (B, used)
        out = F.scaled_dot_product_attention(
            rearrange(q, "b 1 h d -> b h 1 d"),
            cache.k[:, :, :used].to(q.dtype),
            cache.v[:, :, :used].to(q.dtype),
            attn_mask=valid[:, None, None, :],
        )
        cache.lengths = pos + (1 if active is None else active.long())
        cache.max_length += 1
        return self.out_proj(rearrange(out, "b h 1 d -> b (h d)"))
