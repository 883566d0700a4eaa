"""Cut the small real-DNA fixtures the unit tests use from ../shared/data (run from the repo root).

    python tests/data/make_fixtures.py [--shared ../shared/data]

Writes, next to this script:
  chr20_slices.fa  two slices of human chr20 (GRCh37, BGZF source):
                   chr20_train    20:10,000,001-10,300,000  (300 kb, training)
                   chr20_heldout  20:40,000,001-40,060,000  ( 60 kb, held out)
                   Both lie far from the centromere and hold no N.
  hg38_chrM.fa     the human mitochondrial genome (rCRS), copied whole: 16,569 bp with UCSC
                   soft-masking (lowercase repeats), for case-policy tests.
  official_state_dict_shapes.json
                   keys and shapes of the official hnet_1stage_L / hnet_2stage_L state dicts
                   (copied from ../shared).
  chr20_example_variants.vcf
                   six ILLUSTRATIVE variants at real GRCh37 chr20 positions (REF read from the
                   genome; ALT chosen here, not from a call set), named chr20 (UCSC style) as
                   users' VCFs often are: SNVs at the first bases of RefSeq TSSs, one 2-base
                   deletion, one 3-base insertion. For the README's score example.
  ecoli_slice.fa   E. coli K-12 MG1655 1,000,001-1,016,384 (16,384 bp, no N): the cross-species
                   held-out set of the data-efficiency smoke benchmark (pipelines/benchmarks/cpu_smoke.yaml).
  annotation/      the chr20 annotation of pipelines/finetune/chr20_annotation (exon, intron, cpg,
                   tss; cut by its make_chr20_annotation.elements) clipped to the two slices, in
                   the slices' coordinates and names: exon.saf (SAF, 1-based inclusive, with its
                   header and a strand column), intron.bed, cpg.bed, tss.bed (BED, 0-based).
  labelled/        a few rows of four shared labelled sets, in their own formats (column names
                   and order, CSV vs TSV, case, IUPAC letters, split column kept), for the readers:
                   promoter_tss_chr20_300bp.tsv (16 train, 8 valid, 8 test rows, both classes),
                   human_enhancers_iEnhancer2L.csv (12 per class), uci_splice_60bp.tsv (8 per
                   class, the rows with ambiguity letters first), ecoli_promoters_v9d3.csv (6 per
                   class, lowercase with one uppercase base).
  labelled/hf/     the same rows in the layouts Hugging Face users hold (written with `datasets`,
                   so this script needs it: pip install datasets):
                   promoter_tss_chr20_300bp.parquet (the TSV's rows and columns, labels as integers);
                   promoter_tss_nt_layout/ (a DatasetDict.save_to_disk folder, splits train /
                   validation / test, columns sequence, name, label: the Nucleotide Transformer
                   tasks' layout, name = the TSV's site column);
                   enhancers_hub_layout/data/{train,test}-00000-of-00001.parquet (columns seq,
                   label, the Genomic Benchmarks Hub layout; the CSV's first 16 rows train, the rest test).
And, inside the package (the demo recipe's genome, with its index):
  hnet_dna/resources/demo_chr20.fa(.fai)
                   record chr20_demo = 20:10,000,001-11,000,000 of GRCh37 (1 Mb, no N).

The source files are only read: their existing .fai/.gzi indexes are used as they are.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pyfaidx import Fasta

HERE = Path(__file__).resolve().parent
SLICES = [
    ("chr20_train", "20", 10_000_001, 10_300_000),
    ("chr20_heldout", "20", 40_000_001, 40_060_000),
]


def write_fasta(path: Path, records: list[tuple[str, str]], width: int = 80) -> None:
    with path.open("w") as f:
        for name, seq in records:
            f.write(f">{name}\n")
            for i in range(0, len(seq), width):
                f.write(seq[i : i + width] + "\n")


def cut_labelled(source: Path, dest: Path) -> None:
    """Keep the header and a few rows per (split, class) of each set, in file order."""
    dest.mkdir(exist_ok=True)
    plans = {  # file: (delimiter, label column, split column, rows per group, prefer IUPAC rows)
        "promoter_tss_chr20_300bp.tsv": ("\t", "label", "split", {"train": 8, "valid": 4, "test": 4}, False),
        "human_enhancers_iEnhancer2L.csv": (",", "label", None, 12, False),
        "uci_splice_60bp.tsv": ("\t", "label", None, 8, True),
        "ecoli_promoters_v9d3.csv": (",", "labels", None, 6, False),
    }
    for name, (delim, label_col, split_col, per_group, iupac_first) in plans.items():
        lines = (source / name).read_text().splitlines()
        header, rows = lines[0], [line.split(delim) for line in lines[1:] if line]
        cols = header.split(delim)
        li, si, qi = cols.index(label_col), cols.index(split_col) if split_col else None, cols.index(next(
            c for c in cols if c.lower() in ("sequence", "seqs")))
        if iupac_first:
            rows.sort(key=lambda r: all(ch in "ACGT" for ch in r[qi]))  # stable: ambiguity rows first
        kept, counts = [], {}
        for r in rows:
            group = (r[si] if si is not None else "", r[li])
            limit = per_group[group[0]] if isinstance(per_group, dict) else per_group
            if counts.get(group, 0) < limit:
                counts[group] = counts.get(group, 0) + 1
                kept.append(delim.join(r))
        (dest / name).write_text("\n".join([header, *kept]) + "\n")


def write_hf_layouts(labelled: Path) -> None:
    """The labelled fixtures again as Parquet, a save_to_disk folder and a Hub-style Parquet folder."""
    import csv

    import datasets

    dest = labelled / "hf"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    with (labelled / "promoter_tss_chr20_300bp.tsv").open() as f:
        promoter = list(csv.DictReader(f, delimiter="\t"))
    table = {"sequence": [r["sequence"] for r in promoter], "label": [int(r["label"]) for r in promoter],
             "split": [r["split"] for r in promoter], "site": [r["site"] for r in promoter]}
    datasets.Dataset.from_dict(table).to_parquet(str(dest / "promoter_tss_chr20_300bp.parquet"))
    splits = {"train": "train", "validation": "valid", "test": "test"}
    datasets.DatasetDict({
        name: datasets.Dataset.from_dict({
            "sequence": [r["sequence"] for r in promoter if r["split"] == given],
            "name": [r["site"] for r in promoter if r["split"] == given],
            "label": [int(r["label"]) for r in promoter if r["split"] == given],
        }) for name, given in splits.items()
    }).save_to_disk(str(dest / "promoter_tss_nt_layout"))
    with (labelled / "human_enhancers_iEnhancer2L.csv").open() as f:
        enhancers = list(csv.DictReader(f))
    (dest / "enhancers_hub_layout" / "data").mkdir(parents=True)
    for split, rows in (("train", enhancers[:16]), ("test", enhancers[16:])):
        datasets.Dataset.from_dict({"seq": [r["sequence"] for r in rows], "label": [int(float(r["label"])) for r in rows]}) \
            .to_parquet(str(dest / "enhancers_hub_layout" / "data" / f"{split}-00000-of-00001.parquet"))


def write_annotation(shared: Path, dest: Path) -> None:
    """The chr20 elements clipped to SLICES, in slice coordinates (see the module docstring)."""
    import importlib.util

    script = HERE.parents[1] / "pipelines" / "finetune" / "chr20_annotation" / "make_chr20_annotation.py"
    spec = importlib.util.spec_from_file_location("make_chr20_annotation", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    spans = module.elements(shared / "annotation")
    dest.mkdir(exist_ok=True)
    for element, values in spans.items():
        rows = []
        for name, _, start, end in SLICES:
            lo, hi = start - 1, end
            for s, e in values:
                if s < hi and e > lo:
                    a, b = max(s, lo) - lo, min(e, hi) - lo
                    rows.append(f"{element}{len(rows)}\t{name}\t{a + 1}\t{b}\t+" if element == "exon" else f"{name}\t{a}\t{b}")
        header = "GeneID\tChr\tStart\tEnd\tStrand\n" if element == "exon" else ""
        (dest / (f"{element}.saf" if element == "exon" else f"{element}.bed")).write_text(header + "\n".join(rows) + "\n")


def write_example_vcf(genome, annotation: Path, dest: Path) -> None:
    tss = [int(line.split()[1]) for line in annotation.read_text().splitlines()[:40:10]]  # 0-based
    rows = []
    for pos0 in tss:
        ref = str(genome["20"][pos0:pos0 + 1]).upper()
        rows.append((pos0 + 1, ref, {"A": "G", "C": "T", "G": "A", "T": "C"}[ref]))
    pos0 = tss[0] + 100
    ref = str(genome["20"][pos0:pos0 + 3]).upper()
    rows.append((pos0 + 1, ref, ref[0]))  # deletes two bases
    pos0 = tss[1] + 100
    ref = str(genome["20"][pos0:pos0 + 1]).upper()
    rows.append((pos0 + 1, ref, ref + "GCG"))  # inserts three
    lines = ["##fileformat=VCFv4.2", "##reference=GRCh37", "##contig=<ID=chr20,length=63025520>",
             "##source=hnet_dna tests/data/make_fixtures.py (illustrative variants, not a call set)",
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    for k, (pos, ref, alt) in enumerate(sorted(rows)):
        lines.append(f"chr20\t{pos}\tex{k + 1}\t{ref}\t{alt}\t.\t.\t.")
    dest.write_text("\n".join(lines) + "\n")


def write_ecoli_slice(source: Path, dest: Path, start: int = 1_000_001, length: int = 16_384) -> None:
    """A slice of the E. coli genome (plain gzip: read with Biopython, not indexed)."""
    import gzip

    from Bio import SeqIO

    with gzip.open(source, "rt") as f:
        record = next(SeqIO.parse(f, "fasta"))
    seq = str(record.seq[start - 1 : start - 1 + length]).upper()
    if set(seq) - set("ACGT"):
        raise SystemExit(f"{source}: the E. coli slice holds letters other than ACGT; choose another")
    write_fasta(dest, [(f"ecoli_slice {record.id}:{start}-{start + length - 1} E. coli K-12 MG1655", seq)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=HERE.parents[2] / "shared" / "data")
    args = parser.parse_args()

    genome = Fasta(str(args.shared / "genomes" / "GRCh37_chr20.fa.gz"), read_ahead=0, rebuild=False)
    records = []
    for name, chrom, start, end in SLICES:
        seq = str(genome[chrom][start - 1 : end]).upper()
        if "N" in seq:
            raise SystemExit(f"{name}: {chrom}:{start}-{end} holds N; choose another slice")
        records.append((f"{name} {chrom}:{start}-{end} GRCh37", seq))
    write_fasta(HERE / "chr20_slices.fa", records)
    shutil.copyfile(args.shared / "genomes" / "hg38_chrM.fa", HERE / "hg38_chrM.fa")
    demo = HERE.parents[1] / "hnet_dna" / "resources" / "demo_chr20.fa"
    seq = str(genome["20"][10_000_000:11_000_000])
    write_fasta(demo, [("chr20_demo 20:10,000,001-11,000,000 GRCh37 (hnet_dna demo genome)", seq)])
    Fasta(str(demo), rebuild=True).close()  # writes demo_chr20.fa.fai
    write_annotation(args.shared, HERE / "annotation")
    cut_labelled(args.shared / "classification", HERE / "labelled")
    write_hf_layouts(HERE / "labelled")
    write_example_vcf(genome, args.shared / "annotation" / "hg19_chr20_refseq_tss.txt", HERE / "chr20_example_variants.vcf")
    write_ecoli_slice(args.shared / "genomes" / "Ecoli_K12_MG1655.fasta.gz", HERE / "ecoli_slice.fa")
    manifest = "official_state_dict_shapes.json"
    shutil.copyfile(args.shared.parent / manifest, HERE / manifest)
    print("wrote chr20_slices.fa, hg38_chrM.fa and", manifest, "in", HERE)


if __name__ == "__main__":
    main()
