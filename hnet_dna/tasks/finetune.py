"""Fine-tuning a classifier on labelled DNA as a LightningModule (``python -m hnet_dna fit``).

Metrics are torchmetrics computed on the whole split (states summed over batches and processes,
never averaged per batch): ``accuracy``, ``mcc`` (Matthews correlation), ``f1_macro`` and ``auroc``
(binary: the second class is the positive one; more classes: macro one-vs-rest), logged per epoch
as ``val/...`` and ``test/...``, beside ``val/loss``. Model selection and early stopping use
``val/mcc`` only (see the recipes in ``pipelines/finetune/``); the test split is never looked at
before the selected checkpoint is tested.
"""

from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch
from torchmetrics import MetricCollection
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import (
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)

from ..config import ConfigError
from ..model import HNetForCausalLM
from ..model.heads import HNetForSequenceClassification
from ..model.loading import load_model
from ..optim import param_groups
from .pretrain import lr_factor

__all__ = ["FinetuneModule", "load_backbone", "classification_metrics"]


def load_backbone(spec: str | dict) -> HNetForCausalLM:
    """What ``--model.backbone`` takes: a preset, a config JSON, a ``save_pretrained`` folder,
    inline fields, ``default`` (the shipped pretrained model) or a pretraining ``.ckpt``."""
    return load_model(spec, "--model.backbone")


def classification_metrics(num_classes: int) -> MetricCollection:
    """Dataset-level metrics, fed with (probabilities (B, C), labels (B,))."""
    auroc = BinaryAUROC() if num_classes == 2 else MulticlassAUROC(num_classes=num_classes, average="macro")
    return MetricCollection({
        "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro"),
        "mcc": MulticlassMatthewsCorrCoef(num_classes=num_classes),
        "f1_macro": MulticlassF1Score(num_classes=num_classes, average="macro"),
        "auroc": auroc,
    })


