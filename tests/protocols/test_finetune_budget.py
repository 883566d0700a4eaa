"""One budget for every system of a fine-tuning table (hnet_dna.protocols.finetune.budget), and the
records of what each run spent."""

import csv
import json
import math
from types import SimpleNamespace

import pytest
import torch

from hnet_dna.config import ConfigError
from hnet_dna.protocols.finetune.budget import Budget, parse_budget

from ..conftest import DATA, finetune_recipe, make_model

SPENT = ("epochs", "optimizer_steps", "training_flops", "wall_seconds", "trainable_parameters", "total_parameters")


def test_budgets_parse_and_become_the_trainer_caps_they_name():
    assert parse_budget(None) is None
    assert parse_budget("epochs:10") == Budget("epochs", 10) and str(parse_budget("flops:2.5e14")) == "flops:2.5e+14"
    assert parse_budget("time:4").trainer_args() == ["--trainer.max_time", "00:00:04:00", "--trainer.max_steps", "-1"]
    assert parse_budget("time:90.5").trainer_args()[1] == "00:01:30:30"
    epochs = parse_budget("epochs:3").trainer_args()
    assert epochs[:2] == ["--trainer.max_epochs", "3"] and "null" in epochs  # no time cap
    assert parse_budget("flops:1e10").trainer_args(3e9)[:2] == ["--trainer.max_steps", "3"]
    assert parse_budget("flops:1e9").steps(3e9) == 1  # at least one step
    assert str(parse_budget("flops:123456789")) == "flops:123456789.0"  # not rounded to 6 digits (1.23457e+08)
    for bad, why in (("epoch:3", "'epoch' is not a budget kind"), ("epochs:2.5", "epochs must be a whole number"),
                     ("time:-1", "'-1' is not a positive number"), ("flops:x", "'x' is not a positive number"),
                     ("epochs", "names no amount"), ("time:0", "'0' is not a positive"),
                     ("time:0.001", "under a second")):
        with pytest.raises(ConfigError, match=f"{why}.*give time:MINUTES, epochs:N"):
            parse_budget(bad)


