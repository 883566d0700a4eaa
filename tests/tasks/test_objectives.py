"""Multilabel and regression tasks (issue #33): metrics against scikit-learn / scipy, the regression
standardisation round trip, and fit / test / predict through the CLI on real sequences."""

import numpy as np
import pytest
import torch
import yaml

from hnet_dna.cli import main
from hnet_dna.tasks.objectives import Objective, TaskMetrics

from ..conftest import DATA, finetune_recipe

BATCHES = ((0, 7), (7, 30), (30, 31), (31, 60))  # uneven batches: states must be summed, not averaged


def test_multilabel_metrics_equal_scikit_learn_per_label_and_their_mean():
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(60, 3, generator=g) < torch.tensor([0.2, 0.5, 0.7])).float()
    probs = torch.sigmoid(torch.randn(60, 3, generator=g) + 1.2 * (2 * labels - 1))
    probs[5:9, 0] = probs[4, 0]  # ties, which a threshold sweep must treat as one point
    metrics = TaskMetrics("multilabel", ["exon", "cpg", "tss"])
    for lo, hi in BATCHES:
        metrics.update(probs[lo:hi], labels[lo:hi])
    got = metrics.compute()
    for k, name in enumerate(["exon", "cpg", "tss"]):
        y, p = labels[:, k].numpy(), probs[:, k].numpy()
        precision, recall, _ = precision_recall_curve(y, p)
        with np.errstate(invalid="ignore", divide="ignore"):
            best_f1 = np.nanmax(2 * precision * recall / (precision + recall))
        assert got[f"auroc/{name}"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
        assert got[f"auprc/{name}"] == pytest.approx(average_precision_score(y, p), abs=1e-6)
        assert got[f"best_f1/{name}"] == pytest.approx(best_f1, abs=1e-6)
    for metric in ("auroc", "auprc", "best_f1"):
        assert got[metric] == pytest.approx(np.mean([got[f"{metric}/{n}"] for n in ("exon", "cpg", "tss")]), abs=1e-9)


@pytest.mark.parametrize("targets", [1, 2])
def test_regression_metrics_equal_scipy_per_target(targets):
    from scipy.stats import pearsonr, spearmanr

    g = torch.Generator().manual_seed(1)
    y = torch.randn(60, targets, generator=g) * 50 + 300
    pred = y + torch.randn(60, targets, generator=g) * 30
    names = ["expression", "activity"][:targets]
    metrics = TaskMetrics("regression", names)
    for lo, hi in BATCHES:
        metrics.update(pred[lo:hi], y[lo:hi])
    got = metrics.compute()
    for k, name in enumerate(names):
        assert got[f"pearson/{name}"] == pytest.approx(pearsonr(y[:, k], pred[:, k])[0], abs=1e-5)
        assert got[f"spearman/{name}"] == pytest.approx(spearmanr(y[:, k], pred[:, k])[0], abs=1e-5)
        assert got[f"mse/{name}"] == pytest.approx(float(((y[:, k] - pred[:, k]) ** 2).mean()), rel=1e-5)


def test_regression_predictions_come_back_in_the_targets_units():
    y = torch.tensor([[120.0, 3.0], [480.0, 9.0], [300.0, 6.0]])
    mean, std = y.mean(0), y.std(0, unbiased=False)
    objective = Objective("regression", 2, target_mean=mean.tolist(), target_std=std.tolist())
    standardised = (y - mean) / std  # what the network is trained to output
    assert torch.allclose(objective.predictions(standardised), y, atol=1e-4)
    assert objective.loss(standardised, y) < 1e-10
    assert objective.loss(y, y) > 1  # the loss is on the standardised scale, not the units
    poisson = Objective("regression", 2, target_mean=mean.tolist(), target_std=std.tolist(), regression_loss="poisson")
    assert torch.allclose(poisson.predictions(y.log()), y, rtol=1e-5)  # log rates, no standardisation


def test_balanced_pos_weight_weighs_rare_positives():
    logits, labels = torch.zeros(4, 1), torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    plain = Objective("multilabel", 1).loss(logits, labels)
    weighted = Objective("multilabel", 1, pos_weight=[3.0]).loss(logits, labels)
    assert weighted == pytest.approx(plain * 6 / 4)  # the one positive counts three times


def _task_table(tmp_path, task: str) -> str:
    """Real promoter / background sequences (the committed fixture) with labels derived from them:
    multilabel (promoter, GC-rich, holds a CpG dinucleotide run) or regression (GC percent, CpG count)."""
    lines = (DATA / "labelled" / "promoter_tss_chr20_300bp.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    seq_i, label_i, split_i = header.index("sequence"), header.index("label"), header.index("split")
    out = ["sequence\tsplit\t" + ("label_promoter\tlabel_gc_rich\tlabel_cpg_run" if task == "multilabel"
                                  else "target_gc_percent\ttarget_cpg")]
    for line in lines[1:]:
        cells = line.split("\t")
        seq = cells[seq_i]
        gc = 100 * (seq.count("G") + seq.count("C")) / len(seq)
        if task == "multilabel":
            values = [cells[label_i], str(int(gc > 50)), str(int("CGCG" in seq))]
        else:
            values = [f"{gc:.3f}", str(seq.count("CG"))]
        out.append("\t".join([seq, cells[split_i], *values]))
    path = tmp_path / f"{task}.tsv"
    path.write_text("\n".join(out) + "\n")
    return str(path)


@pytest.mark.parametrize("task, monitor", [("multilabel", "val/auprc"), ("regression", "val/pearson")])
def test_fit_test_and_predict_through_the_cli(tmp_path, task, monitor):
    table = _task_table(tmp_path, task)
    config = yaml.safe_load(open(finetune_recipe(tmp_path, train=table)))
    config["trainer"]["callbacks"][0]["init_args"]["monitor"] = monitor
    config["trainer"]["max_epochs"] = 2
    recipe = tmp_path / "task.yaml"
    recipe.write_text(yaml.safe_dump(config))
    run = ["--trainer.default_root_dir", str(tmp_path / "run")]
    main(["fit", "--config", str(recipe), *run])
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert hparams["task"] == task and hparams["class_names"] == (
        ["promoter", "gc_rich", "cpg_run"] if task == "multilabel" else ["gc_percent", "cpg"])
    main(["test", "--config", str(recipe), "--ckpt_path", str(ckpt), *run])
    main(["predict", "--config", str(recipe), "--data.predict", table, "--ckpt_path", str(ckpt), *run,
          "--trainer.callbacks+=hnet_dna.tasks.ClassPredictionWriter", f"--trainer.callbacks.folder={tmp_path / 'pred'}"])
    rows = [r.split("\t") for r in (tmp_path / "pred" / "predictions.rank0.tsv").read_text().splitlines()]
    n = len((DATA / "labelled" / "promoter_tss_chr20_300bp.tsv").read_text().splitlines()) - 1
    assert len(rows) == n + 1
    if task == "multilabel":
        assert rows[0] == ["id", "predicted", "p_promoter", "p_gc_rich", "p_cpg_run"]
        probs = np.array([[float(x) for x in r[2:]] for r in rows[1:]])
        assert ((probs >= 0) & (probs <= 1)).all()
        called = [set(filter(None, r[1].split(";"))) for r in rows[1:]]
        assert called == [{n for n, p in zip(["promoter", "gc_rich", "cpg_run"], row) if p >= 0.5} for row in probs]
    else:
        assert rows[0] == ["id", "gc_percent", "cpg"]
        values = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
        from hnet_dna.data import LabelledDataModule
        from hnet_dna.tasks.finetune import load_classifier

        dm = LabelledDataModule(table)
        train = np.array(dm.datasets["train"].labels)
        # the checkpoint carries the training split's statistics; predictions are the network's
        # standardised outputs mapped back with them, in the targets' units
        assert hparams["target_mean"] == pytest.approx(train.mean(0).tolist())
        assert hparams["target_std"] == pytest.approx(train.std(0).tolist())
        module = load_classifier(ckpt)
        batch = LabelledDataModule(table, predict=table).datasets["predict"]
        ids = torch.nn.utils.rnn.pad_sequence([batch[i]["input_ids"] for i in range(4)], batch_first=True)
        with torch.no_grad():
            raw = module.logits(ids, torch.ones_like(ids, dtype=torch.bool)).numpy()
        assert values[:4] == pytest.approx(raw * train.std(0) + train.mean(0), rel=1e-4, abs=1e-3)
        assert not np.allclose(values[:4], raw, atol=1)  # what forgetting to map back would write


def test_a_non_numeric_target_stops_the_cli_before_any_output(tmp_path, capsys):
    table = tmp_path / "bad.tsv"
    table.write_text("sequence\ttarget_signal\nACGTACGTAC\t1.5\nGGCCGGCCAA\tlow\n")
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", finetune_recipe(tmp_path, train=str(table)), "--trainer.default_root_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "bad.tsv, line 3: the target column 'target_signal' holds 'low'" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_recipe_that_selects_on_val_mcc_stops_on_a_regression_before_any_step(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", finetune_recipe(tmp_path, train=_task_table(tmp_path, "regression")),
              "--trainer.default_root_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "ModelCheckpoint monitors val/mcc, which a regression task does not log" in err
    assert "monitor val/pearson" in err and not list((tmp_path / "run").rglob("*.ckpt"))
