"""``python -m hnet_dna.ism``: in-silico mutagenesis by a language model and by a fine-tuned
classifier; every effect is checked against scores computed by hand."""

from __future__ import annotations

import math
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hnet_dna
from hnet_dna.inference.score import sequence_bits
from hnet_dna.ism import main as ism_main
from hnet_dna.tasks.classifier import CNNBaselineModule
from hnet_dna.tasks.finetune import FinetuneModule, load_classifier
from hnet_dna.tokenizer import NucleotideTokenizer

from ..conftest import DATA, genome_fixture, make_model, read_fixture_fasta

SLICE = read_fixture_fasta(DATA / "chr20_slices.fa")["chr20_heldout"]
TINY = {"preset": "tiny-hnet", "d_model": [32, 48],
        "attn_cfg": {"num_heads": [2, 2], "rotary_emb_dim": [8, 12], "window_size": [63, -1]}}


@pytest.fixture(scope="module")
def lm():
    return make_model("tiny-hnet", dtype=torch.float32, seed=11).eval()


def mutate(seq: str, pos: int, base: str) -> str:
    return seq[:pos] + base + seq[pos + 1:]


def test_lm_effects_equal_likelihood_differences_by_hand(lm):
    seq = SLICE[:40] + "N" + SLICE[41:70]
    result = hnet_dna.ism({"x": seq}, lm, batch_size=16)  # the package's callable entry point
    effects, site = result.effects[0], result.site_effects[0]
    assert effects.shape == (70, 4) and result.ids == ["x"]
    ref_cols = ["ACGT".index(b) for b in seq if b != "N"]
    bases = [p for p in range(70) if seq[p] != "N"]
    assert np.all(effects[bases, ref_cols] == 0) and np.isnan(effects[40]).all()
    assert np.isfinite(np.delete(effects, 40, axis=0)).all()
    for pos, base in ((0, "A"), (17, "G"), (55, "T"), (69, "C")):
        if seq[pos] == base:
            base = "A" if base != "A" else "C"
        ll = [s.log2_likelihood for s in sequence_bits(lm, [lm.tokenizer.encode(x) for x in (seq, mutate(seq, pos, base))],
                                                       window=None, batch_size=1)]
        assert effects[pos, "ACGT".index(base)] == pytest.approx(ll[1] - ll[0], abs=2e-4)
    # the single-site score: log2 p(b | left context) - log2 p(ref | left context)
    with torch.no_grad():
        log2p = F.log_softmax(lm(lm.tokenizer.encode(seq)[None]).logits[0].double(), -1) / math.log(2)
    pos = 23
    expected = (log2p[pos - 1, :4] - log2p[pos - 1, "ACGT".index(seq[pos])]).numpy()
    np.testing.assert_allclose(site[pos], expected, atol=1e-4)
    assert np.isnan(site[0]).all()


def test_batched_and_unbatched_runs_agree_and_windows_score_in_their_own_window(lm):
    """Windows of 64 every 32 bases: each base is mutated in the window that holds the D = 16 bases
    after it (window 1, bases 0..63, owns 0..47; window 2, 32..95, owns 48..79; window 3, 64..99,
    the last, owns 80..99), and its effect sums the likelihood change of itself and those 16 bases
    in that window, wherever it lies in the window."""
    seq = SLICE[100:200]
    one = hnet_dna.ism([seq], lm, batch_size=1, window=None).effects[0]
    many = hnet_dna.ism([seq], lm, batch_size=37, window=None).effects[0]
    np.testing.assert_allclose(many, one, atol=2e-4)
    tiled = hnet_dna.ism([seq], lm, batch_size=64, window=64, stride=32).effects[0]

    def by_hand(p: int, start: int, end: int) -> tuple[int, float]:
        window = seq[start:end]
        base = "A" if window[p - start] != "A" else "G"
        bits = sequence_bits(lm, [lm.tokenizer.encode(x) for x in (window, mutate(window, p - start, base))],
                             window=None, per_position=True)
        change = np.nan_to_num(bits[0].position_bits) - np.nan_to_num(bits[1].position_bits)  # log2 p' - log2 p
        return "ACGT".index(base), change[p - start:p - start + 17].sum()

    for p, (start, end) in {5: (0, 64), 47: (0, 64), 48: (32, 96), 79: (32, 96), 80: (64, 100), 95: (64, 100)}.items():
        column, expected = by_hand(p, start, end)
        assert tiled[p, column] == pytest.approx(expected, abs=2e-4), p


