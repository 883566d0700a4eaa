"""``python -m hnet_dna.embed`` / ``hnet_dna.embed_sequences``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hnet_dna import embed_sequences
from hnet_dna.data.genome import open_fasta
from hnet_dna.embed import main as embed_main
from hnet_dna.model.loading import load_model

from ..conftest import DATA, read_fixture_fasta

REPO = Path(__file__).resolve().parents[2]
SLICE = read_fixture_fasta(DATA / "chr20_slices.fa")["chr20_heldout"]
# Six real sequences of different lengths (one with lowercase and an N), in a deliberate order.
SEQS = [SLICE[0:150], SLICE[1000:1037], SLICE[2000:2300].lower(), SLICE[5000:5090] + "N" + SLICE[5100:5120],
        SLICE[7000:7011], SLICE[9000:9200]]


@pytest.fixture(scope="module")
def model():
    return load_model(None).eval()


def write_fasta(path: Path, seqs, names=None) -> Path:
    names = names or [f"seq{i}" for i in range(len(seqs))]
    path.write_text("".join(f">{n} some description\n{s}\n" for n, s in zip(names, seqs)))
    return path


def direct_features(model, seq: str):
    with torch.no_grad():
        return model.features(model.tokenizer.encode(seq)[None])


def test_embed_command_round_trip_in_input_order(tmp_path, model):
    names = ["z_last", "a_first", "m", "n_with_N", "tiny", "b"]
    fa = write_fasta(tmp_path / "in.fa", SEQS, names)
    out = tmp_path / "out.npz"
    embed_main(["--input", str(fa), "--output", str(out), "--quiet", "--batch-size", "4", "--boundaries"])
    z = np.load(out, allow_pickle=False)
    upper = tmp_path / "OUT.NPZ"  # any case of the suffix; the temporary file is renamed, not re-suffixed
    embed_main(["--input", str(fa), "--output", str(upper), "--quiet", "--batch-size", "4"])
    np.testing.assert_array_equal(np.load(upper)["embeddings"], z["embeddings"])
    assert list(z["ids"]) == names and z["ids"].dtype.kind == "U"
    assert z["embeddings"].shape == (6, model.config.d_model[0]) and z["embeddings"].dtype == np.float32
    assert list(z["lengths"]) == [len(s) for s in SEQS]
    offsets = z["boundary_offsets_0"]
    assert offsets[0] == 0 and offsets[-1] == len(z["boundaries_0"]) and len(offsets) == 7
    for i, seq in enumerate(SEQS):  # each row = the sequence alone, unpadded, batch of one
        f = direct_features(model, seq)
        np.testing.assert_allclose(z["embeddings"][i], f.hidden[0].mean(0).numpy(), atol=2e-5, rtol=1e-4)
        starts = torch.nonzero(f.levels[0].boundaries[0]).flatten().numpy()
        np.testing.assert_array_equal(z["boundaries_0"][offsets[i]:offsets[i + 1]], starts)
    assert not (tmp_path / "out.npz.parts").exists()


def test_pooling_is_unchanged_by_batch_size_and_padding(model):
    one = embed_sequences(SEQS, model, batch_size=1, pooling="chunks")["embeddings"]
    many = embed_sequences(SEQS, model, batch_size=6, pooling="chunks")["embeddings"]  # padded to 300
    np.testing.assert_allclose(one, many, atol=2e-5, rtol=1e-4)
    f = direct_features(model, SEQS[2])
    level = f.levels[-1]
    np.testing.assert_allclose(many[2], level.states[0][level.mask[0]].mean(0).numpy(), atol=2e-5, rtol=1e-4)


def test_rc_average_is_the_same_for_a_sequence_and_its_reverse_complement(model):
    rc = model.tokenizer.reverse_complement
    seqs = [SEQS[0], rc(SEQS[0]), SEQS[5], rc(SEQS[5])]
    for pooling in ("mean", "chunks"):
        e = embed_sequences(seqs, model, pooling=pooling, rc_average=True)["embeddings"]
        np.testing.assert_allclose(e[0], e[1], atol=2e-6)
        np.testing.assert_allclose(e[2], e[3], atol=2e-6)
        assert not np.allclose(e[0], embed_sequences(seqs[:1], model, pooling=pooling)["embeddings"][0], atol=1e-4)
    z = embed_sequences(seqs[:2], model, pooling="none", rc_average=True)
    a, b = np.split(z["position_embeddings"], z["position_offsets"][1:-1])
    np.testing.assert_allclose(a, b[::-1], atol=2e-6)  # position i of s <-> position L-1-i of rc(s)


def test_windows_read_each_base_once_with_left_context(model):
    seq = SLICE[:700]
    full = embed_sequences([seq], model, pooling="none")["position_embeddings"]
    tiled = embed_sequences([seq], model, pooling="none", window=256, stride=128)
    per_base = tiled["position_embeddings"]
    assert per_base.shape == full.shape and list(tiled["position_offsets"]) == [0, 700]
    np.testing.assert_allclose(per_base[:256], full[:256], atol=2e-5, rtol=1e-4)  # the first window is the full run's start
    later = per_base[256:384]  # the second window's own bases: read from position 128 on
    f = direct_features(model, seq[128:384])
    np.testing.assert_allclose(later, f.hidden[0, 128:].numpy(), atol=2e-5, rtol=1e-4)
    pooled = embed_sequences([seq], model, pooling="mean", window=256, stride=128)["embeddings"][0]
    np.testing.assert_allclose(pooled, per_base.mean(0), atol=2e-6)


@pytest.mark.parametrize("pooling", ["mean", "chunks", "none"])
def test_exact_context_embeds_as_one_whole_read(pooling):
    """Blocks continuing from the caches (fp64 two-stage model, blocks of 64): the embeddings and
    every level's chunk starts of one read of each whole sequence, both strands averaged."""
    from ..conftest import make_model

    model = make_model("tiny-hnet-2stage", seed=4)
    seqs = [SLICE[:300], SLICE[500:529], SLICE[700:701]]
    options = {"pooling": pooling, "rc_average": True, "boundaries": True}
    whole = embed_sequences(seqs, model, window=None, **options)
    exact = embed_sequences(seqs, model, window=64, exact_context=True, **options)
    windows = embed_sequences(seqs, model, window=64, **options)
    assert whole.keys() == exact.keys()
    for key in whole:
        if whole[key].dtype == np.float32:
            np.testing.assert_allclose(exact[key], whole[key], rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(exact[key], whole[key])
    values = "position_embeddings" if pooling == "none" else "embeddings"
    assert not np.allclose(windows[values], whole[values], atol=1e-6)  # windows: less context


def test_kill_and_rerun_gives_the_same_file(tmp_path):
    fa = write_fasta(tmp_path / "in.fa", [SLICE[i * 97:i * 97 + 40 + (i * 37) % 150] for i in range(40)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hnet_dna.embed", "--input", str(fa), "--quiet", "--batch-size", "2",
           "--pooling", "none", "--boundaries"]
    subprocess.run(cmd + ["--output", str(tmp_path / "whole.npz")], env=env, cwd=REPO, check=True)
    killed = subprocess.run(cmd + ["--output", str(tmp_path / "resumed.npz")], cwd=REPO,
                            env={**env, "HNET_DNA_KILL_AFTER_PARTS": "2"})
    assert killed.returncode == -9
    parts = tmp_path / "resumed.npz.parts"
    assert not (tmp_path / "resumed.npz").exists() and len(list(parts.glob("part-*.npz"))) == 2
    rerun = subprocess.run(cmd + ["--output", str(tmp_path / "resumed.npz")], env=env, cwd=REPO, check=True,
                           capture_output=True, text=True)
    assert "continuing: 2 of 5 parts already done" in rerun.stderr
    whole, resumed = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "resumed.npz")
    assert whole.files == resumed.files
    for key in whole.files:
        np.testing.assert_array_equal(whole[key], resumed[key])
    assert not parts.exists()


def bad_run(tmp_path, capsys, argv) -> str:
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exc:
        embed_main(argv + ["--quiet"])
    assert exc.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    err = capsys.readouterr().err
    assert "hnet_dna.embed: error: " in err and "Traceback" not in err
    return err


def test_bad_input_stops_before_writing(tmp_path, capsys):
    out = str(tmp_path / "o.npz")
    assert "no such input file" in bad_run(tmp_path, capsys, ["--input", str(tmp_path / "nope.fa"), "--output", out])
    protein = write_fasta(tmp_path / "p.fa", ["ACGT", "MKVLAAGIV"], ["dna", "prot"])
    err = bad_run(tmp_path, capsys, ["--input", str(protein), "--output", out])
    assert "p.fa, record 'prot', position 4: character 'L' is not a DNA letter" in err and "protein" in err
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"\0\1")
    fa = write_fasta(tmp_path / "ok.fa", ["ACGT"])
    assert "not a model of hnet_dna" in bad_run(tmp_path, capsys, ["--input", str(fa), "--output", out, "--model", str(junk)])
    assert "must end with .npz" in bad_run(tmp_path, capsys, ["--input", str(fa), "--output", str(tmp_path / "o.txt")])
    err = bad_run(tmp_path, capsys, ["--input", str(fa), "--output", out, "--model", "tiny-transformer", "--pooling", "chunks"])
    assert "needs an H-Net" in err and "has random weights" in err  # a preset is said to be untrained
    bed = tmp_path / "peaks.bed"
    bed.write_text("chr20\t1\t5\nchrUn_gl000220\t1\t5\n")
    open_fasta(fa)  # a genome comes with its .fai; the check is on our outputs
    err = bad_run(tmp_path, capsys, ["--input", str(bed), "--fasta", str(fa), "--output", out])
    assert "peaks.bed, line 1: chromosome 'chr20' is not in" in err and "(its records: seq0)" in err


