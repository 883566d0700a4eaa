"""Sequence classification on top of an H-Net (or an isotropic baseline), Hugging Face style.

::

    features = backbone(input_ids, mask)                  # hnet_dna.model.features
    pooled   = pool(features)                              # (B, D_0)
    logits   = classifier(dropout(norm(pooled)))           # (B, C)
    logits   = (logits + logits of the reverse complement) / 2    with rc_conjoin

Pooling (``mean``, ``chunks``, ``last``, ``max``, ``attention``, ``flatten``): :mod:`hnet_dna.model.pooling`,
shared with the protocol's probe and ``embed``. With ``flatten`` each position is normalised before it
is laid down; ``attention``'s learned query belongs to the head.

The head's input is normalised (``head_norm``, a LayerNorm) by default: a pretrained backbone's
pooled features are small (its final RMSNorm gains shrink during pretraining), share one large
common direction and vary far less than a fresh model's; a linear head initialised for unit-scale
inputs would otherwise barely move them at the start of fine-tuning.

Reverse-complement conjoined inference (``rc_conjoin``) averages the logits of a sequence and of
its reverse complement, so a sequence and its reverse complement get identical logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, HNetConfig
from .hnet import HNetForCausalLM, InputError
from .pooling import AttentionPooling, Pooling, check_pooling, pool_features, pooled_width

__all__ = ["HNetForSequenceClassification", "SequenceClassifierOutput", "check_outputs"]

HEAD_NAME = "classifier.json"


def check_outputs(names: list[str], task: str) -> None:
    """A multiclass head needs two classes or more; a multilabel or regression head one output or more."""
    if task not in ("multiclass", "multilabel", "regression"):
        raise ConfigError(f"task must be multiclass, multilabel or regression, got {task!r}")
    if task == "multiclass" and len(names) < 2:
        raise ConfigError(f"a classifier needs at least two classes, got {names!r}")
    if not names:
        raise ConfigError(f"a {task} head needs at least one output name")


@dataclass
class SequenceClassifierOutput:
    logits: torch.Tensor  # (B, C)
    loss: torch.Tensor | None = None  # mean cross-entropy when labels are given


class HNetForSequenceClassification(nn.Module):
    """A classifier: an :class:`HNetForCausalLM` backbone (its LM head unused), pooling, a linear head.

    Args:
        backbone: the language model whose backbone is used (pretrained or new).
        class_names: one name per class (index order of the logits).
        pooling: ``mean``, ``chunks``, ``last``, ``max``, ``attention`` or ``flatten``.
        rc_conjoin: average the logits of each sequence and its reverse complement.
        dropout: dropout on the pooled features during training.
        head_norm: LayerNorm on the pooled features (with ``flatten``: on each position) before the
            linear head.
        max_length: with ``flatten``, the longest sequence the head takes (shorter ones are padded).
        task: ``multiclass`` (one logit per class, at least two; ``labels`` give the cross-entropy
            loss), or ``multilabel`` / ``regression``: one output per label or target (at least
            one), their loss and predictions in :mod:`hnet_dna.tasks.objectives`.
    """

    def __init__(self, backbone: HNetForCausalLM, class_names: list[str], pooling: Pooling = "mean",
                 rc_conjoin: bool = False, dropout: float = 0.0, head_norm: bool = True, max_length: int | None = None,
                 task: str = "multiclass"):
        super().__init__()
        check_pooling(pooling, backbone.config.num_stages)
        check_outputs(class_names, task)
        self.task = task
        self.backbone = backbone
        self.class_names = [str(c) for c in class_names]
        if pooling == "flatten" and not (max_length or 0) > 0:
            raise ConfigError("pooling 'flatten' needs max_length, the longest sequence the head will read")
        self.pooling, self.rc_conjoin = pooling, rc_conjoin
        self.max_length = max_length if pooling == "flatten" else None
        width = pooled_width(pooling, backbone.config)
        self.attention = AttentionPooling(width) if pooling == "attention" else None
        self.head_norm = nn.LayerNorm(width) if head_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width * (self.max_length or 1), len(self.class_names))
        nn.init.normal_(self.classifier.weight, std=backbone.config.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    @property
    def config(self) -> HNetConfig:
        return self.backbone.config

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    def head_inputs(self, input_ids, mask) -> torch.Tensor:
        """What the linear layer reads, before dropout: (B, F), F = D or max_length * D."""
        features = self.backbone.features(input_ids, mask)
        dtype = self.classifier.weight.dtype
        if self.pooling == "flatten":  # each position normalised, then laid down: (B, max_length * D)
            return pool_features(features, "flatten", max_length=self.max_length, position_norm=self.head_norm, dtype=dtype)
        return self.head_norm(pool_features(features, self.pooling, dtype=dtype, attention=self.attention))  # (B, D)

    def _logits(self, input_ids, mask) -> torch.Tensor:
        return self.classifier(self.dropout(self.head_inputs(input_ids, mask)))

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        """input_ids, mask: (B, L) right-padded; labels: (B,) class indices."""
        logits = self._logits(input_ids, mask)
        if self.rc_conjoin:
            rc = self.tokenizer.reverse_complement(input_ids, mask=mask if mask is not None else torch.ones_like(input_ids, dtype=torch.bool))
            logits = (logits + self._logits(rc, mask)) / 2
        out = SequenceClassifierOutput(logits=logits)
        if labels is not None:
            if self.task != "multiclass":
                raise InputError(f"a {self.task} head's loss is its task's (hnet_dna.tasks.objectives.Objective), not "
                                 "cross-entropy: call it without labels")
            if labels.shape != logits.shape[:1] or labels.dtype not in (torch.int64, torch.int32):
                raise InputError(f"labels must be (batch,) class indices; got shape {tuple(labels.shape)}, dtype {labels.dtype}")
            out.loss = F.cross_entropy(logits.float(), labels.long())
        return out

    def head_parameters(self) -> list[nn.Parameter]:
        """The head's parameters (attention query, norm and linear layer), outside the backbone."""
        attention = [] if self.attention is None else list(self.attention.parameters())
        return [*attention, *self.head_norm.parameters(), *self.classifier.parameters()]

    def freeze_backbone(self) -> None:
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    # -------------------------------------------------------------------------------- weights
    def save_pretrained(self, directory: str | Path) -> None:
        """The backbone as :meth:`HNetForCausalLM.save_pretrained` writes it, plus ``classifier.json``
        (class names, pooling, rc_conjoin) and ``classifier.safetensors`` (the head)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        self.backbone.save_pretrained(directory)
        head = {f"classifier.{k}": v.detach().contiguous() for k, v in self.classifier.state_dict().items()}
        head |= {f"head_norm.{k}": v.detach().contiguous() for k, v in self.head_norm.state_dict().items()}
        if self.attention is not None:
            head |= {f"attention.{k}": v.detach().contiguous() for k, v in self.attention.state_dict().items()}
        save_file(head, str(directory / "classifier.safetensors"))
        (directory / HEAD_NAME).write_text(json.dumps(
            {"class_names": self.class_names, "pooling": self.pooling, "rc_conjoin": self.rc_conjoin,
             "head_norm": isinstance(self.head_norm, nn.LayerNorm), "max_length": self.max_length,
             **({"task": self.task} if self.task != "multiclass" else {})}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location="cpu") -> "HNetForSequenceClassification":
        from safetensors.torch import load_file

        from ..weights import CheckpointError

        directory = Path(directory)
        if not (directory / HEAD_NAME).is_file():
            raise CheckpointError(f"{directory}: no {HEAD_NAME}; expected a folder written by "
                                  "HNetForSequenceClassification.save_pretrained")
        meta = json.loads((directory / HEAD_NAME).read_text())
        model = cls(HNetForCausalLM.from_pretrained(directory, map_location=map_location), meta["class_names"],
                    pooling=meta["pooling"], rc_conjoin=meta["rc_conjoin"], head_norm=meta.get("head_norm", False),
                    max_length=meta.get("max_length"), task=meta.get("task", "multiclass"))
        head = load_file(str(directory / "classifier.safetensors"), device=str(map_location))
        parts = [("classifier.", model.classifier), ("head_norm.", model.head_norm)]
        parts += [] if model.attention is None else [("attention.", model.attention)]
        for prefix, module in parts:
            module.load_state_dict({k.removeprefix(prefix): v for k, v in head.items() if k.startswith(prefix)})
        return model