def test_importance_has_no_period_of_the_stride_on_a_long_region():
    """The trained shipped model over 2,048 bases of chr20 in windows of 64 every 16 (D = 24): bases
    at every place within the stride get the same downstream span, so the mean importance at each
    phase of the stride stays level. When each window owned its last 16 bases, the last of them had
    0-3 bases after it: the last phase group fell to 0.92 of the mean and the first rose to 1.07."""
    from hnet_dna.model.loading import load_model

    seq = read_fixture_fasta(DATA / "chr20_slices.fa")["chr20_train"][:2048]
    importance = hnet_dna.ism([seq], load_model(None), window=64, stride=16, batch_size=192).importance(0)
    by_phase = np.nanmean(importance[64:-64].reshape(-1, 4, 4), axis=(0, 2))  # (4,) 4-base groups of the stride
    level = by_phase / by_phase.mean()
    assert np.abs(level - 1).max() < 0.07 and abs(level[0] / level[-1] - 1) < 0.08, level


def _classifier_checkpoint(tmp_path, module) -> str:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in module.classifier.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a trained head is not at its initial values
    path = tmp_path / f"{type(module).__name__}.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, path)
    return str(path)


@pytest.mark.parametrize("kind", ["hnet", "cnn"])
def test_classifier_effects_equal_logit_differences_by_hand(tmp_path, kind):
    torch.manual_seed(0)
    module = (FinetuneModule(backbone=TINY, class_names=["neg", "pos"], rc_conjoin=False, pooling="flatten", max_length=50)
              if kind == "hnet" else CNNBaselineModule(class_names=["neg", "pos"], rc_conjoin=False, max_length=50))
    ckpt = _classifier_checkpoint(tmp_path, module)
    task = load_classifier(ckpt)
    seq = SLICE[300:345]
    result = hnet_dna.ism([seq], scorer=ckpt, batch_size=20)
    by_class = result.effects_by_class[0]
    assert by_class.shape == (45, 4, 2) and result.target == "pos"
    np.testing.assert_array_equal(result.effects[0], by_class[..., 1])
    tok = NucleotideTokenizer()
    for pos in (0, 22, 44):
        base = "T" if seq[pos] != "T" else "C"
        ids = torch.stack([tok.encode(seq), tok.encode(mutate(seq, pos, base))])
        with torch.no_grad():
            logits = task.logits(ids, torch.ones_like(ids, dtype=torch.bool)).double()
        np.testing.assert_allclose(by_class[pos, "ACGT".index(base)], (logits[1] - logits[0]).numpy(), atol=1e-4)
        assert np.all(by_class[pos, "ACGT".index(seq[pos])] == 0)
    neg = hnet_dna.ism([seq], scorer=task, target="neg", batch_size=64)
    np.testing.assert_allclose(neg.effects[0], by_class[..., 0], atol=1e-5)


def test_command_writes_the_documented_npz_png_and_region_bigwig(tmp_path):
    import pyBigWig

    fa = tmp_path / "in.fa"
    fa.write_text(f">a first\n{SLICE[:30]}\n>b\n{SLICE[50:62]}\n")
    out = tmp_path / "ism.npz"
    ism_main(["--input", str(fa), "--output", str(out), "--model", "tiny-hnet", "--quiet", "--plot", "b"])
    with np.load(out, allow_pickle=False) as z:
        assert list(z["ids"]) == ["a", "b"] and list(z["lengths"]) == [30, 12] and str(z["bases"]) == "ACGT"
        assert z["effects"].shape == (2, 30, 4) and np.isnan(z["effects"][1, 12:]).all() and str(z["scorer"]) == "lm"
        np.testing.assert_allclose(z["importance"][0], np.abs(z["effects"][0]).sum(-1) / 3, rtol=1e-6)
        assert z["site_effects"].shape == (2, 30, 4) and "effects_by_class" not in z.files
    assert (tmp_path / "ism.png").stat().st_size > 5000 and not (tmp_path / "ism.npz.parts").exists()

    genome, _ = genome_fixture(tmp_path, name="20")
    region = tmp_path / "region.npz"
    ism_main(["--fasta", str(genome), "--region", "chr20:5,001-5,040", "--output", str(region), "--model", "tiny-hnet",
              "--window", "64", "--quiet", "--plot", "0"])
    with np.load(region, allow_pickle=False) as z:
        assert list(z["ids"]) == ["chr20:5001-5040"] and z["effects"].shape == (1, 40, 4)
        assert np.isfinite(z["site_effects"][0, 0]).all()  # the first base has left context
        importance = z["importance"][0]
    bw = pyBigWig.open(str(tmp_path / "region.bw"))
    assert bw.chroms() == {"chr20": 20_000} or list(bw.chroms()) == ["chr20"]
    np.testing.assert_allclose(bw.values("chr20", 5000, 5040), importance, rtol=1e-6)
    bw.close()
    assert not (tmp_path / "region.png").exists()


