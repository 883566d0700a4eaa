"""GPU checks: the fast paths against the PyTorch reference. Skipped without CUDA; run on a GPU
machine by ``benchmarks/gpu_check.sh``."""

import pytest
import torch

from hnet_dna import backends

from .conftest import make_model, padded_batch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")
needs_mamba_ssm = pytest.mark.skipif(
    not torch.cuda.is_available() or backends.mamba_ssm_ops() is None, reason="needs mamba_ssm"
)
needs_triton = pytest.mark.skipif(
    not torch.cuda.is_available() or backends.triton_kernels() is None,
    reason="needs a CUDA GPU and Triton (benchmarks/gpu_check.sh kernels)",
)


@needs_mamba_ssm
def test_mamba2_kernel_matches_reference_forward_backward_and_final_state():
    from hnet_dna.model.mamba2 import Mamba2

    torch.manual_seed(0)
    m = Mamba2(256, d_state=64, headdim=32, chunk_size=64).cuda()
    u = torch.randn(3, 333, 256, device="cuda")
    mask = torch.ones(3, 333, dtype=torch.bool, device="cuda")
    mask[1, 200:] = False
    results = []
    for force in (False, True):
        with backends.force_reference(force):
            uu = u.clone().requires_grad_()
            cache = m.allocate_cache(3)
            y = m(uu, mask=mask, cache=cache)
            (y * torch.linspace(-1, 1, 256, device="cuda")).sum().backward()
            results.append((y.detach(), uu.grad, cache.ssm_state, m.A_log.grad.clone()))
            m.zero_grad()
    for fast, ref in zip(*results):
        torch.testing.assert_close(fast, ref, rtol=2e-3, atol=2e-3)


@needs_mamba_ssm
def test_mamba2_kernel_matches_reference_under_bf16_autocast():
    from hnet_dna.model.mamba2 import Mamba2

    torch.manual_seed(1)
    m = Mamba2(256, d_state=128, headdim=64, chunk_size=256).cuda()
    u = torch.randn(2, 1000, 256, device="cuda")
    outs = []
    for force in (False, True):
        with backends.force_reference(force), torch.autocast("cuda", dtype=torch.bfloat16):
            outs.append(m(u).float())
    rel = (outs[0] - outs[1]).norm() / outs[1].norm()
    assert rel < 2e-2


@pytest.mark.parametrize("preset", ["tiny-hnet", "tiny-hnet-2stage"])
def test_model_on_cuda_matches_cpu_reference(preset):
    model = make_model(preset, dtype=torch.float32, seed=1)
    ids, mask = padded_batch([300, 211, 64], seed=2)
    ref = model(ids, mask=mask, labels=ids)
    model.cuda()
    out = model(ids.cuda(), mask=mask.cuda(), labels=ids.cuda())
    torch.testing.assert_close(out.logits.cpu(), ref.logits, rtol=2e-3, atol=2e-3)
    for b_gpu, b_cpu in zip(out.boundaries, ref.boundaries):
        agree = (b_gpu.cpu() == b_cpu).float().mean().item()
        assert agree > 0.99  # decisions within rounding of p = 0.5 may flip


def test_bf16_autocast_training_step():
    model = make_model("tiny-hnet", dtype=torch.float32, seed=3).cuda()
    ids, mask = padded_batch([512, 400], seed=4)
    ids, mask = ids.cuda(), mask.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(ids, mask=mask, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_cached_generation_on_cuda():
    model = make_model("tiny-hnet-2stage", dtype=torch.float32, seed=5).cuda()
    ids, mask = padded_batch([40, 25], seed=6)
    gen = model.generate(ids.cuda(), mask=mask.cuda(), max_new_tokens=20, output_logits=True,
                         generator=torch.Generator(device="cuda").manual_seed(0))
    full = model(gen.sequences, mask=gen.mask)
    for row, n in enumerate([40, 25]):
        torch.testing.assert_close(gen.logits[row], full.logits[row, n - 1 : n + 19], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("layout", [None, ["m2t1", ["M2"], "m2"]])
def test_blocks_continuing_from_a_cache_on_cuda(layout):
    """extend() on the GPU (mamba_ssm's scan from an initial state where installed) against the
    full forward; fp32, so a tolerance rather than fp64 equality."""
    overrides = {} if layout is None else {"arch_layout": layout, "d_intermediate": [0, 128]}
    model = make_model("tiny-hnet", dtype=torch.float32, seed=7, **overrides).cuda().eval()
    ids, _ = padded_batch([300], seed=8)
    ids = ids.cuda()
    with torch.no_grad():
        full = model(ids).logits
    cache = model.allocate_cache(1)
    got = torch.cat([model.extend(ids[:, s:s + 70], cache) for s in range(0, 300, 70)], dim=1)
    torch.testing.assert_close(got, full, rtol=1e-3, atol=1e-3)


@needs_triton
def test_fused_dechunk_at_model_size_with_default_blocks():
    """Many tiles and carry groups per row (the kernel tests use tiny inputs), compiled kernels."""
    from hnet_dna.kernels.dechunk import dechunk as fused
    from hnet_dna.model.chunking import dechunk

    g = torch.Generator().manual_seed(0)
    B, L, D = 2, 5000, 512
    b = torch.rand(B, L, generator=g) < 1 / 3
    b[:, 0] = True
    b[1, 3000:] = False  # a padded row
    M = int(b.sum(-1).max())
    z = torch.randn(B, M, D, generator=g).bfloat16()
    P = torch.rand(B, M, generator=g).clamp(1e-4, 1 - 1e-4)
    c, res, w = torch.rand(B, L, generator=g), torch.randn(B, L, D, generator=g), torch.randn(B, L, D, generator=g)
    results = []
    for fn, dtype in ((dechunk, torch.float64), (fused, None)):
        leaves = [t.cuda().to(dtype or t.dtype).requires_grad_() for t in (z, P, c, res)]
        out = fn(leaves[0], leaves[1], b.cuda(), leaves[2], leaves[3])
        (out.double() * w.cuda().double()).sum().backward()
        results.append([out.detach().double()] + [t.grad.double() for t in leaves])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


@needs_triton
def test_chunking_kernels_in_a_bf16_training_step_match_the_reference_chunking(monkeypatch):
    model = make_model("tiny-hnet-2stage", dtype=torch.float32, seed=7).cuda()
    ids, mask = (t.cuda() for t in padded_batch([700, 513, 64], seed=8))
    runs = []
    for kernels in (True, False):
        if not kernels:  # the reference for routing and dechunking only (mamba_ssm stays on)
            monkeypatch.setattr(backends, "chunking_kernels", lambda *tensors: None)
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids, mask=mask, labels=ids)
        out.loss.backward()
        runs.append((out, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (fast, fast_grads), (ref, ref_grads) = runs
    torch.testing.assert_close(fast.loss, ref.loss, rtol=2e-3, atol=2e-3)
    same = all(torch.equal(x, y) for x, y in zip(fast.boundaries, ref.boundaries))
    for b_fast, b_ref in zip(fast.boundaries, ref.boundaries):
        assert (b_fast == b_ref).float().mean() > 0.99  # a decision within rounding of 0.5 may flip
    if same:  # gradients are comparable only when the chunkings agree
        for g_fast, g_ref in zip(fast_grads, ref_grads):
            assert (g_fast - g_ref).norm() <= 2e-2 * g_ref.norm() + 1e-6
