import pytest
import torch

from hnet_dna.model.chunking import (
    RoutingModule,
    boundary_index,
    confidence,
    dechunk,
    downsample,
    ema,
    ratio_loss,
    routing_probs,
    ste,
    upsample,
)

from ..conftest import make_model, padded_batch


def test_routing_probability_uses_q_on_previous_and_k_on_current():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    wq, wk = torch.randn(6, 6, dtype=torch.float64), torch.randn(6, 6, dtype=torch.float64)
    p = routing_probs(x, wq, wk)
    assert torch.equal(p[:, 0], torch.ones(2, dtype=torch.float64))
    for t in range(1, 7):
        q, k = x[:, t - 1] @ wq.T, x[:, t] @ wk.T
        cos = (q * k).sum(-1) / (q.norm(dim=-1) * k.norm(dim=-1))
        torch.testing.assert_close(p[:, t], (1 - cos) / 2)
    swapped = routing_probs(x, wk, wq)
    assert not torch.allclose(p, swapped)


def test_routing_module_init_and_decisions():
    router = RoutingModule(8).double()
    assert torch.equal(router.q_proj_layer.weight, torch.eye(8, dtype=torch.float64))
    assert router.q_proj_layer.bias is None and router.k_proj_layer.bias is None
    e0, e1 = [1.0] + [0] * 7, [0, 1.0] + [0] * 6
    x = torch.tensor([[e0, e0, [-1.0] + [0] * 7, e1, e1]], dtype=torch.float64)
    out = router(x, torch.tensor([[True, True, True, True, False]]))
    torch.testing.assert_close(out.boundary_prob, torch.tensor([[1.0, 0.0, 1.0, 0.5, 0.0]], dtype=torch.float64))
    # p > 0.5 strictly (p = 0.5 at position 3 is not a boundary)
    assert out.boundary_mask.tolist() == [[True, False, True, False, False]]
    # never on padding, even where p > 0.5
    x[0, 4] = -x[0, 3]  # a flip that would be a boundary
    padded = router(x, torch.tensor([[True, True, True, True, False]]))
    assert padded.boundary_prob[0, 4] > 0.5 and not padded.boundary_mask[0, 4]


def test_downsample_and_upsample_follow_the_boundaries():
    b = torch.tensor([[True, False, True, True, False, False], [True, False, False, False, False, False]])
    index, inner_mask = boundary_index(b)
    assert index.tolist()[0] == [0, 2, 3] and inner_mask.tolist() == [[True] * 3, [True, False, False]]
    x = torch.arange(12.0).view(2, 6, 1)
    assert downsample(x, index)[0, :, 0].tolist() == [0.0, 2.0, 3.0]
    z = torch.tensor([[[10.0], [20.0], [30.0]], [[7.0], [0.0], [0.0]]])
    assert upsample(z, b)[..., 0].tolist() == [[10, 10, 20, 30, 30, 30], [7, 7, 7, 7, 7, 7]]


def naive_ema(z, P):
    out, state = [], torch.zeros_like(z[:, 0])
    for j in range(z.shape[1]):
        state = P[:, j, None] * z[:, j] + (1 - P[:, j, None]) * state
        out.append(state)
    return torch.stack(out, 1)


@pytest.mark.parametrize("m", [1, 5, 64, 150])
def test_ema_equals_naive_loop_fp64(m):
    g = torch.Generator().manual_seed(m)
    z = torch.randn(3, m, 7, generator=g, dtype=torch.float64)
    P = torch.rand(3, m, generator=g, dtype=torch.float64).clamp(1e-4, 1 - 1e-4)
    torch.testing.assert_close(ema(z, P), naive_ema(z, P), rtol=1e-12, atol=1e-12)


def test_ema_stays_fp32_under_autocast():
    z, P = torch.randn(2, 100, 16), torch.rand(2, 100).clamp(1e-4, 1 - 1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = ema(z, P)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, ema(z, P), rtol=1e-6, atol=1e-6)


def test_ema_starts_from_zero_state():
    # The first output is P_0 * z_0 = (1 - 1e-4) z_0 for p_0 = 1, not exactly z_0.
    z = torch.randn(1, 3, 4, dtype=torch.float64)
    P = torch.full((1, 3), 1 - 1e-4, dtype=torch.float64)
    torch.testing.assert_close(ema(z, P)[:, 0], (1 - 1e-4) * z[:, 0])


def test_gradcheck_routing_probability():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    wq = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    wk = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(routing_probs, (x, wq, wk))


