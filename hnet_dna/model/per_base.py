"""Per-base annotation networks: one logit per element at every base (segmentation, issue #33).

:class:`HNetForBaseAnnotation` reads the H-Net's base-resolution output, the decoder's states after
the chunked main network has been dechunked back to bases (no pooling)::

    h_fwd  = backbone(ids)                                  # (B, L, D_0)
    h_rev  = reverse(backbone(reverse_complement(ids)))     # (B, L, D_0)   strands: both
    logits = linear(dropout(norm([h_fwd, h_rev])))          # (B, L, E)

A causal backbone's state at base i has read bases <= i only; whether a base is in an exon depends
as much on what follows it. ``strands: both`` (the default for a causal backbone) adds the reverse
strand's pass, whose state at base i has read bases >= i, flipped back to forward coordinates: every
base is then read with its whole window on both sides, at twice the compute. A bidirectional
(masked-LM) backbone already reads both sides: ``forward`` (its default).

:class:`DilatedResidualCNN` is the control of the kind BEND and SegmentNT report for base-level
annotation: residual blocks of dilated convolutions (dilation doubling per block), a receptive
field of ~1 kb either side with the defaults, about the H-Net's size (0.37 M parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError
from ..tokenizer import SEQUENCE_VOCAB_SIZE, NucleotideTokenizer
from .bimamba import reverse_real
from .features import backbone_features

__all__ = ["BaseAnnotationOutput", "HNetForBaseAnnotation", "DilatedResidualCNN", "STRANDS"]

STRANDS = ("forward", "both")


@dataclass
class BaseAnnotationOutput:
    logits: torch.Tensor  # (B, L, E)
    loss: torch.Tensor | None = None


class HNetForBaseAnnotation(nn.Module):
    """Per-base element logits from an H-Net (or isotropic) backbone (see the module docstring).

    Args:
        backbone: an :class:`~hnet_dna.model.HNetForCausalLM` or :class:`~hnet_dna.model.HNetForMaskedLM`.
        element_names: one name per output.
        strands: ``both`` or ``forward``; default: ``both`` for a causal backbone, ``forward`` for a
            bidirectional one.
        dropout: on the head's input during training.
    """

    def __init__(self, backbone, element_names: list[str], strands: str | None = None, dropout: float = 0.0):
        super().__init__()
        if not element_names:
            raise ConfigError("a per-base head needs at least one element")
        bidirectional = bool(getattr(backbone.config, "bidirectional", False))
        self.strands = strands or ("forward" if bidirectional else "both")
        if self.strands not in STRANDS:
            raise ConfigError(f"--model.strands must be one of {', '.join(STRANDS)}, got {strands!r}")
        self.backbone, self.class_names = backbone, [str(n) for n in element_names]
        width = backbone.config.d_model[0] * (2 if self.strands == "both" else 1)
        self.head_norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, len(self.class_names))
        nn.init.normal_(self.classifier.weight, std=backbone.config.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    @property
    def config(self):
        return self.backbone.config

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    def head_inputs(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What the head reads at each base, normalised: (B, L, D_0) or (B, L, 2 D_0) with both strands."""
        hidden = backbone_features(self.backbone, input_ids, mask).hidden  # (B, L, D_0)
        if self.strands == "both":
            rc = self.tokenizer.reverse_complement(input_ids, mask=mask)
            reverse = reverse_real(backbone_features(self.backbone, rc, mask).hidden, mask)  # forward coordinates
            hidden = torch.cat([hidden, reverse], dim=-1)
        return self.head_norm(hidden.to(self.classifier.weight.dtype))

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> BaseAnnotationOutput:
        """input_ids, mask: (B, L) right-padded -> logits (B, L, E)."""
        mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask
        return BaseAnnotationOutput(self.classifier(self.dropout(self.head_inputs(input_ids, mask))))

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.head_norm.parameters(), *self.classifier.parameters()]


class DilatedResidualCNN(nn.Module):
    """A fully convolutional per-base network over nucleotide ids::

        x = conv(embedding(ids))                                        # (B, C, L)
        x = x + conv_dilated(GELU(norm(x)))    per block, dilation 1, 2, 4, ...
        logits = linear(norm(x))                                        # (B, L, E)

    Padding is zeroed after every layer, so it never reaches a real base.

    Args:
        element_names: one name per output. channels: width. blocks: residual blocks (dilation
            ``2**b``). kernel_size: odd width of each dilated convolution. embed_dim: base embedding.
        dropout: inside each block.
    """

    def __init__(self, element_names: list[str], channels: int = 96, blocks: int = 8, kernel_size: int = 5,
                 embed_dim: int = 32, dropout: float = 0.1):
        super().__init__()
        if kernel_size % 2 != 1 or blocks < 1 or channels < 1:
            raise ConfigError(f"the dilated CNN needs an odd kernel_size and blocks, channels >= 1; got {kernel_size}, "
                              f"{blocks}, {channels}")
        self.class_names = [str(n) for n in element_names]
        self.tokenizer = NucleotideTokenizer()
        self.embedding = nn.Embedding(SEQUENCE_VOCAB_SIZE, embed_dim, padding_idx=self.tokenizer.pad_id)
        self.stem = nn.Conv1d(embed_dim, channels, 9, padding=4)
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(blocks))
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=2 ** b,
                                             padding=2 ** b * (kernel_size // 2)) for b in range(blocks))
        self.dropout = nn.Dropout(dropout)
        self.out_norm = nn.LayerNorm(channels)
        self.classifier = nn.Linear(channels, len(self.class_names))

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> BaseAnnotationOutput:
        mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask
        keep = mask[:, None, :].to(self.classifier.weight.dtype)  # (B, 1, L)
        x = self.stem(self.embedding(input_ids).transpose(1, 2) * keep) * keep  # (B, C, L)
        for norm, conv in zip(self.norms, self.convs):
            h = F.gelu(norm(x.transpose(1, 2))).transpose(1, 2) * keep
            x = x + self.dropout(conv(h)) * keep
        return BaseAnnotationOutput(self.classifier(self.out_norm(x.transpose(1, 2))))  # (B, L, E)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
