"""The data-efficiency pipeline: the multiplier on hand-made curves, the smoke config end to end
(killed once and resumed), the same training windows for every model of a seed, and the gpu
config's paper models for a few steps on CPU."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hnet_dna.config import ConfigError
from hnet_dna.data.genome import DataError
from hnet_dna.protocols.data_efficiency import (
    cut_heldout,
    data_multiplier,
    eval_schedule,
    load_config,
    multiplier_summary,
)
from hnet_dna.data_efficiency import main

from .conftest import DATA

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "pipelines" / "benchmarks" / "cpu_smoke.yaml"
GPU = ROOT / "pipelines" / "benchmarks" / "gpu.yaml"
ECOLI = f"--heldout.ecoli.fasta={DATA / 'ecoli_slice.fa'}"


def run(out: Path, *args: str, config: Path = SMOKE, env: dict | None = None) -> tuple[int, str]:
    """The command in this process (its fits run in forked children): (exit status, stderr)."""
    err, saved, cwd = io.StringIO(), dict(os.environ), os.getcwd()
    os.environ.update(env or {})
    os.chdir(ROOT)  # the configs' paths are relative to the repository root
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main(["--config", str(config), "--out", str(out), *args])
        return 0, err.getvalue()
    except SystemExit as e:
        return e.code, err.getvalue()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        os.chdir(cwd)


def read_curves(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------ multiplier
def test_multiplier_interpolates_the_crossing_in_log_bases():
    baseline = [(1e3, 2.1), (1e4, 1.9), (1e5, 1.7)]  # final: 1.7 bits after 1e5 bases
    for rule in ("sustained", "first"):  # a curve that comes down once: both rules agree
        # Crosses 1.7 halfway (in bits) between 1e4 (1.8) and 1e5 (1.6): 10^4.5 bases, 1e5 / 10^4.5 = sqrt(10).
        assert data_multiplier([(1e3, 2.0), (1e4, 1.8), (1e5, 1.6)], baseline, rule) == pytest.approx(math.sqrt(10))
        # Exactly on a point: 2e4 bases needed -> 5x.
        assert data_multiplier([(1e3, 2.0), (2e4, 1.7), (1e5, 1.6)], baseline, rule) == pytest.approx(5.0)
        # Already below at the first point: that point's bases (a lower bound; never extrapolated).
        assert data_multiplier([(1e3, 1.69), (1e4, 1.6)], baseline, rule) == pytest.approx(100.0)
        # Points given out of order are sorted first.
        assert data_multiplier([(1e5, 1.6), (1e3, 2.0), (1e4, 1.8)], baseline[::-1], rule) == pytest.approx(math.sqrt(10))


def test_multiplier_of_a_curve_that_dips_then_rises_is_the_sustained_crossing():
    baseline = [(1e3, 2.1), (1e4, 1.9), (1e5, 1.7)]
    # Dips to 1.65 at 1e3.5, back up to 1.75 at 1e4, then down for good: 1.6 at 1e5.
    curve = [(1e3, 2.0), (10**3.5, 1.65), (1e4, 1.75), (1e5, 1.6)]
    # Sustained (the headline): from the last point above the target (1e4, 1.75) to (1e5, 1.6):
    # (1.75 - 1.7) / (1.75 - 1.6) = 1/3 of the way in log10 -> 10^(4 + 1/3) bases.
    assert data_multiplier(curve, baseline) == pytest.approx(1e5 / 10 ** (4 + 1 / 3))
    assert data_multiplier(curve, baseline, "sustained") == data_multiplier(curve, baseline)
    # First crossing (kept beside it): (2.0 - 1.7) / (2.0 - 1.65) = 6/7 of the way from 1e3 to 1e3.5.
    assert data_multiplier(curve, baseline, "first") == pytest.approx(1e5 / 10 ** (3 + 0.5 * 6 / 7))
    # Back above the target at the last point: not reached for good, though it crossed once.
    rises = [(1e3, 2.0), (1e4, 1.65), (1e5, 1.75)]
    assert data_multiplier(rises, baseline) is None
    assert data_multiplier(rises, baseline, "first") == pytest.approx(1e5 / 10 ** (3 + 6 / 7))
    with pytest.raises(ValueError, match="rule"):
        data_multiplier(curve, baseline, "best")


def test_multiplier_of_nan_curves_and_the_lower_bound_flag():
    from hnet_dna.protocols.data_efficiency.multiplier import at_target_from_the_start

    baseline = [(1e3, 2.1), (1e5, 1.7)]
    assert data_multiplier([(1e3, 2.0), (1e5, 1.6)], [(1e3, 2.1), (1e5, float("nan"))]) is None  # diverged baseline
    assert data_multiplier([(1e3, 1.6), (1e5, float("nan"))], baseline) is None  # the H-Net diverged at the end
    # Below the target at the first point, above it later, below at the end: the sustained crossing
    # is interpolated (not a lower bound); the first crossing is at the first point (a lower bound).
    curve = [(1e3, 1.6), (1e4, 1.8), (1e5, 1.65)]
    assert not at_target_from_the_start(curve, baseline, "sustained")
    assert at_target_from_the_start(curve, baseline, "first")
    assert at_target_from_the_start([(1e3, 1.6), (1e5, 1.5)], baseline, "sustained")


def test_multiplier_is_none_when_never_reached():
    for rule in ("sustained", "first"):
        assert data_multiplier([(1e3, 2.0), (1e4, 1.8), (1e5, 1.71)], [(1e3, 2.1), (1e5, 1.7)], rule) is None


def test_multiplier_summary_over_seeds():
    s = multiplier_summary({0: 2.0, 1: 4.0})
    assert s["reached"] and s["mean"] == pytest.approx(3.0) and s["sd"] == pytest.approx(math.sqrt(2))
    s = multiplier_summary({0: 2.0, 1: None})
    assert s == {"per_seed": {"0": 2.0, "1": None}, "mean": None, "sd": None, "reached": False, "seeds_reached": 1,
                 "lower_bound": False}
    assert multiplier_summary({0: 2.0, 1: 4.0}, {0: False, 1: True})["lower_bound"]


def test_eval_points_are_log_spaced_after_warmup():
    steps = eval_schedule(400, 40, 8, 0.125)
    assert steps[0] == 50 and steps[-1] == 400 and len(steps) == 8
    ratios = [b / a for a, b in zip(steps, steps[1:])]
    assert max(ratios) / min(ratios) < 1.05  # even steps in log space (up to rounding)
    assert eval_schedule(100, 30, 4, 0.1)[0] == 31  # never inside the warmup


# ---------------------------------------------------------------------------------- config
def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="reference 'nope' is not one of the models"):
        load_config(SMOKE, [("reference", "nope")])
    with pytest.raises(ConfigError, match="trainer.max_steps: max_steps set by the benchmark"):
        load_config(SMOKE, [("trainer.max_steps", "10")])
    with pytest.raises(ConfigError, match="data.windw: not a GenomeDataModule argument"):
        load_config(SMOKE, [("data.windw", "10")])
    with pytest.raises(ConfigError, match="heldout.ecoli: give either split"):
        load_config(SMOKE, [("heldout.ecoli.split", "val")])


def test_bad_input_exits_2_before_writing(tmp_path):
    protein = tmp_path / "protein.fa"
    protein.write_text(">p\nMKVLQEERWLLPAFGHIKSTWYV\n" * 20)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hnet_dna.data_efficiency", "--config", str(SMOKE), "--out", str(out),
           f"--heldout.ecoli.fasta={protein}"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "protein.fa" in r.stderr and "not DNA" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


# ------------------------------------------------------------------------------ held out
DEMO = ROOT / "hnet_dna" / "resources" / "demo_chr20.fa"


def demo_sequence() -> str:
    return "".join(DEMO.read_text().splitlines()[1:])


def heldout_config(fasta: Path, **fields):
    """The smoke config with one FASTA held-out set named ``x`` (windows of 256 bases)."""
    spec = json.dumps({"fasta": str(fasta), "windows": 1000, **fields})
    return load_config(SMOKE, [("heldout", "{chr20_demo_last_100kb: {split: val, windows: 2}, x: " + spec + "}")])


def test_heldout_fasta_region_is_one_based_inclusive_and_a_bare_record_is_all_of_it(tmp_path):
    from hnet_dna.tokenizer import NucleotideTokenizer

    seq = "ACGT" * 64 + "GGCC" * 64 + "TTAA" * 64  # 768 bases, three windows of 256
    fasta = tmp_path / "other.fa"
    fasta.write_text(f">other\n{seq}\n")
    tok = NucleotideTokenizer()

    def windows(region):
        return [tok.decode(torch.from_numpy(w.astype("int64"))) for w in cut_heldout(heldout_config(fasta, region=region))["x"]]

    assert windows("other:257-768") == [seq[256:512], seq[512:768]]  # bases 257.. are 0-based 256..
    assert windows("other:3-258") == [seq[2:258]]  # one window, starting at base 3
    assert windows("other:1-256") == [seq[:256]]  # a region starting at 1 is not empty
    assert windows("other") == [seq[:256], seq[256:512], seq[512:]]  # a bare record name: all of it
    hla = tmp_path / "hla.fa"  # a record name with a colon (HLA alleles) is still a bare name
    hla.write_text(f">HLA-A*01:01\n{seq}\n")
    fasta = hla
    assert windows("HLA-A*01:01") == [seq[:256], seq[256:512], seq[512:]]
    assert windows("HLA-A*01:01:257-512") == [seq[256:512]]
    fasta = tmp_path / "other.fa"
    with pytest.raises(DataError, match="no record 'nope'"):
        windows("nope:1-300")


def test_heldout_fasta_overlapping_the_training_data_is_refused(tmp_path):
    seq = demo_sequence()
    # The training genome's record under an alias (chr20_demo = 20_demo), in another file.
    alias = tmp_path / "copy.fa"
    alias.write_text(f">20_demo\n{seq[:2048]}\n")
    with pytest.raises(DataError, match=r"leakage: heldout.x window 20_demo:1-256 overlaps the span of training "
                                         r"window chr20_demo:1-256.*copy.fa.*heldout.x.allow_leakage: true"):
        cut_heldout(heldout_config(alias))
    with pytest.raises(DataError, match="leakage: heldout.x"):  # the training FASTA itself
        cut_heldout(heldout_config(DEMO, region="chr20_demo:400001-402000"))
    assert len(cut_heldout(heldout_config(alias, allow_leakage=True))["x"]) == 8  # asked for: kept
    # The smoke config's validation region (900,001-1,000,000) is not training data.
    assert len(cut_heldout(heldout_config(DEMO, region="chr20_demo:900001-902000"))["x"]) == 7
    other = tmp_path / "other.fa"  # another record name: not the training data
    other.write_text(f">plasmid\n{seq[:2048]}\n")
    assert len(cut_heldout(heldout_config(other))["x"]) == 8


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """The smoke config, killed after its first fit's second curve point, then rerun to the end."""
    out = tmp_path_factory.mktemp("de") / "smoke"
    # Parallel torch work in this process first, as the rest of the suite does: a fit forked from a
    # process with a live OpenMP pool can hang (the fits must come from a clean fork server).
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.randn(256, 256) @ torch.randn(256, 256)
    torch.set_num_threads(threads)
    code, err = run(out, ECOLI, env={"HNET_DNA_KILL_AFTER_POINTS": "2"})
    assert code == 1, err
    assert "failed" in err and "Rerun the same command" in err
    first = out / "runs" / "hnet" / "seed0"
    assert (first / "last.ckpt").exists() and not (first / "result.json").exists()
    assert len({r["step"] for r in read_curves(first / "points.csv")}) == 2
    code, err = run(out, ECOLI)
    assert code == 0, err
    assert "hnet seed 0: fitting (resuming)" in err
    return out


