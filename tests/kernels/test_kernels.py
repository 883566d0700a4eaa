"""The Triton chunking kernels (hnet_dna/kernels) against their references (model/chunking.py).

Without a GPU the kernels run under Triton's CPU interpreter (conftest.py sets TRITON_INTERPRET=1
before anything imports them), with small block sizes so that the interpreter, which runs every
program of the grid in Python, takes about a second per case; with a GPU the same tests run the
compiled kernels, at those block sizes and at the defaults. While a kernel runs, the PyTorch EMA
(``chunking.ema``, ``ssd_scan``) and ``routing_probs`` raise, so a kernel that secretly calls its
reference fails.

References run in fp64 on the very values the kernel gets (low-precision inputs are upcast), so
the comparisons measure the kernels' own error. Tolerances:

- values the kernels compute and store in fp32 (fp32 outputs, grad_P, grad_c, grad_residual, p,
  c, routing gradients of fp32 inputs): 1e-5 relative + 1e-5 absolute; the worst error seen uses
  6.4 % of it (fp32 rounding of sums over at most a few dozen terms);
- values stored in bf16 or fp16 (out with out_dtype = the compute dtype, grad_z, routing
  gradients of bf16 inputs): one unit in the last place of that dtype (relative 2**-7 for bf16,
  2**-10 for fp16). Rounding to nearest, as a GPU does, costs half of it; Triton's interpreter
  truncates fp32 -> bf16, which costs up to all of it;
- boundary decisions: identical wherever the fp64 reference's |p - 0.5| > 1e-3.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from hnet_dna import backends
from hnet_dna.model import chunking, ssd

from ..conftest import import_benchmark, make_model, padded_batch


def _cannot_run() -> str | None:
    """Why the kernels cannot run here (None: they can). Under CI that is a failure, not a skip."""
    try:
        import triton
    except ImportError:
        return "Triton is not installed (pip install -e '.[dev]')"
    version = tuple(int(part) for part in triton.__version__.split(".")[:2])
    if not torch.cuda.is_available() and version < (3, 9):
        return f"Triton {triton.__version__}'s CPU interpreter is too old (3.6 fails under NumPy 2): need >= 3.9"
    return None


if _cannot_run():  # pragma: no cover - CI installs Triton through the dev extra
    if os.environ.get("CI") == "true":
        pytest.fail(f"{_cannot_run()}: under CI the kernel tests must run, not skip", pytrace=False)
    pytest.skip(_cannot_run(), allow_module_level=True)

import hnet_dna.kernels.dechunk as kdechunk  # noqa: E402
import hnet_dna.kernels.routing as krouting  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROOT = Path(__file__).resolve().parents[2]
# Small tiles: several tiles and carry groups per row on tiny inputs, and quick in the interpreter.
SMALL = {"block_l": 8, "block_d": 8, "block_c": 2, "num_warps": 1}
SMALL_ROUTING = {"block_l": 8, "block_d": 8, "num_warps": 1}
DECHUNK_BLOCKS = [SMALL] + ([kdechunk.DEFAULT_BLOCKS] if DEVICE == "cuda" else [])
ROUTING_BLOCKS = [SMALL_ROUTING] + ([krouting.DEFAULT_BLOCKS] if DEVICE == "cuda" else [])
FP32 = {"rtol": 1e-5, "atol": 1e-5}
ULP = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10, torch.float32: 1e-5}


def _raise(*args, **kwargs):
    raise AssertionError("a kernel called its PyTorch reference")


@contextlib.contextmanager
def references_raise():
    """Make the PyTorch EMA, the SSD scan under it, and routing_probs raise while a kernel runs."""
    with pytest.MonkeyPatch.context() as mp:
        for module, name in [(chunking, "ema"), (chunking, "ssd_scan"), (ssd, "ssd_scan"), (chunking, "routing_probs")]:
            mp.setattr(module, name, _raise)
        yield


def grads_of(fn, inputs: list, weight: torch.Tensor):
    """Output of fn(*inputs) and the gradients of sum(output * weight) w.r.t. the float inputs."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    (out.double() * weight).sum().backward()
    return out.detach(), [t.grad for t in leaves if t.is_floating_point()]


