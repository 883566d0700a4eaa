"""Fine-tuning a classifier on labelled DNA as a LightningModule (``python -m hnet_dna fit``).

Metrics are torchmetrics computed on the whole split (states summed over batches and processes,
never averaged per batch): ``accuracy``, ``mcc`` (Matthews correlation), ``f1_macro`` and ``auroc``
(binary: the second class is the positive one; more classes: macro one-vs-rest), logged per epoch
as ``val/...`` and ``test/...``, beside ``val/loss``. Model selection and early stopping use
``val/mcc`` only (see the recipes in ``pipelines/finetune/``); the test split is never looked at
before the selected checkpoint is tested.

Strand: RC-conjoined logits follow the data module's ``strand_symmetric`` (on where a sequence and
its reverse complement share a label, off otherwise); asking for them on strand-specific labels is
an error.

Fine-tuning a pretrained backbone (:class:`FinetuneModule`) offers what its recipe may need, each
chosen on validation only: a normalised head input (``head_norm``), layer-wise learning-rate decay
(``lr_layer_decay``), linear warmup (``warmup_fraction``), weight decay towards the pretrained
weights instead of towards zero (``decay_toward: pretrained``, the L2-SP regulariser of Li et al.
2018, applied decoupled as AdamW applies its decay) or none (``weight_decay: 0``), and partial
freezing (``freeze_layers``: the embedding and the first N blocks). :class:`CNNBaselineModule` is
the small CNN control trained from scratch with the same data, steps and selection.
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

from ..config import ConfigError, HNetConfig
from ..model import HNetForCausalLM
from ..model.cnn import CNNClassifier
from ..model.heads import HNetForSequenceClassification
from ..model.loading import load_model
from ..optim import layer_depths, param_groups
from .pretrain import lr_factor

__all__ = ["FinetuneModule", "CNNBaselineModule", "load_backbone", "load_classifier", "classification_metrics"]


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


class ClassifierTask(pl.LightningModule):
    """What every classifier task shares: classes from the data, strand policy, split-level
    metrics, the steps. Subclasses build ``self.classifier`` in :meth:`_build` and choose the ids
    it reads in :meth:`_model_ids`."""

    classifier: torch.nn.Module | None

    def _build(self, class_names: list[str], rc_conjoin: bool) -> None:
        raise NotImplementedError

    def _longest(self, what: str) -> int:
        """The longest sequence of the data module's splits (stored in checkpoints by the caller,
        so that test / predict rebuild the same layers)."""
        dm = getattr(getattr(self, "_trainer", None), "datamodule", None)
        lengths = [len(ids) for split, ds in getattr(dm, "datasets", {}).items() if split != "predict" for ids in ds.ids]
        if not lengths:
            raise ConfigError(f"{what} needs --model.max_length or a labelled data module to take it from")
        return max(lengths)

    # what a checkpoint's head was built with: a module built here must agree before its weights load
    BUILT_WITH = ("class_names", "rc_conjoin", "max_length", "pooling")

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
        self.metrics = torch.nn.ModuleDict({split: classification_metrics(len(class_names)) for split in ("val", "test")})
        # the mean loss over the split, summed over processes (see PretrainModule._log_outputs)
        self.losses = torch.nn.ModuleDict({split: MeanMetric().set_dtype(torch.float64) for split in ("val", "test")})
        self.hparams.class_names, self.hparams.rc_conjoin = list(class_names), rc_conjoin  # stored in checkpoints

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        strand_symmetric = getattr(dm, "strand_symmetric", None)
        if self.hparams.rc_conjoin and strand_symmetric is False:
            raise ConfigError(
                "--model.rc_conjoin true averages each sequence's logits with its reverse complement's, which is "
                "wrong for strand-specific labels (--data.strand_symmetric false); leave rc_conjoin unset"
            )
        if self.classifier is None:
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

    # ------------------------------------------------------------------------------- steps
    def _model_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids

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
        return {"index": batch["index"], "probs": self.logits(batch["input_ids"], batch["mask"]).float().softmax(-1)}

    def logits(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B, C) of nucleotide-table ids (B, L), what the labelled data modules and
        :class:`~hnet_dna.tokenizer.NucleotideTokenizer` make; ``mask`` (B, L) True on bases."""
        return self.classifier(self._model_ids(input_ids), mask=mask).logits

    def _scheduled(self, optimizer) -> dict:
        hp = self.hparams
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, "cosine", hp.warmup_fraction, 0.0, hp.min_lr_fraction)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class FinetuneModule(ClassifierTask):
    """Sequence classification with an H-Net (or isotropic) backbone.

    Args:
        backbone: preset, config JSON, ``save_pretrained`` folder, inline fields, or a pretraining
            ``.ckpt``: the language model whose backbone is fine-tuned (or trained from scratch).
        class_names: the classes; by default taken from the data module when fitting starts (and
            stored in checkpoints, so ``test`` / ``predict`` rebuild the same head).
        pooling: ``mean`` (over bases), ``chunks`` (over the innermost level's chunks), ``last``, or
            ``flatten`` (every position laid end to end: a head that sees where a signal lies).
        max_length: with ``flatten``, the longest sequence the head reads; default: the longest in
            the data module's splits (stored in checkpoints).
        rc_conjoin: average the logits of each sequence and its reverse complement; default: the
            data module's ``strand_symmetric`` (an error when true on strand-specific labels).
        head_norm: LayerNorm on the pooled features before the linear head.
        freeze_backbone: train the head only. freeze_layers: keep the embedding and the first N
            blocks (in the order the input meets them, see :func:`hnet_dna.optim.layer_depths`)
            at their starting weights.
        lr: peak learning rate of the backbone at base-pair resolution (inner stages slower, as
            in pretraining); head_lr: the head's (default ``10 * lr``).
        lr_layer_decay: layer-wise learning-rate decay: a parameter at depth d of D gets
            ``lr * lr_layer_decay ** (D - d)`` (times its stage multiplier); 1 = none.
        weight_decay, betas: AdamW settings (the head is not decayed). decay_toward: ``zero``
            (AdamW's decay) or ``pretrained`` (decay towards the backbone's starting weights).
        warmup_fraction: linear warmup, then cosine to ``min_lr_fraction`` over the run's optimizer
            steps.
        dropout: on the pooled features.
        gradient_checkpointing: recompute each backbone block in the backward pass instead of
            keeping its activations: less memory for long sequences, more time, same results.
        backbone_config: written by the module into its checkpoints (leave it unset): the
            backbone's full config, so that a checkpoint rebuilds its architecture from itself even
            when ``backbone`` now names something else (``default`` after a new default model, a
            moved folder); the weights come from the checkpoint.
    """

    def __init__(
        self,
        backbone: str | dict = "tiny-hnet",
        class_names: list[str] | None = None,
        pooling: str = "mean",
        max_length: int | None = None,
        rc_conjoin: bool | None = None,
        head_norm: bool = True,
        freeze_backbone: bool = False,
        freeze_layers: int = 0,
        lr: float = 1e-3,
        head_lr: float | None = None,
        lr_layer_decay: float = 1.0,
        weight_decay: float = 0.1,
        decay_toward: str = "zero",
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_fraction: float = 0.1,
        min_lr_fraction: float = 0.1,
        dropout: float = 0.1,
        backbone_config: dict | None = None,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if not lr > 0 or (head_lr is not None and not head_lr > 0):
            raise ConfigError(f"--model.lr and --model.head_lr must be positive, got {lr}, {head_lr}")
        if not 0 < lr_layer_decay <= 1:
            raise ConfigError(f"--model.lr_layer_decay must be within (0, 1], got {lr_layer_decay}")
        if decay_toward not in ("zero", "pretrained"):
            raise ConfigError(f"--model.decay_toward must be 'zero' or 'pretrained', got {decay_toward!r}")
        if freeze_layers < 0 or (freeze_layers and freeze_backbone):
            raise ConfigError(f"--model.freeze_layers must be >= 0 and not given with --model.freeze_backbone true, "
                              f"got {freeze_layers}")
        self.save_hyperparameters()
        # Held outside the module tree until the head exists, so its weights are registered once
        # (as classifier.backbone.*), whether the classes come from the config or from the data.
        if backbone_config is not None:  # from a checkpoint: random weights, the checkpoint's replace them
            self._backbone = [HNetForCausalLM(HNetConfig.from_dict(backbone_config, source="the checkpoint's backbone_config"))]
        else:
            self._backbone = [load_backbone(backbone)]
            self.hparams.backbone_config = self.backbone.config.to_dict()
        self.backbone.gradient_checkpointing_enable(gradient_checkpointing)
        self._anchors_valid = backbone_config is None  # L2-SP anchors need the pretrained weights themselves
        self._anchors: dict[int, torch.Tensor] | None = None
        self.classifier: HNetForSequenceClassification | None = None
        self._rc_from_data = rc_conjoin is None  # setup() sets it from the data's strand policy
        if class_names is not None:
            self._build(list(class_names), bool(rc_conjoin))

    @property
    def backbone(self) -> HNetForCausalLM:
        """The language model being fine-tuned (also before the head is built)."""
        return self._backbone[0]

    def _build(self, class_names: list[str], rc_conjoin: bool) -> None:
        hp = self.hparams
        if hp.pooling == "flatten" and hp.max_length is None:
            hp.max_length = self._longest("pooling 'flatten'")
        self.classifier = HNetForSequenceClassification(self.backbone, class_names, pooling=hp.pooling,
                                                        rc_conjoin=rc_conjoin, dropout=hp.dropout, head_norm=hp.head_norm,
                                                        max_length=hp.max_length)
        if hp.freeze_backbone:
            self.classifier.freeze_backbone()
        elif hp.freeze_layers:
            depths, top = layer_depths(self.classifier.backbone)
            if hp.freeze_layers >= top:
                raise ConfigError(f"--model.freeze_layers {hp.freeze_layers}: the backbone has {top} blocks; "
                                  "freeze fewer, or use --model.freeze_backbone true")
            for name, p in self.classifier.backbone.named_parameters():
                if depths[name] <= hp.freeze_layers:
                    p.requires_grad_(False)
        if hp.decay_toward == "pretrained":
            # the backbone's weights as loaded from --model.backbone, before any checkpoint restores
            # fine-tuned ones over them (Lightning restores after setup, before on_fit_start)
            self._anchors = {id(p): p.detach().clone() for p in self.classifier.backbone.parameters()}
        self._make_metrics(class_names, rc_conjoin)

    def _model_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        # The labelled data module encodes with the nucleotide table; a byte-level backbone (the
        # official checkpoints) takes ASCII codes.
        return self.classifier.backbone.tokenizer.from_nucleotide_ids(input_ids)

    # ---------------------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict]:
        """AdamW groups: the backbone's per (stage, decay, depth), then the head's."""
        hp = self.hparams
        backbone = self.classifier.backbone
        depths, top = layer_depths(backbone)
        groups = []
        for g in param_groups(backbone, hp.lr, hp.weight_decay):
            by_depth: dict[int, list] = {}
            for name, param in zip(g["names"], g["params"]):
                by_depth.setdefault(depths[name], []).append(param)
            for depth, params in sorted(by_depth.items()):
                scale = hp.lr_layer_decay ** (top - depth)
                groups.append({**{k: v for k, v in g.items() if k != "names"}, "params": params, "depth": depth,
                               "lr": g["lr"] * scale, "lr_multiplier": g["lr_multiplier"] * scale})
        if hp.decay_toward == "pretrained":
            for g in groups:
                g["anchor_decay"], g["weight_decay"] = g["weight_decay"], 0.0  # applied in optimizer_step
        head_lr = hp.head_lr if hp.head_lr is not None else 10 * hp.lr
        groups.append({"params": self.classifier.head_parameters(), "lr": head_lr, "lr_multiplier": head_lr / hp.lr,
                       "weight_decay": 0.0, "stage": -1, "depth": top + 1})
        return [g for g in groups if any(p.requires_grad for p in g["params"])]

    def on_fit_start(self) -> None:
        if self._anchors is not None and not self._anchors_valid:
            raise ConfigError("decay_toward 'pretrained' needs the pretrained backbone's weights, but this module was "
                              "rebuilt from a checkpoint's backbone_config; fit from the recipe with --ckpt_path instead")
        if self._anchors is not None:  # to where the model now is (its device, its dtype)
            self._anchors = {id(p): self._anchors[id(p)].to(p.device, p.dtype) for p in self.classifier.backbone.parameters()}

    def on_before_optimizer_step(self, optimizer) -> None:
        if self._anchors is None:
            return
        with torch.no_grad():  # decoupled decay towards the starting weights, as AdamW decays towards 0
            for group in optimizer.param_groups:
                rate = group.get("anchor_decay", 0.0) * group["lr"]
                if rate:
                    for p in group["params"]:
                        p.sub_(rate * (p - self._anchors[id(p)]))

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.param_groups(), lr=hp.lr, betas=tuple(hp.betas))
        if self.trainer.is_global_zero:
            head_lr = hp.head_lr if hp.head_lr is not None else 10 * hp.lr
            frozen = " (backbone frozen)" if hp.freeze_backbone else (f", first {hp.freeze_layers} blocks frozen" if hp.freeze_layers else "")
            print(f"hnet_dna: fine-tuning {len(self.classifier.class_names)} classes "
                  f"({', '.join(self.classifier.class_names)}), pooling {hp.pooling}, rc_conjoin "
                  f"{self.classifier.rc_conjoin}, head_norm {hp.head_norm}; backbone lr {hp.lr:.3g}{frozen}, layer decay "
                  f"{hp.lr_layer_decay:g}, weight decay {hp.weight_decay:g} toward {hp.decay_toward}; head lr {head_lr:.3g}",
                  file=sys.stderr, flush=True)
        return self._scheduled(optimizer)


