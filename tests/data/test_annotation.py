"""Per-base annotation: BED/SAF intervals become per-base labels of genome windows (issue #33)."""

import numpy as np
import pytest
import torch

from hnet_dna.data import AnnotationDataModule, DataError
from hnet_dna.data.annotation import read_annotation
from hnet_dna.data.genome import open_fasta

from ..conftest import DATA

FIXTURE = {"exon": str(DATA / "annotation" / "exon.saf"), "intron": str(DATA / "annotation" / "intron.bed"),
           "cpg": str(DATA / "annotation" / "cpg.bed"), "tss": str(DATA / "annotation" / "tss.bed")}


def _genome(tmp_path):
    rng = np.random.default_rng(0)
    seq = list("".join(rng.choice(list("ACGT"), 300)))
    seq[50:60] = "N" * 10  # an N run: never scored
    (tmp_path / "g.fa").write_text(">chrT test\n" + "".join(seq) + "\n>other\n" + "ACGT" * 100 + "\n")
    # exon: BED 0-based half-open, two overlapping intervals (merged) and one base on the other strand
    (tmp_path / "exon.bed").write_text("track name=x\n# a comment\nchrT\t10\t20\t.\t0\t+\nchrT\t15\t30\t.\t0\t-\nchrT\t200\t201\n")
    # cpg: SAF, 1-based inclusive: 41..45 is bases 40..44 (0-based)
    (tmp_path / "cpg.saf").write_text("GeneID\tChr\tStart\tEnd\tStrand\ng1\tT\t41\t45\t+\n")
    return str(tmp_path / "g.fa"), {"exon": str(tmp_path / "exon.bed"), "cpg": str(tmp_path / "cpg.saf")}


def test_a_windows_labels_are_the_intervals_on_both_strands_and_n_is_never_scored(tmp_path):
    fasta, annotation = _genome(tmp_path)
    dm = AnnotationDataModule(fasta, annotation, val_regions=["other"], window=100, stride=100, max_n_fraction=0.2,
                              reverse_complement=0.0)
    assert dm.class_names == ["exon", "cpg"] and dm.task == "segmentation"
    starts = list(dm.tables["train"].start)
    assert starts == [0, 100, 200]
    first = dm.datasets["train"][(0, 0)]
    expected = np.zeros((100, 2))
    expected[10:30, 0] = 1  # [10, 20) and [15, 30) merged; the strand column is not read
    expected[40:45, 1] = 1
    assert torch.equal(first["labels"], torch.tensor(expected, dtype=torch.float32))
    assert not first["scored"][50:60].any() and first["scored"][:50].all() and first["scored"][60:].all()
    assert first["mask"].all()
    third = dm.datasets["train"][(0, 2)]
    assert third["labels"][:, 0].nonzero().flatten().tolist() == [0]  # chrT 200-201: the window's first base
    # a reverse-complemented window: its forward labels reversed, its N reversed with it
    flipped = AnnotationDataModule(fasta, annotation, val_regions=["other"], window=100, stride=100, max_n_fraction=0.2,
                                   reverse_complement=1.0).datasets["train"][(0, 0)]
    assert flipped["coords"][3] == 1
    assert torch.equal(flipped["labels"], first["labels"].flip(0))
    assert torch.equal(flipped["scored"], first["scored"].flip(0))


def test_the_fixture_saf_reads_one_based_and_the_bed_zero_based():
    source = open_fasta(DATA / "chr20_slices.fa")
    exon = read_annotation("exon", FIXTURE["exon"], [source])
    first = (DATA / "annotation" / "exon.saf").read_text().splitlines()[1].split()
    start, end = int(first[2]) - 1, int(first[3])
    cover = exon.coverage(0, "chr20_train", start - 2, end + 2)
    assert cover.tolist() == [False] * 2 + [True] * (end - start) + [False] * 2
    intron = read_annotation("intron", FIXTURE["intron"], [source])
    line = (DATA / "annotation" / "intron.bed").read_text().splitlines()[0].split()
    a, b = int(line[1]), int(line[2])
    assert intron.coverage(0, "chr20_train", a - 1, b + 1).tolist() == [False] + [True] * (b - a) + [False]


