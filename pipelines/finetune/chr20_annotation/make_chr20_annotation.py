"""Cut the chr20 per-base annotation (segmentation) and per-window multilabel sets (issue #33).

    python pipelines/finetune/chr20_annotation/make_chr20_annotation.py [--shared ../shared/data]

Where the labels come from (``../shared/data/annotation``, GRCh37/hg19, chr20, RefSeq and UCSC):

* ``exon.bed``: RefSeq exons (``hg19_chr20_refseq_exons.saf``, 1-based inclusive -> 0-based
  half-open), overlapping exons merged;
* ``intron.bed``: RefSeq gene bodies (``hg19_chr20_refseq_genes.bed``) minus every exon: bases
  inside a gene and in no exon of any transcript;
* ``cpg.bed``: UCSC CpG islands (``hg19_chr20_cpg_islands.bed``);
* ``tss.bed``: RefSeq transcription start sites (``hg19_chr20_refseq_tss.txt``, 0-based) +-50 bp
  (101 bases centred on the TSS).

Written beside this script (small; committed, so the recipe runs from a clean checkout). With
``--multilabel PATH`` it also writes the per-window multilabel set: 1 kb windows of chr20 tiled
every ``--stride`` bases (at most 10 % N), columns ``sequence label_exon label_cpg label_tss
split``: a label is 1 when the window holds at least one base of the element; split by position
as the chr20 labelled sets are (train below 50 Mb, valid 50-56.5 Mb, test from 56.5 Mb).

The test fixtures (``tests/data/make_fixtures.py``) call :func:`elements` and cut them to the
fixture slices.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent
VALID, TEST = 50_000_000, 56_500_000  # the chr20 labelled sets' split points (GRCh37)
TSS_FLANK = 50


def _merge(spans) -> list[tuple[int, int]]:
    """Sorted, overlapping intervals merged (the annotation reader's own merge)."""
    from hnet_dna.data.annotation import _merge as merge_intervals

    return [(int(s), int(e)) for s, e in merge_intervals(list(spans))]


def _subtract(spans, holes):
    """``spans`` minus ``holes``, as sorted pieces (the windows' own interval subtraction)."""
    from hnet_dna.data.windows import _subtract as subtract_holes

    return [piece for s, e in _merge(spans) for piece in subtract_holes(s, e, holes)]


def elements(annotation: Path) -> dict[str, list[tuple[int, int]]]:
    """chr20 intervals (0-based half-open, merged) of exon, intron, cpg and tss."""
    exons = []
    for line in (annotation / "hg19_chr20_refseq_exons.saf").read_text().splitlines()[1:]:
        _, chrom, start, end, _ = line.split()
        exons.append((int(start) - 1, int(end)))
    genes = [(int(f[1]), int(f[2])) for f in (line.split() for line in (annotation / "hg19_chr20_refseq_genes.bed").read_text().splitlines())]
    cpg = [(int(f[1]), int(f[2])) for f in (line.split() for line in (annotation / "hg19_chr20_cpg_islands.bed").read_text().splitlines())]
    tss = [int(line.split()[1]) for line in (annotation / "hg19_chr20_refseq_tss.txt").read_text().splitlines()]
    return {"exon": _merge(exons), "intron": _subtract(genes, exons), "cpg": _merge(cpg),
            "tss": _merge([(max(0, p - TSS_FLANK), p + TSS_FLANK + 1) for p in tss])}


def write_bed(path: Path, chrom: str, spans) -> None:
    path.write_text("".join(f"{chrom}\t{s}\t{e}\n" for s, e in spans))


def write_multilabel(genome_path: Path, spans: dict, dest: Path, window: int = 1000, stride: int = 5000) -> None:
    import numpy as np
    from pyfaidx import Fasta

    chrom = Fasta(str(genome_path), read_ahead=0, rebuild=False)["20"]
    length = len(chrom)
    cover = {}
    for name in ("exon", "cpg", "tss"):
        diff = np.zeros(length + 1, dtype=np.int8)
        for s, e in spans[name]:
            diff[s] += 1
            diff[e] -= 1
        cover[name] = np.cumsum(diff[:-1]) > 0
    rows = ["sequence\tlabel_exon\tlabel_cpg\tlabel_tss\tsplit"]
    for start in range(0, length - window + 1, stride):
        end = start + window
        if start < VALID <= end or start < TEST <= end:
            continue  # no window straddles two splits
        seq = str(chrom[start:end]).upper()
        if seq.count("N") > window // 10:
            continue
        split = "train" if end <= VALID else "valid" if end <= TEST else "test"
        labels = [str(int(cover[n][start:end].any())) for n in ("exon", "cpg", "tss")]
        rows.append("\t".join([seq, *labels, split]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(rows) + "\n")
    print(f"wrote {len(rows) - 1:,} windows to {dest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=HERE.parents[3] / "shared" / "data")
    parser.add_argument("--multilabel", type=Path, default=None, help="also write the per-window multilabel TSV here")
    parser.add_argument("--stride", type=int, default=5000, help="multilabel windows: bases between window starts")
    args = parser.parse_args()
    spans = elements(args.shared / "annotation")
    for name, values in spans.items():
        write_bed(HERE / f"{name}.bed", "chr20", values)
        print(f"{name}: {len(values):,} intervals, {sum(e - s for s, e in values):,} bases")
    if args.multilabel:
        write_multilabel(args.shared / "genomes" / "GRCh37_chr20.fa.gz", spans, args.multilabel, stride=args.stride)


if __name__ == "__main__":
    main()