def test_a_regions_last_bases_sum_as_many_bases_after_them_as_the_others(tmp_path, lm):
    """--region reads the D bases after the region too (not mutated, not in the output), so its last
    bases are not the only ones whose span is cut short."""
    genome, seq = genome_fixture(tmp_path, name="20")
    lm.save_pretrained(tmp_path / "lm")
    out = tmp_path / "region.npz"
    ism_main(["--fasta", str(genome), "--region", "20:5,001-5,040", "--output", str(out), "--model", str(tmp_path / "lm"),
              "--window", "64", "--quiet", "--plot", "0"])
    # window 64, stride 32: 32 bases of left context before the region, D = 16 bases after it
    expected = hnet_dna.ism([seq[4968:5056]], lm, window=64, stride=32, context=[32], trailing=[16]).effects[0]
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_allclose(z["effects"][0], expected, atol=1e-4)
    cut = hnet_dna.ism([seq[4968:5040]], lm, window=64, stride=32, context=[32]).effects[0]
    assert not np.allclose(cut[-1], expected[-1], atol=1e-3)  # without the bases after it, the span is cut


def test_a_masked_lm_region_reads_half_a_window_beyond_both_edges(tmp_path):
    genome, seq = genome_fixture(tmp_path, name="20")
    mlm = make_model("tiny-bihnet", dtype=torch.float32, seed=4).eval()
    mlm.save_pretrained(tmp_path / "mlm")
    out = tmp_path / "region.npz"
    ism_main(["--fasta", str(genome), "--region", "20:5,001-5,040", "--output", str(out), "--model", str(tmp_path / "mlm"),
              "--window", "32", "--quiet", "--plot", "0"])
    # 16 bases (half a window) of context read on each side, so the last bases see their right side too
    expected = hnet_dna.ism([seq[4984:5056]], mlm, window=32, context=[16], trailing=[16]).effects[0]
    with np.load(out, allow_pickle=False) as z:
        assert z["effects"].shape[1] == 40
        np.testing.assert_allclose(z["effects"][0], expected, atol=1e-4)


def bad_run(tmp_path, capsys, argv) -> str:
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exc:
        ism_main(argv + ["--quiet"])
    assert exc.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no parts folder
    err = capsys.readouterr().err
    assert err.startswith("hnet_dna.ism: error: ") and "Traceback" not in err
    return err