def test_last_and_flatten_read_the_per_position_outputs_and_none_is_flatten(model):
    seqs = [SLICE[:300], SLICE[300:390], SLICE[700:731]]
    every = embed_sequences(seqs, model, pooling="flatten", window=128)  # windows too: each base once
    older = embed_sequences(seqs, model, pooling="none", window=128)
    assert set(every) == set(older) and all(np.array_equal(every[k], older[k]) for k in every)
    last = embed_sequences(seqs, model, pooling="last", window=128)["embeddings"]
    ends = every["position_offsets"][1:] - 1
    np.testing.assert_allclose(last, every["position_embeddings"][ends], rtol=1e-6, atol=1e-6)


def test_a_masked_lm_embeds_its_bidirectional_features_and_refuses_exact_context(tmp_path, capsys):
    from ..conftest import make_model

    model = make_model("tiny-bihnet", dtype=torch.float32, seed=1)
    model.save_pretrained(tmp_path / "mlm")
    seqs = ["ACGTTGCAGGCTAACGTTAGCCATGGCAT", "GGCATTACGATCGA"]
    (tmp_path / "x.fa").write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(seqs)))
    embed_main(["--input", str(tmp_path / "x.fa"), "--output", str(tmp_path / "e.npz"), "--model", str(tmp_path / "mlm")])
    got = np.load(tmp_path / "e.npz")["embeddings"]
    with torch.no_grad():
        for i, s in enumerate(seqs):
            hidden = model.features(model.tokenizer.encode(s)[None]).hidden[0]  # both directions' features
            np.testing.assert_allclose(got[i], hidden.mean(0).numpy(), atol=1e-5)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        embed_main(["--input", str(tmp_path / "x.fa"), "--output", str(tmp_path / "f.npz"), "--model", str(tmp_path / "mlm"),
                    "--exact-context"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "a masked LM (bidirectional)" in err and not (tmp_path / "f.npz").exists()
