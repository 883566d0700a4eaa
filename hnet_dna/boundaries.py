"""``python -m hnet_dna.boundaries``: where the model cuts a genomic region into chunks, as genome
browser tracks, and whether the cuts fall at annotated feature edges.

``--help`` says what it reads and writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .config import ConfigError
from .data.genome import DataError, chrom_aliases, open_fasta
from .inference.tiling import check_windows, window_help
from .interpret.boundaries import region_boundaries
from .interpret.chunk_stats import chunk_length_stats, repeat_intervals
from .interpret.enrichment import boundary_enrichment, local_gc
from .interpret.plots import plot_boundaries
from .io import parse_region, read_feature_edges, resolve_region, write_bigwig, write_chunks_bed
from .model.loading import load_model
from .runs import atomic_path, exit_on_user_error

HELP = """::

    python -m hnet_dna.boundaries --fasta GRCh37_chr20.fa.gz --region 20:30,000,001-31,000,000 --out runs/b/chr20 \\
        --annotation exons=hg19_chr20_refseq_exons.saf tss=hg19_chr20_refseq_tss.txt cpg=hg19_chr20_cpg_islands.bed

Writes, per chunking level s (0 = outermost):

* ``PREFIX.level<s>.prob.bw``: the routing module's boundary probability p in genome coordinates
  (bigWig). Level 0 decides at every base; level s > 0 decides at the bases where level s-1's
  chunks start, so its track has values only there.
* ``PREFIX.level<s>.chunks.bed``: one interval per chunk (0-based, half-open; the first and last
  are clipped to the region).

The region is read in overlapping windows (``--window``, every ``--stride`` bases) after up to
``window - stride`` bases of left context, and every base is taken from the earliest window that
holds it: every decision is made with at least ``window - stride`` bases of left context (fewer
only at the start of a chromosome), and the forced boundary at each window's first position never
reaches the tracks. With ``--exact-context`` the region (after the same context) is read once, in
blocks that continue from the model's caches: every decision is the one a single forward pass
over the whole region would make. Chromosome names in the outputs are written as in ``--region``.

With ``--annotation NAME=FILE ...`` (BED, 3+ columns, 0-based; SAF ``GeneID Chr Start End
Strand``, 1-based inclusive, by the ``.saf`` suffix; or a ``chrom pos strand`` TSS list, 0-based),
feature edges in the region are the first base of each feature and the base after it (a TSS list:
the TSS). For each level and annotation, ``PREFIX.enrichment.tsv`` (also printed) counts the
boundaries within ``--flank`` bases of an edge (``observed``; bases in N runs never count) against
two controls, ``--shifts`` draws each, with expected count, fold and one-sided p-values (1 + #draws
with at least as many hits) / (1 + draws), and ``p_depletion`` (at most as many):

* ``shift``: all boundaries moved by one random circular shift along the region's non-N bases
  (keeps their number and spacing; N runs are cut out, so no boundary lands in a gap);
* ``gc`` (the headline ``p_value``): each boundary moved to a random non-N base of the same
  ``--control-window`` window whose local GC (``--gc-flank`` bases either side) is in the same
  decile (keeps local density and composition: enrichment that composition explains vanishes).

