import numpy as np
import pytest

from hnet_dna.data.genome import DataError, open_fasta
from hnet_dna.data.windows import build_windows, parse_region, read_split_bed

from ..conftest import write_fasta


@pytest.fixture
def genome(tmp_path, chr20_slices):
    seq = chr20_slices["chr20_train"]
    records = {"chr1": seq[:10_000], "chr2": seq[10_000:14_000] + "N" * 500 + seq[14_000:17_500]}
    return open_fasta(write_fasta(tmp_path / "g.fa", records))


def bed(tmp_path, lines: str, name="s.bed"):
    path = tmp_path / name
    path.write_text(lines)
    return path


def test_regions_are_one_based_inclusive(genome):
    r = parse_region("chr1:1-100", [genome])
    assert (r.record, r.start, r.end) == ("chr1", 0, 100)
    assert parse_region("1:1,001-2,000", [genome]).start == 1000  # alias and commas
    assert parse_region("chr2", [genome]).end == 8000
    with pytest.raises(DataError, match="past the end of chr2"):
        parse_region("chr2:1-9000", [genome])
    with pytest.raises(DataError, match="chromosome 'chr7' is in no FASTA.*chr1, chr2"):
        parse_region("chr7:1-10", [genome])
    with pytest.raises(DataError, match="expected chrom or chrom:start-end"):
        parse_region("chr1:5", [genome])


def test_tiling_with_window_and_stride(genome):
    t = build_windows([genome], 1000, 500, val_regions=["chr2"])
    train = t["train"]
    assert train.start.tolist() == list(range(0, 9001, 500)) and len(t["val"]) > 0
    assert all(train.records[r][1] == "chr1" for r in train.record)
    assert train.describe(1) == "chr1:501-1500"


def test_windows_with_too_much_n_are_dropped(genome):
    t = build_windows([genome], 1000, 100, val_regions=["chr1"])
    starts = t["train"].start  # chr2 has N at [4000, 4500)
    n = np.maximum(0, np.minimum(starts + 1000, 4500) - np.maximum(starts, 4000))
    assert (n <= 100).all() and 3100 in starts and 4400 in starts
    assert not set(range(3200, 4400, 100)) & set(starts.tolist())
    loose = build_windows([genome], 1000, 100, val_regions=["chr1"], max_n_fraction=1.0)
    assert len(loose["train"]) == len(range(0, 7001, 100))


def test_bed_splits_tiled_and_checked(genome, tmp_path):
    path = bed(tmp_path, "chr1\t0\t6000\ttrain\nchr1\t6000\t10000\tvalid\n2\t0\t3000\ttest\n")
    t = build_windows([genome], 1000, 1000, bed=path)
    assert t["train"].start.tolist() == [0, 1000, 2000, 3000, 4000, 5000]
    assert t["val"].start.tolist() == [6000, 7000, 8000, 9000] and len(t["test"]) == 3


