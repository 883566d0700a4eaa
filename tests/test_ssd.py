import pytest
import torch

from hnet_dna.model.ssd import segment_sum, ssd_scan, ssd_sequential_ref


def random_inputs(length, heads=4, groups=2, p=3, n=5, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, p, generator=g, dtype=torch.float64)
    a = -torch.rand(batch, length, heads, generator=g, dtype=torch.float64) * 2
    B = torch.randn(batch, length, groups, n, generator=g, dtype=torch.float64)
    C = torch.randn(batch, length, groups, n, generator=g, dtype=torch.float64)
    return x, a, B, C


@pytest.mark.parametrize("length, chunk", [(37, 8), (64, 16), (5, 16), (1, 4), (50, 50)])
def test_chunked_scan_equals_sequential_recurrence_fp64(length, chunk):
    x, a, B, C = random_inputs(length)
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


def test_chunk_size_changes_nothing_but_rounding_in_fp32():
    x, a, B, C = (t.float() for t in random_inputs(100))
    outs = [ssd_scan(x, a, B, C, chunk_size=cs) for cs in (4, 16, 100, 128)]
    for y in outs[1:]:
        torch.testing.assert_close(y, outs[0], rtol=1e-5, atol=1e-5)


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


@pytest.mark.parametrize("length, chunk", [(300, 4), (37, 8), (64, 16)])
def test_gradients_equal_the_sequential_recurrence_fp64(length, chunk):
    # (300, 4): 75 chunks carried by a scan of chunks, itself of 19 chunks, ... (the recursion)
    inputs = [t.requires_grad_() for t in random_inputs(length)]
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

