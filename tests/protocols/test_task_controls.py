"""The protocol on multilabel and regression sets (issue #33): the trained systems selected on
val/auprc or val/pearson, the probe and the k-mer control fitted per output and chosen on
validation, the task's test metrics, winners that know the lower MSE is the better."""

import json

import numpy as np
import pytest
import yaml
from sklearn.linear_model import Ridge
from sklearn.metrics import average_precision_score

from hnet_dna.protocols.finetune.results import summarise, task_metrics, winners
from hnet_dna.protocols.finetune.task_controls import RIDGE_ALPHAS, fit_per_output

from ..conftest import finetune_recipe
from ..tasks.test_objectives import _task_table

MONITOR = {"multilabel": "val/auprc", "regression": "val/pearson"}


def _recipe(tmp_path, task) -> str:
    config = yaml.safe_load(open(finetune_recipe(tmp_path, train=_task_table(tmp_path, task))))
    config["trainer"]["callbacks"][0]["init_args"]["monitor"] = MONITOR[task]
    path = tmp_path / f"{task}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_the_protocol_runs_every_control_on_a_multi_output_set(tmp_path, task, capsys):
    from hnet_dna.finetune import main as protocol

    out = tmp_path / "out"
    protocol(["--config", _recipe(tmp_path, task), "--seeds", "0", "--out", str(out), "--budget", "epochs:1",
              "--systems", "model", "cnn", "probe", "kmer_lr"])
    result = json.loads((out / "results.json").read_text())
    names = result["class_names"]
    wanted = set(task_metrics(task, names))
    for run in result["runs"]:
        assert wanted <= set(run["test"]), run["system"]
        assert run["val_" + MONITOR[task].removeprefix("val/")] is not None and "val_mcc" not in run
    runs = {r["system"]: r for r in result["runs"]}
    assert runs["model"]["epochs"] == 1 and runs["kmer_lr"]["k"] in (3, 4, 5, 6)
    assert len(runs["probe"]["C" if task == "multilabel" else "alpha"]) == len(names)
    if task == "regression":  # GC percent is linear in the 3-mer frequencies: the k-mer ridge gets it
        assert runs["kmer_lr"]["test"]["test/pearson/gc_percent"] > 0.95
    table = (out / "results.md").read_text()
    assert ("| auroc | auprc | best_f1 |" if task == "multilabel" else "| pearson | spearman | mse |") in table
    with pytest.raises(SystemExit) as stop:  # lpft's probe-initialised head is for one class per sequence
        protocol(["--config", _recipe(tmp_path, task), "--seeds", "0", "--out", str(tmp_path / "lpft"),
                  "--systems", "lpft"])
    assert stop.value.code == 2 and "lpft" in capsys.readouterr().err and not (tmp_path / "lpft").exists()


def test_a_control_chooses_per_output_on_validation_by_hand():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20))
    # output 0: a signal in every feature (little shrinkage wins); output 1: one weak feature among noise
    y = np.stack([x @ rng.normal(size=20) + 0.1 * rng.normal(size=300), 0.3 * x[:, 0] + rng.normal(size=300)], axis=1)
    train, val = (x[:200], y[:200]), (x[200:], y[200:])
    fitted = fit_per_output("regression", ["a", "b"], train, val, RIDGE_ALPHAS, standardise=False)
    for k in range(2):
        scores = [np.corrcoef(val[1][:, k], Ridge(alpha=a).fit(train[0], train[1][:, k]).predict(val[0]))[0, 1]
                  for a in RIDGE_ALPHAS]
        assert fitted["values"][k] == RIDGE_ALPHAS[int(np.argmax(scores))]
        assert fitted["val_scores"][k] == pytest.approx(max(scores))
    assert fitted["values"][0] != fitted["values"][1]  # chosen per output, not once for all
    labels = (y > np.median(y, 0)).astype(float)
    fitted = fit_per_output("multilabel", ["a", "b"], (x[:200], labels[:200]), (x[200:], labels[200:]), (0.001, 1.0))
    probs = fitted["models"][1].predict_proba(x[200:])[:, 1]
    assert fitted["val_scores"][1] == pytest.approx(average_precision_score(labels[200:, 1], probs))


def test_the_lower_mse_wins():
    runs = [{"system": s, "seed": 0, "test": {"test/pearson": p, "test/mse": m}}
            for s, p, m in (("model", 0.9, 2.0), ("cnn", 0.8, 1.0))]
    best = winners(summarise(runs, ("test/pearson", "test/mse")))
    assert best["test/pearson"]["best"] == "model" and best["test/mse"]["best"] == "cnn"
    assert best["test/mse"]["margin"] == pytest.approx(1.0)
