"""What a sequence-level task trains on and reports, beyond one class per sequence (issue #33).

Three kinds of task share the classifier modules (:class:`~hnet_dna.tasks.FinetuneModule`,
:class:`~hnet_dna.tasks.CNNBaselineModule`); the network is the same (K outputs per sequence),
only the loss, what a prediction is, and the metrics differ:

==============  =======================================  ============================  =========================================
task            K outputs are                             loss                          metrics (per output, then their mean)
==============  =======================================  ============================  =========================================
``multiclass``  logits of K classes                       cross-entropy                 accuracy, MCC, macro F1, AUROC
``multilabel``  logits of K independent labels            BCE (optional ``pos_weight``)  AUROC, AUPRC (average precision), best F1
``regression``  K targets, standardised on the training   MSE (``poisson``: Poisson      Pearson, Spearman, MSE (target units)
                split (log rates with ``poisson``)         NLL of counts)
==============  =======================================  ============================  =========================================

Regression targets are standardised with the training split's mean and standard deviation
(stored in checkpoints as ``target_mean`` / ``target_std``): the network predicts
``(y - mean) / std`` and :meth:`Objective.predictions` maps back, so predictions, MSE and what
``predict`` writes are in the target's own units. With ``regression_loss: poisson`` the outputs
are log rates of non-negative counts (no standardisation) and predictions are ``exp(output)``.

``pos_weight: balanced`` weighs each label's positives by (negatives / positives) on the training
split, for rare labels (torch's ``BCEWithLogitsLoss`` ``pos_weight``).

Best F1 is the highest F1 over every threshold of a label's scores (the precision-recall curve's
points), as gReLU and DeepSEA-style evaluations report it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import MultilabelAUROC, MultilabelAveragePrecision, MultilabelPrecisionRecallCurve
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef

from ..config import ConfigError

__all__ = ["TASKS", "Task", "Objective", "SELECTION_METRIC", "TaskMetrics"]

Task = Literal["multiclass", "multilabel", "regression"]
TASKS = ("multiclass", "multilabel", "regression")
# what model selection reads (``val/<metric>``, higher is better): the mean over outputs
SELECTION_METRIC = {"multiclass": "mcc", "multilabel": "auprc", "regression": "pearson"}


class Objective(nn.Module):
    """Loss and predictions of a ``multilabel`` or ``regression`` task with K outputs.

    Args:
        task: ``multilabel`` or ``regression``.
        num_outputs: K labels or targets.
        pos_weight: (K,) multilabel positive weights, or None.
        target_mean, target_std: (K,) regression standardisation (training split).
        regression_loss: ``mse`` or ``poisson``.
    """

    def __init__(self, task: str, num_outputs: int, pos_weight: list[float] | None = None,
                 target_mean: list[float] | None = None, target_std: list[float] | None = None,
                 regression_loss: str = "mse"):
        super().__init__()
        if task not in ("multilabel", "regression"):
            raise ConfigError(f"Objective is for multilabel and regression tasks, got {task!r}")
        if regression_loss not in ("mse", "poisson"):
            raise ConfigError(f"--model.regression_loss must be 'mse' or 'poisson', got {regression_loss!r}")
        self.task, self.regression_loss, self.num_outputs = task, regression_loss, num_outputs
        standardised = task == "regression" and regression_loss == "mse"
        mean = target_mean if standardised and target_mean is not None else [0.0] * num_outputs
        std = target_std if standardised and target_std is not None else [1.0] * num_outputs
        # buffers (not saved: the module's hyperparameters carry them) follow the model's device
        self.register_buffer("target_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("target_std", torch.tensor(std, dtype=torch.float32), persistent=False)
        weight = torch.tensor(pos_weight, dtype=torch.float32) if pos_weight is not None else None
        self.register_buffer("pos_weight", weight, persistent=False)

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """outputs (B, K) of the network; labels (B, K): 0/1 labels, or targets in their units."""
        outputs, labels = outputs.float(), labels.float()
        if self.task == "multilabel":
            return F.binary_cross_entropy_with_logits(outputs, labels, pos_weight=self.pos_weight)
        if self.regression_loss == "poisson":
            return F.poisson_nll_loss(outputs, labels, log_input=True, full=False)
        return F.mse_loss(outputs, (labels - self.target_mean) / self.target_std)

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """(B, K): label probabilities, or targets in their own units."""
        outputs = outputs.float()
        if self.task == "multilabel":
            return outputs.sigmoid()
        if self.regression_loss == "poisson":
            return outputs.exp()
        return outputs * self.target_std + self.target_mean


class _BestF1(Metric):
    """Per-label best F1 over every threshold (from torchmetrics' exact precision-recall curve)."""

    full_state_update = False

    def __init__(self, num_labels: int):
        super().__init__()
        self.curve = MultilabelPrecisionRecallCurve(num_labels=num_labels, thresholds=None)

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        self.curve.update(probs, labels)

    def compute(self) -> torch.Tensor:
        precision, recall, _ = self.curve.compute()
        best = []
        for p, r in zip(precision, recall):
            f1 = torch.where(p + r > 0, 2 * p * r / (p + r).clamp_min(1e-12), torch.zeros_like(p))
            best.append(f1.max())
        return torch.stack(best)

    def reset(self) -> None:
        super().reset()
        self.curve.reset()


class TaskMetrics(nn.Module):
    """Split-level metrics of a multilabel or regression task: per output and their mean.

    ``update(predictions, labels)`` with :meth:`Objective.predictions`' (B, K) and the labels;
    ``compute()`` gives ``{"auroc": mean, "auroc/<name>": per output, ...}`` as floats (states
    summed over batches and processes by torchmetrics before anything is computed).
    """

    def __init__(self, task: str, names: list[str]):
        super().__init__()
        self.task, self.names = task, list(names)
        k = len(self.names)
        if task == "multilabel":
            self.parts = nn.ModuleDict({
                "auroc": MultilabelAUROC(num_labels=k, average="none", thresholds=None),
                "auprc": MultilabelAveragePrecision(num_labels=k, average="none", thresholds=None),
                "best_f1": _BestF1(k),
            })
        else:
            self.parts = nn.ModuleDict({
                "pearson": PearsonCorrCoef(num_outputs=k),
                "spearman": SpearmanCorrCoef(num_outputs=k),
                "mse": MeanSquaredError(num_outputs=k),
            })

    def update(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        if self.task == "multilabel":
            labels = labels.long()
        elif len(self.names) == 1:  # torchmetrics' single-output regression metrics take (B,)
            predictions, labels = predictions[:, 0], labels[:, 0]
        for metric in self.parts.values():
            metric.update(predictions.float(), labels if self.task == "multilabel" else labels.float())

    def compute(self) -> dict[str, float]:
        out = {}
        for name, metric in self.parts.items():
            values = metric.compute().reshape(-1).double()
            out[name] = float(values.nanmean())  # a label with one class in a split has no AUROC (nan)
            for label, value in zip(self.names, values.tolist()):
                out[f"{name}/{label}"] = value
        return out

    def reset(self) -> None:
        for metric in self.parts.values():
            metric.reset()
