"""``python -m hnet_dna.score``: sequence likelihoods, per-base bedGraph, VCF variant effects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hnet_dna.inference.score import sequence_bits, sequence_bits_exact
from hnet_dna.model.loading import load_model
from hnet_dna.score import main as score_main

from ..conftest import DATA, genome_fixture, make_model, read_fixture_fasta

SLICE = read_fixture_fasta(DATA / "chr20_slices.fa")["chr20_heldout"]


@pytest.fixture(scope="module")
def model():
    return load_model(None).eval()


def log2_likelihood_by_hand(model, seq: str) -> float:
    """sum over t >= 1 of log2 p(x_t | x_<t), from the model's logits (A/C/G/T targets)."""
    ids = model.tokenizer.encode(seq)
    with torch.no_grad():
        logp = F.log_softmax(model(ids[None]).logits[0, :-1].double(), -1)
    return float(logp[torch.arange(len(ids) - 1), ids[1:]].sum()) / math.log(2)


def test_per_base_bits_equal_the_models_bits_per_base(model):
    seqs = [SLICE[:300], SLICE[400:480] + "NN" + SLICE[480:560], SLICE[900:917]]
    scores = sequence_bits(model, [model.tokenizer.encode(s) for s in seqs], batch_size=3)
    for seq, score in zip(seqs, scores):
        ids = model.tokenizer.encode(seq)[None]
        with torch.no_grad():
            expected = float(model(ids, labels=ids).bits_per_base)
        assert score.scored_bases == len(seq) - 1 - 2 * ("N" in seq)  # first base and N targets unscored
        assert score.bits_per_base == pytest.approx(expected, abs=2e-5)


def test_windowed_scoring_reads_each_base_in_its_earliest_window(model):
    seq = SLICE[:700]
    ids = [model.tokenizer.encode(seq)]
    full = sequence_bits(model, ids, window=None, per_position=True)[0].position_bits
    tiled = sequence_bits(model, ids, window=256, stride=128, per_position=True)[0].position_bits
    assert np.isnan(full[0]) and np.isnan(tiled[0]) and not np.isnan(tiled[1:]).any()
    np.testing.assert_allclose(tiled[:256], full[:256], atol=2e-5, equal_nan=True)
    window_two = sequence_bits(model, [ids[0][128:384]], window=None, per_position=True)[0].position_bits
    np.testing.assert_allclose(tiled[256:384], window_two[128:], atol=2e-5)
    assert not np.allclose(tiled[256:384], full[256:384], atol=1e-6)  # less context than the full run


@pytest.mark.parametrize("overrides", [{}, {"arch_layout": ["m2t1", ["M2"], "m2"], "d_intermediate": [0, 128]}])
def test_exact_context_scores_every_base_as_one_read_of_the_whole_sequence(overrides):
    """Blocks continuing from the caches: each base scored with all the bases before it, as one
    forward over the whole sequence would (fp64: no routing decision can flip on rounding)."""
    model = make_model("tiny-hnet", seed=5, **overrides)
    seqs = [SLICE[:700], SLICE[1000:1100] + "NN" + SLICE[1100:1150], SLICE[2000:2001]]
    ids = [model.tokenizer.encode(s) for s in seqs]
    whole = sequence_bits(model, ids, window=None, per_position=True)
    exact = sequence_bits_exact(model, ids, block=96, per_position=True)
    for w, e in zip(whole, exact):
        np.testing.assert_allclose(e.position_bits, w.position_bits, rtol=1e-9, atol=1e-9, equal_nan=True)
        assert e.scored_bases == w.scored_bases and e.log2_likelihood == pytest.approx(w.log2_likelihood)
    assert exact[0].scored_bases == 699 and exact[1].scored_bases == 149 and exact[2].scored_bases == 0
    windowed = sequence_bits(model, ids[:1], window=96, stride=48, per_position=True)[0].position_bits
    assert not np.allclose(windowed[96:], whole[0].position_bits[96:], atol=1e-6)  # windows: less context


