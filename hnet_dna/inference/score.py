"""Likelihoods under a pretrained language model: per sequence, per base over a region, and variant
effects (what ``python -m hnet_dna.score`` computes; see :mod:`hnet_dna.score` for the outputs).

All likelihoods are in bits (log base 2). A sequence's log-likelihood is the sum over its bases
after the first of log2 p(base | the bases before it): the first base has no context and is not
scored, nor is any N (or a base after which the model is asked to predict an N). Sequences longer
than ``window`` are read in windows (:mod:`hnet_dna.inference.tiling`), each base scored in the
earliest window holding it; :func:`sequence_bits_exact` reads each sequence once from its start
in blocks that continue from the model's caches, every base scored with all the bases before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..data.genome import DataError
from ..io import Variant
from ..model.hnet import HNetForCausalLM
from ..runs import Progress
from .masked_score import masked_marginal_bits
from .tiling import choose_device, read_exact, tiles

__all__ = ["sequence_bits", "sequence_bits_exact", "SequenceScore", "score_variants", "summarise_bits", "DEFAULT_WINDOW"]

DEFAULT_WINDOW = 1024



@dataclass
class SequenceScore:
    log2_likelihood: float  # sum of log2 p over the scored bases (<= 0)
    scored_bases: int
    position_bits: np.ndarray | None = None  # (L,) -log2 p per base; NaN where not scored

    @property
    def bits_per_base(self) -> float:
        return -self.log2_likelihood / self.scored_bases if self.scored_bases else math.nan


def sequence_bits(
    model: HNetForCausalLM,
    ids_list: list[torch.Tensor],
    *,
    batch_size: int = 32,
    device=None,
    window: int | None = DEFAULT_WINDOW,
    stride: int | None = None,
    per_position: bool = False,
    skip: list[int] | None = None,
    progress: bool = False,
) -> list[SequenceScore]:
    """Score each id sequence (module docstring). ``skip[i]`` bases at the start of sequence i are
    context only (read, not scored)."""
    _require_causal(model)
    device = device if isinstance(device, torch.device) else choose_device(device)
    model = model.to(device).eval()
    base_ids = torch.tensor(model.tokenizer.base_ids)
    jobs = []  # (sequence, tile)
    for i, ids in enumerate(ids_list):
        for tile in tiles(len(ids), window, stride):
            jobs.append((i, tile))
    per_seq = [torch.full((len(ids),), math.nan, dtype=torch.float64) for ids in ids_list]
    order = sorted(range(len(jobs)), key=lambda j: -(jobs[j][1].end - jobs[j][1].start))
    bar = Progress(len(jobs), sum(t.end - t.start for _, t in jobs), "score", enabled=progress, unit="window")
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            chunk = [jobs[j] for j in order[k:k + batch_size]]
            batch = model.tokenizer.pad_ids([ids_list[i][t.start:t.end] for i, t in chunk])
            input_ids = batch["input_ids"]
            logits = model(input_ids.to(device), batch["mask"].to(device)).logits.float()
            logp = F.log_softmax(logits[:, :-1], dim=-1).cpu()  # predicts positions 1..
            targets = input_ids[:, 1:]  # padding ids are in the vocabulary: gathered, then dropped below
            bits = -logp.gather(-1, targets[..., None])[..., 0].double() / math.log(2)
            for row, (i, t) in enumerate(chunk):
                lo, hi = max(t.own_start - t.start, 1), t.own_end - t.start  # tile-local owned targets
                tgt = targets[row, lo - 1:hi - 1]
                b = bits[row, lo - 1:hi - 1].masked_fill(~torch.isin(tgt, base_ids), math.nan)
                per_seq[i][t.start + lo:t.start + hi] = b
            bar.update(len(chunk), sum(t.end - t.start for _, t in chunk))
    bar.close()
    return summarise_bits(per_seq, skip, per_position)


def sequence_bits_exact(
    model: HNetForCausalLM,
    ids_list: list[torch.Tensor],
    *,
    block: int = DEFAULT_WINDOW,
    device=None,
    per_position: bool = False,
    skip: list[int] | None = None,
    progress: bool = False,
) -> list[SequenceScore]:
    """Score each id sequence with all of its left context: read from its start in blocks of
    ``block`` bases, each continuing from the model's caches (:func:`~hnet_dna.inference.tiling.read_exact`), so
    base t is scored given bases 0 .. t-1 whatever the length. One sequence at a time. Memory and
    time per block grow with what was read before only through global attention layers (their
    keys and values)."""
    if not isinstance(block, int) or block < 1:
        raise ConfigError(f"block must be a number of bases >= 1, got {block!r}")
    _require_causal(model)
    device = device if isinstance(device, torch.device) else choose_device(device)
    model = model.to(device).eval()
    base_ids = torch.tensor(model.tokenizer.base_ids)
    bar = Progress(sum(-(-len(ids) // block) for ids in ids_list), sum(len(ids) for ids in ids_list), "score",
                   enabled=progress, unit="block")
    per_seq = [torch.full((len(ids),), math.nan, dtype=torch.float64) for ids in ids_list]
    with torch.inference_mode():
        for ids, bits in zip(ids_list, per_seq):
            last = None  # logits at the base before the block, (1, V): they predict its first base
            for blk in read_exact(model, ids, block, device):
                piece = ids[blk.start:blk.start + len(blk.hidden)]
                logits = model.lm_head(blk.hidden).float()  # (K, V)
                predicting = logits[:-1] if last is None else torch.cat([last, logits[:-1]])
                targets = piece[1:] if last is None else piece
                logp = F.log_softmax(predicting, dim=-1).cpu()
                b = -logp.gather(-1, targets[:, None])[:, 0].double() / math.log(2)
                end = blk.start + len(piece)
                bits[end - len(targets):end] = b.masked_fill(~torch.isin(targets, base_ids), math.nan)
                last = logits[-1:]
                bar.update(1, len(piece))
    bar.close()
    return summarise_bits(per_seq, skip, per_position)


def _require_causal(model) -> None:
    if model.config.bidirectional:
        raise ConfigError("a masked LM (bidirectional) has no left-to-right likelihood; its scores are "
                          "hnet_dna.inference.masked_score's (pseudo-likelihoods, masked marginals)")


def summarise_bits(per_seq: list[torch.Tensor], skip: list[int] | None, per_position: bool) -> list[SequenceScore]:
    """Per-base bits (NaN where not scored) -> one SequenceScore per sequence, the first
    ``skip[i]`` bases of sequence i left out (context only)."""
    out = []
    for i, b in enumerate(per_seq):
        if skip is not None and skip[i]:
            b[:skip[i]] = math.nan
        scored = ~torch.isnan(b)
        out.append(SequenceScore(-float(b[scored].sum()), int(scored.sum()),
                                 b.numpy() if per_position else None))
    return out



# ------------------------------------------------------------------------------------ variants
def _scorable(allele: str, flank: int) -> bool:
    return bool(allele) and set(allele.upper()) <= set("ACGTN") and len(allele) <= flank


def score_variants(model, genome, variants: list[Variant], *, flank: int = 128, both_strands: bool = False,
                   skip_ref_mismatch: bool = False, batch_size: int = 32, device=None, progress: bool = False):
    """Per variant, a list (one per ALT) of ``(llr_bits, llr_bits_rc)`` or None where skipped;
    and counts of what was skipped. See the module docstring. Under a masked LM the values are
    masked marginals (:mod:`hnet_dna.inference.masked_score`) and indels are skipped."""
    if flank < 1:
        raise ConfigError(f"--flank must be >= 1, got {flank}")
    names = {v.chrom: genome.resolve(v.chrom) for v in variants}
    if not any(names.values()):
        raise DataError(
            f"{variants[0].where.split(', variant')[0]}: no chromosome name of the VCF "
            f"({', '.join(sorted(names)[:8])}) is in {genome.path} ({genome.describe_names()}); "
            "is it the right reference?"
        )
    masked = bool(model.config.bidirectional)  # a masked LM: masked marginals of substitutions
    skipped = {"other chromosome": 0, "not an SNV or short indel": 0, "REF differs from the FASTA": 0}
    if masked:
        skipped["indel (a masked marginal scores substitutions)"] = 0
        skipped["N in the allele (a masked marginal scores A/C/G/T)"] = 0
    windows: list[str] = []
    plan = []  # per variant: None, or per alt (ref window index, alt window index) or None
    rc = model.tokenizer.reverse_complement
    for v in variants:
        record = names[v.chrom]
        if record is None:
            skipped["other chromosome"] += len(v.alts) or 1
            plan.append(None)
            continue
        start = v.pos - 1
        if start + len(v.ref) > genome.records[record]:
            raise DataError(f"{v.where}: REF runs past the end of {record} ({genome.records[record]:,} bp)")
        left = genome.fetch(record, max(0, start - flank), start)
        ref_seq = genome.fetch(record, start, start + len(v.ref))
        right = genome.fetch(record, start + len(v.ref), min(genome.records[record], start + len(v.ref) + flank))
        if ref_seq.upper() != v.ref.upper():
            if not skip_ref_mismatch:
                raise DataError(
                    f"{v.where}: REF {v.ref!r} but the FASTA has {ref_seq!r} at {record}:{v.pos}; is the VCF "
                    "on this reference? (--skip-ref-mismatch skips such variants)"
                )
            skipped["REF differs from the FASTA"] += len(v.alts) or 1
            plan.append(None)
            continue
        per_alt = []
        for alt in v.alts:
            if not (_scorable(v.ref, flank) and _scorable(alt, flank)):
                skipped["not an SNV or short indel"] += 1
                per_alt.append(None)
                continue
            if masked and len(alt) != len(v.ref):
                skipped["indel (a masked marginal scores substitutions)"] += 1
                per_alt.append(None)
                continue
            if masked and set((v.ref + alt).upper()) - set("ACGT"):
                skipped["N in the allele (a masked marginal scores A/C/G/T)"] += 1
                per_alt.append(None)
                continue
            ref_window, alt_window = left + ref_seq + right, left + alt + right
            pair = [len(windows), len(windows) + 1]
            windows += [ref_window, alt_window]
            if both_strands:
                pair += [len(windows), len(windows) + 1]
                windows += [rc(ref_window), rc(alt_window)]
            per_alt.append(pair)
        plan.append(per_alt)
    ids = [model.tokenizer.encode(w) for w in windows]
    if masked:  # per pair (ref, alt): the masked marginal, kept in the alt slot (ref's is 0)
        pairs = [(ids[k], ids[k + 1]) for k in range(0, len(ids), 2)]
        marginals = masked_marginal_bits(model, pairs, batch_size=batch_size, device=device, progress=progress) if pairs else []
        scores = [SequenceScore(x, 0) for m in marginals for x in (0.0, m)]
    else:
        scores = sequence_bits(model, ids, batch_size=batch_size, device=device, window=None, progress=progress) if ids else []
    results = []
    for per_alt in plan:
        if per_alt is None:
            results.append(None)
            continue
        row = []
        for pair in per_alt:
            if pair is None:
                row.append(None)
                continue
            llr = scores[pair[1]].log2_likelihood - scores[pair[0]].log2_likelihood
            llr_rc = scores[pair[3]].log2_likelihood - scores[pair[2]].log2_likelihood if both_strands else None
            row.append((llr, llr_rc))
        results.append(row)
    return results, skipped

