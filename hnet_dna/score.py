"""``python -m hnet_dna.score``: likelihoods of sequences, per-base bits over a region, and
variant effects from a VCF, under a pretrained model.

::

    python -m hnet_dna.score --input seqs.fa --output scores.tsv [--both-strands]
    python -m hnet_dna.score --fasta hg19.fa --region 20:1,000,001-1,010,000 --output bits.bedgraph
    python -m hnet_dna.score --fasta hg19.fa --vcf calls.vcf.gz --output effects.tsv [--flank 128] [--both-strands]
    python -m hnet_dna.score --fasta hg19.fa --vcf calls.vcf.gz --output annotated.vcf.gz

All likelihoods are in bits (log base 2). A sequence's log-likelihood is the sum over its bases
after the first of log2 p(base | the bases before it): the first base has no context and is not
scored, nor is any N (or a base after which the model is asked to predict an N). Sequences longer
than ``--window`` are read in windows (:mod:`hnet_dna.commands`), each base scored in the earliest
window holding it; with ``--exact-context`` each sequence is read once from its start in blocks
that continue from the model's caches, every base scored with all the bases before it
(:func:`sequence_bits_exact`).

* **Sequences** (FASTA, CSV/TSV or BED + ``--fasta``) -> TSV ``id length scored_bases
  log2_likelihood bits_per_base`` (+ ``log2_likelihood_rc bits_per_base_rc`` for the reverse
  complement with ``--both-strands``).
* **Region** -> bedGraph of each scored base's bits (``-log2 p``), one line per base, 0-based
  half-open coordinates; the region is read with up to ``window - stride`` bases of left context so
  that its first bases are scored too.
* **Variants** (VCF/BCF read with pysam) -> for each SNV or short indel allele, the log-likelihood
  ratio ``LL(alt window) - LL(ref window)`` in bits, where the ref window is ``--flank`` bases, the
  REF allele and ``--flank`` bases, and the alt window the same flanks around the ALT allele. Both
  windows are scored whole (for an indel they differ in length, so the ratio also carries the
  likelihood of the inserted or deleted bases). Positive: the model finds the alt sequence more
  likely. Symbolic alleles (``<DEL>``), breakends, ``*`` and alleles longer than the flank are
  skipped and counted. A REF that disagrees with the FASTA stops the run naming the variant (or
  with ``--skip-ref-mismatch`` is skipped and counted). OUT ``.tsv`` gets ``chrom pos id ref alt
  llr_bits`` (+ ``llr_bits_rc``); OUT ``.vcf`` / ``.vcf.gz`` / ``.bcf`` a copy of the VCF with INFO
  ``HNET_LLR`` (Number=A; + ``HNET_LLR_RC``).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .commands import (
    InputSequence,
    Progress,
    atomic_path,
    check_output,
    check_windows,
    window_help,
    choose_device,
    encode_sequences,
    exit_on_user_error,
    read_exact,
    read_sequences,
    resolve_region,
    tiles,
)
from .config import ConfigError
from .data.genome import DataError, open_fasta
from .model.hnet import HNetForCausalLM
from .model.loading import load_model

__all__ = ["sequence_bits", "sequence_bits_exact", "SequenceScore", "score_variants", "main"]

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
    return _summaries(per_seq, skip, per_position)


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
    ``block`` bases, each continuing from the model's caches (:func:`~hnet_dna.commands.read_exact`), so
    base t is scored given bases 0 .. t-1 whatever the length. One sequence at a time. Memory and
    time per block grow with what was read before only through global attention layers (their
    keys and values)."""
    if not isinstance(block, int) or block < 1:
        raise ConfigError(f"block must be a number of bases >= 1, got {block!r}")
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
    return _summaries(per_seq, skip, per_position)


def _summaries(per_seq: list[torch.Tensor], skip: list[int] | None, per_position: bool) -> list[SequenceScore]:
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
@dataclass
class Variant:
    chrom: str
    pos: int  # 1-based, as in the VCF
    id: str
    ref: str
    alts: tuple
    where: str


