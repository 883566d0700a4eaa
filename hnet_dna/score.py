"""``python -m hnet_dna.score``: likelihoods of sequences, per-base bits over a region, and
variant effects from a VCF, under a pretrained model.

``--help`` says what it reads and writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .config import ConfigError
from .data.genome import DataError, open_fasta
from .inference.masked_score import pseudo_log_likelihood_bits
from .inference.score import DEFAULT_WINDOW, summarise_bits, score_variants, sequence_bits, sequence_bits_exact
from .inference.tiling import check_windows, choose_device, window_help
from .io import (InputSequence, encode_sequences, load_variants, open_vcf, read_sequences, resolve_region,
                 write_variants_tsv, write_variants_vcf)
from .model.loading import load_model
from .runs import atomic_path, check_output, exit_on_user_error

HELP = """::

    python -m hnet_dna.score --input seqs.fa --output scores.tsv [--both-strands]
    python -m hnet_dna.score --fasta hg19.fa --region 20:1,000,001-1,010,000 --output bits.bedgraph
    python -m hnet_dna.score --fasta hg19.fa --vcf calls.vcf.gz --output effects.tsv [--flank 128] [--both-strands]
    python -m hnet_dna.score --fasta hg19.fa --vcf calls.vcf.gz --output annotated.vcf.gz

All likelihoods are in bits (log base 2). A sequence's log-likelihood is the sum over its bases
after the first of log2 p(base | the bases before it): the first base has no context and is not
scored, nor is any N (or a base after which the model is asked to predict an N). Sequences longer
than ``--window`` are read in windows (:mod:`hnet_dna.inference.tiling`), each base scored in the earliest
window holding it; with ``--exact-context`` each sequence is read once from its start in blocks
that continue from the model's caches, every base scored with all the bases before it
(:func:`sequence_bits_exact`).

* **Sequences** (FASTA, CSV/TSV, Parquet/Arrow or BED + ``--fasta``) -> TSV ``id length scored_bases
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