class FinetuneModule(pl.LightningModule):
    """Sequence classification task.

    Args:
        backbone: preset, config JSON, ``save_pretrained`` folder, inline fields, or a pretraining
            ``.ckpt``: the language model whose backbone is fine-tuned (or trained from scratch).
        class_names: the classes; by default taken from the data module when fitting starts (and
            stored in checkpoints, so ``test`` / ``predict`` rebuild the same head).
        pooling: ``mean`` (over bases), ``chunks`` (over the innermost level's chunks) or ``last``.
        rc_conjoin: average the logits of each sequence and its reverse complement; default: on
            when the data module augments training with reverse complements.
        freeze_backbone: train the head only.
        lr: peak learning rate of the backbone at base-pair resolution (inner stages slower, as
            in pretraining); head_lr: the head's (default ``10 * lr``).
        weight_decay, betas: AdamW settings. warmup_fraction: linear warmup, then cosine to
            ``min_lr_fraction`` over the run's optimizer steps.
        dropout: on the pooled features.
    """

    def __init__(
        self,
        backbone: str | dict = "tiny-hnet",
        class_names: list[str] | None = None,
        pooling: str = "mean",
        rc_conjoin: bool | None = None,
        freeze_backbone: bool = False,
        lr: float = 1e-3,
        head_lr: float | None = None,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_fraction: float = 0.1,
        min_lr_fraction: float = 0.1,
        dropout: float = 0.1,
    ):
        super().__init__()
        if not lr > 0 or (head_lr is not None and not head_lr > 0):
            raise ConfigError(f"--model.lr and --model.head_lr must be positive, got {lr}, {head_lr}")
        self.save_hyperparameters()
        # Held outside the module tree until the head exists, so its weights are registered once
        # (as classifier.backbone.*), whether the classes come from the config or from the data.
        self._backbone = [load_backbone(backbone)]
        self.classifier: HNetForSequenceClassification | None = None
        if class_names is not None:
            self._build(list(class_names), bool(rc_conjoin))

    def _build(self, class_names: list[str], rc_conjoin: bool) -> None:
        hp = self.hparams
        self.classifier = HNetForSequenceClassification(self._backbone[0], class_names, pooling=hp.pooling,
                                                        rc_conjoin=rc_conjoin, dropout=hp.dropout)
        if hp.freeze_backbone:
            self.classifier.freeze_backbone()
        self.metrics = torch.nn.ModuleDict({split: classification_metrics(len(class_names)) for split in ("val", "test")})
        # the mean loss over the split, summed over processes (see PretrainModule._log_outputs)
        self.losses = torch.nn.ModuleDict({split: MeanMetric().set_dtype(torch.float64) for split in ("val", "test")})
        hp.class_names, hp.rc_conjoin = list(class_names), rc_conjoin  # stored in checkpoints

    def setup(self, stage: str) -> None:
        if self.classifier is None:
            dm = self.trainer.datamodule
            names = getattr(dm, "class_names", None)
            if names is None:
                raise ConfigError("FinetuneModule needs --model.class_names or a labelled data module (hnet_dna.data.LabelledDataModule)")
            rc = self.hparams.rc_conjoin
            if rc is None:
                rc = float(getattr(dm.hparams, "reverse_complement", 0.0)) > 0
            self._build(list(names), bool(rc))
        elif getattr(self.trainer, "datamodule", None) is not None:
            names = getattr(self.trainer.datamodule, "class_names", None)
            if names is not None and list(names) != self.classifier.class_names:
                raise ConfigError(f"the data's classes {list(names)} differ from the model's {self.classifier.class_names}")

    # ------------------------------------------------------------------------------- steps
    def _model_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        # The labelled data module encodes with the nucleotide table; a byte-level backbone (the
        # official checkpoints) takes ASCII codes.
        return self.classifier.backbone.tokenizer.from_nucleotide_ids(input_ids)

    def forward(self, batch: dict):
        return self.classifier(self._model_ids(batch["input_ids"]), mask=batch["mask"], labels=batch.get("labels"))

    def training_step(self, batch: dict, batch_idx: int):
        out = self(batch)
        self.log("train/loss", out.loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch["labels"]))
        return out.loss

    def _evaluate(self, split: str, batch: dict) -> None:
        out = self(batch)
        probs = out.logits.float().softmax(-1)
        metrics = self.metrics[split]
        for name, metric in metrics.items():
            metric.update(probs[:, 1] if isinstance(metric, BinaryAUROC) else probs, batch["labels"])
            self.log(f"{split}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "mcc")
        self.losses[split].update(out.loss.detach().double(), len(batch["labels"]))
        self.log(f"{split}/loss", self.losses[split], on_step=False, on_epoch=True)

    def validation_step(self, batch: dict, batch_idx: int):
        self._evaluate("val", batch)

    def test_step(self, batch: dict, batch_idx: int):
        self._evaluate("test", batch)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        logits = self.classifier(self._model_ids(batch["input_ids"]), mask=batch["mask"]).logits
        return {"index": batch["index"], "probs": logits.float().softmax(-1)}

    # ---------------------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        hp = self.hparams
        groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(self.classifier.backbone, hp.lr, hp.weight_decay)]
        head_lr = hp.head_lr if hp.head_lr is not None else 10 * hp.lr
        groups.append({"params": list(self.classifier.classifier.parameters()), "lr": head_lr,
                       "lr_multiplier": head_lr / hp.lr, "weight_decay": 0.0, "stage": -1})
        groups = [g for g in groups if any(p.requires_grad for p in g["params"])]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, "cosine", hp.warmup_fraction, 0.0, hp.min_lr_fraction)
        )
        if self.trainer.is_global_zero:
            frozen = " (backbone frozen)" if hp.freeze_backbone else ""
            print(f"hnet_dna: fine-tuning {len(self.classifier.class_names)} classes "
                  f"({', '.join(self.classifier.class_names)}), pooling {hp.pooling}, rc_conjoin "
                  f"{self.classifier.rc_conjoin}; backbone lr {hp.lr:.3g}{frozen}, head lr {head_lr:.3g}",
                  file=sys.stderr, flush=True)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
