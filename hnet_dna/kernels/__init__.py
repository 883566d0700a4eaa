"""Triton kernels for dynamic chunking: fused dechunk and fused routing (autograd Functions).

Their references are the PyTorch functions in :mod:`hnet_dna.model.chunking`; each kernel module
names its function after the reference (``kernels.dechunk.dechunk`` <-> ``chunking.dechunk``), and
this package exports them as ``fused_dechunk`` and ``fused_routing`` (so that the module names
stay modules). This package imports Triton; nothing imports it at ``import hnet_dna`` time. The
model reaches it through :func:`hnet_dna.backends.chunking_kernels`, on CUDA tensors only; on CPU
it runs only under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the tests check it
without a GPU.
"""

from .dechunk import dechunk as fused_dechunk
from .routing import routing as fused_routing

__all__ = ["fused_dechunk", "fused_routing"]
