"""Fine-tuning a pretrained (or fresh) backbone as a classifier, a LightningModule (``python -m
hnet_dna fit``; metrics, strand policy and steps: :mod:`hnet_dna.tasks.classifier`). Model
selection and early stopping use ``val/mcc`` only (the recipes in ``pipelines/finetune/``); the
test split is never looked at before the selected checkpoint is tested.

:class:`FinetuneModule` offers what a recipe may need, each chosen on validation only: a normalised
head input (``head_norm``), layer-wise learning-rate decay (``lr_layer_decay``), linear warmup
(``warmup_fraction``), weight decay towards the pretrained weights instead of towards zero
(``decay_toward: pretrained``, the L2-SP regulariser of Li et al. 2018, applied decoupled as AdamW
applies its decay) or none (``weight_decay: 0``), and partial freezing (``freeze_layers``: the
embedding and the first N blocks). Two ways to keep what pretraining learned
(:mod:`hnet_dna.tasks.adapters`): ``adapter: lora`` (low-rank adapters through peft, the backbone's
weights frozen) and ``head_init: probe`` (the head starts from a linear probe fitted on the frozen
features: with a lower learning rate, LP-FT).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Literal

import torch

from ..config import ConfigError, HNetConfig
from ..model import HNetForCausalLM
from ..model.heads import HNetForSequenceClassification
from ..model.loading import load_model, model_for
from ..model.pooling import Pooling
from ..optim import layer_depths, param_groups
from .adapters import add_lora, head_probe_features, init_head_from_probe, merge_lora
from .classifier import ClassifierTask, CNNBaselineModule, FolderClassifier, classification_metrics

__all__ = ["FinetuneModule", "load_backbone", "load_classifier", "ClassifierTask", "CNNBaselineModule", "classification_metrics"]


def load_backbone(spec: str | dict) -> HNetForCausalLM:
    """What ``--model.backbone`` takes: a preset, a config JSON, a ``save_pretrained`` folder,
    inline fields, ``default`` (the shipped pretrained model) or a pretraining ``.ckpt``."""
    return load_model(spec, "--model.backbone")


class FinetuneModule(ClassifierTask):
    """Sequence classification with an H-Net (or isotropic) backbone.

    Args:
        backbone: preset, config JSON, ``save_pretrained`` folder, inline fields, or a pretraining
            ``.ckpt``: the language model whose backbone is fine-tuned (or trained from scratch).
        class_names: the classes; by default taken from the data module when fitting starts (and
            stored in checkpoints, so ``test`` / ``predict`` rebuild the same head).
        pooling: ``mean`` (over bases), ``chunks`` (over the innermost level's chunks), ``last``,
            ``max`` (over bases), ``attention`` (a learned query over the bases), or ``flatten``
            (every position laid end to end: a head that sees where a signal lies); see
            :mod:`hnet_dna.model.pooling`. A word outside these fails when the config is parsed.
        max_length: with ``flatten``, the longest sequence the head reads; default: the longest in the
            data module's training split (stored in checkpoints; longer sequences in any split are
            refused before any step).
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
        head_init: ``random``, or ``probe``: before the first step, fit logistic regression on the
            frozen model's head inputs for the training split (C chosen on validation MCC) and start
            the head from it (LP-FT's linear probe; :func:`~hnet_dna.tasks.adapters.init_head_from_probe`).
        adapter: ``none``, or ``lora``: low-rank adapters (peft) on the backbone's projections
            (:data:`~hnet_dna.tasks.adapters.LORA_TARGETS`), every backbone weight frozen, the head
            trained fully; ``lr`` is then the adapters' rate. Saved in checkpoints; merged into the
            weights for ``predict`` and by :func:`load_classifier`. lora_rank, lora_alpha,
            lora_dropout: the adapters' rank r, scale alpha (updates scaled by alpha / r) and dropout.
        gradient_checkpointing: recompute each backbone block in the backward pass instead of
            keeping its activations: less memory for long sequences, more time, same results.
        task: ``multiclass``, ``multilabel`` or ``regression``; None: the data module's
            (:mod:`hnet_dna.tasks.objectives`: losses, predictions, metrics).
        pos_weight: multilabel: ``none``, or ``balanced`` (each label's positives weighted by its
            negatives / positives on the training split).
        regression_loss: ``mse`` on targets standardised on the training split, or ``poisson`` (the
            outputs are log rates of counts).
        target_mean, target_std, pos_weight_values: written by the module from the training split
            (leave them unset), so checkpoints predict in the targets' units without the data.
        backbone_config: written by the module into its checkpoints (leave it unset): the
            backbone's full config, so that a checkpoint rebuilds its architecture from itself even
            when ``backbone`` now names something else (``default`` after a new default model, a
            moved folder); the weights come from the checkpoint.
    """

    # a LoRA checkpoint's keys (lora_A, lora_B) exist only in a module built with the same adapters
    BUILT_WITH = (*ClassifierTask.BUILT_WITH, "adapter", "lora_rank")

    def __init__(
        self,
        backbone: str | dict = "tiny-hnet",
        class_names: list[str] | None = None,
        pooling: Pooling = "mean",
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
        head_init: Literal["random", "probe"] = "random",
        adapter: Literal["none", "lora"] = "none",
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        task: str | None = None,
        pos_weight: str = "none",
        regression_loss: str = "mse",
        target_mean: list[float] | None = None,
        target_std: list[float] | None = None,
        pos_weight_values: list[float] | None = None,
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
        if adapter == "lora" and (freeze_backbone or freeze_layers or decay_toward == "pretrained"):
            raise ConfigError("--model.adapter lora already keeps every backbone weight where it was: leave "
                              "freeze_backbone, freeze_layers and decay_toward pretrained unset")
        if lora_rank < 1 or not lora_alpha > 0 or not 0 <= lora_dropout < 1:
            raise ConfigError(f"--model.lora_rank must be >= 1, lora_alpha > 0 and lora_dropout within [0, 1); "
                              f"got {lora_rank}, {lora_alpha}, {lora_dropout}")
        self.save_hyperparameters()
        self._check_task_options()
        self.head_probe: dict | None = None  # head_init probe: the probe's C and validation MCC, once fitted
        # Held outside the module tree until the head exists, so its weights are registered once
        # (as classifier.backbone.*), whether the classes come from the config or from the data.
        if backbone_config is not None:  # from a checkpoint: random weights, the checkpoint's replace them
            self._backbone = [model_for(HNetConfig.from_dict(backbone_config, source="the checkpoint's backbone_config"))]
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
                                                        max_length=hp.max_length, task=self.task)
        if hp.adapter == "lora":
            self.adapted = add_lora(self.classifier.backbone, hp.lora_rank, hp.lora_alpha, hp.lora_dropout)
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

    def _init_head_from_probe(self) -> None:
        """head_init probe, at the start of a fit (not a resumed one: its checkpoint holds the head),
        where the model already is on its device. The probe's features, fit and seconds come before
        the trainer's clock starts: a ``time`` budget does not include them (``head_probe["seconds"]``
        says what they took)."""
        if self.task != "multiclass":
            raise ConfigError(f"--model.head_init probe fits a logistic-regression probe of one class per sequence; a "
                              f"{self.task} task has no probe initialisation yet: use head_init random")
        start = time.perf_counter()
        dm = self._data  # what setup attached
        splits = {}
        for name in ("train", "val"):
            ds = dm.datasets[name]
            feats = head_probe_features(self.classifier, ds.ids, self._model_ids, dm.tokenizer.pad_id)
            splits[name] = (feats, list(ds.labels))
        seed = int(getattr(dm, "sample_seed", 0))
        self.head_probe = init_head_from_probe(self.classifier, splits["train"], splits["val"], seed=seed)
        self.head_probe["seconds"] = round(time.perf_counter() - start, 1)
        print(f"hnet_dna: head initialised from a linear probe on the frozen features (C {self.head_probe['C']:g}, "
              f"validation MCC {self.head_probe['val_mcc']:.3f})", file=sys.stderr, flush=True)

    def merge_adapters(self) -> int:
        """Fold the LoRA adapters into the backbone's weights (peft's merge): the same logits from a
        plain model. Returns how many were merged (0 without adapters)."""
        return merge_lora(self.classifier.backbone) if self.classifier is not None else 0

    def on_predict_start(self) -> None:
        self.merge_adapters()

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
        if self.hparams.head_init == "probe" and self.head_probe is None and self.trainer.ckpt_path is None:
            self._init_head_from_probe()
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
            if hp.adapter == "lora":
                frozen = f" (LoRA r {hp.lora_rank}, alpha {hp.lora_alpha:g} on {len(self.adapted)} projections; backbone frozen)"
            outputs = {"multiclass": "classes", "multilabel": "labels", "regression": "targets"}[self.task]
            print(f"hnet_dna: fine-tuning {len(self.classifier.class_names)} {outputs} "
                  f"({', '.join(self.classifier.class_names)}), pooling {hp.pooling}, rc_conjoin "
                  f"{self.classifier.rc_conjoin}, head_norm {hp.head_norm}; backbone lr {hp.lr:.3g}{frozen}, layer decay "
                  f"{hp.lr_layer_decay:g}, weight decay {hp.weight_decay:g} toward {hp.decay_toward}; head lr {head_lr:.3g}",
                  file=sys.stderr, flush=True)
        return self._scheduled(optimizer)


def load_classifier(path, flag: str = "--ckpt_path") -> ClassifierTask | FolderClassifier:
    """A fine-tuned network (:class:`FinetuneModule`, :class:`CNNBaselineModule`, or a per-base
    :class:`~hnet_dna.tasks.SegmentationModule`) from a checkpoint written by
    ``python -m hnet_dna fit`` or ``python -m hnet_dna.finetune``, in eval
    mode on the CPU, LoRA adapters merged into the weights; or, from a classifier's
    ``save_pretrained`` folder (``classifier.json``: ours, or a transformers Trainer's), a
    :class:`FolderClassifier`."""
    from ..model.loading import read_lightning_checkpoint
    from ..weights import CheckpointError

    if Path(path).is_dir():
        if not (Path(path) / "classifier.json").is_file():
            raise CheckpointError(f"{flag} {path}: a folder without classifier.json, so not a fine-tuned classifier; a "
                                  "language model's folder goes to --model instead")
        return FolderClassifier.from_folder(path)
    _, hparams = read_lightning_checkpoint(path, flag)
    if not hparams.get("class_names"):
        raise CheckpointError(f"{flag} {path}: not a fine-tuned classifier of hnet_dna (no class names in its "
                              "hyperparameters); a pretraining checkpoint goes to --model instead")
    if hparams.get("network") is not None:  # a per-base (segmentation) network: an output at every base
        from .segmentation import SegmentationModule

        cls = SegmentationModule
    else:
        cls = FinetuneModule if "backbone" in hparams else CNNBaselineModule
    try:
        task = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{flag} {path}: its weights do not fit the classifier its hyperparameters describe "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if isinstance(task, FinetuneModule):
        task.merge_adapters()  # for inference: a plain model, the same logits
    return task.eval()