def test_smoke_end_to_end(smoke):
    plan = json.loads((smoke / "plan.json").read_text())
    summary = json.loads((smoke / "summary.json").read_text())
    with (smoke / "curves.csv").open() as f:
        assert f.readline().strip() == "model,seed,bases_seen,heldout,bits_per_base,compression,wall_s"
    rows = read_curves(smoke / "curves.csv")
    models, seeds, heldout = ["hnet", "transformer"], [0, 1], ["chr20_demo_last_100kb", "ecoli"]
    assert len(rows) == len(models) * len(seeds) * len(plan["eval_steps"]) * len(heldout)
    for m in models:
        for s in seeds:
            mine = [r for r in rows if r["model"] == m and r["seed"] == str(s) and r["heldout"] == "ecoli"]
            assert [int(r["bases_seen"]) for r in mine] == [st * 1024 for st in plan["eval_steps"]]
            walls = [float(r["wall_s"]) for r in mine]
            assert walls == sorted(walls) and walls[0] > 0
            assert all((r["compression"] != "") == (m == "hnet") for r in mine)
            assert all(1.0 < float(r["bits_per_base"]) < 2.6 for r in mine)
    # The summary's multipliers are the ones the curves give.
    for b in ["transformer"]:
        for h in heldout:
            curve = lambda m, s: [(int(r["bases_seen"]), float(r["bits_per_base"])) for r in rows  # noqa: E731
                                  if r["model"] == m and r["seed"] == str(s) and r["heldout"] == h]
            expect = {str(s): data_multiplier(curve("hnet", s), curve(b, s)) for s in seeds}
            first = {str(s): data_multiplier(curve("hnet", s), curve(b, s), "first") for s in seeds}
            got = summary["multipliers"][b][h]
            assert got["per_seed"] == pytest.approx(expect)
            assert got["first_crossing_per_seed"] == pytest.approx(first)
            assert summary["multipliers_by_hnet"]["hnet"][b][h] == got
            assert got["reached"] == all(v is not None for v in expect.values())
            for m in models:
                finals = [curve(m, s)[-1][1] for s in seeds]
                assert summary["models"][m]["final_bits_per_base"][h] == pytest.approx(sum(finals) / 2)
    for m in models:
        info = summary["models"][m]
        assert info["params"] == plan["params"][m]
        assert info["flops_per_base"] > 6 * 0.5 * info["params"] / 10  # a real count, not a placeholder
        # both models attend causally: the causal count is below torch's, by the masked pairs only
        assert 0.5 * info["flops_per_base"] < info["flops_per_base_causal"] < info["flops_per_base"]
        assert info["train_bases_per_s"] > 0 and info["peak_memory_mb"] > 0
        assert set(info["decayed_bits_per_base"]) == set(heldout)
    assert summary["models"]["hnet"]["final_compression"] > 1
    assert (smoke / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (smoke / "runs" / "hnet" / "seed0" / "model" / "model.safetensors").is_file()  # exported
    assert summary["provenance"]["started"]["command"].startswith("python -m hnet_dna.data_efficiency")


def test_models_of_a_seed_saw_the_same_windows(smoke):
    def windows(model, seed):
        return (smoke / "runs" / model / f"seed{seed}" / "training_windows.rank0.tsv").read_text().splitlines()

    hnet, transformer = windows("hnet", 0), windows("transformer", 0)
    total = 32 + 8  # constant phase + decay steps, 4 windows each
    assert len(hnet) == total * 4  # the resumed fit logged each window once
    assert hnet == transformer
    assert windows("hnet", 1) == windows("transformer", 1) != hnet  # another seed, another stream


def test_a_finished_run_is_kept_and_a_resumed_fit_matches_an_uninterrupted_one(smoke, tmp_path):
    code, err = run(smoke, ECOLI)
    assert code == 0 and err.count("done earlier, kept") == 4
    code, err = run(tmp_path / "fresh", ECOLI, "--seeds", "[0]", "--models", "{hnet: tiny-hnet}")
    assert code == 0, err
    resumed = read_curves(smoke / "runs" / "hnet" / "seed0" / "points.csv")
    uninterrupted = read_curves(tmp_path / "fresh" / "runs" / "hnet" / "seed0" / "points.csv")
    assert [(r["step"], r["heldout"]) for r in resumed] == [(r["step"], r["heldout"]) for r in uninterrupted]
    for a, b in zip(resumed, uninterrupted):  # same process setup (threads) for both
        assert float(a["bits_per_base"]) == pytest.approx(float(b["bits_per_base"]), abs=1e-5)


def test_the_command_prints_no_warning(tmp_path):
    """``python -m hnet_dna.data_efficiency`` with a fit: stderr holds progress lines only (runpy
    warned on every fit when the fork server imported the module that ``-m`` was running)."""
    cmd = [sys.executable, "-m", "hnet_dna.data_efficiency", "--config", str(SMOKE), "--out", str(tmp_path / "out"),
           ECOLI, "--seeds", "[0]", "--models", "{hnet: tiny-hnet}", "--budget_bases", "8192", "--eval_points", "2",
           "--decay_fraction", "0", "--first_eval_fraction", "0.5"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "hnet seed 0: done" in r.stderr
    assert "Warning" not in r.stderr and "warn" not in r.stderr.lower(), r.stderr


def test_other_config_in_the_same_folder_is_refused(smoke):
    code, err = run(smoke, ECOLI, "--lr", "0.03")
    assert code == 2 and "holds a run of another config" in err


def test_gpu_config_runs_a_few_steps_on_cpu(tmp_path):
    """The paper-sized models of the gpu config: all four counted (on the meta device), and two
    of them (the Mamba-main H-Net and the Transformer) fitted for two steps, shrunk in data only:
    config validity, shapes, the bf16 autocast path and the FLOPs count. (bf16 on a CPU without
    bf16 units is slow: two models, two steps.)"""
    from hnet_dna.protocols.data_efficiency import make_plan

    config = load_config(GPU)
    assert config.trainer["precision"] == "bf16-mixed" and config.reference == "hnet"
    plan = make_plan(config)
    assert plan.kinds == {"hnet": "H-Net", "hnet_m15": "H-Net", "transformer": "isotropic", "mamba2": "isotropic"}
    assert plan.baselines == ["transformer", "mamba2"]  # both H-Nets get multipliers against both
    p = plan.params
    assert 60e6 < p["hnet"] < 70e6 and 62e6 < p["hnet_m15"] < 70e6 and 27e6 < p["transformer"] < 31e6
    assert 31e6 < p["mamba2"] < 35e6
    code, err = run(
        tmp_path / "gpu", config=GPU, *[
            "--models={hnet: dna-hnet-m3t1-m15-m4, transformer: dna-transformer-t9}",
            "--trainer.accelerator=cpu", "--data.fasta=builtin:demo_chr20.fa", "--data.bed=null",
            "--data.val_regions=[chr20_demo:900001-1000000]", "--data.window=64", "--data.batch_size=2",
            "--data.num_workers=0", "--budget_bases=256", "--eval_points=2", "--first_eval_fraction=0.5",
            "--warmup_fraction=0.25", "--heldout.chr20_48_50mb.windows=2", f"--heldout.ecoli.fasta={DATA / 'ecoli_slice.fa'}",
            "--heldout.ecoli.windows=2", "--export_models=false",
        ],
    )
    assert code == 0, err[-3000:]
    summary = json.loads((tmp_path / "gpu" / "summary.json").read_text())
    assert set(summary["models"]) == {"hnet", "transformer"}
    assert not (tmp_path / "gpu" / "runs" / "hnet" / "seed0" / "model").exists()  # --export_models=false
    assert {m: v["params"] for m, v in summary["models"].items()} == {"hnet": p["hnet_m15"], "transformer": p["transformer"]}
    for m in summary["models"].values():
        assert 0 < m["flops_per_base_causal"] <= m["flops_per_base"]


def test_flops_per_base_count_attention_scores_on_cpu():
    """torch's counter knows only the CUDA attention kernels: on CPU the scores must still count.
    A Transformer's matmul FLOPs per base do not depend on the window; its attention grows with it,
    by exactly torch's SDPA formulas (forward + backward, per layer)."""
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    from hnet_dna.protocols.data_efficiency import training_flops_per_base
    from hnet_dna.model.loading import build_model

    torch.manual_seed(0)
    model = build_model({"preset": "tiny-transformer", "arch_layout": ["T2"]})
    heads, d = model.config.attn_cfg.num_heads[0], model.config.d_model[0]

    def attention(length):  # per base, both layers, batch 2
        shape = (2, heads, length, d // heads)
        return 2 * (sdpa_flop_count(shape, shape, shape) + sdpa_backward_flop_count(shape, shape, shape, shape)) / (2 * length)

    short, long = (training_flops_per_base(model, torch.randint(0, 4, (2, n))) for n in (64, 256))
    assert long - short == pytest.approx(attention(256) - attention(64), rel=1e-6)
    assert long > 1.2 * short


@pytest.mark.parametrize("window, pairs", [(-1, 1 + 2 + 3 + 4 + 5 + 6), (2, 1 + 2 + 3 + 3 + 3 + 3)])
def test_causal_flops_of_a_hand_sized_attention_layer(window, pairs):
    """One attention layer, batch 1, length 6, 2 heads of 4 dims. Query i attends to keys
    max(0, i - W) .. i: 21 (query, key) pairs when global, 15 with a window of 2. Each pair costs
    2 x 4 FLOPs for q.k and 2 x 4 for p.v; torch's backward formula counts 2.5x its forward. So the
    attention ops count (2 + 2 + 2.5 x 4) x 4 x 2 heads = 112 FLOPs a pair, causal count; torch's
    count charges the whole matrices SDPA is called with (36 pairs; with the window, on CPU, blocks
    of 3 queries: two own-block squares of 3 x 3 and one previous-block square of 2 x 2, 22 pairs)."""
    from torch.utils.flop_counter import FlopCounterMode

    from hnet_dna.protocols.data_efficiency.flops import _formulas
    from hnet_dna.model.attention import CausalSelfAttention

    torch.manual_seed(0)
    layer = CausalSelfAttention(d_model=8, num_heads=2, window_size=window)
    x = torch.randn(1, 6, 8)
    unattended = []
    counter = FlopCounterMode(display=False, custom_mapping=_formulas(unattended))
    with counter:
        layer(x).sum().backward()
    flops = counter.get_flop_counts()["Global"]
    attention = sum(v for k, v in flops.items() if "attention" in str(k))  # torch's count
    rest = sum(v for k, v in flops.items() if "attention" not in str(k))
    counts = {"torch": attention, "causal": attention - sum(unattended)}
    assert counts["causal"] == 112 * pairs
    assert counts["torch"] == 112 * (36 if window < 0 else 2 * 3 * 3 + 2 * 2)
    # projections counted once, alike; per attention call one forward and one backward op
    assert rest > 0 and len(unattended) == (2 if window < 0 else 4)


def test_attended_fraction_of_masks_windows_and_alignments():
    """The fraction of (query, key) pairs an attention call computes, from its arguments: a boolean
    or additive mask (which the band attention on CPU no longer passes, but the masked forms do),
    torch's top-left and bottom-right causal alignments, flash-attn's windows."""
    from hnet_dna.protocols.data_efficiency.flops import attended_fraction

    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    assert attended_fraction(4, 4, mask=causal) == 10 / 16
    additive = torch.zeros(4, 4).masked_fill(~causal, float("-inf"))
    assert attended_fraction(4, 4, mask=additive) == 10 / 16
    assert attended_fraction(4, 4, is_causal=True, mask=torch.ones(4, 4, dtype=torch.bool).triu()) == 4 / 16
    assert attended_fraction(2, 4, is_causal=True) == 3 / 8  # top-left: query i sees keys 0 .. i
    assert attended_fraction(2, 4, is_causal=True, bottom_right=True) == 7 / 8  # keys 0 .. i + 2
    assert attended_fraction(4, 4, window_left=1, is_causal=True) == 7 / 16  # keys i - 1 .. i


def test_causal_flops_of_a_model_subtract_exactly_the_masked_attention():
    """A 2-layer Transformer at length 64: the causal count is torch's less the attention pairs a
    causal kernel skips (64 x 63 / 2 a head per layer), at the same 112/8 FLOPs per pair and head
    dimension as above; an isotropic Mamba-2 has no attention, so both counts agree."""
    from hnet_dna.protocols.data_efficiency import training_flops_per_base
    from hnet_dna.model.loading import build_model

    torch.manual_seed(0)
    model = build_model({"preset": "tiny-transformer", "arch_layout": ["T2"]})
    heads, d = model.config.attn_cfg.num_heads[0], model.config.d_model[0]
    ids = torch.randint(0, 4, (2, 64))
    torch_count = training_flops_per_base(model, ids, "torch")
    causal = training_flops_per_base(model, ids, "causal")
    skipped = 2 * 2 * heads * (64 * 63 // 2) * (112 // 8) * (d // heads)  # layers x batch x heads x pairs x ...
    assert torch_count - causal == pytest.approx(skipped / ids.numel())
    mamba = build_model("tiny-mamba2")
    assert training_flops_per_base(mamba, ids, "causal") == training_flops_per_base(mamba, ids, "torch")
    with pytest.raises(ValueError, match="convention"):
        training_flops_per_base(model, ids, "halved")


@pytest.mark.parametrize("groups", [16, 1])
def test_a_convolution_backward_costs_what_its_forward_costs_per_gradient(groups):
    """A convolution's input and weight gradients each multiply the same pairs its forward does.
    Torch's formula charges a grouped convolution's weight gradient as a dense one (groups times
    more: Mamba-2's depthwise convolution was charged about 0.2 MFLOP per base per layer for about
    1 kFLOP of work); ours counts forward + backward at 3x the forward, grouped or dense."""
    from torch.utils.flop_counter import FlopCounterMode

    from hnet_dna.protocols.data_efficiency.flops import _formulas

    conv = torch.nn.Conv1d(16, 16, 4, groups=groups, padding=3)
    x = torch.randn(2, 16, 32, requires_grad=True)
    forward = 2 * 2 * 16 * (16 // groups) * 4 * 35  # 2 FLOPs x batch x out channels x in per group x taps x outputs
    counter = FlopCounterMode(display=False, custom_mapping=_formulas([]))
    with counter:
        conv(x).sum().backward()
    assert counter.get_total_flops() == 3 * forward


def test_flops_of_mamba2_count_its_convolution_as_the_reference_runs_it():
    """On CPU the layer's convolution has a hand-written backward whose weight gradient is
    elementwise work (not counted); the count forces the reference, whose backward is counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from hnet_dna import backends
    from hnet_dna.protocols.data_efficiency.flops import _formulas
    from hnet_dna.model.mamba2 import Mamba2

    torch.manual_seed(0)
    layer = Mamba2(16, d_state=8, headdim=8, chunk_size=8)
    u = torch.randn(1, 16, 16, requires_grad=True)
    counter = FlopCounterMode(display=False, custom_mapping=_formulas([]))
    with backends.force_reference(), counter:
        layer(u).sum().backward()
    flops = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    # 2 FLOPs x outputs x channels x taps; the padded convolution makes 16 + 3 outputs (3 dropped)
    forward = 2 * (16 + 3) * layer.conv_dim * 4
    assert flops["aten.convolution_backward"] == 2 * forward  # input and weight gradients


def test_flops_batch_follows_the_model_parameters():
    """After ``fit`` Lightning's teardown moves the model to the CPU whatever device it trained on:
    the FLOP-count batch goes where the parameters are (here the meta device stands in for a device
    other than the trainer's), in the model's ids (a byte-level model reads ASCII codes)."""
    from hnet_dna.data.datamodule import GenomeDataModule
    from hnet_dna.protocols.data_efficiency.worker import flops_batch
    from hnet_dna.model.loading import build_model

    dm = GenomeDataModule(fasta="builtin:demo_chr20.fa", window=64, batch_size=3)
    with torch.device("meta"):
        moved = build_model("tiny-hnet")
    batch = flops_batch(dm, moved)
    assert batch.device.type == "meta" and batch.shape == (3, 64)
    byte_model = build_model({"preset": "tiny-hnet", "vocab_size": 256})
    ids = flops_batch(dm, byte_model)
    assert set(ids.unique().tolist()) <= {ord(c) for c in "ACGTN"}


def test_results_tables_read_a_finished_run(smoke):
    """benchmarks/data_efficiency_tables.py: RESULTS.md's tables come from summary.json and
    curves.csv as they are (a row per model, per H-Net x baseline, per curve point)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import data_efficiency_tables as tables
    finally:
        sys.path.pop(0)
    summary = json.loads((smoke / "summary.json").read_text())
    models = tables.model_table(summary).splitlines()
    assert len(models) == 2 + len(summary["models"]) and models[2].startswith("| hnet (reference) |")
    assert f"{summary['models']['transformer']['flops_per_base_causal'] / 1e6:.2f}" in models[3]
    multipliers = tables.multiplier_table(summary).splitlines()
    assert len(multipliers) == 2 + 1  # one H-Net x one baseline
    curve = tables.curve_table(smoke, summary, "ecoli").splitlines()
    assert len(curve) == 2 + len(summary["eval_bases"])
