"""RMSNorm and the SwiGLU MLP, with the official H-Net parameter names."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["RMSNorm", "SwiGLU", "round_up", "hi", "HI_DTYPE"]


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
        x32 = hi(x)
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * hi(self.weight)).to(self.weight.dtype)


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
