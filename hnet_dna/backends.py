"""Which implementation runs: fast GPU kernels or the plain PyTorch reference.

On CUDA tensors the model uses mamba_ssm's kernels for Mamba-2 when mamba_ssm is installed (the
optional ``cuda`` extra), and the Triton chunking kernels (:mod:`hnet_dna.kernels`: fused routing
and fused dechunk) when Triton is installed (the ``triton`` extra). Everything else, and every CPU
tensor, runs the PyTorch reference.
The reference can be forced everywhere, for debugging or for comparing the two::

    with hnet_dna.backends.force_reference():
        out = model(ids)

or for a whole process with the environment variable ``HNET_DNA_FORCE_REFERENCE=1``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib
import os
import platform
import warnings
from pathlib import Path

import torch

__all__ = ["force_reference", "reference_forced", "use_fast_path", "mamba_ssm_ops", "triton_kernels", "chunking_kernels", "cpu_name"]

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


def reference_forced() -> bool:
    """Whether :func:`force_reference` (or ``HNET_DNA_FORCE_REFERENCE``) is in effect: then layers
    with a hand-written backward on CPU differentiate their reference by autograd instead, so that
    what is run (and what a FLOP counter sees) is the reference's arithmetic."""
    return _forced[0]


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


@functools.lru_cache(maxsize=None)
def triton_kernels():
    """The :mod:`hnet_dna.kernels` package, or None when Triton is not importable.

    Imported lazily and only from here, so that ``import hnet_dna`` never imports Triton.
    """
    try:
        return importlib.import_module("hnet_dna.kernels")
    except Exception as e:  # ImportError, or a Triton that does not match this torch
        if torch.cuda.is_available():
            warnings.warn(
                f"Triton is not usable ({type(e).__name__}: {e}); routing and dechunking run the "
                "PyTorch reference on the GPU. Install the triton extra: pip install 'hnet_dna[triton]'",
                stacklevel=2,
            )
        return None


def chunking_kernels(*tensors: torch.Tensor):
    """The Triton chunking kernels if they may run on these tensors, else None (the reference).

    They run on CUDA tensors of fp32, bf16 or fp16 (fp64, which the tests use to check the model
    end to end, stays on the reference: the kernels accumulate in fp32), unless the reference is
    forced. CPU tensors never take them: on CPU they run only under Triton's interpreter, in tests.
    """
    if not all(use_fast_path(t) and t.dtype in (torch.float32, torch.bfloat16, torch.float16) for t in tensors):
        return None
    return triton_kernels()


def cpu_name() -> str:
    """The CPU's model name (for result provenance), e.g. ``AMD EPYC``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process for the next tensor, as PyTorch's CUDA
    caching allocator does on a GPU. Returns whether it took effect (glibc only).

    glibc serves every allocation above 32 MiB with a fresh ``mmap`` and unmaps it on free, so a
    training step on a long sequence, whose activations are such tensors, page-faults every 4 KiB
    of them again on every step. Measured here (benchmarks/RESULTS.md, 2 threads): a training step
    on one 65,536-base sequence took 10.3 s instead of 4.8 s for the small Mamba-2 and 14.2 s
    instead of 8.9 s for the small H-Net; at 16,384 bases (tensors under 32 MiB) it changes
    nothing. The price is memory: freed memory is not given back to the OS until the process
    exits, and large tensors now share the heap, where gaps between them can raise the peak
    (``embed`` on 1 Mb at its defaults: 50 s and 3.0 GB with it, 94 s and 2.3 GB without).
    The command-line tools call this; ``HNET_DNA_KEEP_FREED_MEMORY=0`` in the environment turns it
    off (returns False) for a tighter memory bound. A library user may call it too (or preload
    jemalloc or tcmalloc, which behave alike).
    """
    if platform.system() != "Linux" or os.environ.get("HNET_DNA_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    # Both are C ints: an mmap threshold of 1 GiB, and up to 2 GiB of freed memory kept at the heap top.
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