A masked LM (the bidirectional H-Net) has no left-to-right likelihood; with one, ``score`` gives
(:mod:`hnet_dna.inference.masked_score`): per sequence the **pseudo-log-likelihood**, each A/C/G/T
base hidden behind ``<mask>`` once in a ``--window`` centred on it (columns ``pseudo_log2_likelihood
pseudo_bits_per_base``); per base over a region the same, as a bedGraph; per variant the **masked
marginal** ``log2 p(alt) - log2 p(ref)`` at the masked site(s) of the ref window (TSV column
``masked_marginal_bits``, VCF INFO ``HNET_MM``), substitutions only (indels are skipped and counted).
``--exact-context`` is a causal model's and is refused.
"""  # the --help epilog

__all__ = ["main"]


# ---------------------------------------------------------------------------------- command
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hnet_dna.score", description=__doc__.split("\n\n")[0], epilog=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", help="sequences: FASTA, CSV/TSV, Parquet/Arrow, or BED (with --fasta)")
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
            with open_vcf(Path(args.vcf)) as vcf:
                taken = [f for f in ("HNET_LLR", "HNET_LLR_RC", "HNET_MM", "HNET_MM_RC") if f in vcf.header.info]
            if taken:
                raise DataError(f"{args.vcf}: the header already has INFO {', '.join(taken)} (written by an earlier "
                                "run?); annotate the original VCF, or write a .tsv")
        model = load_model(args.model, warn_untrained=True, lm_head=True, masked_lm_ok=True)
        choose_device(args.device)
        results, skipped = score_variants(model, genome, variants, flank=args.flank, both_strands=args.both_strands,
                                          skip_ref_mismatch=args.skip_ref_mismatch, batch_size=args.batch_size,
                                          device=args.device, progress=progress)
        kind = "masked_marginal" if model.config.bidirectional else "llr"
        if output.name.lower().endswith(".tsv"):
            write_variants_tsv(output, variants, results, args.both_strands, score=kind)
        else:
            write_variants_vcf(output, Path(args.vcf), variants, results, args.both_strands, score=kind)
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
        model = load_model(args.model, warn_untrained=True, lm_head=True, masked_lm_ok=True)
        masked = _masked_lm(model, args)
        if masked:  # both sides of the region's edges: half a window of context each way
            context = min(start, args.window // 2)
            end_read = min(genome.records[record], end + args.window // 2)
        else:
            end_read = end
        letters = genome.fetch(record, start - context, end_read)
        ids = encode_sequences([InputSequence(f"{record}:{start - context + 1}-{end_read}", letters,
                                         f"{genome.path}, {record}")], model.tokenizer)
        if masked:
            bits_all = pseudo_log_likelihood_bits(model, ids, window=args.window, batch_size=args.batch_size,
                                                  device=args.device, progress=progress)[0]
            bits_all[:context] = np.nan
            bits_all[len(bits_all) - (end_read - end):] = np.nan
            score = summarise_bits([bits_all], None, True)[0]
        elif args.exact_context:
            score = sequence_bits_exact(model, ids, block=args.window, device=args.device, per_position=True,
                                        skip=[context], progress=progress)[0]
        else:
            score = sequence_bits(model, ids, batch_size=args.batch_size, device=args.device, window=args.window,
                                  stride=stride, per_position=True, skip=[context], progress=progress)[0]
        bits = score.position_bits[context:context + end - start]
        what = "-log2 p of each base masked once (masked LM, pseudo-likelihood)" if masked else "-log2 p per base"
        with atomic_path(output) as tmp, open(tmp, "w") as f:
            f.write(f'track type=bedGraph name="hnet_dna bits" description="{what} ({args.region})"\n')
            for k in np.flatnonzero(~np.isnan(bits)):
                f.write(f"{chrom}\t{start + k}\t{start + k + 1}\t{bits[k]:.4f}\n")
        print(f"hnet_dna.score: {chrom}:{start + 1:,}-{end:,}: {score.scored_bases:,} bases scored, "
              f"{score.bits_per_base:.4f} bits per base -> {output}")
        return
    output = check_output(args.output, (".tsv",))
    records = read_sequences(args.input, fasta=args.fasta, sequence_column=args.sequence_column,
                             id_column=args.id_column, index_dir=args.index_dir)
    model = load_model(args.model, warn_untrained=True, lm_head=True, masked_lm_ok=True)
    ids = encode_sequences(records, model.tokenizer)
    masked = _masked_lm(model, args)
    if masked:
        def score(seqs, progress=False):
            bits = pseudo_log_likelihood_bits(model, seqs, window=args.window, batch_size=args.batch_size,
                                              device=args.device, progress=progress)
            return summarise_bits(bits, None, False)
    elif args.exact_context:
        def score(seqs, progress=False):
            return sequence_bits_exact(model, seqs, block=args.window, device=args.device, progress=progress)
    else:
        def score(seqs, progress=False):
            return sequence_bits(model, seqs, batch_size=args.batch_size, device=args.device, window=args.window,
                                 stride=args.stride, progress=progress)
    scores = score(ids, progress=progress)
    scores_rc = score([model.tokenizer.reverse_complement(x) for x in ids]) if args.both_strands else None
    with atomic_path(output) as tmp, open(tmp, "w") as f:
        ll, bpb = ("pseudo_log2_likelihood", "pseudo_bits_per_base") if masked else ("log2_likelihood", "bits_per_base")
        f.write(f"id\tlength\tscored_bases\t{ll}\t{bpb}" + (f"\t{ll}_rc\t{bpb}_rc" if scores_rc else "") + "\n")
        for i, (r, s) in enumerate(zip(records, scores)):
            cells = [r.id, str(len(r.sequence)), str(s.scored_bases), f"{s.log2_likelihood:.4f}", f"{s.bits_per_base:.6f}"]
            if scores_rc:
                cells += [f"{scores_rc[i].log2_likelihood:.4f}", f"{scores_rc[i].bits_per_base:.6f}"]
            f.write("\t".join(cells) + "\n")
    total = sum(s.scored_bases for s in scores)
    mean = -sum(s.log2_likelihood for s in scores) / max(total, 1)
    print(f"hnet_dna.score: {len(records):,} sequences, {total:,} bases scored, {mean:.4f} bits per base -> {output}",
          file=sys.stdout)


def _masked_lm(model, args) -> bool:
    """Whether the model is a masked LM (its scores: pseudo-likelihoods and masked marginals)."""
    if not model.config.bidirectional:
        return False
    if args.exact_context:
        raise ConfigError("--exact-context reads left to right through a causal model's caches; a masked LM "
                          "(bidirectional) scores each base with both sides of it: leave --exact-context out")
    return True


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    exit_on_user_error(lambda: run(args), prog="hnet_dna.score")



if __name__ == "__main__":
    from . import backends

    backends.keep_freed_memory()  # long inputs: large activations are not page-faulted afresh per batch
    main()
