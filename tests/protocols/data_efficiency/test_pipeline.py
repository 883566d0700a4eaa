"""The pipeline end to end on the smoke config: kill, resume, outputs, tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hnet_dna.protocols.data_efficiency import (
    data_multiplier,
    load_config,
)

from ...conftest import DATA, import_benchmark
from .conftest import (
    ECOLI,
    GPU,
    ROOT,
    SMOKE,
    read_curves,
    run,
)


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
        spread = info["flops_spread"]  # counted on 4 random batches per seed: mean within their range
        assert spread["batches"] == 4 * len(seeds)
        for convention, key in (("torch", "flops_per_base"), ("causal", "flops_per_base_causal")):
            assert spread[convention][0] <= info[key] <= spread[convention][1]
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


def test_results_tables_read_a_finished_run(smoke):
    """benchmarks/data_efficiency_tables.py: RESULTS.md's tables come from summary.json and
    curves.csv as they are (a row per model, per H-Net x baseline, per curve point)."""
    tables = import_benchmark("data_efficiency_tables")
    summary = json.loads((smoke / "summary.json").read_text())
    models = tables.model_table(summary).splitlines()
    assert len(models) == 2 + len(summary["models"]) and models[2].startswith("| hnet (reference) |")
    assert f"{summary['models']['transformer']['flops_per_base_causal'] / 1e6:.2f}" in models[3]
    multipliers = tables.multiplier_table(summary).splitlines()
    assert len(multipliers) == 2 + 1  # one H-Net x one baseline
    curve = tables.curve_table(smoke, summary, "ecoli").splitlines()
    assert len(curve) == 2 + len(summary["eval_bases"])


def test_a_diverged_decay_score_is_null_in_the_summary_and_the_tables(smoke, tmp_path, monkeypatch):
    """A NaN held-out score is written as null (JSON has no NaN); the summary and the tables read it
    back as a missing value instead of failing."""
    import shutil

    from hnet_dna.protocols.data_efficiency import make_plan
    from hnet_dna.protocols.data_efficiency.report import write_results

    out = tmp_path / "copy"
    shutil.copytree(smoke, out)
    result_path = out / "runs" / "hnet" / "seed0" / "result.json"
    result = json.loads(result_path.read_text())
    result["decayed_bits_per_base"]["ecoli"] = None  # what json_text writes for a NaN
    result_path.write_text(json.dumps(result))
    monkeypatch.chdir(ROOT)
    config = load_config(SMOKE, [("heldout.ecoli.fasta", str(DATA / "ecoli_slice.fa"))])
    summary = write_results(make_plan(config), config, out)
    text = (out / "summary.json").read_text()
    assert "NaN" not in text and json.loads(text)["models"]["hnet"]["decayed_bits_per_base"]["ecoli"] is None
    assert summary["models"]["transformer"]["decayed_bits_per_base"]["ecoli"] > 0  # the others as before
    tables = import_benchmark("data_efficiency_tables")
    assert "| hnet (reference) |" in tables.model_table(json.loads(text))