def _read_vcf(path: Path):
    import pysam

    if not path.is_file():
        raise DataError(f"{path}: no such VCF/BCF file")
    try:
        vcf = pysam.VariantFile(str(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable VCF/BCF file ({e})") from None
    return vcf


def load_variants(path: Path) -> list[Variant]:
    vcf = _read_vcf(path)
    out = []
    try:
        for n, rec in enumerate(vcf.fetch(), start=1):
            out.append(Variant(rec.chrom, rec.pos, rec.id or ".", rec.ref or "", tuple(rec.alts or ()),
                               f"{path}, variant {n} ({rec.chrom}:{rec.pos} {rec.ref}>{','.join(rec.alts or ())})"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read record {len(out) + 1} ({e})") from None
    finally:
        vcf.close()
    if not out:
        raise DataError(f"{path}: no variant records")
    return out


def _scorable(allele: str, flank: int) -> bool:
    return bool(allele) and set(allele.upper()) <= set("ACGTN") and len(allele) <= flank


def score_variants(model, genome, variants: list[Variant], *, flank: int = 128, both_strands: bool = False,
                   skip_ref_mismatch: bool = False, batch_size: int = 32, device=None, progress: bool = False):
    """Per variant, a list (one per ALT) of ``(llr_bits, llr_bits_rc)`` or None where skipped;
    and counts of what was skipped. See the module docstring."""
    if flank < 1:
        raise ConfigError(f"--flank must be >= 1, got {flank}")
    names = {v.chrom: genome.resolve(v.chrom) for v in variants}
    if not any(names.values()):
        raise DataError(
            f"{variants[0].where.split(', variant')[0]}: no chromosome name of the VCF "
            f"({', '.join(sorted(names)[:8])}) is in {genome.path} ({genome.describe_names()}); "
            "is it the right reference?"
        )
    skipped = {"other chromosome": 0, "not an SNV or short indel": 0, "REF differs from the FASTA": 0}
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
            ref_window, alt_window = left + ref_seq + right, left + alt + right
            pair = [len(windows), len(windows) + 1]
            windows += [ref_window, alt_window]
            if both_strands:
                pair += [len(windows), len(windows) + 1]
                windows += [rc(ref_window), rc(alt_window)]
            per_alt.append(pair)
        plan.append(per_alt)
    ids = [model.tokenizer.encode(w) for w in windows]
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


def _write_variants_tsv(path: Path, variants, results, both_strands: bool) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("chrom\tpos\tid\tref\talt\tllr_bits" + ("\tllr_bits_rc" if both_strands else "") + "\n")
        for v, row in zip(variants, results):
            for a, alt in enumerate(v.alts):
                value = row[a] if row is not None else None
                cells = [v.chrom, str(v.pos), v.id, v.ref, alt,
                         "NA" if value is None else f"{value[0]:.6f}"]
                if both_strands:
                    cells.append("NA" if value is None else f"{value[1]:.6f}")
                f.write("\t".join(cells) + "\n")


def _write_variants_vcf(path: Path, source: Path, variants, results, both_strands: bool) -> None:
    import pysam

    vcf = _read_vcf(source)
    header = vcf.header.copy()
    header.info.add("HNET_LLR", "A", "Float",
                    "hnet_dna: log2 P(alt window) - log2 P(ref window), bits (python -m hnet_dna.score)")
    if both_strands:
        header.info.add("HNET_LLR_RC", "A", "Float", "hnet_dna: HNET_LLR on the reverse-complement strand")
    name = path.name.lower()
    mode = "wb" if name.endswith(".bcf") else "wz" if name.endswith(".gz") else "w"
    with atomic_path(path) as tmp:
        with pysam.VariantFile(str(tmp), mode, header=header) as out:
            for rec, row in zip(vcf.fetch(), results):
                rec.translate(out.header)
                if row is not None and any(x is not None for x in row):
                    rec.info["HNET_LLR"] = tuple(None if x is None else round(x[0], 6) for x in row)
                    if both_strands:
                        rec.info["HNET_LLR_RC"] = tuple(None if x is None else round(x[1], 6) for x in row)
                out.write(rec)
    vcf.close()


# ---------------------------------------------------------------------------------- command
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hnet_dna.score", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", help="sequences: FASTA, CSV/TSV, or BED (with --fasta)")
    what.add_argument("--region", help="CHROM:START-END (1-based, inclusive) of --fasta -> per-base bedGraph")
    what.add_argument("--vcf", help="variants (VCF/BCF) on --fasta")
    p.add_argument("--output", required=True, help=".tsv (sequences, variants), .bedgraph (region), .vcf/.vcf.gz/.bcf (variants)")
    p.add_argument("--fasta", default=None, help="the reference genome (BED input, --region, --vcf)")
    p.add_argument("--model", default=None,
                   help="preset, save_pretrained folder, or pretraining .ckpt (default: the shipped tiny chr20 model)")
    p.add_argument("--both-strands", action="store_true", help="also score the reverse complement")
    p.add_argument("--flank", type=int, default=128, help="bases each side of a variant (default 128)")
    p.add_argument("--skip-ref-mismatch", action="store_true", help="skip (and count) variants whose REF is not the FASTA's")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help=window_help(DEFAULT_WINDOW, 32))
    p.add_argument("--stride", type=int, default=None, help="bases between window starts (default window/2)")
    p.add_argument("--exact-context", action="store_true",
                   help="score every base with ALL the bases before it in its sequence (or region): each "
                        "sequence is read once from its start in blocks of --window bases that continue from "
                        "the model's caches (Mamba-2 states, attention keys, the router's and the open chunk's "
                        "state), one sequence at a time (--stride and --batch-size do not apply). Memory per "
                        "block is that of one window, plus the keys and values of global attention layers, "
                        "which grow with the bases read (the shipped model: 1.5 kB per chunk of its main "
                        "network, about 0.5-1 kB per base: 0.5-1 GB per Mb), and so does their time per base; a "
                        "model without global attention (Mamba-2 main network) reads at a constant cost per "
                        "base. Not for --vcf")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--sequence-column", "--sequence_column", default=None)
    p.add_argument("--id-column", "--id_column", default=None)
    p.add_argument("--index-dir", default=None, help="where to keep a FASTA index if its folder is read-only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> None:
    check_windows(args.window, args.stride, args.batch_size)
    progress = not args.quiet
    if args.exact_context and args.vcf is not None:
        raise ConfigError("--exact-context applies to --input and --region; a variant is scored in its "
                          "--flank window, read whole")
    if args.vcf is not None:
        output = check_output(args.output, (".tsv", ".vcf", ".vcf.gz", ".bcf"))
        if args.fasta is None:
            raise DataError("--vcf needs --fasta, the reference the variants are called on")
        genome = open_fasta(args.fasta, index_dir=args.index_dir)
        variants = load_variants(Path(args.vcf))
        if not output.name.lower().endswith(".tsv"):
            with _read_vcf(Path(args.vcf)) as vcf:
                taken = [f for f in ("HNET_LLR", "HNET_LLR_RC") if f in vcf.header.info]
            if taken:
                raise DataError(f"{args.vcf}: the header already has INFO {', '.join(taken)} (written by an earlier "
                                "run?); annotate the original VCF, or write a .tsv")
        model = load_model(args.model, warn_untrained=True)
        choose_device(args.device)
        results, skipped = score_variants(model, genome, variants, flank=args.flank, both_strands=args.both_strands,
                                          skip_ref_mismatch=args.skip_ref_mismatch, batch_size=args.batch_size,
                                          device=args.device, progress=progress)
        if output.name.lower().endswith(".tsv"):
            _write_variants_tsv(output, variants, results, args.both_strands)
        else:
            _write_variants_vcf(output, Path(args.vcf), variants, results, args.both_strands)
        alleles = sum(len(v.alts) for v in variants)
        skipped_text = "; ".join(f"{n} {why}" for why, n in skipped.items() if n) or "none"
        print(f"hnet_dna.score: {alleles:,} alleles of {len(variants):,} variants -> {output} (skipped: {skipped_text})")
        return
    if args.region is not None:
        output = check_output(args.output, (".bedgraph", ".bg"))
        if args.fasta is None:
            raise DataError("--region needs --fasta")
        genome = open_fasta(args.fasta, index_dir=args.index_dir)
        chrom, record, start, end = resolve_region(genome, args.region)
        stride = args.stride or args.window // 2
        context = min(start, args.window - stride)
        model = load_model(args.model, warn_untrained=True)
        letters = genome.fetch(record, start - context, end)
        ids = encode_sequences([InputSequence(f"{record}:{start - context + 1}-{end}", letters,
                                         f"{genome.path}, {record}")], model.tokenizer)
        if args.exact_context:
            score = sequence_bits_exact(model, ids, block=args.window, device=args.device, per_position=True,
                                        skip=[context], progress=progress)[0]
        else:
            score = sequence_bits(model, ids, batch_size=args.batch_size, device=args.device, window=args.window,
                                  stride=stride, per_position=True, skip=[context], progress=progress)[0]
        bits = score.position_bits[context:]
        with atomic_path(output) as tmp, open(tmp, "w") as f:
            f.write(f'track type=bedGraph name="hnet_dna bits" description="-log2 p per base ({args.region})"\n')
            for k in np.flatnonzero(~np.isnan(bits)):
                f.write(f"{chrom}\t{start + k}\t{start + k + 1}\t{bits[k]:.4f}\n")
        print(f"hnet_dna.score: {chrom}:{start + 1:,}-{end:,}: {score.scored_bases:,} bases scored, "
              f"{score.bits_per_base:.4f} bits per base -> {output}")
        return
    output = check_output(args.output, (".tsv",))
    records = read_sequences(args.input, fasta=args.fasta, sequence_column=args.sequence_column,
                             id_column=args.id_column, index_dir=args.index_dir)
    model = load_model(args.model, warn_untrained=True)
    ids = encode_sequences(records, model.tokenizer)
    if args.exact_context:
        def score(seqs, progress=False):
            return sequence_bits_exact(model, seqs, block=args.window, device=args.device, progress=progress)
    else:
        def score(seqs, progress=False):
            return sequence_bits(model, seqs, batch_size=args.batch_size, device=args.device, window=args.window,
                                 stride=args.stride, progress=progress)
    scores = score(ids, progress=progress)
    scores_rc = score([model.tokenizer.reverse_complement(x) for x in ids]) if args.both_strands else None
    with atomic_path(output) as tmp, open(tmp, "w") as f:
        f.write("id\tlength\tscored_bases\tlog2_likelihood\tbits_per_base"
                + ("\tlog2_likelihood_rc\tbits_per_base_rc" if scores_rc else "") + "\n")
        for i, (r, s) in enumerate(zip(records, scores)):
            cells = [r.id, str(len(r.sequence)), str(s.scored_bases), f"{s.log2_likelihood:.4f}", f"{s.bits_per_base:.6f}"]
            if scores_rc:
                cells += [f"{scores_rc[i].log2_likelihood:.4f}", f"{scores_rc[i].bits_per_base:.6f}"]
            f.write("\t".join(cells) + "\n")
    total = sum(s.scored_bases for s in scores)
    mean = -sum(s.log2_likelihood for s in scores) / max(total, 1)
    print(f"hnet_dna.score: {len(records):,} sequences, {total:,} bases scored, {mean:.4f} bits per base -> {output}",
          file=sys.stdout)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    exit_on_user_error(lambda: run(args), prog="hnet_dna.score")


if __name__ == "__main__":
    from . import backends

    backends.keep_freed_memory()  # long inputs: large activations are not page-faulted afresh per batch
    main()
