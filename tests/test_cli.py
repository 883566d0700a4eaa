"""The command line: recipes parse and run, bad inputs stop cleanly before anything is written."""

import gzip
import re
import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import yaml

from hnet_dna.cli import HNetCLI, main
from hnet_dna.data import genome

from .conftest import write_fasta

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "pipelines" / "pretrain"
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture
def workdir(tmp_path, chr20_slices):
    """A small genome, a matching BED and a base config, all in a temporary folder."""
    seq = chr20_slices["chr20_train"]
    write_fasta(tmp_path / "g.fa", {"chr1": seq[:40_000], "chr2": seq[40_000:60_000]})
    (tmp_path / "splits.bed").write_text("chr1\t0\t30000\ttrain\nchr1\t30000\t40000\tvalid\nchr2\t0\t20000\ttest\n")
    config = {
        "model": {"class_path": "hnet_dna.tasks.PretrainModule", "init_args": {"model": "tiny-hnet"}},
        "data": {"class_path": "hnet_dna.data.GenomeDataModule",
                 "init_args": {"fasta": str(tmp_path / "g.fa"), "bed": str(tmp_path / "splits.bed"), "window": 512, "batch_size": 2}},
        "trainer": {"max_steps": 2, "default_root_dir": str(tmp_path / "run"), "enable_progress_bar": False,
                    "limit_val_batches": 1, "logger": False},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def run_cli(workdir, *extra) -> tuple[int, str]:
    """Run the CLI in this process; returns (exit status, what it printed on stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(["fit", "--config", str(workdir / "base.yaml"), *extra])
            status = 0
        except SystemExit as e:
            status = e.code
    return status, err.getvalue()


def test_a_tiny_run_trains_checkpoints_and_exports(workdir):
    status, _ = run_cli(workdir)
    assert status == 0
    run = workdir / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "pretrained" / "model.safetensors").is_file()


def bad_inputs(workdir):
    (workdir / "empty.fa").write_text("")
    with gzip.open(workdir / "plain.fa.gz", "wt") as f:
        f.write(">chr1\n" + "ACGT" * 5000 + "\n")
    write_fasta(workdir / "letters.fa", {"chr1": "ACGT" * 5000 + "ACGU" + "ACGT" * 100})
    (workdir / "chrx.bed").write_text("chr1\t0\t30000\ttrain\nchrX\t0\t1000\tvalid\n")
    (workdir / "past.bed").write_text("chr1\t0\t30000\ttrain\nchr2\t10000\t20001\ttest\n")
    (workdir / "split.bed").write_text("chr1\t0\t30000\ttrain\nchr1\t30000\t40000\tholdout\n")
    (workdir / "overlap.bed").write_text("chr1\t0\t30000\ttrain\nchr2\t0\t20000\ttest\nchr1\t29000\t40000\tvalid\n")
    write_fasta(workdir / "protein.fa", {"P1": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ" * 3})
    return [
        (["--data.fasta", str(workdir / "missing.fa")], "missing.fa: no such FASTA file"),
        (["--data.fasta", str(workdir / "plain.fa.gz")], "plain gzip"),
        (["--data.fasta", str(workdir / "empty.fa")], "empty.fa: the FASTA file is empty"),
        (["--data.fasta", str(workdir / "letters.fa"), "--data.bed", "null", "--data.val_regions", "[chr1:1-2000]"],
         "letters.fa, record 'chr1', line 335, column 24 (position 20,004): 'U' is not a DNA letter"),
        (["--data.bed", str(workdir / "chrx.bed")], "chrx.bed, line 2: chromosome 'chrX' is in no FASTA"),
        (["--data.bed", str(workdir / "past.bed")], "past.bed, line 2: interval chr2:10000-20001 ends past the end of chr2"),
        (["--data.bed", str(workdir / "split.bed")], "split.bed, line 2: unknown split 'holdout'"),
        (["--data.window", "50000"], "window of 50,000 bases is longer than every"),
        (["--model.model", "no-such-preset"], "neither a preset"),
        # the real cause first: a protein FASTA is "not DNA", not "window too long"
        (["--data.fasta", str(workdir / "protein.fa"), "--data.bed", "null"],
         "protein.fa, record 'P1', line 2, column 6 (position 6): 'I' is not a DNA letter: this looks like a protein"),
        (["--data.bed", str(workdir / "overlap.bed")],
         f"they come from {workdir / 'overlap.bed'}, line 3 (chr1\t29000\t40000\tvalid) and "
         f"{workdir / 'overlap.bed'}, line 1 (chr1\t0\t30000\ttrain)"),
    ]


def test_commands_without_their_split_or_checkpoint_stop_cleanly(workdir):
    (workdir / "trainonly.bed").write_text("chr1\t0\t30000\ttrain\n")
    for command, extra, message in [
        ("test", ["--data.bed", str(workdir / "trainonly.bed")], "test: the data has no test windows"),
        ("validate", ["--data.bed", str(workdir / "trainonly.bed")], "validate: the data has no val windows"),
        ("predict", ["--data.bed", str(workdir / "trainonly.bed")], "predict: the data has no test or val windows"),
        ("test", ["--ckpt_path", str(workdir / "nope.ckpt")], "nope.ckpt: no such checkpoint file"),
        ("test", ["--ckpt_path", "last"], "--ckpt_path last: no last*.ckpt under"),
    ]:
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
            main([command, "--config", str(workdir / "base.yaml"), *extra])
        assert exit_info.value.code == 2 and message in err.getvalue(), (command, err.getvalue())
        assert not (workdir / "run").exists(), command


def test_test_and_predict_run_from_a_checkpoint(workdir, capsys):
    assert run_cli(workdir)[0] == 0
    ckpt = workdir / "run" / "checkpoints" / "last.ckpt"
    main(["test", "--config", str(workdir / "base.yaml"), "--ckpt_path", str(ckpt)])
    assert "test/bits_per_base" in capsys.readouterr().out
    main(["predict", "--config", str(workdir / "base.yaml"), "--ckpt_path", str(ckpt),
          "--trainer.callbacks+=hnet_dna.tasks.PredictionWriter", f"--trainer.callbacks.folder={workdir / 'pred'}"])
    rows = (workdir / "pred" / "predictions.rank0.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["record", "start", "end", "strand", "bits_per_base", "chunks"]
    assert len(rows) == 1 + 39 and rows[1].split("\t")[:4] == ["chr2", "1", "512", "+"]  # 20 kb test split
    assert 0 < float(rows[1].split("\t")[4]) < 8


def test_bad_inputs_stop_before_anything_is_written(workdir):
    for extra, message in bad_inputs(workdir):
        status, err = run_cli(workdir, *extra)
        assert status == 2, (extra, err)
        assert message in err and "Traceback" not in err, (extra, err)
        assert not (workdir / "run").exists(), extra


def test_a_broken_checkpoint_is_named_before_anything_is_written(workdir):
    import torch

    assert run_cli(workdir, "--trainer.default_root_dir", str(workdir / "first"))[0] == 0
    good = next((workdir / "first").rglob("last.ckpt")).read_bytes()
    (workdir / "truncated.ckpt").write_bytes(good[: len(good) // 2])  # a run killed while saving
    (workdir / "notes.ckpt").write_text("not a checkpoint\n")
    torch.save({"weights": torch.zeros(2)}, workdir / "plain.pt")
    for name, message in [("truncated.ckpt", "not a readable checkpoint"), ("notes.ckpt", "not a readable checkpoint"),
                          ("plain.pt", "not a Lightning checkpoint")]:
        status, err = run_cli(workdir, "--ckpt_path", str(workdir / name))
        assert status == 2 and f"--ckpt_path {workdir / name}: {message}" in err, (name, err)
        assert "Traceback" not in err and "PytorchStreamReader" not in err.split("(")[0], err
        assert not (workdir / "run").exists(), name


def test_a_genome_held_out_entirely_is_scored_without_training_windows(tmp_path, capsys, chr20_slices):
    """Score a trained model on another genome: test needs no training window; fit says why it
    cannot run (every record held out), not that windows were dropped for N."""
    main(["fit", "--config", str(RECIPES / "demo_cpu.yaml"), "--trainer.max_steps", "2",
          "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1", "--data.num_workers", "0",
          "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "demo")])
    ckpt = next((tmp_path / "demo").rglob("last.ckpt"))
    seq = chr20_slices["chr20_heldout"]
    write_fasta(tmp_path / "other.fa", {"chrA": seq[:3000], "chrB": seq[3000:6000]})
    held_out = ["--data.fasta", str(tmp_path / "other.fa"), "--data.val_regions", "[]",
                "--data.test_regions", "[chrA, chrB]", "--trainer.logger", "false"]
    capsys.readouterr()
    main(["test", "--config", str(RECIPES / "demo_cpu.yaml"), *held_out, "--ckpt_path", str(ckpt),
          "--trainer.default_root_dir", str(tmp_path / "scored")])
    assert "test/bits_per_base" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(RECIPES / "demo_cpu.yaml"), *held_out, "--trainer.default_root_dir", str(tmp_path / "fit")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "no training sequence: --data.val_regions / --data.test_regions cover every record" in err
    assert str(tmp_path / "other.fa") in err and not (tmp_path / "fit").exists()


def test_fasta_in_a_read_only_folder_without_index(workdir, monkeypatch):
    monkeypatch.setattr(genome, "_writable", lambda folder: False)
    status, err = run_cli(workdir)
    assert status == 2 and "--data.index_dir" in err and not (workdir / "run").exists()
    monkeypatch.setattr(genome, "_writable", lambda folder: folder != workdir)
    status, err = run_cli(workdir, "--data.index_dir", str(workdir / "idx"))
    assert status == 0 and (workdir / "idx").is_dir() and not (workdir / "g.fa.fai").exists()


def test_bad_input_from_a_real_process_has_no_traceback(workdir):
    proc = subprocess.run(
        [sys.executable, "-m", "hnet_dna", "fit", "--config", str(workdir / "base.yaml"), "--data.fasta", str(workdir / "nope.fa")],
        capture_output=True, text=True, cwd=workdir,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("nope.fa: no such FASTA file") and "Traceback" not in proc.stderr
    assert not (workdir / "run").exists()


def test_demo_recipe_runs_and_reports_against_markov(tmp_path, capsys):
    main([
        "fit", "--config", str(RECIPES / "demo_cpu.yaml"),
        "--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "2",
        "--data.num_workers", "0", "--trainer.default_root_dir", str(tmp_path / "demo"),
    ])
    captured = capsys.readouterr()
    out = captured.out
    assert "Held-out bits per base" in out and "order-0 Markov" in out and "order-2 Markov" in out
    report = json.loads(next((tmp_path / "demo").rglob("heldout_report.json")).read_text())
    assert any(name.startswith("order-2 Markov") for name in report["bits_per_base"])
    assert set(report["scored_bases"].values()) == {report["bases"]}  # model and Markov: the same targets
    model_bits = next(v for k, v in report["bits_per_base"].items() if k.endswith("(this run)"))
    assert 1.5 < model_bits < 2.5  # 3 steps from random weights: about 2 bits per base, not 2 / (bases)
    assert "stage 0 (base-pair resolution, d_model 64): 0.02 " in captured.err  # each stage's rate, printed
    png = next((tmp_path / "demo").rglob("training_curves.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    recipe = yaml.safe_load((RECIPES / "demo_cpu.yaml").read_text())
    assert recipe["trainer"].get("enable_progress_bar", True) and recipe["trainer"]["accelerator"] == "cpu"


def build_recipe(recipe: Path, *overrides):
    """Parse a recipe with the real CLI and instantiate model, data and trainer (on CPU)."""
    cli = HNetCLI(
        pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        run=False, args=["--config", str(recipe), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                         "--trainer.strategy", "auto", "--trainer.precision", "32", "--trainer.logger", "false", *overrides],
    )
    return cli.model, cli.datamodule, cli.trainer


def test_hg38_paper_recipe_parses_and_builds_its_model(tmp_path, chr20_slices):
    # hg38 is not here: a stand-in FASTA and BED with the recipe's own settings
    seq = chr20_slices["chr20_train"]
    write_fasta(tmp_path / "hg38.fa", {"chr1": seq[:100_000], "chr2": seq[100_000:200_000], "chr3": seq[200_000:300_000]})
    (tmp_path / "seq.bed").write_text("chr1\t0\t100000\ttrain\nchr2\t0\t100000\tvalid\nchr3\t0\t100000\ttest\n")
    model, data, trainer = build_recipe(
        RECIPES / "hg38_paper.yaml", "--data.fasta", str(tmp_path / "hg38.fa"), "--data.bed", str(tmp_path / "seq.bed"),
        "--data.index_dir", str(tmp_path / "idx"), "--trainer.default_root_dir", str(tmp_path / "run"),
    )
    assert model.model.config.arch_layout == ["m3T1", ["T15"], "m4"] and model.hparams.lr == 5e-3
    assert abs(model.model.num_parameters() / 1e6 - 64) < 1
    assert data.hparams.window == 8192 and len(data.tables["val"]) == 12


def test_gradient_checkpointing_is_a_command_line_switch(workdir):
    model, _, _ = build_recipe(workdir / "base.yaml", "--model.gradient_checkpointing", "true")
    assert model.model.is_gradient_checkpointing
    model, _, _ = build_recipe(workdir / "base.yaml")
    assert not model.model.is_gradient_checkpointing
    from hnet_dna.tasks import FinetuneModule

    assert FinetuneModule(backbone="tiny-hnet", gradient_checkpointing=True).backbone.is_gradient_checkpointing
    assert not FinetuneModule(backbone="tiny-hnet").backbone.is_gradient_checkpointing


@pytest.mark.skipif(not (SHARED / "genomes" / "GRCh37_chr20.fa.gz").is_file(), reason="needs ../shared/data")
def test_chr20_recipe_builds_on_the_real_chromosome(tmp_path):
    for name in ("GRCh37_chr20.fa.gz", "GRCh37_chr20.fa.gz.fai", "GRCh37_chr20.fa.gz.gzi"):
        shutil.copy(SHARED / "genomes" / name, tmp_path)
    model, data, trainer = build_recipe(
        RECIPES / "chr20.yaml", "--data.fasta", str(tmp_path / "GRCh37_chr20.fa.gz"), "--data.num_workers", "0",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    )
    val = data.tables["val"]
    assert val.describe(0).startswith("20:60025521-") and len(val) > 1300
    assert model.model.config.arch_layout == ["m3T1", ["T15"], "m4"]


def test_a_byte_level_model_trains_on_its_own_ids(tmp_path):
    """The genome data module encodes with the nucleotide table (A = 0); a byte-level model (the
    official checkpoints' vocabulary) has pad 0: fed those ids it would ignore every A and report
    near 0 bits per base. Translated, an untrained byte model scores its ~8 bits on every base."""
    import torch

    from hnet_dna.data.datamodule import GenomeDataModule
    from hnet_dna.tasks.pretrain import PretrainModule

    torch.manual_seed(0)
    dm = GenomeDataModule(fasta="builtin:demo_chr20.fa", val_regions=["chr20_demo:900001-1000000"], window=64,
                          batch_size=4)
    task = PretrainModule(model={"preset": "tiny-hnet", "vocab_size": 256}, export=False)
    trainer = pl.Trainer(max_steps=1, limit_val_batches=2, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(task, datamodule=dm)
    assert trainer.callback_metrics["train/bits_per_base"] > 6
    assert trainer.validate(task, datamodule=dm, verbose=False)[0]["val/bits_per_base"] > 6


def test_the_held_out_report_scores_before_teardown_moves_the_model(tmp_path, monkeypatch):
    """Lightning's teardown moves the module to the CPU after training (``on_fit_end`` runs after
    it): the report must score while the model is still on the training device."""
    import torch

    from hnet_dna.data.datamodule import GenomeDataModule
    from hnet_dna.tasks import callbacks
    from hnet_dna.tasks.callbacks import HeldOutReport
    from hnet_dna.tasks.pretrain import PretrainModule

    torch.manual_seed(0)
    events = []
    score = callbacks.score_windows
    monkeypatch.setattr(callbacks, "score_windows", lambda *a, **k: (events.append("score"), score(*a, **k))[1])
    dm = GenomeDataModule(fasta="builtin:demo_chr20.fa", val_regions=["chr20_demo:900001-1000000"], window=64,
                          batch_size=4)
    task = PretrainModule(model="tiny-hnet", export=False)
    to_cpu = task.cpu
    monkeypatch.setattr(task, "cpu", lambda: (events.append("teardown"), to_cpu())[1])
    trainer = pl.Trainer(max_steps=1, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, accelerator="cpu", callbacks=[HeldOutReport(max_windows=4)])
    trainer.fit(task, datamodule=dm)
    assert "score" in events and "teardown" in events
    assert events.index("score") < events.index("teardown")


def test_mlm_demo_recipe_runs_and_reports_against_two_sided_markov(tmp_path, capsys):
    main([
        "fit", "--config", str(RECIPES / "demo_mlm_cpu.yaml"),
        "--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "2",
        "--data.num_workers", "0", "--trainer.default_root_dir", str(tmp_path / "demo"),
    ])
    out = capsys.readouterr().out
    assert "Held-out masked-base bits per base" in out and "two-sided order-2 Markov" in out
    report = json.loads(next((tmp_path / "demo").rglob("heldout_report.json")).read_text())
    assert report["objective"] == "masked LM" and set(report["scored_bases"].values()) == {report["bases"]}
    model_bits = next(v for k, v in report["masked_bits_per_base"].items() if k.endswith("(this run)"))
    assert 1.5 < model_bits < 2.5
    metrics = next((tmp_path / "demo").rglob("metrics.csv")).read_text().splitlines()[0]
    assert "val/masked_accuracy" in metrics
    folder = next((tmp_path / "demo").rglob("pretrained"))
    from hnet_dna import HNetForMaskedLM
    from hnet_dna.model.loading import build_model

    assert isinstance(build_model(str(folder)), HNetForMaskedLM)


@pytest.mark.parametrize("model, fraction, message", [
    ("tiny-bihnet", "0.0", "masked LM .* the data hide no bases: set --data.mlm_fraction 0.15"),
    ("tiny-hnet", "0.15", "--data.mlm_fraction 0.15 hides bases for a masked LM, and the model is causal"),
])
def test_a_model_and_an_objective_that_do_not_match_stop_before_anything_is_written(workdir, model, fraction, message):
    status, err = run_cli(workdir, "--model.model", model, "--data.mlm_fraction", fraction)
    assert status == 2 and re.search(message, err) and "Traceback" not in err
    assert not (workdir / "run").exists()
