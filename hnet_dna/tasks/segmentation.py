"""Per-base annotation (segmentation): a LightningModule that learns, at every base, which elements
(exon, intron, CpG island, TSS, ...) the base lies in (issue #33). Data:
:class:`~hnet_dna.data.AnnotationDataModule`; networks: :mod:`hnet_dna.model.per_base`.

Each element is its own binary output (elements overlap: a CpG island can hold an exon), trained
with binary cross-entropy averaged over the scored bases (A/C/G/T: N bases and padding are never
scored). Metrics, on the whole split (:class:`BaseLevelMetrics`), per element and their mean:

* ``mcc``: Matthews correlation of the calls (probability >= 0.5) at base level; ``val/mcc``, the
  mean over elements, is what checkpoints are selected on;
* ``auprc``: average precision at base level (torchmetrics, 200 thresholds: bounded memory over
  millions of bases);
* ``edge_recall``: of the element's true edges (a base where it starts or ends inside a window,
  e.g. an exon's splice sites), the fraction with a called edge within ``edge_tolerance`` bases
  (2); ``edge_precision``: of the called edges, the fraction with a true edge that near.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import BinaryAveragePrecision, BinaryMatthewsCorrCoef

from ..config import ConfigError
from ..model.loading import load_model
from ..model.per_base import DilatedResidualCNN, HNetForBaseAnnotation
from .metrics import mcc_from_confusion
from .pretrain import lr_factor

__all__ = ["SegmentationModule", "BaseLevelMetrics", "edge_counts"]

NETWORKS = ("hnet", "cnn")


def edge_counts(calls: torch.Tensor, labels: torch.Tensor, scored: torch.Tensor, tolerance: int) -> torch.Tensor:
    """(4, E): true edges found, true edges, called edges near a true one, called edges.
    calls, labels: (B, L, E) bool; scored: (B, L) bool. An edge is a base i whose value differs from
    base i - 1's, both scored."""
    both = (scored[:, 1:] & scored[:, :-1])[..., None]  # (B, L-1, 1)
    true = (labels[:, 1:] != labels[:, :-1]) & both  # (B, L-1, E)
    called = (calls[:, 1:] != calls[:, :-1]) & both

    def near(edges: torch.Tensor) -> torch.Tensor:  # within tolerance of an edge, (B, L-1, E)
        x = edges.transpose(1, 2).float()
        return F.max_pool1d(x, 2 * tolerance + 1, stride=1, padding=tolerance).transpose(1, 2) > 0

    return torch.stack([(true & near(called)).sum((0, 1)), true.sum((0, 1)),
                        (called & near(true)).sum((0, 1)), called.sum((0, 1))]).double()


