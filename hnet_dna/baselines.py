"""Order-k Markov models of DNA: the floor any language model must beat.

A model fitted on the training bases predicts base t from the k bases before it, with add-alpha
smoothing. Windows holding anything but A/C/G/T (N, padding, special ids) are skipped both when
fitting and when scoring.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MarkovModel", "markov_bits_per_base"]


def _windows(ids: np.ndarray, order: int, base_ids: tuple[int, ...]):
    """Codes of every (order + 1)-window made of bases only: context * 4 + next base."""
    lookup = np.full(max(256, int(ids.max()) + 1), -1, dtype=np.int64)
    lookup[list(base_ids)] = np.arange(4)
    digits = lookup[ids]
    n = len(ids) - order
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    code = np.zeros(n, dtype=np.int64)
    valid = np.ones(n, dtype=bool)
    for i in range(order + 1):
        d = digits[i : i + n]
        valid &= d >= 0
        code = code * 4 + np.maximum(d, 0)
    return code[valid]


class MarkovModel:
    """Order-k Markov chain over A/C/G/T ids.

    Args:
        order: context length k (0 = base frequencies).
        alpha: add-alpha smoothing of the counts.
        base_ids: the ids of A, C, G, T (the nucleotide tokenizer's by default).
    """

    def __init__(self, order: int, alpha: float = 1.0, base_ids: tuple[int, ...] = (0, 1, 2, 3)):
        if order < 0:
            raise ValueError(f"order must be >= 0, got {order}")
        self.order, self.alpha, self.base_ids = order, alpha, tuple(base_ids)
        self.counts = np.zeros(4 ** (self.order + 1))

    def fit(self, sequences) -> "MarkovModel":
        """Count (order + 1)-mers from scratch. sequences: one id tensor/array, or an iterable of
        them (consumed once, so a generator keeps memory flat on a whole genome)."""
        self.counts[:] = 0
        return self.update(sequences)

    def update(self, sequences) -> "MarkovModel":
        """Add the (order + 1)-mers of more sequences to the counts."""
        for ids in _as_list(sequences):
            self.counts += np.bincount(_windows(ids, self.order, self.base_ids), minlength=self.counts.size)
        return self

    @property
    def log2_probs(self) -> np.ndarray:
        smoothed = self.counts.reshape(-1, 4) + self.alpha
        return np.log2(smoothed / smoothed.sum(-1, keepdims=True)).reshape(-1)

    def bits_per_base(self, sequences) -> float:
        """Mean -log2 p(base | k previous bases) over every scorable position."""
        if not self.counts.any():
            raise RuntimeError("fit the model on some sequence first")
        log2_probs = self.log2_probs
        total, n = 0.0, 0
        for ids in _as_list(sequences):
            codes = _windows(ids, self.order, self.base_ids)
            total -= float(log2_probs[codes].sum())
            n += codes.size
        return total / max(n, 1)


def markov_bits_per_base(train, test, order: int, alpha: float = 1.0, base_ids=(0, 1, 2, 3)) -> float:
    """Fit an order-``order`` Markov model on ``train`` ids and score ``test`` ids (bits per base)."""
    return MarkovModel(order, alpha, base_ids).fit(train).bits_per_base(test)


def _as_list(sequences):
    """One sequence or an iterable of them, as int64 arrays (lazily)."""
    if isinstance(sequences, (torch.Tensor, np.ndarray)) and sequences.ndim == 1:
        sequences = [sequences]
    for s in sequences:
        yield np.asarray(s.cpu() if isinstance(s, torch.Tensor) else s, dtype=np.int64)
