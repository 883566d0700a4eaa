"""``python -m hnet_dna.boundaries``: bigWig / BED tracks in genome coordinates, enrichment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hnet_dna.boundaries import main as boundaries_main
from hnet_dna.data.genome import open_fasta
from hnet_dna.interpret.boundaries import region_boundaries
from hnet_dna.interpret.chunk_stats import chunk_length_stats, repeat_intervals
from hnet_dna.interpret.enrichment import boundary_enrichment, local_gc
from hnet_dna.io import read_feature_edges
from hnet_dna.model.loading import load_model

from ..conftest import genome_fixture, make_model


def read_bed(path):
    return [(c, int(a), int(b)) for c, a, b, *_ in (line.split("\t") for line in path.read_text().splitlines())]


def test_tracks_are_in_genome_coordinates_to_the_region_edges(tmp_path, capsys):
    import pyBigWig

    genome, seq = genome_fixture(tmp_path, name="20")
    ann = tmp_path / "features.bed"
    ann.write_text("chr20\t3100\t3200\nchr20\t4000\t4500\nchr7\t3100\t3200\n")  # chr20 = 20; chr7 ignored
    prefix = tmp_path / "out" / "r"
    prefix.parent.mkdir()
    boundaries_main(["--fasta", str(genome), "--region", "20:3,001-6,000", "--out", str(prefix), "--window", "1024",
                     "--annotation", f"feat={ann}", "--shifts", "200", "--quiet"])
    bw = pyBigWig.open(f"{prefix}.level0.prob.bw")
    assert bw.chroms() == {"20": 12_000}
    intervals = bw.intervals("20")
    assert intervals[0][0] == 3000 and intervals[-1][1] == 6000 and len(intervals) == 3000
    # The first base of the region was decided with 512 bases of left context (window - stride).
    model = load_model(None).eval()
    with torch.no_grad():
        f = model.features(model.tokenizer.encode(seq[2488:3512])[None])
    assert intervals[0][2] == pytest.approx(float(f.levels[0].boundary_probs[0, 512]), abs=1e-5)
    chunks = read_bed(prefix.parent / "r.level0.chunks.bed")
    assert chunks[0][:2] == ("20", 3000) and chunks[-1][2] == 6000
    assert all(a[2] == b[1] for a, b in zip(chunks, chunks[1:]))  # contiguous, no gap, no overlap
    starts = {a for _, a, _ in chunks[1:]}
    decided = {int(p) + 3000 - 512 for p in torch.nonzero(f.levels[0].boundaries[0]).flatten() if 512 < p < 1024}
    assert decided == {s for s in starts if s < 3512}
    table = (prefix.parent / "r.enrichment.tsv").read_text().splitlines()
    assert table[0].split("\t")[:3] == ["level", "annotation", "edges"] and table[1].split("\t")[:3] == ["0", "feat", "4"]
    assert (prefix.parent / "r.png").stat().st_size > 10_000
    assert "| level | annotation |" in capsys.readouterr().out
    rows = [line.split("\t") for line in (prefix.parent / "r.chunks.tsv").read_text().splitlines()]
    assert rows[0][:3] == ["level", "class", "features"]
    assert [r[1] for r in rows[1:]] == ["region", "homopolymer", "tandem_repeat", "feat"]
    assert rows[1][3] == "3000" and rows[4][3] == "600"  # the region's bases; feat: 100 + 500 bases


def test_inner_levels_are_mapped_back_to_bases(tmp_path):
    import pyBigWig

    genome, seq = genome_fixture(tmp_path, name="chr20")
    torch.manual_seed(0)
    prefix = tmp_path / "two"
    boundaries_main(["--fasta", str(genome), "--region", "chr20:1-1500", "--out", str(prefix), "--model",
                     "tiny-hnet-2stage", "--window", "512", "--quiet"])
    outer = [a for _, a, _ in read_bed(tmp_path / "two.level0.chunks.bed")]
    inner = [a for _, a, _ in read_bed(tmp_path / "two.level1.chunks.bed")]
    assert outer[0] == inner[0] == 0  # the chromosome's first base starts a chunk at every level
    assert set(inner) <= set(outer) and len(inner) < len(outer)
    bw = pyBigWig.open(str(tmp_path / "two.level1.prob.bw"))
    decided_at = [a for a, _, _ in bw.intervals("chr20")]
    assert decided_at == outer  # level 1 decides exactly where level 0's chunks start


@pytest.mark.parametrize("region", [(0, 700), (5000, 5600)])
def test_exact_context_decides_as_one_read_of_the_whole_region(tmp_path, region):
    """Blocks continuing from the caches give every level's probabilities and chunk starts of one
    window holding the context and the whole region (fp64 two-stage model: inner levels too)."""
    genome, _ = genome_fixture(tmp_path, name="chr20")
    fasta = open_fasta(genome)
    model = make_model("tiny-hnet-2stage", seed=3)
    start, end = region
    exact = region_boundaries(model, fasta, "chr20", start, end, window=128, stride=64, exact_context=True)
    # the same 64 bases of context (or none at the chromosome's start), then everything in one window
    whole = region_boundaries(model, fasta, "chr20", start, end, window=2048, stride=2048 - 64)
    windows = region_boundaries(model, fasta, "chr20", start, end, window=128, stride=64)
    for level in range(2):
        np.testing.assert_array_equal(exact.starts[level], whole.starts[level])
        np.testing.assert_array_equal(exact.probs[level][0], whole.probs[level][0])
        np.testing.assert_allclose(exact.probs[level][1], whole.probs[level][1], rtol=1e-6, atol=1e-6)
    assert exact.starts[0].min() >= start and (start > 0 or exact.starts[0][0] == 0)  # a chromosome's first base opens a chunk
    # windows read some bases with less context (this random model forgets fast: small differences)
    assert np.abs(windows.probs[0][1] - whole.probs[0][1]).max() > 1e-6 > np.abs(exact.probs[0][1] - whole.probs[0][1]).max()


def test_enrichment_finds_planted_boundaries_and_not_shuffled_ones():
    rng = np.random.default_rng(1)
    start, end = 1_000_000, 1_200_000
    edges = np.sort(rng.choice(np.arange(start, end), 150, replace=False))
    background = rng.choice(np.arange(start, end), 20_000, replace=False)
    planted = np.unique(np.concatenate([background, edges]))
    hit = boundary_enrichment(planted, edges, start, end, flank=2, shifts=500, seed=0)
    assert hit["observed"] >= 150 and hit["fold_shift"] > 2 and hit["p_value"] < 0.01 and hit["p_depletion"] > 0.99
    shuffled = np.unique(np.concatenate([background, rng.choice(np.arange(start, end), 150, replace=False)]))
    null = boundary_enrichment(shuffled, edges, start, end, flank=2, shifts=500, seed=0)
    assert 0.7 < null["fold_shift"] < 1.3 and null["p_value"] > 0.05 and null["p_depletion"] > 0.05
    avoided = np.setdiff1d(background, np.concatenate([edges + d for d in range(-2, 3)]))  # none near an edge
    assert boundary_enrichment(avoided, edges, start, end, flank=2, shifts=500)["p_depletion"] < 0.01


def test_annotation_formats_and_names(tmp_path):
    saf = tmp_path / "exons.saf"
    saf.write_text("GeneID\tChr\tStart\tEnd\tStrand\n1\tchr20\t101\t200\t+\n2\tchr20\t5000\t5100\t-\n")
    tss = tmp_path / "tss.txt"
    tss.write_text("chr20\t150\t+\n20\t170\t-\nchr3\t160\t+\n")
    names = {"20", "chr20"}
    edges, features = read_feature_edges(saf, names, 0, 1000)
    assert list(edges) == [100, 200] and features[0] == (100, 200)  # 1-based inclusive -> 0-based edges
    edges, _ = read_feature_edges(tss, names, 0, 1000)
    assert list(edges) == [150, 170]


def test_bad_region_stops_before_writing(tmp_path, capsys):
    genome, _ = genome_fixture(tmp_path, name="20")
    before = sorted(p.name for p in tmp_path.iterdir())
    for region, message in (("20:11,000-12,500", "past the end of 20 (12,000 bp"), ("chr9:1-100", "no chromosome 'chr9'")):
        with pytest.raises(SystemExit) as exc:
            boundaries_main(["--fasta", str(genome), "--region", region, "--out", str(tmp_path / "x"), "--quiet"])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        boundaries_main(["--fasta", str(genome), "--region", "20:1-100", "--out", str(tmp_path / "x"), "--quiet",
                         "--model", "tiny-transformer"])
    assert "no chunk boundaries" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_controls_never_count_or_place_boundaries_in_n_runs():
    start, end = 5000, 7000
    valid = np.arange(end - start) < 1000  # the second half is an N gap
    edges = np.arange(start, start + 1001, 5)  # with flank 2, every valid base is near an edge
    rng = np.random.default_rng(0)
    in_sequence = rng.choice(np.arange(start, start + 1000), 100, replace=False)
    in_gap = rng.choice(np.arange(start + 1000, end), 50, replace=False)
    gc = np.where(valid, rng.random(end - start), np.nan)
    r = boundary_enrichment(np.sort(np.concatenate([in_sequence, in_gap])), edges, start, end, flank=2, shifts=200,
                            valid=valid, gc=gc)
    assert r["boundaries"] == 100 and r["observed"] == 100
    assert r["expected_shift"] == 100 and r["expected_gc"] == 100  # every moved boundary stays on sequence
    assert r["control"] == "gc" and r["p_value"] == r["p_gc"]


def test_the_gc_matched_control_explains_composition_away():
    rng = np.random.default_rng(2)
    blocks = ["".join(rng.choice(list("AT" if k % 2 else "GC"), 200)) for k in range(20)]  # GC, AT, GC, ...
    letters = "".join(blocks)
    valid, gc = local_gc(letters, flank=5)
    assert valid.all() and gc[100] == 1.0 and gc[300] == 0.0
    gc_rich = np.flatnonzero(gc == 1.0)
    edges = gc_rich[::4]  # with flank 2, every GC-only base is near an edge
    at_rich = np.flatnonzero(gc == 0.0)
    boundaries = np.sort(np.concatenate([rng.choice(gc_rich, 300, replace=False), rng.choice(at_rich, 50, replace=False)]))  # cuts favour GC
    r = boundary_enrichment(boundaries, edges, 0, len(letters), flank=2, shifts=300, gc=gc, control_window=1000)
    assert r["fold_shift"] > 1.3 and r["p_shift"] < 0.01  # spacing kept, composition not: looks enriched
    assert 0.95 < r["fold_gc"] < 1.1 and r["p_gc"] > 0.01  # composition kept: nothing left to explain


def test_homopolymers_and_tandem_repeats_are_found_and_their_chunks_counted():
    rng = np.random.default_rng(3)
    filler = "".join(rng.choice(list("ACGT"), 300))
    filler = filler.replace("AAA", "ACA").replace("CC", "CG").replace("TT", "TG").replace("GG", "GA")  # no long runs
    letters = (filler[:99] + "G" + "A" * 12 + "G" + filler[100:150] + "C" + "T" * 7 + "C" + filler[150:200]
               + "G" + "CA" * 8 + "G" + filler[200:])
    found = repeat_intervals(letters, offset=1000)
    assert found["homopolymer"].tolist() == [[1100, 1112]]  # the run of 7 T is too short to count
    assert [1223, 1239] in found["tandem_repeat"].tolist()  # found once, though "CACA" repeats too
    assert len(found["tandem_repeat"]) == len({tuple(x) for x in found["tandem_repeat"].tolist()})
    # chunks every 5 bases, and one-base chunks over the run's first six bases
    starts = np.array(sorted(set(range(1000, 1000 + len(letters), 5)) | set(range(1100, 1106))))
    rows = {r["class"]: r for r in chunk_length_stats(starts, 1000, 1000 + len(letters), found)}
    lengths = np.diff(np.append(starts, 1000 + len(letters)))
    in_run = [length for s, length in zip(starts, lengths) if 1100 <= s < 1112]  # by where they start
    assert in_run == [1, 1, 1, 1, 1, 5, 5]  # the chunk from 1110 ends past the run: still the run's
    assert rows["homopolymer"]["chunks"] == 7 and rows["homopolymer"]["bases_per_chunk"] == pytest.approx(12 / 7)
    assert rows["homopolymer"]["one_base_chunks"] == pytest.approx(5 / 7)
    assert rows["homopolymer"]["mean_chunk_length"] == pytest.approx(np.mean(in_run))
    assert rows["region"]["chunks"] == len(starts) and rows["region"]["bases"] == len(letters)
    assert rows["homopolymer"]["vs_region"] == pytest.approx((12 / 7) / (len(letters) / len(starts)))
    edge = chunk_length_stats(starts, 1000, 1000 + len(letters), {"a": np.array([[900, 1010], [5000, 5100]])})[1]
    assert (edge["features"], edge["bases"], edge["chunks"]) == (1, 10, 2)  # clipped to the region; outside ones dropped
