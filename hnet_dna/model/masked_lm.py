"""The bidirectional H-Net, pretrained by masked language modelling (``config.bidirectional``).

The causal H-Net (:class:`~hnet_dna.model.HNetForCausalLM`) with both-direction layers in place of
the one-direction ones, not a copy of it:

* every Mamba-2 layer is a :class:`~hnet_dna.model.mamba2.BiMamba2` (a forward and a reversed
  scan added; projections shared, as Caduceus ties them);
* attention is two-way (:func:`~hnet_dna.model.attention.two_way_attention`; windowed layers see
  W positions on both sides), padding keys masked out;
* routing is the paper's (cosine of adjacent positions, the first base a boundary), so chunk
  states, boundaries and the ratio loss are what the causal model gives (``features()``, pooling
  ``chunks``, ``boundaries`` and the compression readouts work unchanged);
* dechunking has no EMA (it is causal): each position takes its chunk's state (the equation is in
  :mod:`hnet_dna.model.stage`).

The objective (BERT's, Devlin et al. 2019): the data hide about 15 % of the real A/C/G/T bases
(:mod:`hnet_dna.data.masking`: 80 % become ``<mask>``, 10 % a random base, 10 % stay) and give their
true ids as ``labels`` (-100 elsewhere); the loss is the cross-entropy at those positions, reported
as masked-base bits per base and accuracy, plus ``ratio_loss_weight`` times the ratio loss.
Masked LMs do not generate: the decoding methods raise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import ConfigError, HNetConfig
from ..tokenizer import NucleotideTokenizer
from .hnet import HNetForCausalLM, HNetOutput
from .layers import hi

__all__ = ["HNetForMaskedLM", "masked_lm_loss"]


class HNetForMaskedLM(HNetForCausalLM):
    """Embedding -> bidirectional H-Net backbone -> LM head over every position.

    Example::

        model = HNetForMaskedLM(HNetConfig.from_preset("tiny-bihnet"))
        tok = model.tokenizer
        ids = tok.encode("ACGTTGCA")[None]
        masked = ids.clone(); masked[0, 3] = tok.mask_id
        labels = torch.full_like(ids, -100); labels[0, 3] = ids[0, 3]
        out = model(masked, labels=labels)   # out.bits_per_base: the masked base's bits

    ``forward`` is the causal LM's, except that ``labels`` (B, L) are NOT shifted (the true id at
    each hidden position, -100 elsewhere) and the output also holds ``masked_accuracy``.
    """

    def __init__(self, config: HNetConfig, tokenizer: NucleotideTokenizer | None = None):
        if not config.bidirectional:
            raise ConfigError("HNetForMaskedLM needs a bidirectional config (bidirectional: true, e.g. the "
                              "tiny-bihnet preset); a causal config builds an HNetForCausalLM")
        super().__init__(config, tokenizer)

    def _fill_lm_loss(self, out: HNetOutput, labels, mask, loss_weights) -> None:
        # labels are NOT shifted: the true id at each hidden position, -100 elsewhere (A/C/G/T only scored)
        out.lm_loss, out.bits_per_base, out.masked_accuracy = masked_lm_loss(out.logits, labels, mask, self.tokenizer,
                                                                            loss_weights)

    # masked LMs do not decode
    def _no_decoding(self, *args, **kwargs):
        raise NotImplementedError("a masked LM (bidirectional H-Net) does not generate or decode position by "
                                  "position; use a causal H-Net for generation and left-to-right scoring")

    allocate_cache = prefill = step = extend = extend_features = generate = _no_decoding


HNetForCausalLM.masked_lm_class = HNetForMaskedLM  # from_pretrained of a masked LM's folder gives this class


def masked_lm_loss(logits, labels, mask, tokenizer: NucleotideTokenizer, loss_weights=None):
    """(mean cross-entropy in nats, its mean in bits per base, accuracy) over the positions whose
    label is A/C/G/T (not -100, N or padding) and real under ``mask``; logits (B, L, V)."""
    is_base = torch.isin(labels, torch.tensor(tokenizer.base_ids, device=labels.device)) & mask
    ce = F.cross_entropy(hi(logits).flatten(0, 1), labels.masked_fill(~is_base, 0).flatten(),
                         reduction="none").view_as(labels)
    keep = is_base.to(ce.dtype)
    weights = keep if loss_weights is None else keep * loss_weights.to(ce.dtype)
    loss = (ce * weights).sum() / weights.sum().clamp(min=1e-8)
    count = is_base.sum().clamp(min=1)
    bits = (ce.detach() * keep).sum() / count / math.log(2)
    accuracy = ((logits.detach().argmax(-1) == labels) & is_base).sum() / count
    return loss, bits, accuracy
