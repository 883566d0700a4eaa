"""The shared machinery of embed / score / boundaries: readers, tiling, batching, atomic outputs,
and the default model."""

from __future__ import annotations

import numpy as np
import pytest

from hnet_dna.inference.tiling import length_batches, tiles
from hnet_dna.io import parse_region, read_sequences
from hnet_dna.runs import atomic_path
from hnet_dna.data.genome import DataError, open_fasta
from hnet_dna.model.loading import default_model_path, load_model
from hnet_dna.weights import CheckpointError

from .conftest import DATA, read_fixture_fasta


def genome_fixture(tmp_path, name="20", length=12_000):
    """A FASTA with one record named ``name``: real chr20 letters from the committed slices."""
    seq = read_fixture_fasta(DATA / "chr20_slices.fa")["chr20_train"][:length]
    path = tmp_path / "genome.fa"
    path.write_text(f">{name}\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n")
    open_fasta(path)  # its index, as a user's genome has one: outputs are what tests look for
    return path, seq


@pytest.mark.parametrize("length,window,stride", [(10, None, None), (10, 16, 8), (100, 16, 8), (101, 16, 5), (17, 16, 15)])
def test_tiles_take_every_base_once_from_the_earliest_window(length, window, stride):
    cover = np.zeros(length, dtype=int)
    prev_end = 0
    for t in tiles(length, window, stride):
        assert t.start <= t.own_start < t.own_end <= t.end <= length
        assert t.own_start == prev_end  # contiguous ownership, in order
        prev_end = t.own_end
        cover[t.own_start:t.own_end] += 1
        if t.start > 0:  # every base after the first window has >= window - stride bases of left context
            assert t.own_start - t.start >= window - stride
    assert (cover == 1).all()


def test_length_batches_group_similar_lengths_within_limits():
    lengths = [5, 100, 7, 98, 6, 99, 50]
    batches = length_batches(lengths, max_bases=250, max_batch=2)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert all(len(b) <= 2 and max(lengths[i] for i in b) * len(b) <= 250 for b in batches)
    assert batches[0] == [1, 5]  # longest first


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


def test_atomic_path_keeps_the_old_file_when_the_block_fails(tmp_path):
    out = tmp_path / "result.npz"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["result.npz"]
    with atomic_path(out) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path
        tmp.write_text("new")
    assert out.read_text() == "new"


def test_default_model_ships_with_the_package_and_says_what_it_is():
    folder = default_model_path()
    assert {"model.safetensors", "config.json", "README.md", "heldout_report.json"} <= {p.name for p in folder.iterdir()}
    assert (folder / "model.safetensors").stat().st_size < 5e6
    model = load_model(None)
    assert model.config.num_stages == 2 and model.num_parameters() < 1e6
    assert "chromosome 20 only" in (folder / "README.md").read_text()


def test_load_model_refuses_files_that_are_not_ours(tmp_path):
    junk = tmp_path / "weights.bin"
    junk.write_bytes(b"\0" * 100)
    with pytest.raises(CheckpointError, match="not a model of hnet_dna"):
        load_model(str(junk))
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors|no config.json"):
        load_model(str(folder))
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(str(ckpt))


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


def test_window_options_are_checked_once_for_every_command():
    from hnet_dna.inference.tiling import check_windows
    from hnet_dna.config import ConfigError

    check_windows(None, None, 1)
    check_windows(256, 255, 8)
    for window, stride, batch, message in ((256, 256, 8, "below --window"), (256, 0, 8, "--stride must be"),
                                           (1, None, 8, "--window must be >= 2"), (None, 5, 8, "needs --window"),
                                           (256, None, 0, "--batch-size")):
        with pytest.raises(ConfigError, match=message):
            check_windows(window, stride, batch)


@pytest.mark.parametrize("command", ["embed", "score", "boundaries", "ism"])
def test_help_says_what_memory_a_window_needs(command):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", f"hnet_dna.{command}", "--help"], capture_output=True, text=True)
    text = " ".join(done.stdout.split())
    assert done.returncode == 0
    assert "MB per 1,000 bases of each window" in text and "left context" in text