def test_score_command_with_exact_context(tmp_path, model, capsys):
    genome, seq = genome_fixture(tmp_path, name="20")
    out = tmp_path / "bits.bedgraph"
    score_main(["--fasta", str(genome), "--region", "chr20:5,001-5,600", "--output", str(out), "--window", "256",
                "--exact-context", "--quiet"])
    bits = np.array([float(line.split("\t")[3]) for line in out.read_text().splitlines()[1:]])
    assert len(bits) == 600
    read = sequence_bits(model, [model.tokenizer.encode(seq[5000 - 128:5600])], window=None, per_position=True)[0]
    np.testing.assert_allclose(bits, read.position_bits[128:], atol=2e-4)  # fp32 model, 4 decimals written
    fa = tmp_path / "in.fa"
    fa.write_text(f">a\n{SLICE[:600]}\n")
    tsv = tmp_path / "s.tsv"
    score_main(["--input", str(fa), "--output", str(tsv), "--window", "128", "--exact-context", "--quiet"])
    row = tsv.read_text().splitlines()[1].split("\t")
    assert float(row[3]) == pytest.approx(log2_likelihood_by_hand(model, SLICE[:600]), abs=2e-3)
    capsys.readouterr()
    vcf = write_vcf(tmp_path / "v.vcf", [("chr20", 100, "x", seq[99], "G")])
    err = bad_run(tmp_path, capsys, ["--fasta", str(genome), "--vcf", str(vcf), "--output", str(tmp_path / "e.tsv"),
                                     "--exact-context"])
    assert "--exact-context applies to --input and --region" in err


def test_score_command_writes_a_tsv_of_sequence_likelihoods(tmp_path, model):
    fa = tmp_path / "in.fa"
    fa.write_text(f">a\n{SLICE[:200]}\n>b\n{SLICE[300:350]}\n")
    out = tmp_path / "s.tsv"
    score_main(["--input", str(fa), "--output", str(out), "--both-strands", "--quiet"])
    lines = [line.split("\t") for line in out.read_text().splitlines()]
    assert lines[0] == ["id", "length", "scored_bases", "log2_likelihood", "bits_per_base", "log2_likelihood_rc", "bits_per_base_rc"]
    assert [r[0] for r in lines[1:]] == ["a", "b"]
    assert float(lines[1][3]) == pytest.approx(log2_likelihood_by_hand(model, SLICE[:200]), abs=1e-3)
    rc = model.tokenizer.reverse_complement(SLICE[300:350])
    assert float(lines[2][5]) == pytest.approx(log2_likelihood_by_hand(model, rc), abs=1e-3)


VCF_HEADER = """##fileformat=VCFv4.2
##contig=<ID=chr20,length=12000>
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO
"""


def write_vcf(path, rows):
    path.write_text(VCF_HEADER + "".join("\t".join(map(str, r)) + "\t.\t.\t.\n" for r in rows))
    return path


def test_variant_effects_equal_a_difference_of_two_log_likelihoods(tmp_path, model, capsys):
    import pysam

    genome, seq = genome_fixture(tmp_path, name="20")  # the VCF says chr20: names match through aliases
    flank = 40
    snv_pos, del_pos, ins_pos = 1000, 2000, 3000  # 1-based
    alt_snv = "A" if seq[snv_pos - 1] != "A" else "C"
    rows = [
        ("chr20", snv_pos, "rs1", seq[snv_pos - 1], f"{alt_snv},<DEL>"),
        ("chr20", del_pos, ".", seq[del_pos - 1:del_pos + 2], seq[del_pos - 1]),  # deletes 2 bases
        ("chr20", ins_pos, "ins", seq[ins_pos - 1], seq[ins_pos - 1] + "GGT"),
    ]
    vcf = write_vcf(tmp_path / "v.vcf", rows)
    out = tmp_path / "effects.tsv"
    score_main(["--fasta", str(genome), "--vcf", str(vcf), "--output", str(out), "--flank", str(flank),
                "--both-strands", "--quiet"])
    table = [line.split("\t") for line in out.read_text().splitlines()]
    assert table[0] == ["chrom", "pos", "id", "ref", "alt", "llr_bits", "llr_bits_rc"]
    assert [r[4] for r in table[1:]] == [alt_snv, "<DEL>", rows[1][4], rows[2][4]]
    assert table[2][5] == "NA"  # the symbolic allele is skipped
    rc = model.tokenizer.reverse_complement
    for (chrom, pos, _, ref, _), line in zip([rows[0], rows[1], rows[2]], [table[1], table[3], table[4]]):
        start = pos - 1
        left, right = seq[start - flank:start], seq[start + len(ref):start + len(ref) + flank]
        ref_w, alt_w = left + ref + right, left + line[4] + right
        expected = log2_likelihood_by_hand(model, alt_w) - log2_likelihood_by_hand(model, ref_w)
        expected_rc = log2_likelihood_by_hand(model, rc(alt_w)) - log2_likelihood_by_hand(model, rc(ref_w))
        assert float(line[5]) == pytest.approx(expected, abs=2e-4)
        assert float(line[6]) == pytest.approx(expected_rc, abs=2e-4)
    annotated = tmp_path / "effects.vcf.gz"
    score_main(["--fasta", str(genome), "--vcf", str(vcf), "--output", str(annotated), "--flank", str(flank), "--quiet"])
    with pysam.VariantFile(str(annotated)) as f:
        records = list(f)
    assert "HNET_LLR" in records[0].header.info
    assert records[0].info["HNET_LLR"][0] == pytest.approx(float(table[1][5]), abs=1e-5)
    assert records[0].info["HNET_LLR"][1] is None
    assert records[2].info["HNET_LLR"][0] == pytest.approx(float(table[4][5]), abs=1e-5)
    again = tmp_path / "again.vcf"
    with pytest.raises(SystemExit):  # annotating an annotated VCF stops before scoring
        score_main(["--fasta", str(genome), "--vcf", str(annotated), "--output", str(again), "--quiet"])
    assert "already has INFO HNET_LLR" in capsys.readouterr().err and not again.exists()