# ------------------------------------------------------------------------------------ dechunk
def dechunk_inputs(L: int, D: int, dtype: torch.dtype, seed: int):
    """Five awkward rows: random boundaries; one boundary; every position a boundary (the longest
    compressed row, spanning several scan tiles); a padded row (boundaries only on its first 60 %);
    a row whose first position is not a boundary (positions before its first boundary take chunk
    0, as ``upsample`` clamps them)."""
    g = torch.Generator().manual_seed(seed)
    b = torch.rand(5, L, generator=g) < 0.35
    b[:, 0] = True
    b[1] = False
    b[1, 0] = True
    b[2] = True
    b[3, int(0.6 * L) :] = False
    b[4, :3] = False
    b[4, 3] = True
    M = int(b.sum(-1).max())
    z = torch.randn(5, M, D, generator=g).to(dtype)  # chunks past a row's count are padding
    P = torch.rand(5, M, generator=g).clamp(chunking.P_CLAMP, 1 - chunking.P_CLAMP)
    P[:, 0] = 1 - chunking.P_CLAMP  # p = 1 at a sequence start, as the model has it
    c = torch.rand(5, L, generator=g)
    residual = torch.randn(5, L, D, generator=g)
    return z, P, b, c, residual


@pytest.mark.parametrize("blocks", DECHUNK_BLOCKS, ids=lambda b: f"L{b['block_l']}xD{b['block_d']}")
@pytest.mark.parametrize(
    "L, D, dtype, out_dtype",
    [
        (37, 12, torch.float32, torch.float32),  # L not a multiple of the tile, D not a power of two
        (70, 5, torch.float32, torch.float32),  # 9 tiles, 5 carry groups; D below one tile
        (29, 12, torch.bfloat16, torch.bfloat16),  # the compute dtype in and out (the speed target)
        (21, 12, torch.bfloat16, torch.float32),
        (21, 12, torch.float16, torch.float16),
    ],
)
def test_fused_dechunk_matches_reference_forward_and_backward(L, D, dtype, out_dtype, blocks):
    z, P, b, c, residual = (t.to(DEVICE) for t in dechunk_inputs(L, D, dtype, seed=L + D))
    # The upstream gradient arrives in out's dtype: give both sides the same values.
    weight = torch.randn(5, L, D, generator=torch.Generator().manual_seed(1)).to(out_dtype).double().to(DEVICE)
    ref_out, ref_grads = grads_of(chunking.dechunk, [z.double(), P.double(), b, c.double(), residual.double()], weight)
    with references_raise():
        out, grads = grads_of(
            functools.partial(kdechunk.dechunk, out_dtype=out_dtype, **blocks), [z, P, b, c, residual], weight
        )
    assert out.dtype == out_dtype and out.shape == (5, L, D)
    torch.testing.assert_close(out.double(), ref_out, rtol=ULP[out_dtype], atol=1e-5)
    names = ["z", "P", "c", "residual"]
    tolerances = [{"rtol": ULP[dtype], "atol": 1e-5}, FP32, FP32, FP32]
    for name, got, want, tol in zip(names, grads, ref_grads, tolerances):
        torch.testing.assert_close(got.double(), want, **tol, msg=lambda m, name=name: f"grad {name}: {m}")
    assert grads[0].dtype == dtype
    # chunks past a row's boundary count are padding: exactly zero gradient
    counts = b.sum(-1)
    for row in range(5):
        assert (grads[0][row, counts[row] :] == 0).all() and (grads[1][row, counts[row] :] == 0).all()


def test_fused_dechunk_and_routing_at_the_default_blocks_with_several_channel_blocks():
    """The defaults (what the model uses): two channel blocks (64 + 8), a short last tile; two rows
    (random and padded) to keep the interpreter quick."""
    rows = [0, 3]
    z, P, b, c, residual = (t[rows].to(DEVICE) for t in dechunk_inputs(40, 72, torch.float32, seed=3))
    weight = torch.randn(2, 40, 72, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(DEVICE)
    ref_out, ref_grads = grads_of(chunking.dechunk, [z.double(), P.double(), b, c.double(), residual.double()], weight)
    with references_raise():
        out, grads = grads_of(kdechunk.dechunk, [z, P, b, c, residual], weight)
    torch.testing.assert_close(out.double(), ref_out, **FP32)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, **FP32)
    x, w_q, w_k, mask = (t.to(DEVICE) for t in routing_inputs(40, 72, torch.float32, False, seed=4))
    with references_raise():
        p, _, _ = krouting.routing(x, w_q, w_k, mask)
    p_ref, _, _ = reference_routing(x.double(), w_q.double(), w_k.double(), mask)
    torch.testing.assert_close(p.double(), p_ref, **FP32)


def test_fused_routing_passes_nan_on_like_the_reference():
    """A diverged model must not look like one that never cuts: NaN in, NaN p out."""
    x, w_q, w_k, mask = (t.to(DEVICE) for t in routing_inputs(21, 12, torch.float32, False, seed=6))
    x[0, 7, 3] = float("nan")
    with references_raise():
        p, _, _ = krouting.routing(x, w_q, w_k, mask, **SMALL_ROUTING)
    p_ref, _, _ = reference_routing(x, w_q, w_k, mask)
    assert torch.equal(p.isnan(), p_ref.isnan()) and p.isnan().sum() == 2  # positions 7 and 8 of row 0


