"""Which implementation runs: fast GPU kernels or the plain PyTorch reference.

On CUDA tensors the model uses mamba_ssm's kernels for Mamba-2 when mamba_ssm is installed (the
optional ``cuda`` extra). Everything else, and every CPU tensor, runs the PyTorch reference.
The reference can be forced everywhere, for debugging or for comparing the two::

    with hnet_dna.backends.force_reference():
        out = model(ids)

or for a whole process with the environment variable ``HNET_DNA_FORCE_REFERENCE=1``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import warnings

import torch

__all__ = ["force_reference", "use_fast_path", "mamba_ssm_ops"]

_forced = [os.environ.get("HNET_DNA_FORCE_REFERENCE", "0") not in ("", "0")]


@contextlib.contextmanager
def force_reference(enabled: bool = True):
    """Within this block, run the PyTorch reference even on CUDA tensors."""
    previous = _forced[0]
    _forced[0] = enabled
    try:
        yield
    finally:
        _forced[0] = previous


def use_fast_path(t: torch.Tensor) -> bool:
    """Whether a fast kernel may be used for tensor ``t`` (CUDA and not forced to the reference)."""
    return t.is_cuda and not _forced[0]


@functools.lru_cache(maxsize=None)
def mamba_ssm_ops():
    """mamba_ssm's chunked-scan function, or None when mamba_ssm is not installed.

    Imported lazily: mamba_ssm builds only where CUDA is, and a CPU install never needs it.
    """
    try:
        module = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
    except Exception as e:  # ImportError, or a broken CUDA build: fall back to the reference
        if torch.cuda.is_available():
            warnings.warn(
                f"mamba_ssm is not usable ({type(e).__name__}: {e}); Mamba-2 layers run the slower "
                "PyTorch reference on the GPU. Install the cuda extra: pip install 'hnet_dna[cuda]'",
                stacklevel=2,
            )
        return None
    return module.mamba_chunk_scan_combined
