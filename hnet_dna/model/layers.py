"""RMSNorm and the SwiGLU MLP, with the official H-Net parameter names."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["RMSNorm", "SwiGLU", "round_up", "hi", "HI_DTYPE", "rmsnorm_ref"]


def hi(t: torch.Tensor) -> torch.Tensor:
    """Upcast to at least fp32 (fp64 stays fp64, so the model runs end to end in fp64 for tests)."""
    return t if t.dtype == torch.float64 else t.float()


def HI_DTYPE(t: torch.Tensor) -> torch.dtype:
    """The accumulation dtype that goes with a tensor or parameter: fp64 or else fp32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


class RMSNorm(nn.Module):
    """``x / rms(x) * weight``, computed in fp32, returned in the weight's dtype."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _RMSNormFn.apply(x, self.weight, self.eps)
        return rmsnorm_ref(x, self.weight, self.eps)


def rmsnorm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / rms(x) * weight`` in plain PyTorch (the reference; autograd differentiates it)."""
    x32 = hi(x)
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (y * hi(weight)).to(weight.dtype)


class _RMSNormFn(torch.autograd.Function):
    """:func:`rmsnorm_ref` with a hand-written backward that keeps x and the reciprocal RMS only
    (autograd's graph keeps the normalised activation too, and makes more passes over it)."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        x32 = hi(x)
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        ctx.save_for_backward(x, weight, rstd)
        return (x32 * rstd).mul_(hi(weight)).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        x_norm = hi(x) * rstd
        g, w = hi(grad), hi(weight)
        gx = g * x_norm
        grad_weight = gx.reshape(-1, gx.shape[-1]).sum(0)
        # d rmsnorm: rstd * (g w - x_norm * mean(g w x_norm))
        dot = (gx @ w).unsqueeze(-1)  # (..., 1): sum over channels of g w x_norm
        grad_x = (g * w).addcmul_(x_norm, dot, value=-1.0 / x.shape[-1]).mul_(rstd)
        return grad_x.to(x.dtype), grad_weight.to(weight.dtype), None


class SwiGLU(nn.Module):
    """``fc2(silu(gate) * y)`` with ``y, gate = fc1(x).chunk(2)``.

    The gate is the SECOND half of ``fc1``'s output, as in the official model: swapping the
    halves still loads a checkpoint strictly and computes something else. The hidden width is
    rounded up to a multiple of 128; no biases.
    """

    def __init__(self, d_model: int, d_intermediate: int, multiple_of: int = 128):
        super().__init__()
        hidden = round_up(d_intermediate, multiple_of)
        self.fc1 = nn.Linear(d_model, 2 * hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, gate = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * y)
