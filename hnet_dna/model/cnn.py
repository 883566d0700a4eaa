"""The small convolutional classifier that genomics benchmarks report beside language models.

Genomic Benchmarks (Grešová et al. 2023) ships a CNN baseline (an embedding, three convolution
layers, a dense head) and Caduceus and HyenaDNA quote it beside their models. This is the same kind
of model made length-agnostic, so that one network serves every labelled set::

    x = embedding(ids)                                  # (B, L, E)
    x = [conv -> ReLU -> dropout] x layers              # (B, C, L), padding zeroed after each
    pooled = [masked mean | masked max over L]          # (B, 2C)
    logits = linear(pooled)                             # (B, classes)

About 0.35 M parameters with the defaults (64-dim embedding, 3 x 128 channels, kernel 9): the size
the field's CNN baselines have. ``rc_conjoin`` averages the logits of each sequence and its reverse
complement, as the H-Net head does, so both follow the same strand policy.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError
from ..tokenizer import NucleotideTokenizer
from .heads import SequenceClassifierOutput

__all__ = ["CNNClassifier"]


class CNNClassifier(nn.Module):
    """A convolutional sequence classifier over nucleotide ids.

    Args:
        class_names: one name per class (index order of the logits).
        channels: width of every convolution layer. layers: how many. kernel_size: odd width.
        embed_dim: width of the base embedding. dropout: after each convolution.
        rc_conjoin: average the logits of each sequence and its reverse complement.
    """

    def __init__(self, class_names: list[str], channels: int = 128, layers: int = 3, kernel_size: int = 9,
                 embed_dim: int = 64, dropout: float = 0.2, rc_conjoin: bool = False):
        super().__init__()
        if kernel_size % 2 != 1 or layers < 1 or channels < 1:
            raise ConfigError(f"the CNN needs an odd kernel_size and layers, channels >= 1; got {kernel_size}, {layers}, {channels}")
        if len(class_names) < 2:
            raise ConfigError(f"a classifier needs at least two classes, got {class_names!r}")
        self.tokenizer = NucleotideTokenizer()
        self.class_names = [str(c) for c in class_names]
        self.rc_conjoin = rc_conjoin
        self.embedding = nn.Embedding(self.tokenizer.vocab_size, embed_dim, padding_idx=self.tokenizer.pad_id)
        widths = [embed_dim, *[channels] * layers]
        self.convs = nn.ModuleList(nn.Conv1d(a, b, kernel_size, padding=kernel_size // 2) for a, b in zip(widths, widths[1:]))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * channels, len(self.class_names))

    def _logits(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[:, None, :].to(self.classifier.weight.dtype)  # (B, 1, L)
        x = self.embedding(input_ids).transpose(1, 2) * keep  # (B, E, L)
        for conv in self.convs:
            x = self.dropout(F.relu(conv(x))) * keep  # padding stays zero: it never leaks into real bases
        mean = x.sum(-1) / keep.sum(-1).clamp(min=1)  # (B, C)
        top = x.masked_fill(keep == 0, float("-inf")).amax(-1)  # (B, C)
        return self.classifier(torch.cat([mean, top], -1))

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        """input_ids, mask: (B, L) right-padded nucleotide ids; labels: (B,) class indices."""
        mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask
        logits = self._logits(input_ids, mask)
        if self.rc_conjoin:
            logits = (logits + self._logits(self.tokenizer.reverse_complement(input_ids, mask=mask), mask)) / 2
        out = SequenceClassifierOutput(logits=logits)
        if labels is not None:
            out.loss = F.cross_entropy(logits.float(), labels.long())
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