@pytest.mark.parametrize(
    "lines, message",
    [
        ("chr1\t0\t100\ttraining\n", r"s.bed, line 1: unknown split 'training'"),
        ("chr1\t0\t100\ttrain\nchrX\t0\t100\ttest\n", r"line 2: chromosome 'chrX' is in no FASTA"),
        ("chr1\t0\t100\ttrain\nchr1\t9000\t10001\tvalid\n", r"line 2: interval chr1:9000-10001 ends past the end of chr1"),
        ("chr1\t100\t50\ttrain\n", r"line 1: need 0 <= start < end"),
        ("chr1\t0\n", r"line 1: expected 4 columns"),
        ("# nothing\n", r"holds no intervals"),
    ],
)
def test_bad_bed_lines_are_named(genome, tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        read_split_bed(bed(tmp_path, lines), [genome])


def test_window_longer_than_every_interval(genome, tmp_path):
    short_val = bed(tmp_path, "chr1\t0\t5000\ttrain\nchr1\t6000\t6900\tvalid\n")
    with pytest.raises(DataError, match="val regions give no window: window of 1,000 bases is longer than every val interval"):
        build_windows([genome], 1000, 1000, bed=short_val)
    # no training window is not an error for evaluation; fit reports why (the real cause)
    short_train = bed(tmp_path, "chr1\t0\t500\ttrain\nchr1\t600\t2000\tvalid\n", "t.bed")
    tables = build_windows([genome], 1000, 1000, bed=short_train)
    assert len(tables["train"]) == 0 and len(tables["val"]) == 1
    assert "window of 1,000 bases is longer than every training interval (the longest is 500)" in tables["train"].problem
    all_held = build_windows([genome], 1000, 1000, test_regions=["chr1", "chr2"])
    assert all_held["train"].problem.startswith("no training sequence: --data.val_regions / --data.test_regions cover every record")
    assert build_windows([genome], 1000, 1000, val_regions=["chr1:1-2000"])["train"].problem is None


def test_leakage_is_detected_including_the_shift(genome, tmp_path):
    overlap = bed(tmp_path, "chr1\t0\t5000\ttrain\nchr1\t4500\t8000\tvalid\n")
    with pytest.raises(DataError, match=r"leakage: val window chr1:4501-5500") as info:
        build_windows([genome], 1000, 1000, bed=overlap)
    # the message names the BED file and both of its lines
    assert f"{overlap}, line 2 (chr1\t4500\t8000\tvalid)" in str(info.value)
    assert f"{overlap}, line 1 (chr1\t0\t5000\ttrain)" in str(info.value)
    adjacent = bed(tmp_path, "chr1\t0\t5000\ttrain\nchr1\t5000\t8000\ttest\n", "adj.bed")
    assert len(build_windows([genome], 1000, 1000, bed=adjacent)["test"]) == 3  # touching is fine
    with pytest.raises(DataError, match=r"leakage: test window chr1:5001-6000 .*random_shift=10"):
        build_windows([genome], 1000, 1000, bed=adjacent, random_shift=10)
    allowed = build_windows([genome], 1000, 1000, bed=adjacent, random_shift=10, allow_leakage=True)
    assert len(allowed["test"]) == 3
    before = bed(tmp_path, "chr1\t0\t3000\tvalid\nchr1\t3000\t10000\ttrain\n", "before.bed")
    with pytest.raises(DataError, match=r"leakage: val window chr1:2001-3000 .*random_shift=10"):
        build_windows([genome], 1000, 1000, bed=before, random_shift=10)  # the shift reaches left too


def test_held_out_regions_keep_shifted_training_windows_away(genome):
    t = build_windows([genome], 1000, 1000, val_regions=["chr1:4001-6000"], random_shift=50)
    train = t["train"]
    chr1 = train.start[[train.records[r][1] == "chr1" for r in train.record]]
    assert chr1.tolist() == [0, 1000, 2000, 6050, 7050, 8050]  # 50 bases off the held-out edges
    assert t["val"].start.tolist() == [4000, 5000]


def test_several_fastas(genome, tmp_path, chr20_slices):
    other = open_fasta(write_fasta(tmp_path / "other.fa", {"plasmid": chr20_slices["chr20_heldout"][:5000]}))
    t = build_windows([genome, other], 1000, 1000, val_regions=["plasmid:1-2000"])
    assert set(t["train"].source.tolist()) == {0, 1} and set(t["val"].source.tolist()) == {1}
    dup = open_fasta(write_fasta(tmp_path / "dup.fa", {"chr1": "ACGT" * 500}))
    with pytest.raises(DataError, match="'chr1' is in several FASTA files"):
        build_windows([genome, dup], 1000, 1000, val_regions=["chr1:1-2000"])


def test_gzipped_bed_is_read_and_binary_junk_is_an_error(genome, tmp_path):
    import gzip

    with gzip.open(tmp_path / "s.bed.gz", "wt") as f:
        f.write("chr1\t0\t6000\ttrain\nchr1\t6000\t10000\tvalid\n")
    assert len(read_split_bed(tmp_path / "s.bed.gz", [genome])["val"]) == 1
    (tmp_path / "junk.bed").write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(DataError, match="junk.bed: not a readable text BED file"):
        read_split_bed(tmp_path / "junk.bed", [genome])


def test_validation_and_test_windows_must_not_overlap(genome, tmp_path):
    path = bed(tmp_path, "chr1\t0\t4000\ttrain\nchr1\t4000\t8000\tvalid\nchr1\t7000\t10000\ttest\n")
    with pytest.raises(DataError, match=r"leakage: test window chr1:7001-8000 overlaps the span of validation window chr1:7001-8000.*line 3.*line 2"):
        build_windows([genome], 1000, 1000, bed=path)