def test_region_bedgraph_coordinates(tmp_path, model):
    genome, seq = genome_fixture(tmp_path, name="20")
    out = tmp_path / "bits.bedgraph"
    score_main(["--fasta", str(genome), "--region", "chr20:5,001-5,600", "--output", str(out), "--window", "256", "--quiet"])
    lines = out.read_text().splitlines()[1:]
    assert len(lines) == 600  # every base, the first too: it is read with left context
    first, last = lines[0].split("\t"), lines[-1].split("\t")
    assert first[:3] == ["chr20", "5000", "5001"] and last[:3] == ["chr20", "5599", "5600"]
    context = seq[5000 - 128:5600]
    by_hand = sequence_bits(model, [model.tokenizer.encode(context)], window=256, stride=128, per_position=True)[0]
    assert float(first[3]) == pytest.approx(by_hand.position_bits[128], abs=1e-3)


def bad_run(tmp_path, capsys, argv) -> str:
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exc:
        score_main(argv + ["--quiet"])
    assert exc.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    err = capsys.readouterr().err
    assert err.startswith("hnet_dna.score: error: ") and "Traceback" not in err
    return err


def test_bad_variant_and_region_input(tmp_path, capsys):
    genome, seq = genome_fixture(tmp_path, name="20")
    out = str(tmp_path / "o.tsv")
    wrong = "A" if seq[99] != "A" else "C"
    vcf = write_vcf(tmp_path / "ref.vcf", [("chr20", 100, "x", wrong, "G")])
    err = bad_run(tmp_path, capsys, ["--fasta", str(genome), "--vcf", str(vcf), "--output", out])
    assert f"variant 1 (chr20:100 {wrong}>G): REF '{wrong}' but the FASTA has '{seq[99]}'" in err
    score_main(["--fasta", str(genome), "--vcf", str(vcf), "--output", out, "--skip-ref-mismatch", "--quiet"])
    assert "1 REF differs from the FASTA" in capsys.readouterr().out
    (tmp_path / "o.tsv").unlink()
    other = tmp_path / "other.vcf"
    other.write_text(VCF_HEADER.replace("chr20", "chrX") + "chrX\t5\t.\tA\tG\t.\t.\t.\n")
    err = bad_run(tmp_path, capsys, ["--fasta", str(genome), "--vcf", str(other), "--output", out])
    assert "no chromosome name of the VCF (chrX) is in" in err
    err = bad_run(tmp_path, capsys, ["--fasta", str(genome), "--region", "20:11,900-12,100", "--output", str(tmp_path / "b.bedgraph")])
    assert "past the end of 20 (12,000 bp" in err  # the message also names the FASTA (shared with boundaries)
    err = bad_run(tmp_path, capsys, ["--fasta", str(genome), "--vcf", str(tmp_path / "none.vcf"), "--output", out])
    assert "none.vcf: no such VCF/BCF file" in err


# ------------------------------------------------------------------------------ masked LM scores
@pytest.fixture(scope="module")
def mlm():
    return make_model("tiny-bihnet", dtype=torch.float32, seed=5).eval()


def _hidden_log2p(mlm, ids: torch.Tensor, position: int) -> torch.Tensor:
    """log2 p(. | ids with ``position`` behind <mask>), (V,), from the model's logits."""
    x = ids.clone()
    x[position] = mlm.tokenizer.mask_id
    with torch.no_grad():
        return F.log_softmax(mlm(x[None]).logits[0, position].double(), -1) / math.log(2)