@pytest.mark.parametrize("text, says", [
    ("chr7\t10\t20\n", "on chromosome 'chr7', which no FASTA holds"),
    ("chrT\t10\t2000\n", "past the end of chrT"),
    ("chrT\tten\t20\n", "line 1: start and end must be whole numbers"),
    ("chrT\t20\t10\n", "0 <= start < end"),
    ("chrT\t10\n", r"expected chrom start end \(BED\)"),
])
def test_a_bad_annotation_stops_with_its_file_and_line(tmp_path, text, says):
    fasta, annotation = _genome(tmp_path)
    (tmp_path / "bad.bed").write_text(text)
    with pytest.raises(DataError, match=says) as error:
        AnnotationDataModule(fasta, {**annotation, "bad": str(tmp_path / "bad.bed")}, val_regions=["other"], window=100)
    assert "bad.bed" in str(error.value)


def test_absent_chromosomes_can_be_skipped_but_an_element_needs_some_interval(tmp_path):
    fasta, annotation = _genome(tmp_path)
    (tmp_path / "wide.bed").write_text("chr7\t10\t20\nchrT\t5\t6\n")
    dm = AnnotationDataModule(fasta, {"wide": str(tmp_path / "wide.bed")}, val_regions=["other"], window=100,
                              max_n_fraction=0.2, skip_absent_chromosomes=True)
    assert dm.datasets["train"][(0, 0)]["labels"][:, 0].nonzero().flatten().tolist() == [5]
    (tmp_path / "elsewhere.bed").write_text("chr7\t10\t20\n")
    with pytest.raises(DataError, match="no interval on the FASTA's chromosomes"):
        AnnotationDataModule(fasta, {"x": str(tmp_path / "elsewhere.bed")}, val_regions=["other"], window=100,
                             skip_absent_chromosomes=True)
    with pytest.raises(DataError, match="missing.bed: no such file"):
        AnnotationDataModule(fasta, {"x": str(tmp_path / "missing.bed")}, val_regions=["other"], window=100)


def test_window_counts_keep_evenly_spaced_windows_of_the_fixture_genome():
    dm = AnnotationDataModule(str(DATA / "chr20_slices.fa"), FIXTURE, val_regions=["chr20_heldout"], window=1024,
                              train_windows=10, held_out_windows=4)
    full = AnnotationDataModule(str(DATA / "chr20_slices.fa"), FIXTURE, val_regions=["chr20_heldout"], window=1024)
    assert len(dm.datasets["train"]) == 10 and len(dm.datasets["val"]) == 4
    assert dm.tables["train"].start[0] == full.tables["train"].start[0]
    assert dm.tables["train"].start[-1] == full.tables["train"].start[-1]
    assert set(dm.tables["train"].start) <= set(full.tables["train"].start)
    exon_fraction = dm.element_fractions()[0]
    assert 0 < exon_fraction < 0.2


def _holds(dm, split):
    from hnet_dna.data.annotation_datamodule import _window_elements

    return _window_elements(dm.tables[split], dm.elements)


def test_covering_held_out_windows_hold_every_element_the_split_has():
    """Evenly spaced held-out windows can miss a rare element; covering ones give each element an
    equal share of half the windows and space the rest evenly."""
    common = dict(fasta=str(DATA / "chr20_slices.fa"), annotation=FIXTURE, val_regions=["chr20_train"], window=256)
    full = AnnotationDataModule(**common)
    present = _holds(full, "val").any(0)
    assert present.all()  # the 300 kb slice holds each element somewhere (CpG and TSS in 3-4 places)
    evenly = AnnotationDataModule(**common, held_out_windows=16)
    assert not _holds(evenly, "val").any(0).all()  # the evenly spaced windows miss one
    covered = AnnotationDataModule(**common, held_out_windows=16, held_out_cover=True)
    assert len(covered.datasets["val"]) == 16 and _holds(covered, "val").any(0).all()
    assert _holds(covered, "val").sum(0).min() >= 2  # 16 // (2 x 4 elements) windows each, where the split has them
    assert set(covered.tables["val"].start) <= set(full.tables["val"].start)
    assert list(covered.tables["val"].start) == sorted(covered.tables["val"].start)  # still in genome order
    again = AnnotationDataModule(**common, held_out_windows=16, held_out_cover=True)
    assert np.array_equal(again.tables["val"].start, covered.tables["val"].start)  # the same windows every run
    assert len(covered.datasets["train"]) == len(full.datasets["train"])  # training windows untouched
