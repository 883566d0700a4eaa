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
