"""What the Triton kernel benchmark (``kernel_speed.py``) measures with: the fewest bytes a dechunk or
routing pass must move, the timer, the inputs, the official dechunking path, and the device copy
that bandwidths are set against.
"""

from __future__ import annotations

import statistics
import time

import torch

from common import Report

SIZE = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}


# ------------------------------------------------------------------------------ byte counts
def dechunk_bytes(B: int, L: int, M: int, D: int, z_dtype, out_dtype, backward: bool) -> int:
    """The fewest bytes fused dechunking must move. Forward: read z (B, M, D), P (B, M) fp32, the
    boundary mask (B, L) bool and the residual (B, L, D) fp32; write out (B, L, D). (c is not read:
    STE's forward value is 1.) Backward adds: read g (out's dtype), z, P, the mask; write grad_z,
    grad_P, grad_c (fp32) and grad_residual (fp32; nothing when g is fp32: g itself is returned)."""
    zs, os_ = SIZE[z_dtype], SIZE[out_dtype]
    fwd = B * M * D * zs + B * M * 4 + B * L + B * L * D * 4 + B * L * D * os_
    if not backward:
        return fwd
    bwd = B * L * D * os_ + 2 * B * M * D * zs + 2 * B * M * 4 + B * L + B * L * 4 + (B * L * D * 4 if os_ != 4 else 0)
    return fwd + bwd


def routing_bytes(B: int, L: int, D: int, backward: bool) -> int:
    """The fused routing kernel's bytes (the projection matmul is not counted). Forward: read
    [q | k] (B, L, 2D) fp32 and the mask; write p, c (fp32), b (bool) and, for the backward, cos,
    |q_{t-1}|, |k_t| (fp32). Backward: read [q | k], dL/dp, dL/dc, b and the saved values; write
    d[q | k]."""
    fwd = B * L * (2 * D * 4 + 1 + 4 + 1 + 4 + 12)
    if not backward:
        return fwd
    return fwd + B * L * (2 * D * 4 + 8 + 1 + 12 + 2 * D * 4)


def bench(fn, device: str, grad_to_none=None) -> float:
    """Median milliseconds of fn()."""
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")
    fn()  # CPU (interpreter): a few plain runs, for the logic only
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------------------------- inputs
def dechunk_inputs(B, L, D, device, z_dtype=torch.bfloat16, seed=0):
    """About one boundary in three positions (the DNA target; ~2,790 chunks per row at L = 8192),
    every row starting with one."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    b = torch.rand(B, L, generator=g) < 1 / 3
    b[:, 0] = True
    M = int(b.sum(-1).max())
    z = torch.randn(B, M, D, generator=g).to(device, z_dtype)
    P = torch.rand(B, M, generator=g).clamp(1e-4, 1 - 1e-4).to(device)
    c = torch.rand(B, L, generator=g).to(device)
    residual = torch.randn(B, L, D, generator=g).to(device)
    return z, P, b.to(device), c, residual


def official_dechunk(mamba_chunk_scan_combined, headdim: int = 32, chunk: int = 256):
    """The official path: the EMA through mamba_ssm's SSD kernel (A = -1, dt = -log(1 - P),
    x = z / dt, B = P, C = 1, bf16 inputs), then gather + STE + residual in PyTorch."""
    from hnet_dna.model.chunking import ste, upsample

    def run(z, P, b, c, residual):
        Bn, M, D = z.shape
        heads = D // headdim
        dt = -torch.log1p(-P.float())  # (B, M)
        x = (z / dt[..., None]).to(z.dtype).view(Bn, M, heads, headdim)
        A = -torch.ones(heads, device=z.device, dtype=torch.float32)
        Bm = P.to(z.dtype)[:, :, None, None]  # (B, M, 1 group, state 1)
        y = mamba_chunk_scan_combined(x, dt[..., None].expand(Bn, M, heads), A, Bm, torch.ones_like(Bm), chunk_size=chunk)
        zbar = y.reshape(Bn, M, D)
        return upsample(zbar, b) * ste(c)[..., None] + residual

    return run


# ------------------------------------------------------------------------------- bandwidth
def copy_bandwidth(device: str, report: Report) -> float:
    n = (1 << 30) if device == "cuda" else (1 << 24)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), device)
    bw = 2 * n / (ms * 1e-3)
    report.write(f"\nDevice copy ({n / 2**30:.2f} GiB read + written): {ms:.3f} ms, {bw / 1e12:.2f} TB/s (the 100 % below).")
    return bw


def timed_pass(fn, inputs, grad, device, backward: bool) -> float:
    leaves = [t.requires_grad_() if t.is_floating_point() else t for t in inputs]
    floats = [t for t in leaves if t.is_floating_point()]
    if backward:
        return bench(lambda: fn(*leaves).backward(grad), device, grad_to_none=floats)
    return bench(lambda: fn(*leaves), device)
