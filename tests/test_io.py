"""Readers of what users bring (FASTA, CSV/TSV, BED with strand, regions) and their errors."""

from __future__ import annotations

import pytest

from hnet_dna.data.genome import DataError
from hnet_dna.io import parse_region, read_sequences

from .conftest import genome_fixture


def test_readers_fasta_table_and_bed_with_strand(tmp_path):
    genome, seq = genome_fixture(tmp_path, name="20")
    fa = tmp_path / "x.fa"
    fa.write_text(">first desc\nACGT\nAC\n>second\nggat\n")
    assert [(r.id, r.sequence) for r in read_sequences(fa)] == [("first", "ACGTAC"), ("second", "ggat")]
    tsv = tmp_path / "x.tsv"
    tsv.write_text("seq\tother\nACGT\t1\nTTGA\t2\n")
    assert [(r.id, r.sequence) for r in read_sequences(tsv)] == [("1", "ACGT"), ("2", "TTGA")]  # row numbers
    bed = tmp_path / "x.bed"
    bed.write_text("chr20\t10\t20\n20\t100\t110\tname\t0\t-\n")  # alias chr20 -> 20
    rows = read_sequences(bed, fasta=genome)
    assert [r.id for r in rows] == ["chr20:11-20(+)", "20:101-110(-)"]
    assert rows[0].sequence == seq[10:20]
    comp = str.maketrans("ACGT", "TGCA")
    assert rows[1].sequence == seq[100:110].translate(comp)[::-1]


def test_bed_errors_name_the_line(tmp_path):
    genome, seq = genome_fixture(tmp_path)
    bed = tmp_path / "x.bed"
    bed.write_text("20\t10\t20\nchr7\t1\t5\n")
    with pytest.raises(DataError, match=r"x.bed, line 2: chromosome 'chr7' is not in .*genome.fa"):
        read_sequences(bed, fasta=genome)
    bed.write_text(f"20\t10\t{len(seq) + 1}\n")
    with pytest.raises(DataError, match="line 1: .* runs past the end of 20"):
        read_sequences(bed, fasta=genome)
    with pytest.raises(DataError, match="needs --fasta"):
        read_sequences(bed)


def test_region_parsing():
    assert parse_region("chr20:1,001-2,000") == ("chr20", 1000, 2000)
    for bad in ("chr20", "chr20:5-1", "chr20:0-10"):
        with pytest.raises(DataError, match="--region"):
            parse_region(bad)


def test_bgzf_fasta_and_named_columns(tmp_path):
    from Bio import bgzf

    path = tmp_path / "x.fa.gz"
    with bgzf.BgzfWriter(str(path), "wb") as f:
        f.write(b">r1\nACGTAC\n>r2\nGGGT\n")
    assert [(r.id, r.sequence) for r in read_sequences(path)] == [("r1", "ACGTAC"), ("r2", "GGGT")]
    csv = tmp_path / "x.csv"
    csv.write_text("name,dna,label\nfirst,ACGT,1\nsecond,TTTT,0\n")
    with pytest.raises(DataError, match=r"no sequence column .* the columns are 'name', 'dna', 'label'. Name it with --sequence_column"):
        read_sequences(csv)
    rows = read_sequences(csv, sequence_column="dna")
    assert [(r.id, r.sequence) for r in rows] == [("first", "ACGT"), ("second", "TTTT")]  # id from 'name'
    with pytest.raises(DataError, match="cannot tell the format"):
        read_sequences(_touch(tmp_path / "x.dat"))


def _touch(path):
    path.write_text("ACGT\n")
    return path