def test_fused_dechunk_first_output_is_P0_z0_and_chunks_repeat():
    # A hand-checkable case: one row, chunks starting at 0, 2, 3; the state starts at zero.
    z = torch.tensor([[[2.0], [4.0], [8.0]]], device=DEVICE)
    P = torch.tensor([[0.5, 0.25, 1.0]], device=DEVICE)
    b = torch.tensor([[True, False, True, True, False, False]], device=DEVICE)
    res = torch.zeros(1, 6, 1, device=DEVICE)
    with references_raise():
        out = kdechunk.dechunk(z, P, b, torch.ones(1, 6, device=DEVICE), res, **SMALL)
    # zbar = [1, 0.25*4 + 0.75*1 = 1.75, 8]
    assert out[0, :, 0].tolist() == [1.0, 1.0, 1.75, 8.0, 8.0, 8.0]


def test_fused_dechunk_rejects_what_it_cannot_compute():
    z, P, b, c, res = dechunk_inputs(9, 4, torch.float32, seed=0)
    with pytest.raises(ValueError, match="do not agree"):
        kdechunk.dechunk(z, P[:, :-1], b, c, res)
    with pytest.raises(ValueError, match="bool"):
        kdechunk.dechunk(z, P, b.float(), c, res)


# ------------------------------------------------------------------------------------ routing
def routing_inputs(L: int, D: int, dtype: torch.dtype, tied: bool, seed: int):
    """Rows: random; padded (mask False after 60 %); with tied W_q = W_k also a constant row (no
    boundary but the first) and a row of alternating sign (every position a boundary)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, L, D, generator=g)
    w_q = torch.randn(D, D, generator=g) / D**0.5
    w_k = w_q.clone() if tied else torch.randn(D, D, generator=g) / D**0.5
    if tied:
        x[2] = x[2, :1]
        x[3] = x[3, :1] * (-1.0) ** torch.arange(L)[:, None]
    mask = torch.ones(4, L, dtype=torch.bool)
    mask[1, int(0.6 * L) :] = False
    return x.to(dtype), w_q.to(dtype), w_k.to(dtype), mask


def reference_routing(x, w_q, w_k, mask, b_for_c=None):
    """routing_probs + decision + confidence; c from ``b_for_c`` when given (the kernel's
    decisions), so that a near-0.5 flip cannot move gradients that are compared."""
    p = chunking.routing_probs(x, w_q, w_k)
    b = (p > 0.5) & mask
    return p, b, chunking.confidence(p, b if b_for_c is None else b_for_c)


@pytest.mark.parametrize("blocks", ROUTING_BLOCKS, ids=lambda b: f"L{b['block_l']}xD{b['block_d']}")
@pytest.mark.parametrize(
    "L, D, dtype, tied",
    [(37, 12, torch.float32, True), (37, 12, torch.float32, False), (23, 20, torch.bfloat16, False)],
)
def test_fused_routing_matches_reference_forward_and_backward(L, D, dtype, tied, blocks):
    x, w_q, w_k, mask = (t.to(DEVICE) for t in routing_inputs(L, D, dtype, tied, seed=D))
    g = torch.Generator().manual_seed(2)
    wp, wc = (torch.randn(4, L, generator=g, dtype=torch.float64).to(DEVICE) for _ in range(2))
    leaves = [t.detach().clone().requires_grad_() for t in (x, w_q, w_k)]
    with references_raise():
        p, b, c = krouting.routing(*leaves, mask, **blocks)
        ((p.double() * wp).sum() + (c.double() * wc).sum()).backward()
    got = [t.grad for t in leaves]
    ref_leaves = [t.detach().double().requires_grad_() for t in (x, w_q, w_k)]
    p_ref, b_ref, c_ref = reference_routing(*ref_leaves, mask, b_for_c=b)
    ((p_ref * wp).sum() + (c_ref * wc).sum()).backward()

    assert p.dtype == c.dtype == torch.float32 and b.dtype == torch.bool
    torch.testing.assert_close(p.double(), p_ref.detach(), **FP32)
    torch.testing.assert_close(c.double(), c_ref.detach(), **FP32)
    clear = (p_ref.detach() - 0.5).abs() > 1e-3
    assert clear.float().mean() > 0.9  # the comparison below covers almost every position
    assert torch.equal(b[clear], b_ref[clear])
    assert not b[~mask].any() and b[:, 0].all()
    if tied:  # the constant row cuts once, the alternating row everywhere
        assert b[2].sum() == 1 and b[3].all()
    for name, grad, leaf in zip(["x", "w_q", "w_k"], got, ref_leaves):
        assert grad.dtype == dtype
        tol = FP32 if dtype == torch.float32 else {"rtol": ULP[dtype], "atol": 1e-4}
        torch.testing.assert_close(grad.double(), leaf.grad, **tol, msg=lambda m, name=name: f"grad {name}: {m}")


def test_fused_routing_decisions_do_not_depend_on_the_input_dtype():
    # The math runs in fp32 whatever the input dtype: bf16 values give bit-identical p to the same
    # values held in fp32, so no decision near p = 0.5 can flip between the two.
    x, w_q, w_k, mask = (t.to(DEVICE) for t in routing_inputs(31, 16, torch.bfloat16, False, seed=5))
    with references_raise():
        low = krouting.routing(x, w_q, w_k, mask, **SMALL_ROUTING)
        high = krouting.routing(x.float(), w_q.float(), w_k.float(), mask, **SMALL_ROUTING)
    assert torch.equal(low[0], high[0]) and torch.equal(low[1], high[1]) and torch.equal(low[2], high[2])


# ------------------------------------------------------------------------------------- model
def test_the_model_dispatches_to_both_kernels_and_matches_the_reference(monkeypatch):
    """The wiring in RoutingModule and HNetStage: with the kernels standing in (as on a GPU),
    tiny-hnet's loss, logits, boundaries and every parameter gradient match the reference path."""
    model = make_model("tiny-hnet", dtype=torch.float32, seed=0).to(DEVICE)
    ids, mask = (t.to(DEVICE) for t in padded_batch([33, 20], seed=3))

    def run():
        model.zero_grad(set_to_none=True)
        out = model(ids, mask=mask, labels=ids)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    with backends.force_reference():
        ref, ref_grads = run()
    margin = min((p[m] - 0.5).abs().min().item() for p, m in zip(ref.boundary_probs, ref.masks))
    assert margin > 1e-4, "an input decision sits at p = 0.5 within rounding: pick another seed"

    calls = []

    def counted(name, fn, **blocks):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return fn(*args, **{**kwargs, **blocks})

        return wrapper

    stand_in = types.SimpleNamespace(
        fused_dechunk=counted("dechunk", kdechunk.dechunk, **SMALL),
        fused_routing=counted("routing", krouting.routing, **SMALL_ROUTING),
    )
    monkeypatch.setattr(backends, "chunking_kernels", lambda *tensors: stand_in)
    # Only the chunking differs between the two runs: on a GPU with mamba_ssm, its Mamba-2 kernel
    # (TF32 matmuls) would otherwise run here and not in the forced reference.
    monkeypatch.setattr(backends, "mamba_ssm_ops", lambda: None)
    import hnet_dna.model.stage as stage_module

    monkeypatch.setattr(stage_module, "dechunk", _raise)
    with references_raise():
        out, grads = run()
    assert calls == ["routing", "dechunk"]
    assert all(torch.equal(x, y) for x, y in zip(out.boundaries, ref.boundaries))
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-3, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_cpu_tensors_and_fp64_never_take_the_kernels():
    assert backends.chunking_kernels(torch.zeros(2)) is None
    if DEVICE == "cuda":
        assert backends.chunking_kernels(torch.zeros(2, device="cuda")) is not None
        assert backends.chunking_kernels(torch.zeros(2, device="cuda", dtype=torch.float64)) is None
        with backends.force_reference():
            assert backends.chunking_kernels(torch.zeros(2, device="cuda")) is None
    else:
        assert os.environ.get("TRITON_INTERPRET") == "1"  # conftest.py: the interpreter runs them here