class CNNBaselineModule(ClassifierTask):
    """The CNN control (:class:`~hnet_dna.model.cnn.CNNClassifier`), trained from scratch.

    Args:
        class_names, rc_conjoin: as :class:`FinetuneModule`.
        max_length: the longest sequence; default: the longest in the data module's splits.
        channels, layers, kernel_size, embed_dim, code_dim, hidden, dropout: the network (see its
            docstring).
        lr, weight_decay, warmup_fraction, min_lr_fraction: AdamW with warmup and cosine decay.
    """

    def __init__(self, class_names: list[str] | None = None, rc_conjoin: bool | None = None,
                 max_length: int | None = None, channels: int = 96, layers: int = 3, kernel_size: int = 9,
                 embed_dim: int = 64, code_dim: int = 16, hidden: int = 128, dropout: float = 0.2, lr: float = 1e-3,
                 weight_decay: float = 0.01, warmup_fraction: float = 0.1, min_lr_fraction: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
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
                                        hidden=hp.hidden, dropout=hp.dropout, rc_conjoin=rc_conjoin)
        self._make_metrics(class_names, rc_conjoin)

    def configure_optimizers(self):
        hp = self.hparams
        decay = [p for n, p in self.classifier.named_parameters() if p.dim() >= 2 and not n.startswith("embedding")]
        rest = [p for n, p in self.classifier.named_parameters() if not (p.dim() >= 2 and not n.startswith("embedding"))]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                       {"params": rest, "weight_decay": 0.0}], lr=hp.lr)
        return self._scheduled(optimizer)


def load_classifier(path, flag: str = "--ckpt_path") -> ClassifierTask:
    """A fine-tuned classifier (:class:`FinetuneModule` or :class:`CNNBaselineModule`) from a
    checkpoint written by ``python -m hnet_dna fit`` or ``python -m hnet_dna.finetune``, in eval
    mode on the CPU."""
    from ..model.loading import read_lightning_checkpoint
    from ..weights import CheckpointError

    _, hparams = read_lightning_checkpoint(path, flag)
    if not hparams.get("class_names"):
        raise CheckpointError(f"{flag} {path}: not a fine-tuned classifier of hnet_dna (no class names in its "
                              "hyperparameters); a pretraining checkpoint goes to --model instead")
    cls = FinetuneModule if "backbone" in hparams else CNNBaselineModule
    try:
        task = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{flag} {path}: its weights do not fit the classifier its hyperparameters describe "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return task.eval()