class _EdgeCounts(Metric):
    full_state_update = False

    def __init__(self, num_elements: int, tolerance: int):
        super().__init__()
        self.tolerance = tolerance
        self.add_state("counts", torch.zeros(4, num_elements, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, calls, labels, scored) -> None:
        self.counts += edge_counts(calls, labels, scored, self.tolerance)

    def compute(self) -> torch.Tensor:  # (2, E): recall, precision (nan without edges)
        c = self.counts
        return torch.stack([c[0] / c[1], c[2] / c[3]])


def _mcc(confmat: torch.Tensor) -> torch.Tensor:
    """MCC of an element's 2 x 2 confusion matrix (rows: truth) as scikit-learn defines it
    (:func:`~hnet_dna.tasks.metrics.mcc_from_confusion`: 0 for a network that calls nothing); nan
    for an element with no base inside it in the split (no MCC to have), which the mean leaves out."""
    if confmat[1].sum() == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return mcc_from_confusion(confmat)


class BaseLevelMetrics(nn.Module):
    """Split-level per-base metrics (see the module docstring): ``update(probs (B, L, E), labels
    (B, L, E), scored (B, L))``, ``compute()`` -> ``{"mcc": mean, "mcc/<element>": ..., ...}``."""

    def __init__(self, names: list[str], tolerance: int = 2, threshold: float = 0.5):
        super().__init__()
        self.names, self.threshold = list(names), threshold
        self.mcc = nn.ModuleList(BinaryMatthewsCorrCoef(threshold=threshold) for _ in self.names)
        self.auprc = nn.ModuleList(BinaryAveragePrecision(thresholds=200) for _ in self.names)
        self.edges = _EdgeCounts(len(self.names), tolerance)

    def update(self, probs: torch.Tensor, labels: torch.Tensor, scored: torch.Tensor) -> None:
        probs, labels = probs.float(), labels > 0.5
        flat_p, flat_y = probs[scored], labels[scored].long()  # (N, E): scored bases only
        for e, (mcc, auprc) in enumerate(zip(self.mcc, self.auprc)):
            mcc.update(flat_p[:, e], flat_y[:, e])
            auprc.update(flat_p[:, e], flat_y[:, e])
        self.edges.update(probs >= self.threshold, labels, scored)

    def compute(self) -> dict[str, float]:
        recall, precision = self.edges.compute()
        mcc = torch.stack([_mcc(m.confmat) for m in self.mcc])
        parts = {"mcc": mcc, "auprc": torch.stack([m.compute() for m in self.auprc]),
                 "edge_recall": recall, "edge_precision": precision}
        out = {}
        for name, values in parts.items():
            values = values.reshape(-1).double()
            out[name] = float(values.nanmean())
            out |= {f"{name}/{element}": float(v) for element, v in zip(self.names, values.tolist())}
        return out

    def reset(self) -> None:
        for metric in [*self.mcc, *self.auprc, self.edges]:
            metric.reset()


class SegmentationModule(pl.LightningModule):
    """Per-base annotation: an H-Net backbone with a per-base head, or the dilated CNN control.

    Args:
        backbone: what ``--model.backbone`` of :class:`~hnet_dna.tasks.FinetuneModule` takes
            (``default``: the shipped pretrained model; a preset or config: from scratch).
        network: ``hnet`` (the backbone and a per-base head) or ``cnn``
            (:class:`~hnet_dna.model.per_base.DilatedResidualCNN`, from scratch).
        class_names: the elements; default: the data module's (stored in checkpoints).
        strands: ``both`` or ``forward`` (see :class:`~hnet_dna.model.per_base.HNetForBaseAnnotation`).
        dropout: on the head's input (hnet) or inside each block (cnn).
        lr: AdamW rate of the backbone (cnn: of the whole network); head_lr: of the head (default 10 x lr).
        weight_decay, warmup_fraction, min_lr_fraction: AdamW decay, linear warmup, cosine floor.
        channels, blocks, kernel_size: the CNN's shape.
        edge_tolerance: bases within which a called edge counts as finding a true one.
        pos_weight: ``none``, or ``balanced``: each element's positive bases weigh its training
            negatives / positives in the BCE (a rare element is called at all at p >= 0.5, at the
            cost of calibration); the weights are taken from the data once and kept in
            ``pos_weight_values`` (checkpoints carry them).
    """

    def __init__(self, backbone: str | dict | None = "default", network: str = "hnet", class_names: list[str] | None = None,
                 strands: str | None = None, dropout: float = 0.1, lr: float = 1e-3, head_lr: float | None = None,
                 weight_decay: float = 0.01, warmup_fraction: float = 0.1, min_lr_fraction: float = 0.1,
                 channels: int = 96, blocks: int = 8, kernel_size: int = 5, edge_tolerance: int = 2,
                 pos_weight: str = "none", pos_weight_values: list[float] | None = None):
        super().__init__()
        self.save_hyperparameters()
        if network not in NETWORKS:
            raise ConfigError(f"--model.network must be one of {', '.join(NETWORKS)}, got {network!r}")
        if pos_weight not in ("none", "balanced"):
            raise ConfigError(f"--model.pos_weight must be 'none' or 'balanced', got {pos_weight!r}")
        if edge_tolerance < 0:
            raise ConfigError(f"--model.edge_tolerance must be >= 0, got {edge_tolerance}")
        # not a registered submodule: the classifier holds it once built (one copy in checkpoints)
        object.__setattr__(self, "_backbone", load_model(backbone, "--model.backbone") if network == "hnet" else None)
        self.classifier: HNetForBaseAnnotation | DilatedResidualCNN | None = None
        if class_names is not None:
            self._build(list(class_names))

    task = "segmentation"

    @property
    def backbone(self):
        return self._backbone if self.classifier is None else getattr(self.classifier, "backbone", None)

    def _build(self, names: list[str]) -> None:
        hp = self.hparams
        if hp.network == "hnet":
            self.classifier = HNetForBaseAnnotation(self._backbone, names, strands=hp.strands, dropout=hp.dropout)
            hp.strands = self.classifier.strands
        else:
            self.classifier = DilatedResidualCNN(names, channels=hp.channels, blocks=hp.blocks, kernel_size=hp.kernel_size,
                                                 dropout=hp.dropout)
        hp.class_names = list(names)
        self.metrics = nn.ModuleDict({s: BaseLevelMetrics(names, hp.edge_tolerance) for s in ("val", "test")})
        weights = hp.pos_weight_values if hp.pos_weight == "balanced" else None
        # a buffer (not saved: the hyperparameters carry the values) that follows the module's device
        self.register_buffer("element_pos_weight", None if weights is None else torch.tensor(weights), persistent=False)

    def attach_data(self, dm) -> None:
        names = getattr(dm, "class_names", None)
        if getattr(dm, "task", None) != "segmentation":
            raise ConfigError("SegmentationModule needs per-base labels: use hnet_dna.data.AnnotationDataModule")
        if self.hparams.pos_weight == "balanced" and self.hparams.pos_weight_values is None:
            self.hparams.pos_weight_values = dm.pos_weight()  # the training windows', once
            if self.classifier is not None:
                self.element_pos_weight = torch.tensor(self.hparams.pos_weight_values)
        if self.classifier is None:
            self._build(list(names))
        elif list(names) != self.classifier.class_names:
            raise ConfigError(f"the data's elements {list(names)} differ from the model's {self.classifier.class_names}")

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None:
            self.attach_data(dm)

    # ---------------------------------------------------------------------------------- steps
    def forward(self, batch: dict):
        out = self.classifier(batch["input_ids"], batch["mask"])
        if batch.get("labels") is not None:
            scored = batch["scored"] & batch["mask"]  # (B, L): padding and N never count
            out.loss = F.binary_cross_entropy_with_logits(out.logits.float()[scored], batch["labels"].float()[scored],
                                                          pos_weight=self._pos_weight(out.logits.device))
        return out

    def _pos_weight(self, device) -> torch.Tensor | None:
        weight = self.element_pos_weight
        return None if weight is None else weight.to(device)  # a buffer assigned after the move: where the logits are

    def training_step(self, batch: dict, batch_idx: int):
        out = self(batch)
        self.log("train/loss", out.loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch["input_ids"]))
        return out.loss

    def _evaluate(self, split: str, batch: dict) -> None:
        out = self(batch)
        self.metrics[split].update(out.logits.float().sigmoid(), batch["labels"], batch["scored"] & batch["mask"])
        self.log(f"{split}/loss", out.loss, on_step=False, on_epoch=True, batch_size=len(batch["input_ids"]))

    def validation_step(self, batch: dict, batch_idx: int):
        self._evaluate("val", batch)

    def test_step(self, batch: dict, batch_idx: int):
        self._evaluate("test", batch)

    def _log_metrics(self, split: str) -> None:
        for name, value in self.metrics[split].compute().items():
            self.log(f"{split}/{name}", value, prog_bar=name == "mcc")
        self.metrics[split].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """``probs`` (B, L, E) of each element at each base, with the windows' ``coords``."""
        return {"probs": self.classifier(batch["input_ids"], batch["mask"]).logits.float().sigmoid(),
                "coords": batch.get("coords")}

    def configure_optimizers(self):
        hp = self.hparams
        head = {id(p) for p in (self.classifier.head_parameters() if hp.network == "hnet" else [])}
        groups = {}
        for name, p in self.classifier.named_parameters():
            if not p.requires_grad:
                continue
            rate = (hp.head_lr or 10 * hp.lr) if id(p) in head else hp.lr
            decay = hp.weight_decay if p.dim() >= 2 and "embedding" not in name else 0.0
            groups.setdefault((rate, decay), []).append(p)
        optimizer = torch.optim.AdamW([{"params": ps, "lr": r, "weight_decay": d} for (r, d), ps in groups.items()])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, "cosine", hp.warmup_fraction, 0.0, hp.min_lr_fraction))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
