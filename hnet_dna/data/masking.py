"""BERT masking of DNA windows for masked-LM pretraining (Devlin et al. 2019).

Of a window's real A/C/G/T bases, each is chosen with probability ``fraction`` (0.15); of the chosen,
80 % become ``<mask>``, 10 % a base drawn uniformly from A/C/G/T (possibly itself), 10 % stay as they
are. N and padding are never chosen (N has no base to predict; windows are padded after masking).
``labels`` hold the true id at chosen positions and -100 elsewhere. The draws come from the numpy
generator the caller passes: the genome windows key it by (seed, epoch, window) for training and
(seed, window) for held-out splits, so a resumed run draws the same masks and every validation
scores the same hidden bases. Held-out windows hide every chosen base behind ``<mask>``
(``corrupt=False``): their masked-base bits measure what the model infers of bases it cannot see.
"""

from __future__ import annotations

import numpy as np
import torch

from ..tokenizer import NucleotideTokenizer

__all__ = ["bert_mask", "MASK_KEEP", "MASK_RANDOM", "IGNORE"]

MASK_RANDOM = 0.1  # of the chosen bases: replaced by a random base
MASK_KEEP = 0.1  # of the chosen bases: left as they are (the rest, 80 %, become <mask>)
IGNORE = -100  # the label of a position the loss skips


def bert_mask(ids: torch.Tensor, rng: np.random.Generator, tokenizer: NucleotideTokenizer,
              fraction: float = 0.15, corrupt: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked ids, labels) of one window's ids (L,) in ``tokenizer``'s table. ``corrupt=False``
    hides every chosen base behind ``<mask>`` (no random or kept bases): held-out scoring, where a
    base the model can see would flatter it."""
    bases = np.asarray(tokenizer.base_ids)
    x = ids.numpy()
    eligible = np.isin(x, bases)
    chosen = eligible & (rng.random(x.shape) < fraction)
    how = rng.random(x.shape)
    random_base = bases[rng.integers(0, len(bases), x.shape)]
    masked = x.copy()
    to_mask = chosen & (how < 1 - MASK_RANDOM - MASK_KEEP) if corrupt else chosen
    to_random = chosen & (how >= 1 - MASK_RANDOM - MASK_KEEP) & (how < 1 - MASK_KEEP) & corrupt
    masked[to_mask] = tokenizer.mask_id
    masked[to_random] = random_base[to_random]
    labels = np.where(chosen, x, IGNORE)
    return torch.from_numpy(masked), torch.from_numpy(labels)