def test_bad_input_stops_with_one_line_before_any_output(tmp_path, capsys):
    protein = tmp_path / "p.fa"
    protein.write_text(">p\nMKLVVQRSTW\n")
    assert "not DNA" in bad_run(tmp_path, capsys, ["--input", str(protein), "--output", str(tmp_path / "o.npz")])
    long = tmp_path / "long.fa"
    long.write_text(f">long\n{SLICE[:80]}\n")
    module = CNNBaselineModule(class_names=["neg", "pos"], rc_conjoin=False, max_length=50)
    ckpt = _classifier_checkpoint(tmp_path, module)
    err = bad_run(tmp_path, capsys, ["--input", str(long), "--ckpt_path", ckpt, "--output", str(tmp_path / "o.npz")])
    assert "long.fa, record 'long'" in err and "max_length" in err
    short = tmp_path / "short.fa"
    short.write_text(f">short\n{SLICE[:30]}\n")
    err = bad_run(tmp_path, capsys, ["--input", str(short), "--ckpt_path", ckpt, "--target", "nope",
                                     "--output", str(tmp_path / "o.npz")])
    assert "'nope'" in err and "['neg', 'pos']" in err
    pretraining_ckpt = tmp_path / "lm.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model": "tiny-hnet"}}, pretraining_ckpt)
    err = bad_run(tmp_path, capsys, ["--input", str(long), "--ckpt_path", str(pretraining_ckpt), "--output", str(tmp_path / "o.npz")])
    assert "not a fine-tuned classifier" in err


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    fa = tmp_path / "in.fa"
    fa.write_text("".join(f">s{i}\n{SLICE[40 * i:40 * i + 25]}\n" for i in range(3)))
    out, again = tmp_path / "a.npz", tmp_path / "b.npz"
    make_model("tiny-hnet", dtype=torch.float32, seed=4).save_pretrained(tmp_path / "model")  # the same weights in every process
    argv = ["--input", str(fa), "--model", str(tmp_path / "model"), "--quiet", "--plot", "0"]
    env = {"HNET_DNA_KILL_AFTER_PARTS": "2", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    code = "import sys; from hnet_dna.ism import main; main(sys.argv[1:])"
    killed = subprocess.run([sys.executable, "-c", code, *argv, "--output", str(out)], env=env, timeout=120)
    assert killed.returncode != 0 and len(list((tmp_path / "a.npz.parts").glob("part-*.npz"))) == 2 and not out.exists()
    env.pop("HNET_DNA_KILL_AFTER_PARTS")
    part = tmp_path / "a.npz.parts" / "part-000000.npz"
    with np.load(part, allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}
    saved["effects"][0, 1] = 123.0  # a mark: the rerun must take this part from disk, not recompute it
    np.savez(part, **saved)
    for target in (out, again):
        assert subprocess.run([sys.executable, "-c", code, *argv, "--output", str(target)], env=env, timeout=120).returncode == 0
    with np.load(out, allow_pickle=False) as a, np.load(again, allow_pickle=False) as b:
        assert a["effects"][0, 0, 1] == 123.0 and b["effects"][0, 0, 1] != 123.0
        a_effects = a["effects"].copy()
        a_effects[0, 0, 1] = b["effects"][0, 0, 1]
        np.testing.assert_array_equal(a_effects, b["effects"])  # same process setup: one thread each


def test_a_masked_lm_maps_masked_marginals(tmp_path):
    """Under a masked LM every substitution's effect is log2 p(alt) - log2 p(ref) with its base masked,
    in a window centred on it."""
    from hnet_dna.config import ConfigError

    mlm = make_model("tiny-bihnet", dtype=torch.float32, seed=3).eval()
    seq = SLICE[100:150]
    result = hnet_dna.ism([seq], mlm, window=20, batch_size=16)
    assert result.scorer == "masked_lm"
    tok = mlm.tokenizer
    ids = tok.encode(seq)
    for pos in (0, 25, 49):
        start = min(max(pos - 10, 0), len(seq) - 20)
        x = ids[start:start + 20].clone()
        x[pos - start] = tok.mask_id
        with torch.no_grad():
            logp = F.log_softmax(mlm(x[None]).logits[0, pos - start].double(), -1) / math.log(2)
        expected = (logp[list(tok.base_ids)] - logp[ids[pos]]).numpy()
        np.testing.assert_allclose(result.effects[0][pos], expected, atol=1e-4)
    with pytest.raises(ConfigError, match="--downstream sets a causal model's span"):
        hnet_dna.ism([seq], mlm, window=20, downstream=5)
    mlm.save_pretrained(tmp_path / "mlm")
    fa = tmp_path / "x.fa"
    fa.write_text(f">x\n{seq}\n")
    ism_main(["--input", str(fa), "--output", str(tmp_path / "m.npz"), "--model", str(tmp_path / "mlm"), "--window", "20",
              "--quiet"])
    saved = np.load(tmp_path / "m.npz")
    assert str(saved["scorer"]) == "masked_lm"
    np.testing.assert_allclose(saved["effects"][0], result.effects[0], atol=1e-5)
