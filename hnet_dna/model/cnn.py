"""The small convolutional classifier that genomics benchmarks report beside language models.

Genomic Benchmarks (Grešová et al. 2023) ships a CNN baseline (an embedding, three convolution
layers each followed by max-pooling, the positions flattened into a dense head) and Caduceus and
HyenaDNA quote it beside their models. This is the same design, written to take right-padded
batches of any length up to ``max_length``::

    x = embedding(ids)                                   # (B, E, L)
    x = [conv -> ReLU -> max-pool 2] x layers            # (B, C, L / 2**layers), padding kept at zero
    x = conv1x1(x)                                       # (B, 16, L')   a narrow code per position
    x = zero-pad to max_length / 2**layers, flatten      # (B, 16 * M')  position stays readable
    logits = linear(dropout(ReLU(dense(x))))             # (B, classes)

Flattening the positions (rather than pooling them away) is what lets the baseline read *where* a
motif lies, as Genomic Benchmarks' CNN does; about 0.25-0.35 M parameters for 60-400 bp windows
with the defaults. ``rc_conjoin`` averages the logits of each sequence and its reverse complement,
as the H-Net head does, so both follow the same strand policy.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError
from ..tokenizer import SEQUENCE_VOCAB_SIZE, NucleotideTokenizer
from .hnet import InputError
from .heads import SequenceClassifierOutput, check_outputs

__all__ = ["CNNClassifier"]


class CNNClassifier(nn.Module):
    """A convolutional sequence classifier over nucleotide ids.

    Args:
        class_names: one name per class (index order of the logits).
        max_length: the longest sequence it takes (shorter ones are padded).
        channels: width of every convolution layer. layers: how many (each halves the length).
        kernel_size: odd width. embed_dim: width of the base embedding. code_dim: channels per
            position handed to the dense layer. hidden: width of the dense layer.
        dropout: before the output layer. rc_conjoin: average the logits of each sequence and its
            reverse complement. task: as :class:`~hnet_dna.model.heads.HNetForSequenceClassification`'s.
    """

    def __init__(self, class_names: list[str], max_length: int, channels: int = 96, layers: int = 3,
                 kernel_size: int = 9, embed_dim: int = 64, code_dim: int = 16, hidden: int = 128,
                 dropout: float = 0.2, rc_conjoin: bool = False, task: str = "multiclass"):
        super().__init__()
        if kernel_size % 2 != 1 or layers < 1 or channels < 1 or not max_length > 0:
            raise ConfigError(f"the CNN needs an odd kernel_size, layers and channels >= 1 and max_length > 0; "
                              f"got {kernel_size}, {layers}, {channels}, {max_length}")
        check_outputs(class_names, task)
        self.task = task
        self.tokenizer = NucleotideTokenizer()
        self.class_names = [str(c) for c in class_names]
        self.max_length, self.rc_conjoin = max_length, rc_conjoin
        # the ids a sequence holds (not <mask>): the CNN's parameters and init as before <mask> was added
        self.embedding = nn.Embedding(SEQUENCE_VOCAB_SIZE, embed_dim, padding_idx=self.tokenizer.pad_id)
        widths = [embed_dim, *[channels] * layers]
        self.convs = nn.ModuleList(nn.Conv1d(a, b, kernel_size, padding=kernel_size // 2) for a, b in zip(widths, widths[1:]))
        self.code = nn.Conv1d(channels, code_dim, 1)
        self.positions = math.ceil(max_length / 2 ** layers)
        self.dense = nn.Linear(code_dim * self.positions, hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, len(self.class_names))

    def _logits(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[:, None, :].to(self.classifier.weight.dtype)  # (B, 1, L)
        x = self.embedding(input_ids).transpose(1, 2) * keep  # (B, E, L)
        for conv in self.convs:
            # after ReLU every value is >= 0, so a pooling window that reaches into the padding
            # (zeros) takes the same maximum as one cut at the sequence's end
            x = F.max_pool1d(F.relu(conv(x)) * keep, 2, ceil_mode=True)
            keep = F.max_pool1d(keep, 2, ceil_mode=True)
        x = self.code(x) * keep  # (B, code, L')
        x = F.pad(x, (0, self.positions - x.shape[-1])).flatten(1)  # (B, code * M')
        return self.classifier(self.dropout(F.relu(self.dense(x))))

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        """input_ids, mask: (B, L) right-padded nucleotide ids; labels: (B,) class indices."""
        mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask
        if int(mask.sum(-1).max()) > self.max_length:
            raise InputError(f"a sequence of {int(mask.sum(-1).max())} bases is longer than this CNN's max_length {self.max_length}")
        input_ids, mask = input_ids[:, : self.max_length], mask[:, : self.max_length]  # only padding is cut
        logits = self._logits(input_ids, mask)
        if self.rc_conjoin:
            logits = (logits + self._logits(self.tokenizer.reverse_complement(input_ids, mask=mask), mask)) / 2
        out = SequenceClassifierOutput(logits=logits)
        if labels is not None:
            if self.task != "multiclass":
                raise InputError(f"a {self.task} CNN's loss is its task's (hnet_dna.tasks.objectives.Objective): call it "
                                 "without labels")
            out.loss = F.cross_entropy(logits.float(), labels.long())
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