def test_every_system_stops_at_the_epochs_budget_and_records_what_it_spent(tmp_path, capsys):
    from hnet_dna.finetune import main as protocol

    small = {"d_model": [32, 48], "attn_cfg": {"num_heads": [2, 2], "rotary_emb_dim": [8, 12], "window_size": [63, -1]}}
    make_model("tiny-hnet", dtype=torch.float32, seed=1, **small).save_pretrained(tmp_path / "backbone")
    argv = ["--config", finetune_recipe(tmp_path), "--seeds", "0", "--out", str(tmp_path / "out"),
            "--model.backbone", str(tmp_path / "backbone"), "--trainer.max_epochs", "3", "--budget", "epochs:1"]
    protocol(argv)  # every system (the backbone is pretrained: lpft, lora and scratch too)
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    runs = {r["system"]: r for r in result["runs"]}
    assert result["budget"] == "epochs:1" and set(runs) == {"model", "lpft", "lora", "scratch", "cnn", "probe", "kmer_lr"}
    for system in ("model", "lpft", "lora", "scratch", "cnn"):  # 16 training rows in batches of 8, one epoch
        run = runs[system]
        assert run["epochs"] == 1.0 and run["optimizer_steps"] == 2, system  # the recipe said 3 epochs
        assert run["training_flops"] == pytest.approx(2 * run["flops_per_step"]) and run["flops_per_step"] > 1e6
        assert run["wall_seconds"] > 0 and 0 < run["trainable_parameters"] <= run["total_parameters"]
    assert runs["lora"]["trainable_parameters"] < runs["lora"]["total_parameters"]  # adapters and head only
    assert runs["model"]["trainable_parameters"] == runs["model"]["total_parameters"]
    assert runs["lpft"]["head_probe"]["C"] > 0
    for system in ("probe", "kmer_lr"):  # solvers, not trainers
        assert all(key in runs[system] for key in SPENT) and runs[system]["optimizer_steps"] is None
        assert runs[system]["trainable_parameters"] > 0
    assert runs["probe"]["total_parameters"] > runs["probe"]["trainable_parameters"]  # the frozen backbone counted
    spent = result["summary"]["lora"]["spent"]
    assert spent["optimizer_steps"] == 2 and spent["trainable_parameters"] == runs["lora"]["trainable_parameters"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "`epochs:1`" in table and "| epochs | steps | training FLOPs | wall s | trainable / total parameters |" in table
    assert "| lora |" in table and "| lpft |" in table

    before = (tmp_path / "out" / "results.json").read_text()
    protocol(argv)  # all finished: skipped
    assert (tmp_path / "out" / "results.json").read_text() == before
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # another budget into the same table: refused, nothing touched
        protocol([*argv[:-1], "epochs:2"])
    assert stop.value.code == 2 and "under the budget epochs:1, and this run asks for epochs:2" in capsys.readouterr().err
    assert (tmp_path / "out" / "results.json").read_text() == before


def test_a_flops_budget_buys_the_steps_it_pays_for(tmp_path):
    from hnet_dna.protocols.finetune.protocol import run_protocol

    config = finetune_recipe(tmp_path)
    per_step = None
    result = run_protocol(config, ["--trainer.max_epochs", "50"], [0], tmp_path / "probe_step", systems=["cnn"],
                          budget="epochs:1")
    per_step = result["runs"][0]["flops_per_step"]
    budget = 3.5 * per_step  # three steps' worth and a half: three steps, within one and a half epochs
    result = run_protocol(config, ["--trainer.max_epochs", "50"], [0], tmp_path / "out", systems=["cnn"],
                          budget=f"flops:{budget!r}")
    run = result["runs"][0]
    assert run["optimizer_steps"] == math.floor(budget / per_step) == 3 and run["epochs"] == 1.5
    assert run["training_flops"] <= budget and run["flops_per_step"] == per_step
    # the last step, mid-way through the second epoch, was validated (and could be selected)
    logged = next((tmp_path / "out" / "runs" / "cnn" / "seed0").rglob("metrics.csv"))
    with logged.open() as f:
        validated = [row["epoch"] for row in csv.DictReader(f) if row["val/mcc"]]
    assert validated == ["0", "1"]


def test_one_optimizer_step_counts_every_process_and_accumulated_batch():
    """Under DDP each optimizer step takes a batch per process, per accumulated micro-batch."""
    from hnet_dna.data import LabelledDataModule
    from hnet_dna.protocols.finetune.budget import step_flops
    from hnet_dna.protocols.finetune.systems import _built_module

    dm = LabelledDataModule(str(DATA / "labelled" / "uci_splice_60bp.tsv"), batch_size=4)
    dm.setup("fit")
    one = SimpleNamespace(model=None, datamodule=dm, trainer=SimpleNamespace(accumulate_grad_batches=1, world_size=1))
    module, per_batch = _built_module(one, "cnn", 0)
    assert per_batch == step_flops(module, dm) > 0
    six = SimpleNamespace(model=None, datamodule=dm, trainer=SimpleNamespace(accumulate_grad_batches=2, world_size=3))
    assert _built_module(six, "cnn", 0)[1] == 6 * per_batch


def test_lpft_and_lora_are_the_recipe_with_their_options():
    from hnet_dna.protocols.finetune.systems import system_args

    assert system_args("lpft", 2e-3) == ["--model.head_init", "probe", "--model.lr", "0.0002", "--model.head_lr", "0.0002"]
    assert system_args("lora", 2e-3) == ["--model.adapter", "lora", "--model.freeze_backbone", "false",
                                         "--model.freeze_layers", "0", "--model.decay_toward", "zero"]
    assert system_args("model", 2e-3) == system_args("scratch", 2e-3) == system_args("cnn", 2e-3) == []
