"""Matthews correlation as scikit-learn (and the papers that report it) define it.

torchmetrics 1.9 substitutes small numbers where a margin of the confusion matrix is empty, so a
network that predicts one class for everything reads above 0: 0.09 for a constant guess on a
30 %-positive binary task scored as two classes, 0.2 for calling nothing on a 2 %-positive
element, and 1.0 for a split holding one class. Checkpoint selection on ``val/mcc`` would then
prefer a collapsed network to one that learned a little. Here the confusion matrix is accumulated
by torchmetrics (summed over batches and processes) and the value computed from it as
``sklearn.metrics.matthews_corrcoef`` does: 0 whenever truth or prediction has one class only.
"""

from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassMatthewsCorrCoef

__all__ = ["MatthewsCorrCoef", "mcc_from_confusion"]


def mcc_from_confusion(confmat: torch.Tensor) -> torch.Tensor:
    """MCC of a K x K confusion matrix (rows: truth, columns: prediction), K >= 2, by the
    covariance form scikit-learn uses; 0 where either side's variance is 0."""
    c = confmat.double()
    true_counts, pred_counts = c.sum(1), c.sum(0)  # (K,), (K,)
    correct, total = c.trace(), c.sum()
    cov_true_pred = correct * total - true_counts @ pred_counts
    cov_pred = total**2 - pred_counts @ pred_counts
    cov_true = total**2 - true_counts @ true_counts
    if cov_pred * cov_true == 0:
        return torch.zeros((), dtype=torch.float64)
    return cov_true_pred / (cov_pred * cov_true).sqrt()


class MatthewsCorrCoef(MulticlassMatthewsCorrCoef):
    """torchmetrics' multiclass MCC (same ``update`` and distributed state: the confusion matrix)
    with scikit-learn's value (see the module docstring)."""

    def compute(self) -> torch.Tensor:
        return mcc_from_confusion(self.confmat).float()