def test_masked_marginal_of_a_variant_equals_a_hand_computation(tmp_path, mlm, capsys):
    genome, seq = genome_fixture(tmp_path, name="20")
    mlm.save_pretrained(tmp_path / "mlm")
    flank, pos = 30, 1500
    ref = seq[pos - 1]
    alt = "A" if ref != "A" else "G"
    vcf = write_vcf(tmp_path / "v.vcf", [("chr20", pos, "snv", ref, alt), ("chr20", pos + 100, "del", seq[pos + 99:pos + 102], seq[pos + 99]),
                                         ("chr20", pos + 200, "n", seq[pos + 199], "N")])
    out = tmp_path / "mm.tsv"
    score_main(["--fasta", str(genome), "--vcf", str(vcf), "--output", str(out), "--flank", str(flank),
                "--model", str(tmp_path / "mlm"), "--both-strands", "--quiet"])
    table = [line.split("\t") for line in out.read_text().splitlines()]
    assert table[0][5:] == ["masked_marginal_bits", "masked_marginal_bits_rc"]  # the header names the score
    tok = mlm.tokenizer
    window = tok.encode(seq[pos - 1 - flank:pos + flank])  # the ref window: flank, REF, flank
    logp = _hidden_log2p(mlm, window, flank)
    expected = float(logp[tok.encode(alt)[0]] - logp[tok.encode(ref)[0]])
    assert float(table[1][5]) == pytest.approx(expected, abs=1e-4)
    rc_logp = _hidden_log2p(mlm, tok.reverse_complement(window), flank)
    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
    assert float(table[1][6]) == pytest.approx(float(rc_logp[tok.encode(comp[alt])[0]] - rc_logp[tok.encode(comp[ref])[0]]), abs=1e-4)
    printed = capsys.readouterr().out
    assert table[2][5] == "NA" and "1 indel (a masked marginal scores substitutions)" in printed
    assert table[3][5] == "NA" and "1 N in the allele" in printed  # log2 p(N) is no base's probability


def test_pseudo_log_likelihood_masks_each_base_once_in_a_centred_window(tmp_path, mlm, capsys):
    from hnet_dna.inference.masked_score import pseudo_log_likelihood_bits

    tok = mlm.tokenizer
    ids = tok.encode(SLICE[:40] + "N" + SLICE[41:60])
    bits = pseudo_log_likelihood_bits(mlm, [ids], window=16, batch_size=7)[0]
    assert math.isnan(bits[40]) and not np.isnan(np.delete(bits.numpy(), 40)).any()  # N not scored
    for t in (0, 3, 30, 59):  # a window of 16 bases with t at index 8 (at the ends: the first / last 16)
        start = min(max(t - 8, 0), len(ids) - 16)
        expected = -_hidden_log2p(mlm, ids[start:start + 16], t - start)[ids[t]]
        assert float(bits[t]) == pytest.approx(float(expected), abs=1e-5)
    mlm.save_pretrained(tmp_path / "mlm")
    (tmp_path / "x.fa").write_text(f">x\n{SLICE[:60]}\n")
    out = tmp_path / "pll.tsv"
    score_main(["--input", str(tmp_path / "x.fa"), "--output", str(out), "--model", str(tmp_path / "mlm"), "--window", "16", "--quiet"])
    header, row = (line.split("\t") for line in out.read_text().splitlines())
    assert header == ["id", "length", "scored_bases", "pseudo_log2_likelihood", "pseudo_bits_per_base"]
    by_hand = pseudo_log_likelihood_bits(mlm, [tok.encode(SLICE[:60])], window=16)[0]
    assert row[2] == "60" and float(row[3]) == pytest.approx(-float(by_hand.sum()), abs=1e-3)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        score_main(["--input", str(tmp_path / "x.fa"), "--output", str(tmp_path / "e.tsv"), "--model", str(tmp_path / "mlm"),
                    "--exact-context"])
    assert exc.value.code == 2 and "a masked LM" in capsys.readouterr().err and not (tmp_path / "e.tsv").exists()


def test_a_masked_lm_region_bedgraph_reads_both_sides_of_its_edges(tmp_path, mlm):
    from hnet_dna.inference.masked_score import pseudo_log_likelihood_bits

    genome, seq = genome_fixture(tmp_path, name="20")
    mlm.save_pretrained(tmp_path / "mlm")
    out = tmp_path / "bits.bedgraph"
    score_main(["--fasta", str(genome), "--region", "chr20:5,001-5,100", "--output", str(out), "--window", "32",
                "--model", str(tmp_path / "mlm"), "--quiet"])
    header, *lines = out.read_text().splitlines()
    assert "masked once" in header and len(lines) == 100
    read = seq[5000 - 16:5100 + 16]  # half a window of context on each side
    by_hand = pseudo_log_likelihood_bits(mlm, [mlm.tokenizer.encode(read)], window=32)[0]
    for line, k in ((lines[0], 0), (lines[-1], 99)):
        assert float(line.split("\t")[3]) == pytest.approx(float(by_hand[16 + k]), abs=1e-3)