``PREFIX.chunks.tsv`` (also printed, and a panel of the PNG) gives chunk lengths by where chunks
start: in homopolymer runs (one base >= 8 times), short tandem repeats (a 2-6 base unit, >= 3
copies, >= 12 bases) found in the sequence, and each interval annotation (CpG islands, exons ...),
against the region's: bases per chunk, its ratio to the region's, the chunks' mean length and
the fraction of one-base chunks. ``PREFIX.png`` plots the tracks over ``--plot-region`` (default: 2 kb around the
first annotated edge in the region). Chromosome names match through aliases (``chr20`` = ``20``).
"""  # the --help epilog

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hnet_dna.boundaries", description=__doc__.split("\n\n")[0], epilog=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fasta", required=True)
    p.add_argument("--region", required=True, help="CHROM:START-END, 1-based inclusive")
    p.add_argument("--out", required=True, help="output prefix (PREFIX.level0.prob.bw, ...)")
    p.add_argument("--model", default=None,
                   help="preset, save_pretrained folder, or pretraining .ckpt (default: the shipped tiny chr20 model)")
    p.add_argument("--annotation", nargs="*", default=[], metavar="NAME=FILE")
    p.add_argument("--flank", type=int, default=2, help="a boundary within this many bases of an edge is a hit")
    p.add_argument("--shifts", type=int, default=1000, help="random circular shifts in the control")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gc-flank", type=int, default=50, help="local GC of a base: bases within this many either side (default 50)")
    p.add_argument("--control-window", type=int, default=10_000,
                   help="the GC-matched control moves a boundary within windows of this many bases (default 10,000)")
    p.add_argument("--plot-region", default=None, help="CHROM:START-END for the PNG")
    p.add_argument("--window", type=int, default=4096, help=window_help(4096, 8, "read the region in windows of this many bases"))
    p.add_argument("--stride", type=int, default=None, help="bases between window starts (default window/2)")
    p.add_argument("--exact-context", action="store_true",
                   help="decide every boundary with ALL the bases before it in the region (after the same "
                        "window - stride bases of context before it): one read from the start in blocks of "
                        "--window bases that continue from the model's caches (--batch-size does not apply); "
                        "global attention layers keep keys for every chunk read (see score --help)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--index-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    return p


def run(args) -> None:
    prefix = Path(args.out)
    if not prefix.parent.is_dir():
        raise DataError(f"--out {prefix}: no such folder {prefix.parent}")
    genome = open_fasta(args.fasta, index_dir=args.index_dir)
    chrom, record, start, end = resolve_region(genome, args.region)
    if args.flank < 0 or args.shifts < 1 or args.gc_flank < 1 or args.control_window < 1:
        raise ConfigError("--flank must be >= 0, and --shifts, --gc-flank and --control-window >= 1")
    check_windows(args.window, args.stride, args.batch_size)
    names = set(chrom_aliases(record)) | set(chrom_aliases(chrom))
    annotations = {}
    for item in args.annotation:
        if "=" not in item:
            raise DataError(f"--annotation {item!r}: expected NAME=FILE")
        name, file = item.split("=", 1)
        annotations[name] = read_feature_edges(file, names, start, end)
    plot = (start, min(end, start + 2000))
    if args.plot_region:
        pc, plo, phi = parse_region(args.plot_region)
        if genome.resolve(pc) != record or plo < start or phi > end:
            raise DataError(f"--plot-region {args.plot_region}: must lie inside --region {args.region}")
        plot = (plo, phi)
    else:
        firsts = [e[0] for e, _ in annotations.values() if len(e)]
        if firsts:
            centre = min(firsts)
            plot = (max(start, centre - 1000), min(end, centre + 1000))
    model = load_model(args.model, warn_untrained=True)
    if model.config.num_stages < 2:
        raise ConfigError(f"--model {args.model}: an isotropic model has no chunk boundaries; give an H-Net")
    result = region_boundaries(model, genome, record, start, end, window=args.window, stride=args.stride,
                               batch_size=args.batch_size, device=args.device, exact_context=args.exact_context,
                               progress=not args.quiet)
    chrom_length = genome.records[record]
    for s in range(len(result.probs)):
        write_bigwig(Path(f"{prefix}.level{s}.prob.bw"), chrom, chrom_length, *result.probs[s])
        write_chunks_bed(Path(f"{prefix}.level{s}.chunks.bed"), chrom, start, end, result.starts[s])
        print(f"hnet_dna.boundaries: level {s}: {len(result.starts[s]):,} chunks over {end - start:,} bases "
              f"({(end - start) / max(len(result.starts[s]), 1):.2f} bases per chunk)")
    letters = genome.fetch(record, start, end)
    valid, gc = local_gc(letters, flank=args.gc_flank)
    if annotations:
        rows = []
        for s in range(len(result.starts)):
            for name, (edges, _) in annotations.items():
                rows.append({"level": s, "annotation": name, **boundary_enrichment(
                    result.starts[s], edges, start, end, flank=args.flank, shifts=args.shifts, seed=args.seed,
                    valid=valid, gc=gc, control_window=args.control_window)})
        _table(Path(f"{prefix}.enrichment.tsv"), rows, ENRICHMENT_COLUMNS,
               f"boundaries within {args.flank} bases of a feature edge (N runs excluded); controls: {args.shifts} "
               f"circular shifts along the non-N bases (shift) and {args.shifts} draws matched on local GC within "
               f"{args.control_window:,}-base windows (gc); p_value is the gc control's:")
    classes = repeat_intervals(letters, start)
    for name, (_, features) in annotations.items():
        if features and any(b - a > 1 for a, b in features):  # intervals (a TSS list has points only)
            classes[name] = np.asarray(features, dtype=np.int64).reshape(-1, 2)
    chunk_rows = [{"level": s, **r} for s in range(len(result.starts))
                  for r in chunk_length_stats(result.starts[s], start, end, classes, valid)]
    _table(Path(f"{prefix}.chunks.tsv"), chunk_rows, CHUNK_COLUMNS,
           "chunks by where they start (homopolymers >= 8 bases, tandem repeats of 2-6 base units, annotations):")
    plot_boundaries(Path(f"{prefix}.png"), chrom, result, annotations, *plot, chunk_rows=chunk_rows)
    print(f"hnet_dna.boundaries: wrote {prefix}.level*.prob.bw, {prefix}.level*.chunks.bed"
          + (f", {prefix}.enrichment.tsv" if annotations else "") + f", {prefix}.chunks.tsv, {prefix}.png")


ENRICHMENT_COLUMNS = ["level", "annotation", "edges", "boundaries", "observed", "expected_shift", "fold_shift", "p_shift",
                      "expected_gc", "fold_gc", "p_gc", "p_depletion_gc", "p_value"]


CHUNK_COLUMNS = ["level", "class", "features", "bases", "chunks", "bases_per_chunk", "vs_region", "mean_chunk_length",
                 "one_base_chunks"]


def _table(path: Path, rows: list[dict], header: list[str], title: str) -> None:
    """``rows`` as a TSV at ``path`` and as a Markdown table on stdout."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(_fmt(r[h]) for h in header) + "\n")
    print(title)
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(_fmt(r[h]) for h in header) + " |")


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e-2 else f"{x:.3f}"
    return str(x)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    exit_on_user_error(lambda: run(args), prog="hnet_dna.boundaries")



if __name__ == "__main__":
    from . import backends

    backends.keep_freed_memory()  # long inputs: large activations are not page-faulted afresh per batch
    main()