def test_gradcheck_ema():
    torch.manual_seed(2)
    z = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    P = torch.rand(2, 9, dtype=torch.float64).clamp(0.05, 0.95).requires_grad_()
    assert torch.autograd.gradcheck(lambda z, P: ema(z, P, chunk_size=4), (z, P))


def test_gradcheck_upsample_with_fixed_boundaries():
    b = torch.tensor([[True, False, True, True, False], [True, True, False, False, False]])
    z = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: upsample(z, b), (z,))


def test_ste_forward_is_one_and_backward_is_identity():
    c = torch.tensor([0.2, 0.7, 0.9], dtype=torch.float64, requires_grad=True)
    y = ste(c)
    assert torch.equal(y, torch.ones(3, dtype=torch.float64))
    g = torch.tensor([1.5, -2.0, 0.25], dtype=torch.float64)
    y.backward(g)
    # STE(c) = c + stopgrad(1 - c): d/dc = 1
    assert torch.equal(c.grad, g)


def test_dechunk_gradient_reaches_router_through_confidence():
    p = torch.tensor([[1.0, 0.3, 0.8]], dtype=torch.float64, requires_grad=True)
    b = p.detach() > 0.5
    c = confidence(p, b)
    assert torch.allclose(c.detach(), torch.tensor([[1.0, 0.7, 0.8]], dtype=torch.float64))
    z = torch.randn(1, 2, 2, dtype=torch.float64)
    P = torch.tensor([[1 - 1e-4, 0.8]], dtype=torch.float64)
    out = dechunk(z, P, b, c, torch.zeros(1, 3, 2, dtype=torch.float64))
    out.sum().backward()
    # d out_t / d p_t = +zbar for boundaries, -zbar for non-boundaries
    zbar = naive_ema(z, P)
    expected = torch.stack([zbar[0, 0].sum(), -zbar[0, 0].sum(), zbar[0, 1].sum()])
    torch.testing.assert_close(p.grad[0], expected)


def test_ratio_loss_matches_eq_10_on_hand_worked_values():
    b = torch.tensor([[True, False, False, True, False, False]])
    p = torch.tensor([[1.0, 0.2, 0.2, 0.8, 0.2, 0.2]])
    mask = torch.ones_like(b)
    loss, F_, G = ratio_loss(b, p, mask, 3.0)
    # F = 2/6, G = 2.6/6: 3/2 * (2 * 1/3 * 13/30 + 2/3 * 17/30) = 3/2 * 60/90 = 1.0
    assert F_.item() == pytest.approx(1 / 3) and G.item() == pytest.approx(2.6 / 6)
    assert loss.item() == pytest.approx(1.5 * (2 * (1 / 3) * (2.6 / 6) + (2 / 3) * (3.4 / 6)))
    # along F = G the minimum is 1 at 1/N; off it the loss can go below 1 (0 at F = 0, G = 1)
    assert ratio_loss(b, torch.full_like(p, 1 / 3), mask, 3.0)[0].item() == pytest.approx(1.0)
    none = torch.zeros_like(b)
    assert ratio_loss(none, torch.ones_like(p), mask, 3.0)[0].item() == pytest.approx(0.0)
    assert ratio_loss(b, torch.full_like(p, 0.5), mask, 3.0)[0].item() < 1.0


def test_ratio_loss_excludes_padding():
    b = torch.tensor([[True, False, True, True]])
    p = torch.tensor([[1.0, 0.1, 0.9, 0.7]])
    mask = torch.tensor([[True, False, False, False]]) | torch.tensor([[False, True, False, False]])
    loss, F_, G = ratio_loss(b, p, mask, 2.0)  # b is True on padding too: must not count
    assert F_.item() == pytest.approx(0.5) and G.item() == pytest.approx(0.55)
    assert loss.item() == pytest.approx(2.0 * (0.5 * 0.55 + 0.5 * 0.45))


@pytest.mark.parametrize("preset", ["tiny-hnet", "tiny-hnet-2stage"])
def test_every_sequence_start_is_a_boundary_at_every_level(preset):
    model = make_model(preset)
    ids, mask = padded_batch([40, 23, 7, 31], seed=4)
    out = model(ids, mask=mask)
    assert len(out.boundaries) == model.config.num_stages - 1
    for b, m, p in zip(out.boundaries, out.masks, out.boundary_probs):
        assert b[:, 0].all() and (p[:, 0] == 1).all()
        assert not (b & ~m).any() and (p[~m] == 0).all()
    # the inner level's rows are as long as the outer level's boundary counts
    for outer_b, inner_m in zip(out.boundaries[:-1], out.masks[1:]):
        assert torch.equal(outer_b.sum(-1), inner_m.sum(-1))
