"""Training FLOPs per base, in two conventions, for matching models on compute.

``torch.utils.flop_counter.FlopCounterMode`` counts matmuls, einsums, convolutions and attention
(elementwise work is not counted; grouped convolutions' backward is counted here at its real
cost, which torch's formula overstates ``groups`` times). For attention it charges every (query, key) pair of the score
matrix the kernel is called with: a causal layer of length L is charged L x L pairs, though a
causal kernel skips the upper triangle, and our sliding-window layer (blocks of W + 1 queries over
2W + 1 keys, masked) is charged its whole blocks. Two conventions follow:

* ``torch``: what the counter says (``flops_per_base``), but for a convolution's backward, counted
  at its forward's cost per gradient (torch's formula charges a grouped convolution's weight
  gradient as dense: the depthwise convolution of every Mamba-2 layer ``groups`` times over);
* ``causal``: attention charged only for the pairs a query actually attends to
  (``flops_per_base_causal``): (L + 1) / 2 keys per query on average for global causal attention,
  min(i, W) + 1 for query i under a window of W; the backward scaled the same way. Everything else
  is counted as in ``torch``. This is the work a causal kernel does, and the convention the
  benchmark's configs are sized on.

Counting runs the PyTorch reference (:func:`hnet_dna.backends.force_reference`) on a real batch,
on whatever device the model is on.
"""

from __future__ import annotations

import torch

from ... import backends

__all__ = ["count_step_flops", "count_training_flops", "training_flops_per_base", "attended_fraction", "CONVENTIONS"]

CONVENTIONS = ("torch", "causal")


def _cpu_attention_formulas() -> dict:
    """Formulas for the CPU flash-attention ops, which ``FlopCounterMode`` does not know (it counts
    the CUDA ones): without them attention scores would count 0 FLOPs on CPU. Torch's convention:
    the full score matrix the kernel is called with."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    mapping = {}
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None:
        mapping[fwd] = lambda query, key, value, *args, out_shape=None, **kwargs: fc.sdpa_flop_count(query, key, value)
    if bwd is not None:
        mapping[bwd] = lambda grad_out, query, key, value, *args, out_shape=None, **kwargs: fc.sdpa_backward_flop_count(
            grad_out, query, key, value)
    return mapping


def _band(s_q: int, s_k: int, causal_offset: int | None, left: int, device) -> torch.Tensor:
    """(s_q, s_k) bool: key j allowed for query i when j <= i + causal_offset (if given) and
    j >= i - left (if left >= 0)."""
    i = torch.arange(s_q, device=device)[:, None]
    j = torch.arange(s_k, device=device)[None, :]
    allowed = torch.ones(s_q, s_k, dtype=torch.bool, device=device)
    if causal_offset is not None:
        allowed &= j <= i + causal_offset
    if left >= 0:
        allowed &= j >= i - left
    return allowed


def attended_fraction(s_q: int, s_k: int, *, is_causal: bool = False, bottom_right: bool = False,
                      mask: torch.Tensor | None = None, window_left: int = -1, window_right: int = -1) -> float:
    """The fraction of the s_q x s_k (query, key) pairs that attention actually computes.

    ``is_causal``: query i sees keys 0 .. i (torch's top-left alignment; ``bottom_right``: keys
    0 .. i + s_k - s_q). ``mask``: a boolean (True = attend) or additive float mask broadcastable
    to (..., s_q, s_k); the fraction is its mean (which broadcasting does not change).
    ``window_left`` / ``window_right`` (flash-attn's window; -1 = unbounded).
    """
    offset = (s_k - s_q if bottom_right else 0) if is_causal else None
    if window_right >= 0:
        offset = window_right if offset is None else min(offset, window_right)
    if mask is None and window_left < 0:
        if offset is None:
            return 1.0
        # closed form: query i sees min(max(i + offset + 1, 0), s_k) keys
        i = torch.arange(s_q, dtype=torch.float64)
        return float((i + offset + 1).clamp(0, s_k).sum()) / (s_q * s_k)
    device = mask.device if mask is not None else "cpu"
    allowed = _band(s_q, s_k, offset, window_left, device)
    if mask is not None:
        keep = mask if mask.dtype == torch.bool else mask > float("-inf")
        allowed = keep & allowed
    return float(allowed.float().mean())


def _int_or(value, default: int) -> int:
    return default if value is None else int(value)


def _counting_formula(packet, torch_formula, unattended: list[int]):
    """Wrap torch's formula for one attention op: return its count (torch's convention) and append
    to ``unattended`` the part of it spent on pairs the op does not attend to, read from the op's
    own arguments (is_causal, mask or bias, window): the causal count is the total less those."""
    names = [a.name for a in packet.default._schema.arguments]
    bhsd = packet.__name__.startswith("_scaled_dot_product")  # else the (B, L, H, D) kernels

    def formula(*args, out_val=None, **kwargs):
        bound = dict(zip(names, args), **kwargs)
        full = torch_formula(*args, out_val=out_val, **kwargs)
        q, k = bound["query"], bound["key"]
        s_q, s_k = (q.shape[-2], k.shape[-2]) if bhsd else (q.shape[1], k.shape[1])
        mask = next((bound[n] for n in ("attn_mask", "attn_bias", "bias") if isinstance(bound.get(n), torch.Tensor)), None)
        custom = bound.get("custom_mask_type") or 0  # efficient attention: 1 top-left causal, 2 bottom-right
        fraction = attended_fraction(
            s_q, s_k, is_causal=bool(bound.get("is_causal")) or custom in (1, 2), bottom_right=custom == 2, mask=mask,
            window_left=_int_or(bound.get("window_size_left"), -1),
            window_right=_int_or(bound.get("window_size_right"), -1),
        )
        unattended.append(full - int(round(full * fraction)))
        return full

    formula._get_raw = True  # FlopCounterMode passes tensors, not shapes (the mask's values matter)
    return formula


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """``aten.convolution_backward``: each gradient asked for (input, weight) costs what the forward
    convolution costs (the same products, summed another way). Torch's own formula counts the
    weight gradient as a dense convolution whatever the groups, i.e. ``groups`` times too much:
    for Mamba-2's depthwise convolution (160 channels in the tiny models) that charged each layer
    about 0.2 MFLOP per base for work of about 1 kFLOP."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=bool(transposed))
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _formulas(unattended: list[int]) -> dict:
    """The ``custom_mapping`` for ``FlopCounterMode``: torch's count for every op (ours for the CPU
    attention ops it lacks, and for grouped convolutions' backward, which it overcounts); every
    attention op also appends its unattended FLOPs to ``unattended``."""
    from torch.utils.flop_counter import flop_registry, shape_wrapper

    attention = {k: v for k, v in flop_registry.items()
                 if isinstance(k, torch._ops.OpOverloadPacket) and "attention" in k.__name__}
    attention.update({k: shape_wrapper(v) for k, v in _cpu_attention_formulas().items()})
    mapping = {packet: _counting_formula(packet, f, unattended) for packet, f in attention.items()}
    mapping[torch.ops.aten.convolution_backward] = _conv_backward_flops  # FlopCounterMode passes it shapes
    return mapping


