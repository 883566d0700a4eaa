import gzip
import os
import shutil

import numpy as np
import pytest

from hnet_dna.data import genome
from hnet_dna.data.genome import DataError, chrom_aliases, open_fasta

from ..conftest import DATA, write_bgzf, write_fasta


@pytest.fixture
def small_fasta(tmp_path, chr20_slices):
    seq = chr20_slices["chr20_train"][:5000]
    return write_fasta(tmp_path / "g.fa", {"chr1": seq[:3000], "chr2": seq[3000:4000] + "N" * 300 + seq[4000:]})


def test_uncompressed_fasta_gets_an_index_beside_it(small_fasta):
    src = open_fasta(small_fasta)
    assert (small_fasta.parent / "g.fa.fai").is_file()
    assert src.records == {"chr1": 3000, "chr2": 2300}
    assert src.fetch("chr2", 995, 1005) == src.fetch("chr2", 995, 1000) + "NNNNN"


def test_bgzf_fasta_gets_fai_and_gzi(tmp_path, chr20_slices):
    text = ">20\n" + "\n".join(chr20_slices["chr20_heldout"][i : i + 70] for i in range(0, 60000, 70)) + "\n"
    path = write_bgzf(tmp_path / "g.fa.gz", text)
    src = open_fasta(path)
    assert src.bgzf and (tmp_path / "g.fa.gz.fai").is_file() and (tmp_path / "g.fa.gz.gzi").is_file()
    assert src.fetch("20", 1000, 1050) == chr20_slices["chr20_heldout"][1000:1050]


def test_plain_gzip_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "plain.fa.gz"
    with gzip.open(path, "wt") as f:
        f.write(">x\nACGT\n")
    with pytest.raises(DataError, match=r"plain.fa.gz: plain gzip .*bgzip"):
        open_fasta(path)


def test_read_only_folder_needs_an_index_dir(small_fasta, tmp_path, monkeypatch):
    folder = small_fasta.parent
    monkeypatch.setattr(genome, "_writable", lambda p: p != folder)  # as if mounted read-only
    with pytest.raises(DataError, match=r"folder is not writable.*--data.index_dir"):
        open_fasta(small_fasta)
    assert not (folder / "g.fa.fai").exists()
    index_dir = tmp_path / "indexes"
    src = open_fasta(small_fasta, index_dir=index_dir)
    assert src.index_path.parent == index_dir and src.fetch("chr1", 0, 4) == open_fasta(small_fasta, index_dir=index_dir).fetch("chr1", 0, 4)
    src.scan()
    assert sorted(p.name for p in folder.iterdir()) == ["g.fa", "indexes"]  # nothing written beside the FASTA


def test_missing_empty_and_non_fasta_files(tmp_path):
    with pytest.raises(DataError, match="no such FASTA file"):
        open_fasta(tmp_path / "missing.fa")
    (tmp_path / "empty.fa").write_text("")
    with pytest.raises(DataError, match="empty"):
        open_fasta(tmp_path / "empty.fa")
    (tmp_path / "headers.fa").write_text(">a\n>b\n")
    with pytest.raises(DataError, match="no sequence"):
        open_fasta(tmp_path / "headers.fa")


def test_aliases_and_unknown_names(tmp_path):
    assert chrom_aliases("20")[:2] == ["20", "chr20"] and "20" in chrom_aliases("chr20")
    assert {"chrM", "MT", "M", "chrMT"} <= set(chrom_aliases("MT")) and "MT" in chrom_aliases("chrM")
    shutil.copy(DATA / "hg38_chrM.fa", tmp_path)  # tests never write beside committed fixtures
    src = open_fasta(tmp_path / "hg38_chrM.fa")
    assert src.resolve("MT") == "chrM" and src.resolve("M") == "chrM" and src.resolve("chr20") is None
    assert "chrM" in src.describe_names()


def test_scan_finds_n_runs_and_checks_letters(tmp_path, small_fasta):
    src = open_fasta(small_fasta)
    scan = src.scan()["chr2"]
    assert scan.n_starts.tolist() == [1000] and scan.n_ends.tolist() == [1300]
    starts = np.array([0, 900, 1100, 1250, 2000])
    assert scan.n_count(starts, starts + 200).tolist() == [0, 100, 200, 50, 0]
    bad = write_fasta(tmp_path / "bad.fa", {"ok": "ACGT" * 10, "chr9": "ACGTAC-GT"})
    with pytest.raises(DataError, match=r"bad.fa, record 'chr9', line 4, column 7 \(position 7\): '-' is not a DNA letter"):
        open_fasta(bad).scan()
    iupac = write_fasta(tmp_path / "iupac.fa", {"r": "ACGTRYACGT"})
    assert open_fasta(iupac).scan()["r"].n_starts.tolist() == [4]  # lenient: R and Y count as N
    with pytest.raises(DataError, match=r"line 2, column 5 \(position 5\): IUPAC ambiguity letter 'R'.*strict"):
        open_fasta(iupac, iupac_policy="strict").scan()


def test_scan_runs_across_block_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(genome, "SCAN_BLOCK", 64)
    # a run across one boundary, and a run spanning several whole blocks
    seq = "A" * 60 + "N" * 10 + "C" * 100 + "n" * 200 + "G" * 6
    src = open_fasta(write_fasta(tmp_path / "b.fa", {"r": seq}))
    scan = src.scan()["r"]
    assert scan.n_starts.tolist() == [60, 170] and scan.n_ends.tolist() == [70, 370]


def test_an_index_older_than_the_fasta_is_rebuilt(small_fasta):
    open_fasta(small_fasta)
    write_fasta(small_fasta, {"other": "ACGT" * 50})
    index = small_fasta.parent / "g.fa.fai"
    os.utime(index, (1, 1))  # an index from before the FASTA changed
    assert open_fasta(small_fasta).records == {"other": 200}


def test_scan_cache_is_reused_and_invalidated(small_fasta):
    first = open_fasta(small_fasta).scan()
    cache = small_fasta.parent / "g.fa.hnet_scan.npz"
    assert cache.is_file()
    mtime = cache.stat().st_mtime_ns
    again = open_fasta(small_fasta).scan()
    assert cache.stat().st_mtime_ns == mtime and again["chr2"].n_starts.tolist() == first["chr2"].n_starts.tolist()
    write_fasta(small_fasta, {"chr1": "ACGT" * 100, "chr2": "NNNN" + "ACGT" * 50})
    os.remove(small_fasta.parent / "g.fa.fai")
    assert open_fasta(small_fasta).scan()["chr2"].n_ends.tolist() == [4]


def test_builtin_demo_genome():
    src = open_fasta("builtin:demo_chr20.fa")
    assert src.records == {"chr20_demo": 1_000_000}
    assert len(src.fetch("chr20_demo", 0, 100)) == 100