def test_hnet_dna_runs_and_trains_without_triton():
    # Triton is an optional extra: block its import and use the model on CPU.
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from hnet_dna import HNetConfig, HNetForCausalLM, backends\n"
        "m = HNetForCausalLM(HNetConfig.from_preset('tiny-hnet'))\n"
        "ids = torch.randint(0, 4, (2, 30)); m(ids, labels=ids).loss.backward()\n"
        "assert backends.triton_kernels() is None and 'hnet_dna.kernels' not in sys.modules\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


# --------------------------------------------------------------------------------- benchmark
def test_benchmark_counts_the_bytes_the_issue_names():
    # benchmarks/kernel_speed.py: the forward floor at B=8 L=8192 D=512 M=2790, bf16 z and out, fp32
    # P, residual: read z, P, b, residual; write out = 224.5 MB (the issue's "about 225 MB").
    bench = import_benchmark("kernel_speed")
    fwd = bench.dechunk_bytes(8, 8192, 2790, 512, torch.bfloat16, torch.bfloat16, backward=False)
    assert fwd == 8 * 2790 * 512 * 2 + 8 * 2790 * 4 + 8 * 8192 + 8 * 8192 * 512 * 4 + 8 * 8192 * 512 * 2
    assert 224e6 < fwd < 225e6
    assert bench.routing_bytes(8, 8192, 512, backward=False) == 8 * 8192 * (2 * 512 * 4 + 1 + 4 + 1 + 4 + 12)
