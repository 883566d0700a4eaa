import pytest
import torch

from hnet_dna.model.ssd import segment_sum, ssd_scan, ssd_sequential_ref

from ..conftest import kept_for_backward


def random_inputs(length, heads=4, groups=2, p=3, n=5, batch=2, seed=0, fast_decay=False):
    """fast_decay: positions 10-29 of the first row decay 50x faster, so the chunks there are too
    wide for the factored within-chunk form and take the direct one (the rest stay factored)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, p, generator=g, dtype=torch.float64)
    a = -torch.rand(batch, length, heads, generator=g, dtype=torch.float64) * 2
    if fast_decay:
        a[0, 10:30] *= 50
    B = torch.randn(batch, length, groups, n, generator=g, dtype=torch.float64)
    C = torch.randn(batch, length, groups, n, generator=g, dtype=torch.float64)
    return x, a, B, C


@pytest.mark.parametrize("fast_decay", [False, True])
@pytest.mark.parametrize("length, chunk", [(37, 8), (64, 16), (5, 16), (1, 4), (50, 50)])
def test_chunked_scan_equals_sequential_recurrence_fp64(length, chunk, fast_decay):
    x, a, B, C = random_inputs(length, fast_decay=fast_decay)
    y, final = ssd_scan(x, a, B, C, chunk_size=chunk, return_final_state=True)
    y_ref, final_ref = ssd_sequential_ref(x, a, B, C, return_final_state=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, final_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length, chunk", [(23, 8), (300, 4)])  # (300, 4): chunks carried by a scan of chunks
def test_initial_state_is_carried(length, chunk):
    x, a, B, C = random_inputs(length)
    init = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    y, final = ssd_scan(x, a, B, C, chunk_size=chunk, initial_state=init, return_final_state=True)
    y_ref, final_ref = ssd_sequential_ref(x, a, B, C, initial_state=init, return_final_state=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, final_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("decay_scale", [1.0, 40.0])  # 40: every chunk past 2 positions too wide to factor
def test_chunk_size_changes_nothing_but_rounding_in_fp32(decay_scale):
    # The module docstring's bound: a decay factor's fp32 error is about 1e-7 relative per unit of
    # the chunk's total log decay (here about chunk_size * mean |a| = chunk_size * decay_scale).
    inputs = random_inputs(100)
    inputs[1].mul_(decay_scale)
    want = ssd_sequential_ref(*inputs)
    x, a, B, C = (t.float() for t in inputs)
    for cs in (4, 16, 100, 128):
        total = min(cs, 100) * decay_scale
        bound = 1e-7 * max(total, 1.0) * want.abs().max().item()
        torch.testing.assert_close(ssd_scan(x, a, B, C, chunk_size=cs).double(), want, rtol=0, atol=bound)


def test_fp32_gradients_stay_finite_where_decays_are_too_fast_to_factor():
    # log decay ~ -40 a step: chunks of 16 span ~640, past fp32's exponent range either way
    inputs = random_inputs(64)
    inputs[1].mul_(40.0)
    weights = torch.randn(2, 64, 4, 3, dtype=torch.float64)
    grads = []
    for dtype in (torch.float32, torch.float64):
        leaves = [t.to(dtype).requires_grad_() for t in inputs]
        y = ssd_scan(*leaves, chunk_size=16)
        grads.append(torch.autograd.grad((y * weights.to(dtype)).sum(), leaves))
    for got, want in zip(*grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_sequential_reference_is_the_recurrence():
    # one head, one channel, state size 1: y_t = sum_{s<=t} prod_{s<r<=t} decay_r * x_s
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 3, 1, 1)
    a = torch.log(torch.tensor([0.5, 0.5, 0.25], dtype=torch.float64)).view(1, 3, 1)
    ones = torch.ones(1, 3, 1, 1, dtype=torch.float64)
    y = ssd_sequential_ref(x, a, ones, ones).flatten().tolist()
    assert y == [1.0, 2.5, 3.625]


def test_segment_sum():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    s = segment_sum(x)
    assert s[3, 1] == 3 + 4 and s[2, 2] == 0 and s[3, 0] == 2 + 3 + 4
    assert torch.isinf(s[0, 1]) and s[0, 1] < 0


def test_groups_must_divide_heads():
    x, a, B, C = random_inputs(8, heads=3, groups=2)
    with pytest.raises(ValueError, match="3 heads cannot share 2 groups"):
        ssd_scan(x, a, B, C, chunk_size=4)


@pytest.mark.parametrize("length, chunk, fast_decay", [(300, 4, False), (37, 8, False), (64, 16, False), (64, 16, True)])
def test_gradients_equal_the_sequential_recurrence_fp64(length, chunk, fast_decay):
    # (300, 4): 75 chunks carried by a scan of chunks, itself of 19 chunks, ... (the recursion);
    # fast_decay: wide chunks in the direct form beside factored ones
    inputs = [t.requires_grad_() for t in random_inputs(length, fast_decay=fast_decay)]
    init = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, length, 4, 3, dtype=torch.float64)
    grads = []
    for scan in (lambda *a: ssd_scan(*a, chunk_size=chunk, initial_state=init, return_final_state=True),
                 lambda *a: ssd_sequential_ref(*a, initial_state=init, return_final_state=True)):
        y, final = scan(*inputs)
        loss = (y * weights).sum() + final.pow(2).sum()
        grads.append(torch.autograd.grad(loss, [*inputs, init]))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)



@pytest.mark.parametrize("length, chunk, fast_decay", [(37, 8, False), (64, 16, True)])
def test_x_scale_is_scanning_the_scaled_input_values_and_gradients_fp64(length, chunk, fast_decay):
    x, a, B, C = random_inputs(length, fast_decay=fast_decay)
    scale = torch.rand(2, length, 4, dtype=torch.float64) + 0.1
    init = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    weights = torch.randn(2, length, 4, 3, dtype=torch.float64)
    results = []
    for scaled in (True, False):
        leaves = [t.clone().requires_grad_() for t in (x, a, B, C, scale)]
        xi, ai, Bi, Ci, si = leaves
        if scaled:
            y, final = ssd_scan(xi, ai, Bi, Ci, chunk, init, True, x_scale=si)
        else:
            y, final = ssd_sequential_ref(xi * si[..., None], ai, Bi, Ci, init, True)
        loss = (y * weights).sum() + final.pow(2).sum()
        results.append([y, final, *torch.autograd.grad(loss, leaves)])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_scan_keeps_its_inputs_and_chunk_sized_tensors_only():
    # Beyond its inputs, what the scan keeps for the backward is chunk states (here half of x's
    # size: H*P*N per chunk of 8 positions), decays and (T, T) per chunk: 1.8 x's size. Autograd
    # of the plain ops would also keep x-sized products (the weighted input of each chunk's end
    # state, f * x and the product before the row scale): 5.1 x's size before they were rebuilt.
    torch.manual_seed(0)
    x = torch.randn(2, 256, 4, 16, requires_grad=True)
    a = (-torch.rand(2, 256, 4)).requires_grad_()
    B, C = (torch.randn(2, 256, 1, 4, requires_grad=True) for _ in range(2))
    scale = (torch.rand(2, 256, 4) + 0.1).requires_grad_()
    with kept_for_backward(exclude=(x, a, B, C, scale)) as kept:
        ssd_scan(x, a, B, C, chunk_size=8, x_scale=scale)
    assert sum(kept.values()) / (x.numel() * x.element_size()) < 2.3