def count_step_flops(step, device_type: str = "cpu") -> dict[str, float]:
    """Forward + backward FLOPs of ``step()`` (a callable that runs a forward and returns a scalar
    loss), in total, in both conventions (``{"torch": ..., "causal": ...}``), with the PyTorch
    reference forced and autocast off (what is counted is the reference's arithmetic, the chunked
    SSD scan of Mamba-2 included). ``device_type``: where the model is (autocast is turned off there)."""
    from torch.utils.flop_counter import FlopCounterMode

    unattended: list[int] = []
    counter = FlopCounterMode(display=False, custom_mapping=_formulas(unattended))
    with backends.force_reference(), torch.autocast(device_type, enabled=False), counter:
        step().backward()
    total = counter.get_total_flops()
    return {"torch": float(total), "causal": float(total - sum(unattended))}


def count_training_flops(model, ids: torch.Tensor) -> dict[str, float]:
    """Forward + backward FLOPs of one language-model training step on ``ids`` (B, L), per base,
    in both conventions, from one counted step (:func:`count_step_flops`). ``ids`` are moved to the
    model's device: after ``Trainer.fit`` Lightning has moved the model back to the CPU, wherever
    it trained."""
    ids = ids.to(next(model.parameters()).device)
    was_training = model.training
    model.train()
    total = count_step_flops(lambda: model(ids, labels=ids).loss, ids.device.type)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {k: v / ids.numel() for k, v in total.items()}


def training_flops_per_base(model, ids: torch.Tensor, convention: str = "torch") -> float:
    """:func:`count_training_flops` in one convention (``torch`` or ``causal``)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return count_training_flops(model, ids)[convention]
