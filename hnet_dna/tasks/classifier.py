"""What every classifier task shares (:class:`ClassifierTask`): classes from the data, the strand
policy, split-level metrics, the steps; and the CNN control trained from scratch
(:class:`CNNBaselineModule`).

Metrics are torchmetrics computed on the whole split (states summed over batches and processes,
never averaged per batch): ``accuracy``, ``mcc`` (Matthews correlation as scikit-learn defines
it, :mod:`hnet_dna.tasks.metrics`), ``f1_macro`` and ``auroc``
(binary: the second class is the positive one; more classes: macro one-vs-rest), logged per epoch
as ``val/...`` and ``test/...``, beside ``val/loss``. RC-conjoined logits follow the data module's
``strand_symmetric``; asking for them on strand-specific labels is an error.

Multilabel and regression tasks (``task``, from the data module by default) train the same networks
with one output per label or target; their loss, predictions and metrics (per output and the
mean: ``val/auroc``, ``val/auroc/<label>``, ...) are in :mod:`hnet_dna.tasks.objectives`, and
model selection reads ``val/`` + :data:`~hnet_dna.tasks.objectives.SELECTION_METRIC` of the task.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torchmetrics import MetricCollection
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import (
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)

from ..config import ConfigError
from ..model.cnn import CNNClassifier
from .metrics import MatthewsCorrCoef
from .objectives import SELECTION_METRIC, Objective, TaskMetrics
from .pretrain import lr_factor

__all__ = ["ClassifierTask", "CNNBaselineModule", "FolderClassifier", "classification_metrics"]

def classification_metrics(num_classes: int) -> MetricCollection:
    """Dataset-level metrics, fed with (probabilities (B, C), labels (B,))."""
    auroc = BinaryAUROC() if num_classes == 2 else MulticlassAUROC(num_classes=num_classes, average="macro")
    return MetricCollection({
        "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro"),
        "mcc": MatthewsCorrCoef(num_classes=num_classes),  # scikit-learn's value: 0 for a constant guess
        "f1_macro": MulticlassF1Score(num_classes=num_classes, average="macro"),
        "auroc": auroc,
    })


class ClassifierTask(pl.LightningModule):
    """What every classifier task shares: classes from the data, strand policy, split-level
    metrics, the steps. Subclasses build ``self.classifier`` in :meth:`_build` and choose the ids
    it reads in :meth:`_model_ids`."""

    classifier: torch.nn.Module | None

    def _build(self, class_names: list[str], rc_conjoin: bool) -> None:
        raise NotImplementedError

    def _longest(self, what: str) -> int:
        """The longest TRAINING sequence: a head that reads each position (``flatten``, the CNN)
        has weights for these positions only, since positions no training sequence reaches would
        keep their random initial weights and add a random offset to longer inputs. Stored in
        checkpoints by the caller, so that test / predict rebuild the same layers."""
        dm = getattr(self, "_data", None) or getattr(getattr(self, "_trainer", None), "datamodule", None)
        train = getattr(dm, "datasets", {}).get("train")
        if train is None or not len(train.ids):
            raise ConfigError(f"{what} needs --model.max_length or a labelled data module with a training split to take it from")
        return max(len(ids) for ids in train.ids)

    def _check_lengths(self, dm) -> None:
        """Refuse, before any step, a split with sequences longer than a position-reading head's
        ``max_length`` (sized on the training split)."""
        limit = getattr(self.classifier, "max_length", None)
        for split, ds in getattr(dm, "datasets", {}).items():
            longest = max((len(ids) for ids in ds.ids), default=0)
            if limit and longest > limit:
                raise ConfigError(
                    f"the {split} split has sequences of up to {longest:,} bases, longer than the {limit:,} positions "
                    f"this head reads (max_length, from the longest training sequence: a head that reads each "
                    f"position has no trained weights past it); cut the {split} sequences to {limit:,} bases, or "
                    "train on sequences as long (or use pooling mean, which takes any length)"
                )

    # what a checkpoint's head was built with: a module built here must agree before its weights load
    BUILT_WITH = ("class_names", "rc_conjoin", "max_length", "pooling", "task", "regression_loss")

    @property
    def task(self) -> str:
        """``multiclass``, ``multilabel`` or ``regression`` (checkpoints from before tasks: multiclass)."""
        return self.hparams.get("task") or "multiclass"

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {})
        state = checkpoint.get("state_dict", {})
        norm = getattr(self.classifier, "head_norm", None)
        if isinstance(norm, torch.nn.LayerNorm) and "classifier.head_norm.weight" not in state:
            self.classifier.head_norm = torch.nn.Identity()  # a checkpoint from before head_norm existed
            self.hparams.head_norm = False
        for key in self.BUILT_WITH:
            if key in saved and key in self.hparams and saved[key] != self.hparams[key]:
                raise ConfigError(
                    f"the checkpoint's classifier was built with {key} {saved[key]!r}, this one with {self.hparams[key]!r} "
                    f"(from the data now attached); give --model.{key} {saved[key]!r} or load it with load_from_checkpoint"
                )

    def _make_metrics(self, class_names: list[str], rc_conjoin: bool) -> None:
        self.hparams.task = self.task
        if self.task == "multiclass":
            self.metrics = torch.nn.ModuleDict({split: classification_metrics(len(class_names)) for split in ("val", "test")})
        else:
            self.metrics = torch.nn.ModuleDict({split: TaskMetrics(self.task, class_names) for split in ("val", "test")})
            self.objective = self._make_objective(len(class_names))
        # the mean loss over the split, summed over processes (see PretrainModule._log_outputs)
        self.losses = torch.nn.ModuleDict({split: MeanMetric().set_dtype(torch.float64) for split in ("val", "test")})
        self.hparams.class_names, self.hparams.rc_conjoin = list(class_names), rc_conjoin  # stored in checkpoints

    def _make_objective(self, num_outputs: int) -> Objective:
        """A multilabel or regression task's loss and predictions; the training split's statistics
        (regression standardisation, ``pos_weight: balanced``) are taken from the data once and kept
        in the hyperparameters, so checkpoints predict in the same units without the data."""
        hp, dm = self.hparams, getattr(self, "_data", None)
        if self.task == "regression" and hp.regression_loss == "mse" and hp.target_mean is None:
            if dm is None or not hasattr(dm, "target_stats"):
                raise ConfigError("a regression head needs the training split's target statistics: fit it with a labelled "
                                  "data module (or give --model.target_mean and --model.target_std)")
            hp.target_mean, hp.target_std = dm.target_stats()
        weights = None
        if self.task == "multilabel" and hp.pos_weight == "balanced":
            if hp.pos_weight_values is None:
                if dm is None or not hasattr(dm, "pos_weight"):
                    raise ConfigError("pos_weight 'balanced' needs the training split's label counts: fit with a labelled data module")
                hp.pos_weight_values = dm.pos_weight()
            weights = hp.pos_weight_values
        return Objective(self.task, num_outputs, pos_weight=weights, target_mean=hp.target_mean, target_std=hp.target_std,
                         regression_loss=hp.regression_loss)

    def _check_task_options(self) -> None:
        hp = self.hparams
        if hp.pos_weight not in ("none", "balanced"):
            raise ConfigError(f"--model.pos_weight must be 'none' or 'balanced', got {hp.pos_weight!r}")
        if hp.regression_loss not in ("mse", "poisson"):
            raise ConfigError(f"--model.regression_loss must be 'mse' or 'poisson', got {hp.regression_loss!r}")
        if hp.task is not None and hp.task not in ("multiclass", "multilabel", "regression"):
            raise ConfigError(f"--model.task must be multiclass, multilabel or regression, got {hp.task!r}")

    LOGGED = {"multiclass": ("loss", "accuracy", "mcc", "f1_macro", "auroc"),
              "multilabel": ("loss", "auroc", "auprc", "best_f1"),
              "regression": ("loss", "pearson", "spearman", "mse")}

    def setup(self, stage: str) -> None:
        self.attach_data(getattr(self.trainer, "datamodule", None))
        if stage == "fit":
            self._check_monitors()

    def _check_monitors(self) -> None:
        """A checkpoint or early-stopping callback must watch a metric this task logs: a recipe
        written for classes (``val/mcc``) stops here, before any step, on a multilabel or
        regression task."""
        for callback in getattr(self.trainer, "callbacks", None) or []:
            monitor = getattr(callback, "monitor", None)
            if not isinstance(monitor, str) or not monitor.startswith("val/"):
                continue
            if monitor.split("/")[1] not in self.LOGGED[self.task]:
                best = SELECTION_METRIC[self.task]
                raise ConfigError(f"{type(callback).__name__} monitors {monitor}, which a {self.task} task does not log "
                                  f"(it logs val/{', val/'.join(self.LOGGED[self.task])}, and per output val/<metric>/<name>); "
                                  f"monitor val/{best} with mode max in the recipe's callbacks")

    def attach_data(self, dm) -> None:
        """Build the head from the data module's classes, strand policy and training lengths (what
        ``setup`` does when fitting starts; callable before, e.g. to count a step's FLOPs), or check
        that a built one fits them."""
        self._data = dm
        strand_symmetric = getattr(dm, "strand_symmetric", None)
        if self.hparams.rc_conjoin and strand_symmetric is False:
            raise ConfigError(
                "--model.rc_conjoin true averages each sequence's logits with its reverse complement's, which is "
                "wrong for strand-specific labels (--data.strand_symmetric false); leave rc_conjoin unset"
            )
        data_task = getattr(dm, "task", None)
        if data_task is not None and self.hparams.get("task") is not None and data_task != self.hparams.task:
            raise ConfigError(f"the model is a {self.hparams.task} model (--model.task), the data a {data_task} task "
                              "(--data.task or its columns)")
        if self.classifier is None:
            if data_task is not None:
                self.hparams.task = data_task
            names = getattr(dm, "class_names", None)
            if names is None:
                raise ConfigError(f"{type(self).__name__} needs --model.class_names or a labelled data module (hnet_dna.data.LabelledDataModule)")
            rc = self.hparams.rc_conjoin
            self._build(list(names), bool(strand_symmetric) if rc is None else bool(rc))
        elif dm is not None:
            names = getattr(dm, "class_names", None)
            if names is not None and list(names) != self.classifier.class_names:
                raise ConfigError(f"the data's classes {list(names)} differ from the model's {self.classifier.class_names}")
            if self._rc_from_data and strand_symmetric is not None:  # a flag, no weights: set before fitting
                self.classifier.rc_conjoin = self.hparams.rc_conjoin = bool(strand_symmetric)
        self._check_lengths(dm)

    # ------------------------------------------------------------------------------- steps
    def _model_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids

    def forward(self, batch: dict):
        if self.task == "multiclass":
            return self.classifier(self._model_ids(batch["input_ids"]), mask=batch["mask"], labels=batch.get("labels"))
        out = self.classifier(self._model_ids(batch["input_ids"]), mask=batch["mask"])
        if batch.get("labels") is not None:
            out.loss = self.objective.loss(out.logits, batch["labels"])
        return out

    def training_step(self, batch: dict, batch_idx: int):
        out = self(batch)
        self.log("train/loss", out.loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch["labels"]))
        return out.loss

    def _evaluate(self, split: str, batch: dict) -> None:
        out = self(batch)
        if self.task != "multiclass":  # logged when the split ends (per-output values)
            self.metrics[split].update(self.objective.predictions(out.logits), batch["labels"])
            self.losses[split].update(out.loss.detach().double(), len(batch["labels"]))
            self.log(f"{split}/loss", self.losses[split], on_step=False, on_epoch=True)
            return
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

    def _log_task_metrics(self, split: str) -> None:
        if self.task == "multiclass":
            return
        selection = SELECTION_METRIC[self.task]
        for name, value in self.metrics[split].compute().items():
            self.log(f"{split}/{name}", value, prog_bar=name == selection)
        self.metrics[split].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_task_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_task_metrics("test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """``probs`` (B, C) of the classes (multiclass), or ``values`` (B, K): label probabilities
        (multilabel), targets in their own units (regression)."""
        logits = self.logits(batch["input_ids"], batch["mask"])
        if self.task != "multiclass":
            return {"index": batch["index"], "values": self.objective.predictions(logits)}
        return {"index": batch["index"], "probs": logits.float().softmax(-1)}

    def logits(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B, C) (the K raw outputs of a multilabel or regression head) of
        nucleotide-table ids (B, L), what the labelled data modules and
        :class:`~hnet_dna.tokenizer.NucleotideTokenizer` make; ``mask`` (B, L) True on bases."""
        return self.classifier(self._model_ids(input_ids), mask=mask).logits

    def _scheduled(self, optimizer) -> dict:
        hp = self.hparams
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, "cosine", hp.warmup_fraction, 0.0, hp.min_lr_fraction)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class CNNBaselineModule(ClassifierTask):
    """The CNN control (:class:`~hnet_dna.model.cnn.CNNClassifier`), trained from scratch.

    Args:
        class_names, rc_conjoin: as :class:`FinetuneModule`.
        max_length: the longest sequence; default: the longest in the data module's training split
            (longer sequences in other splits are refused before any step).
        task, pos_weight, regression_loss, target_mean, target_std, pos_weight_values: as
            :class:`~hnet_dna.tasks.FinetuneModule`.
        channels, layers, kernel_size, embed_dim, code_dim, hidden, dropout: the network (see its
            docstring).
        lr, weight_decay, warmup_fraction, min_lr_fraction: AdamW with warmup and cosine decay.
    """

    def __init__(self, class_names: list[str] | None = None, rc_conjoin: bool | None = None,
                 max_length: int | None = None, channels: int = 96, layers: int = 3, kernel_size: int = 9,
                 embed_dim: int = 64, code_dim: int = 16, hidden: int = 128, dropout: float = 0.2, lr: float = 1e-3,
                 weight_decay: float = 0.01, warmup_fraction: float = 0.1, min_lr_fraction: float = 0.1,
                 task: str | None = None, pos_weight: str = "none", regression_loss: str = "mse",
                 target_mean: list[float] | None = None, target_std: list[float] | None = None,
                 pos_weight_values: list[float] | None = None):
        super().__init__()
        self.save_hyperparameters()
        self._check_task_options()
        self.classifier: CNNClassifier | None = None
        self._rc_from_data = rc_conjoin is None  # setup() sets it from the data's strand policy
        if class_names is not None:
            self._build(list(class_names), bool(rc_conjoin))

    def _build(self, class_names: list[str], rc_conjoin: bool) -> None:
        hp = self.hparams
        if hp.max_length is None:
            hp.max_length = self._longest("the CNN")
        self.classifier = CNNClassifier(class_names, hp.max_length, channels=hp.channels, layers=hp.layers,
                                        kernel_size=hp.kernel_size, embed_dim=hp.embed_dim, code_dim=hp.code_dim,
                                        hidden=hp.hidden, dropout=hp.dropout, rc_conjoin=rc_conjoin, task=self.task)
        self._make_metrics(class_names, rc_conjoin)

    def configure_optimizers(self):
        hp = self.hparams
        decay = [p for n, p in self.classifier.named_parameters() if p.dim() >= 2 and not n.startswith("embedding")]
        rest = [p for n, p in self.classifier.named_parameters() if not (p.dim() >= 2 and not n.startswith("embedding"))]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                       {"params": rest, "weight_decay": 0.0}], lr=hp.lr)
        return self._scheduled(optimizer)



class FolderClassifier(torch.nn.Module):
    """A classifier from a ``save_pretrained`` folder with ``classifier.json`` (written by
    :meth:`HNetForSequenceClassification.save_pretrained`, also through transformers' Trainer),
    with a task's inference interface: ``classifier`` and :meth:`logits` of nucleotide-table ids."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    @classmethod
    def from_folder(cls, folder, map_location="cpu") -> "FolderClassifier":
        from ..model.heads import HNetForSequenceClassification

        return cls(HNetForSequenceClassification.from_pretrained(folder, map_location=map_location)).eval()

    def logits(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B, C) of nucleotide-table ids (B, L); ``mask`` (B, L) True on bases."""
        ids = self.classifier.backbone.tokenizer.from_nucleotide_ids(input_ids)  # a byte-level backbone reads ASCII
        return self.classifier(ids, mask=mask).logits
