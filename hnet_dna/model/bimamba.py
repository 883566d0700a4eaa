"""Mamba-2 in both directions for the bidirectional (masked-LM) H-Net: :class:`BiMamba2`, built from
two :class:`~hnet_dna.model.mamba2.Mamba2` layers (no copy of their code), and :func:`reverse_real`."""

from __future__ import annotations

import torch
import torch.nn as nn

from .mamba2 import Mamba2

__all__ = ["BiMamba2", "reverse_real"]


def reverse_real(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Each row's real positions in reverse order, padding left where it is: x (B, L, ...) with
    ``mask`` (B, L) right-padded (None = all real). Its own inverse."""
    if mask is None:
        return x.flip(1)
    length = x.shape[1]
    pos = torch.arange(length, device=x.device)
    real = mask.sum(-1, keepdim=True)  # (B, 1)
    index = torch.where(pos < real, real - 1 - pos, pos)  # (B, L)
    return torch.gather(x, 1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


class BiMamba2(nn.Module):
    """Mamba-2 in both directions, as Caduceus's BiMamba (Schiff et al. 2024) and DNAChunker's
    encoder do: a forward layer and a layer over the reversed sequence, added::

        y = out_proj( norm_f(mix_f(in_proj(u))) + R(norm_r(mix_r(R(in_proj(u))))) )

    where R reverses each row's real positions (:func:`reverse_real`; padding stays at the end,
    so it never reaches a real position in either direction). ``in_proj`` and ``out_proj`` are
    shared by the two directions (Caduceus ties them: the directions read and write the same
    channels, and the layer keeps Mamba-2's projection parameter count, the bulk of it); each
    direction keeps its own convolution, ``dt_bias``, ``A_log``, ``D`` and gated norm, which is
    where the two scans differ. Parameters: ``fwd.*`` (a whole Mamba-2) and ``rev.*`` (without
    projections). A masked-LM layer: it does not decode position by position."""

    def __init__(self, d_model: int, **kwargs):
        super().__init__()
        self.fwd = Mamba2(d_model, **kwargs)
        self.rev = Mamba2(d_model, **kwargs)
        del self.rev.in_proj, self.rev.out_proj  # shared: the forward layer's

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        """u: (B, L, d_model), mask (B, L) right-padded -> (B, L, d_model)."""
        if cache is not None:
            raise NotImplementedError("a bidirectional Mamba-2 layer (masked LM) does not decode position by position")
        z, xBC, dt = self.fwd._in_proj(u)  # one projection serves both directions
        forward = self.fwd.norm(self.fwd._mixed(xBC, dt, mask), z)
        z_r, xBC_r, dt_r = (reverse_real(t, mask) for t in (z, xBC, dt))
        backward = reverse_real(self.rev.norm(self.rev._mixed(xBC_r, dt_r, mask), z_r), mask)
        return self.fwd.out_proj(forward + backward)

    def _no_decoding(self, *args, **kwargs):
        raise NotImplementedError("a bidirectional Mamba-2 layer (masked LM) does not decode position by position")

    allocate_cache = step = extend = _no_decoding
