"""Scores under a masked LM (the bidirectional H-Net, :class:`~hnet_dna.model.HNetForMaskedLM`),
what ``python -m hnet_dna.score`` computes for such a model. In bits (log base 2).

* **Pseudo-log-likelihood** (Salazar et al. 2020) of a sequence: the sum over its A/C/G/T bases of
  ``log2 p(x_t | every other base of its window)``, each base hidden behind ``<mask>`` once, in a
  window of ``window`` bases placed with the base at its centre (at a sequence's ends, the first or
  last ``window`` bases). One forward pass per base, ``batch_size`` bases at a time. N is never
  scored (but is read as context).
* **Masked marginal** of a substitution (Meier et al. 2021): in the reference window (``flank``
  bases each side), the variant's site(s) are hidden behind ``<mask>`` and the score is
  ``sum over sites of log2 p(alt base) - log2 p(ref base)``: positive when the model prefers the
  alternative. One forward pass per variant; an indel has no site-by-site marginal and is skipped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..runs import Progress
from .tiling import choose_device

__all__ = ["masked_base_log2_probs", "pseudo_log_likelihood_bits", "masked_marginal_bits", "base_columns"]


def masked_base_log2_probs(model, ids_list: list[torch.Tensor], *, window: int | None = 1024, batch_size: int = 32,
                           device=None, progress: bool = False) -> list[torch.Tensor]:
    """Per sequence, (L, 4) float64 ``log2 p(b | the rest of its window)`` for b = A, C, G, T at each
    A/C/G/T position hidden behind ``<mask>`` (one forward pass each, in a window of ``window``
    bases centred on it; at a sequence's ends its first or last ``window`` bases); NaN rows where
    the sequence holds no base (N)."""
    _check_masked(model)
    device = device if isinstance(device, torch.device) else choose_device(device)
    model = model.to(device).eval()
    tok = model.tokenizer
    base_ids = torch.tensor(tok.base_ids)
    total = sum(int(torch.isin(ids, base_ids).sum()) for ids in ids_list)
    bar = Progress(total, total, "score (each base masked)", enabled=progress, unit="base")
    out = [torch.full((len(ids), 4), math.nan, dtype=torch.float64) for ids in ids_list]  # ordinary tensors
    with torch.inference_mode():
        for ids, probs in zip(ids_list, out):
            length = len(ids)
            width = length if window is None else min(window, length)
            targets = torch.nonzero(torch.isin(ids, base_ids)).flatten()  # (T,)
            starts = (targets - width // 2).clamp(min=0, max=length - width)  # the base near its window's centre
            for k in range(0, len(targets), batch_size):
                t, s = targets[k:k + batch_size], starts[k:k + batch_size]
                rows = torch.stack([ids[a:a + width] for a in s.tolist()])  # (b, W)
                at = t - s  # each row's hidden position
                rows[torch.arange(len(t)), at] = tok.mask_id
                logits = model(rows.to(device)).logits.float()  # (b, W, V)
                logp = F.log_softmax(logits[torch.arange(len(t)), at.to(device)], dim=-1).cpu()  # (b, V)
                probs[t] = logp[:, base_ids].double() / math.log(2)
                bar.update(len(t), len(t))
    bar.close()
    return out


def pseudo_log_likelihood_bits(model, ids_list: list[torch.Tensor], *, window: int | None = 1024, batch_size: int = 32,
                               device=None, progress: bool = False) -> list[torch.Tensor]:
    """Per sequence, (L,) float64 bits ``-log2 p(x_t | the rest of its window)`` with ``x_t`` hidden
    (:func:`masked_base_log2_probs`); NaN where not scored (N)."""
    probs = masked_base_log2_probs(model, ids_list, window=window, batch_size=batch_size, device=device,
                                   progress=progress)
    return [-p.gather(1, base_columns(model.tokenizer, ids)[:, None])[:, 0] for ids, p in zip(ids_list, probs)]  # NaN rows stay NaN


def base_columns(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """(L,) each id's column among A, C, G, T (0-3; 0 for anything else, whose rows are NaN)."""
    lookup = torch.zeros(max(tokenizer.vocab_size, int(ids.max()) + 1), dtype=torch.long)
    lookup[list(tokenizer.base_ids)] = torch.arange(4)
    return lookup[ids.long()]


def masked_marginal_bits(model, pairs: list[tuple[torch.Tensor, torch.Tensor]], *, batch_size: int = 32, device=None,
                         progress: bool = False) -> list[float]:
    """Per (reference window ids, alternative window ids) of equal length: the sites where they
    differ hidden in the reference window, ``sum log2 p(alt) - log2 p(ref)`` over those sites."""
    _check_masked(model)
    for ref, alt in pairs:
        if len(ref) != len(alt):
            raise ConfigError(f"a masked marginal compares windows of one length (a substitution); got {len(ref)} and "
                              f"{len(alt)} bases (an indel: score_variants skips those)")
    device = device if isinstance(device, torch.device) else choose_device(device)
    model = model.to(device).eval()
    bar = Progress(len(pairs), sum(len(r) for r, _ in pairs), "score (masked marginal)", enabled=progress, unit="variant")
    order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]))  # similar lengths share a batch
    scores = [0.0] * len(pairs)
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            chunk = order[k:k + batch_size]
            refs = [pairs[i][0] for i in chunk]
            sites = [torch.nonzero(pairs[i][0] != pairs[i][1]).flatten() for i in chunk]
            hidden = [r.clone() for r in refs]
            for h, where in zip(hidden, sites):
                h[where] = model.tokenizer.mask_id
            batch = model.tokenizer.pad_ids(hidden)
            logp = F.log_softmax(model(batch["input_ids"].to(device), batch["mask"].to(device)).logits.float(), -1).cpu()
            for row, (i, where) in enumerate(zip(chunk, sites)):
                alt, ref = pairs[i][1][where], pairs[i][0][where]
                scores[i] = float((logp[row, where, alt] - logp[row, where, ref]).sum()) / math.log(2)
            bar.update(len(chunk), sum(len(r) for r in refs))
    bar.close()
    return scores


def _check_masked(model) -> None:
    if not model.config.bidirectional:
        raise ConfigError("pseudo-log-likelihoods and masked marginals are a masked LM's scores; a causal model "
                          "gives exact log-likelihoods (hnet_dna.inference.score.sequence_bits)")
