"""The fine-tuning protocol: every control on the same rows, seeds and folds; winners; resume and reruns."""

import json
import os

import pytest
import torch

from hnet_dna import HNetConfig, HNetForCausalLM

from ..conftest import DATA, finetune_recipe, make_model

LABELLED = DATA / "labelled"


def test_protocol_runs_seeds_and_the_kmer_baseline_and_resumes(tmp_path, capsys):
    from hnet_dna.finetune import main as protocol

    config = finetune_recipe(tmp_path)
    out = tmp_path / "results"
    protocol(["--config", config, "--seeds", "0", "1", "--out", str(out), "--trainer.max_epochs", "2", "--systems", "model", "kmer_lr"])
    result = json.loads((out / "results.json").read_text())
    assert result["seeds"] == [0, 1] and result["class_names"] == ["0", "1"]
    assert result["split_sizes"] == {"train": 16, "val": 8, "test": 8}
    assert sorted((r["system"], r["seed"]) for r in result["runs"]) == [("kmer_lr", 0), ("kmer_lr", 1), ("model", 0), ("model", 1)]
    summary = result["summary"]["model"]["test/mcc"]
    values = [r["test"]["test/mcc"] for r in result["runs"] if r["system"] == "model"]
    assert summary["mean"] == pytest.approx(sum(values) / 2)
    assert summary["sd"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    kmer = [r["test"] for r in result["runs"] if r["system"] == "kmer_lr"]
    assert kmer[0] == kmer[1]  # deterministic given the split: one fit, recorded for each seed, counted once
    assert result["summary"]["kmer_lr"]["test/mcc"] == {"mean": kmer[0]["test/mcc"], "sd": None, "n": 1}
    model_runs = [r for r in result["runs"] if r["system"] == "model"]
    assert all(os.path.isfile(r["checkpoint"]) and r["val_mcc"] is not None for r in model_runs)
    assert "| model |" in (out / "results.md").read_text() and "| kmer_lr |" in capsys.readouterr().out
    before = (out / "results.json").read_text()
    protocol(["--config", config, "--seeds", "0", "1", "--out", str(out), "--trainer.max_epochs", "2",
              "--systems", "model", "kmer_lr"])  # all done: skipped
    assert (out / "results.json").read_text() == before
    with pytest.raises(SystemExit, match="holds results of another config"):
        protocol(["--config", config, "--seeds", "2", "--out", str(out), "--trainer.max_epochs", "3"])
    with pytest.raises(SystemExit) as stop:  # bad input: one message, nothing written
        protocol(["--config", config, "--data.train", str(tmp_path / "missing.tsv"), "--out", str(tmp_path / "none")])
    assert stop.value.code == 2 and "missing.tsv: no such file" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


# ------------------------------------------------------------------ issue #17: the honest protocol
def _pretrained_tiny(tmp_path):
    torch.manual_seed(11)
    model = HNetForCausalLM(HNetConfig.from_preset("tiny-hnet", d_model=[32, 48],
                                                   attn_cfg={"num_heads": [2, 2], "rotary_emb_dim": [8, 12], "window_size": [63, -1]}))
    with torch.no_grad():  # as training leaves them: no weight at its initial value (identity, zeros)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "pretrained")
    return tmp_path / "pretrained", model


def test_the_scratch_control_starts_from_other_weights_of_the_same_architecture(tmp_path):
    from hnet_dna.cli import build_cli
    from hnet_dna.protocols.finetune.systems import _control_module

    folder, pretrained = _pretrained_tiny(tmp_path)
    cli = build_cli(["--config", finetune_recipe(tmp_path), "--model.backbone", str(folder)])
    assert all(torch.equal(v, pretrained.state_dict()[k]) for k, v in cli.model.backbone.state_dict().items())
    scratch = _control_module("scratch", cli.model, seed=0)
    fresh, pre = scratch.backbone.state_dict(), pretrained.state_dict()
    assert fresh.keys() == pre.keys() and all(fresh[k].shape == pre[k].shape for k in pre)
    matrices = [k for k in pre if pre[k].dim() >= 2]
    assert not any(torch.equal(fresh[k], pre[k]) for k in matrices)
    recipe_fields = {k: v for k, v in cli.model.hparams.items() if k != "backbone" and not k.startswith("_")}
    assert {k: v for k, v in scratch.hparams.items() if k != "backbone"} == recipe_fields  # the same recipe
    again = _control_module("scratch", cli.model, seed=0).backbone.state_dict()
    assert all(torch.equal(again[k], fresh[k]) for k in fresh)  # the control's weights depend on its seed alone


def test_protocol_runs_every_control_on_the_same_rows_over_folds(tmp_path, capsys):
    from sklearn.metrics import matthews_corrcoef

    from hnet_dna.data import LabelledDataModule
    from hnet_dna.finetune import main as protocol
    from hnet_dna.tasks.classifier import CNNBaselineModule

    folder, _ = _pretrained_tiny(tmp_path)
    config = finetune_recipe(tmp_path, train=str(LABELLED / "uci_splice_60bp.tsv"), val_fraction=0.25)
    out = tmp_path / "results"
    protocol(["--config", config, "--model.backbone", str(folder), "--folds", "2", "--seeds", "0", "--out", str(out),
              "--trainer.max_epochs", "1", "--systems", "model", "scratch", "cnn", "probe", "kmer_lr"])  # lpft, lora: test_finetune_budget
    result = json.loads((out / "results.json").read_text())
    assert list(result["summary"]) == ["model", "scratch", "cnn", "probe", "kmer_lr"]
    assert sorted((r["system"], r["fold"]) for r in result["runs"]) == sorted(
        (s, f) for s in ("model", "scratch", "cnn", "probe", "kmer_lr") for f in (0, 1))
    assert all(result["summary"][s]["test/mcc"]["n"] == 2 for s in result["summary"])  # over folds x seeds
    assert set(result["winners"]) == {"test/mcc", "test/accuracy", "test/f1_macro", "test/auroc"}
    assert "wins" in (out / "results.md").read_text() or "tie" in (out / "results.md").read_text()
    # the CNN was scored on exactly the fold's test rows: its checkpoint, rescored here, gives the reported MCC
    for run in (r for r in result["runs"] if r["system"] == "cnn"):
        dm = LabelledDataModule(str(LABELLED / "uci_splice_60bp.tsv"), val_fraction=0.25, batch_size=8, folds=2, fold=run["fold"])
        cnn = CNNBaselineModule.load_from_checkpoint(run["checkpoint"]).eval()
        loader = dm.test_dataloader()
        with torch.no_grad():
            pred = torch.cat([cnn(b).logits.argmax(-1) for b in loader])
            labels = torch.cat([b["labels"] for b in loader])
        assert len(labels) == result["split_sizes"][f"fold{run['fold']}"]["test"]
        assert matthews_corrcoef(labels, pred) == pytest.approx(run["test"]["test/mcc"], abs=1e-6)
    with pytest.raises(SystemExit, match="scratch is the random-initialisation control"):
        protocol(["--config", config, "--systems", "scratch", "--out", str(tmp_path / "none")])


def test_winners_are_named_with_their_margin_in_sd_units():
    from hnet_dna.protocols.finetune import METRICS, winners

    def stats(mean, sd):
        return {m: {"mean": mean, "sd": sd, "n": 3} for m in METRICS}

    got = winners({"model": stats(0.70, 0.02), "scratch": stats(0.60, 0.05), "cnn": stats(0.65, 0.01)})
    assert got["test/mcc"]["best"] == "model" and got["test/mcc"]["runner_up"] == "cnn"
    assert got["test/mcc"]["margin"] == pytest.approx(0.05) and got["test/mcc"]["margin_sd"] == pytest.approx(2.5)  # the larger sd
    deterministic = winners({"model": stats(0.70, 0.02), "kmer_lr": stats(0.65, 0.0)})["test/mcc"]
    assert deterministic["margin_sd"] == pytest.approx(2.5)  # a deterministic runner-up has no spread of its own
    assert winners({"probe": stats(0.6, None), "kmer_lr": stats(0.5, 0.0)})["test/mcc"]["margin_sd"] is None


def test_a_rerun_after_the_backbone_changed_redoes_only_the_runs_that_rest_on_it(tmp_path, capsys):
    from hnet_dna.finetune import main as protocol

    small = {"d_model": [32, 48], "attn_cfg": {"num_heads": [2, 2], "rotary_emb_dim": [8, 12], "window_size": [63, -1]}}
    make_model("tiny-hnet", dtype=torch.float32, seed=1, **small).save_pretrained(tmp_path / "backbone")
    argv = ["--config", finetune_recipe(tmp_path), "--seeds", "0", "--out", str(tmp_path / "out"), "--trainer.max_epochs", "1",
            "--model.backbone", str(tmp_path / "backbone"), "--systems", "model", "probe", "kmer_lr"]
    protocol(argv)
    first = {r["system"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["runs"]}
    make_model("tiny-hnet", dtype=torch.float32, seed=2, **small).save_pretrained(tmp_path / "backbone")  # retrained
    protocol(argv)
    assert "redoing model, probe" in capsys.readouterr().err
    again = {r["system"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["runs"]}
    assert again["kmer_lr"] == first["kmer_lr"]  # rests on the data alone: kept
    assert again["model"]["val_mcc"] is not None and os.path.isfile(again["model"]["checkpoint"])
    assert again["probe"] != first["probe"] or again["model"]["test"] != first["model"]["test"]


@pytest.mark.parametrize("pooling", ["last", "flatten"])
def test_the_probe_reads_the_features_the_recipes_head_pools(pooling):
    """The probe pools with the heads' own code (``last`` was once probed with ``mean``)."""
    from hnet_dna.data import LabelledDataModule
    from hnet_dna.model.pooling import pool_features
    from hnet_dna.protocols.finetune.systems import probe_features

    dm = LabelledDataModule(str(LABELLED / "uci_splice_60bp.tsv"), val_fraction=0.25, test_fraction=0.25)
    model = make_model("tiny-hnet", seed=3, dtype=torch.float32).eval()
    features = probe_features(model, dm, pooling)
    longest = max(len(ids) for ids in dm.datasets["train"].ids)  # a flatten head is sized on training data
    for row in range(3):
        ids = dm.datasets["test"].ids[row][None]
        alone = pool_features(model.features(ids, torch.ones_like(ids, dtype=torch.bool)), pooling, max_length=longest)
        torch.testing.assert_close(torch.from_numpy(features["test"][row]), alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("callback, says", [({"monitor": "val/mcc", "mode": "min"}, "mode 'min'"),
                                            ({"monitor": "val/loss", "mode": "min"}, "monitor 'val/loss'"),
                                            ("early stopping", "EarlyStopping on val/mcc has mode 'min'")])
def test_a_recipe_that_would_select_the_wrong_checkpoint_stops_before_any_run(tmp_path, capsys, callback, says):
    import yaml

    from hnet_dna.finetune import main as protocol

    path = finetune_recipe(tmp_path)
    config = yaml.safe_load(open(path))
    if callback == "early stopping":
        config["trainer"]["callbacks"].append({"class_path": "lightning.pytorch.callbacks.EarlyStopping",
                                               "init_args": {"monitor": "val/mcc", "mode": "min", "patience": 2}})
    else:
        config["trainer"]["callbacks"][0]["init_args"].update(callback)
    open(path, "w").write(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as stop:
        protocol(["--config", path, "--seeds", "0", "--out", str(tmp_path / "out"), "--systems", "cnn"])
    assert stop.value.code == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_rerun_redoes_controls_fitted_before_they_followed_the_recipe(tmp_path, capsys):
    """A results.json from before kmer_lr followed the strand policy (no record of it) is not copied
    to new seeds: the fit is redone under the recipe's policy."""
    from hnet_dna.finetune import main as protocol

    out = tmp_path / "out"
    argv = ["--config", finetune_recipe(tmp_path), "--out", str(out), "--systems", "kmer_lr"]
    protocol([*argv, "--seeds", "0"])
    results = json.loads((out / "results.json").read_text())
    for run in results["runs"]:
        del run["strand_symmetric"]  # as written before the fix
    (out / "results.json").write_text(json.dumps(results))
    capsys.readouterr()
    protocol([*argv, "--seeds", "0", "1"])
    assert "kmer_lr fits from before they followed" in capsys.readouterr().err
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and all(r["strand_symmetric"] is False for r in runs)


def test_the_protocol_takes_a_masked_lm_backbone_and_its_scratch_control_is_bidirectional(tmp_path):
    """Issue #31's table: every H-Net system on a masked LM's folder; scratch is the same (bidirectional)
    architecture from other weights."""
    from hnet_dna import HNetForMaskedLM
    from hnet_dna.finetune import main as protocol
    from hnet_dna.protocols.finetune.systems import _control_module

    small = {"d_model": [32, 48], "attn_cfg": {"num_heads": [2, 2], "rotary_emb_dim": [8, 12], "window_size": [63, -1]}}
    make_model("tiny-bihnet", dtype=torch.float32, seed=1, **small).save_pretrained(tmp_path / "mlm")
    out = tmp_path / "out"
    protocol(["--config", finetune_recipe(tmp_path), "--seeds", "0", "--out", str(out), "--trainer.max_epochs", "1",
              "--model.backbone", str(tmp_path / "mlm"), "--systems", "model", "scratch", "lpft", "lora", "probe"])
    runs = {r["system"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert set(runs) == {"model", "scratch", "lpft", "lora", "probe"}
    assert all(r["test"]["test/mcc"] is not None for r in runs.values())
    assert runs["lora"]["trainable_parameters"] < runs["model"]["trainable_parameters"]
    from hnet_dna.cli import build_cli

    cli = build_cli(["--config", finetune_recipe(tmp_path), "--model.backbone", str(tmp_path / "mlm")])
    scratch = _control_module("scratch", cli.model, seed=0)
    assert isinstance(scratch.backbone, HNetForMaskedLM) and scratch.backbone.config.bidirectional


def test_a_multilabel_recipe_selecting_on_val_mcc_is_refused_before_any_run(tmp_path, capsys):
    from hnet_dna.finetune import main as protocol

    lines = (LABELLED / "promoter_tss_chr20_300bp.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    table = tmp_path / "multilabel.tsv"
    table.write_text("sequence\tlabel_promoter\tlabel_gc_rich\n" + "".join(
        f"{c[header.index('sequence')]}\t{c[header.index('label')]}\t{int(c[header.index('sequence')].count('G') > 75)}\n"
        for c in (line.split("\t") for line in lines[1:60])))
    with pytest.raises(SystemExit) as stop:
        protocol(["--config", finetune_recipe(tmp_path, train=str(table)), "--seeds", "0", "--out", str(tmp_path / "out")])
    assert stop.value.code == 2 and "needs a ModelCheckpoint with monitor: val/auprc" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
