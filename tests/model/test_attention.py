import math

import pytest
import torch
import torch.nn.functional as F

from hnet_dna.model.attention import (
    CausalSelfAttention,
    _grouped_after_prefix,
    apply_rotary,
    attend_after_prefix,
    blocked_sliding_window_attention,
    sliding_window_attention,
)


def make(window=-1, rotary=8, seed=0, d=32, heads=2):
    torch.manual_seed(seed)
    return CausalSelfAttention(d, heads, rotary_emb_dim=rotary, window_size=window).double()


def naive_attention(attn: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Official semantics written out: packed (three, heads, dim) projection, non-interleaved rotary
    on the first rotary_emb_dim channels of q and k, keys i - W .. i, softmax scale 1/sqrt(dim)."""
    batch, length, d = x.shape
    h, dh, rot = attn.num_heads, attn.head_dim, attn.rotary_emb_dim
    qkv = (x @ attn.Wqkv.weight.T).view(batch, length, 3, h, dh)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if rot:
        # flash-attn computes the frequencies in fp32
        inv_freq = (1.0 / 10000 ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot)).double()
        for t in range(length):
            cos, sin = torch.cos(t * inv_freq), torch.sin(t * inv_freq)
            for tensor in (q, k):
                x1, x2 = tensor[:, t, :, : rot // 2].clone(), tensor[:, t, :, rot // 2 : rot].clone()
                tensor[:, t, :, : rot // 2] = x1 * cos - x2 * sin
                tensor[:, t, :, rot // 2 : rot] = x2 * cos + x1 * sin
    out = torch.zeros(batch, length, h, dh, dtype=x.dtype)
    for i in range(length):
        lo = 0 if attn.window_size < 0 else max(0, i - attn.window_size)
        scores = torch.einsum("bhd,bjhd->bhj", q[:, i], k[:, lo : i + 1]) / math.sqrt(dh)
        out[:, i] = torch.einsum("bhj,bjhd->bhd", scores.softmax(-1), v[:, lo : i + 1])
    return out.reshape(batch, length, d) @ attn.out_proj.weight.T


@pytest.mark.parametrize("window, rotary", [(-1, 8), (3, 8), (0, 16), (5, 0)])
def test_forward_equals_naive_official_semantics(window, rotary):
    attn = make(window, rotary)
    x = torch.randn(2, 13, 32, dtype=torch.float64)
    torch.testing.assert_close(attn(x), naive_attention(attn, x), rtol=1e-10, atol=1e-10)


def test_window_means_keys_i_minus_w_to_i():
    attn = make(window=3)
    x = torch.randn(1, 12, 32, dtype=torch.float64)
    base = attn(x)
    x2 = x.clone()
    x2[0, 4] += 1.0  # position 4 is seen by queries 4..7 only
    changed = (attn(x2) - base).abs().amax(-1)[0] > 1e-12
    assert changed.tolist() == [False] * 4 + [True] * 4 + [False] * 4


def test_rotary_touches_only_the_first_channels_and_is_relative():
    inv_freq = 1.0 / 10000 ** (torch.arange(0, 4, 2, dtype=torch.float64) / 4)
    x = torch.randn(1, 6, 2, 10, dtype=torch.float64)
    r = apply_rotary(x, torch.arange(6), inv_freq)
    assert torch.equal(r[..., 4:], x[..., 4:])
    assert torch.equal(r[:, 0], x[:, 0])  # position 0: angle 0
    # q·k after rotary depends on the offset only
    q, k = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    def dot(i, j):
        qi = apply_rotary(q.view(1, 1, 1, 10), torch.tensor([i]), inv_freq)
        kj = apply_rotary(k.view(1, 1, 1, 10), torch.tensor([j]), inv_freq)
        return (qi * kj).sum()
    torch.testing.assert_close(dot(7, 3), dot(14, 10))


@pytest.mark.parametrize("window", [-1, 4])
def test_step_equals_forward_including_ring_wraparound(window):
    attn = make(window=window, seed=1)
    x = torch.randn(3, 17, 32, dtype=torch.float64)  # longer than the ring of 5 slots
    full = attn(x)
    cache = attn.allocate_cache(3, capacity=4)  # a global cache must grow past 4
    stepped = torch.stack([attn.step(x[:, t], cache) for t in range(17)], 1)
    torch.testing.assert_close(stepped, full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("window", [-1, 4])
def test_prefill_of_padded_rows_then_steps(window):
    attn = make(window=window, seed=2)
    x = torch.randn(2, 15, 32, dtype=torch.float64)
    mask = torch.ones(2, 15, dtype=torch.bool)
    mask[0, 9:] = False
    cache = attn.allocate_cache(2)
    attn(x, mask=mask, cache=cache)
    assert cache.lengths.tolist() == [9, 15]
    nxt = torch.randn(2, 32, dtype=torch.float64)
    out = attn.step(nxt, cache)
    ref0 = attn(torch.cat([x[:1, :9], nxt[:1, None]], 1))[0, -1]
    ref1 = attn(torch.cat([x[1:], nxt[1:, None]], 1))[0, -1]
    torch.testing.assert_close(out[0], ref0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[1], ref1, rtol=1e-10, atol=1e-10)


def test_inactive_rows_keep_their_cache():
    attn = make(window=-1, seed=3)
    cache = attn.allocate_cache(2)
    attn.step(torch.randn(2, 32, dtype=torch.float64), cache)
    k_before = cache.k.clone()
    attn.step(torch.randn(2, 32, dtype=torch.float64), cache, active=torch.tensor([False, True]))
    assert cache.lengths.tolist() == [1, 2]
    assert torch.equal(cache.k[0], k_before[0])


WINDOW_CASES = [(100, 7), (100, 31), (64, 63), (65, 63), (50, 0), (9, 3), (8, 7), (300, 1)]


@pytest.mark.parametrize("attention", [sliding_window_attention, blocked_sliding_window_attention])
@pytest.mark.parametrize("length, window", WINDOW_CASES)
def test_blockwise_sliding_window_equals_a_dense_mask(length, window, attention):
    # sliding_window_attention on CPU: two causal halves merged by log-sum-exp; the blocked one:
    # one masked attention per block (other devices)
    g = torch.Generator().manual_seed(length + window)
    q, k, v = (torch.randn(2, 3, length, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    offset = torch.arange(length)[:, None] - torch.arange(length)[None, :]
    weights = torch.randn(2, 3, length, 8, generator=g, dtype=torch.float64)
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=(offset >= 0) & (offset <= window))
    got = attention(q, k, v, window)
    torch.testing.assert_close(got, dense, rtol=1e-12, atol=1e-12)
    want_grads = torch.autograd.grad((dense * weights).sum(), [q, k, v])
    for g_got, g_want in zip(torch.autograd.grad((got * weights).sum(), [q, k, v]), want_grads):
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("how", ["dispatch", "grouped", "grouped_small"])
def test_attention_after_a_prefix_equals_the_bottom_rows_of_causal_attention(how):
    """Queries at positions prefix .. prefix + K - 1 (on CPU two flash attentions merged; the
    masked form elsewhere, in groups when the scores would be large): the last K rows of causal
    attention over prefix + K positions."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 8, dtype=torch.float64) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for prefix in (0, 1, 25):
        if how == "dispatch":
            got = attend_after_prefix(q[:, :, prefix:], k, v, prefix)
        else:
            got = _grouped_after_prefix(q[:, :, prefix:], k, v, prefix, 1 << 25 if how == "grouped" else 2 * 3 * 40 * 3)
        torch.testing.assert_close(got, full[:, :, prefix:], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("window", [-1, 3, 9])
def test_extend_over_blocks_equals_forward_including_ring_wraparound(window):
    attn = make(window=window, seed=4)
    x = torch.randn(1, 30, 32, dtype=torch.float64)
    full = attn(x)
    cache = attn.allocate_cache(1, capacity=4)  # a global cache grows past 4 slots
    got = torch.cat([attn.extend(x[:, s:e], cache) for s, e in ((0, 2), (2, 3), (3, 17), (17, 30))], dim=1)
    torch.testing.assert_close(got, full, rtol=1e-12, atol=1e-12)
    assert cache.max_length == 30 and cache.lengths.tolist() == [30]


def test_attention_after_a_prefix_with_gradients_takes_the_differentiable_path():
    """With gradients the CPU merge of two flash attentions (not differentiated by autograd) is
    not used: the gradients are those of causal attention over the whole sequence."""
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 30, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)[:, :, 12:]
    grads_full = torch.autograd.grad(full.square().sum(), (q, k, v))
    got = attend_after_prefix(q[:, :, 12:], k, v, 12)
    grads_got = torch.autograd.grad(got.square().sum(), (q, k, v))
    for a, b in zip(grads_got, grads_full):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
