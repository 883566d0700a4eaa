"""The per-base probe (segmentation's ``probe``): logistic regression on the frozen backbone's
per-base features, every ``stride``-th training base, C chosen per element on every validation
base, tested on every test base; the backbone untouched; in the protocol's table once per split."""

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import matthews_corrcoef
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torchmetrics.classification import BinaryAveragePrecision

from hnet_dna.baselines import PROBE_CS
from hnet_dna.cli import build_cli
from hnet_dna.protocols.finetune.per_base_probe import choose_c, per_base_probe_run

from ..conftest import DATA
from ..tasks.test_segmentation import _recipe

EXON_ONLY = ["--data.annotation", "{exon: " + str(DATA / "annotation" / "exon.saf") + "}",
             "--data.train_windows", "64", "--data.held_out_windows", "1000"]  # every held-out window: exons in both


@torch.no_grad()
def _features(network, dataset):
    items = [dataset[i] for i in range(len(dataset))]
    ids = torch.stack([it["input_ids"] for it in items])
    network.eval()  # batches of 8, as the probe reads them: the same sums on any CPU, hence the same fits
    feats = torch.cat([network.head_inputs(chunk, torch.ones_like(chunk, dtype=torch.bool))
                       for chunk in ids.split(8)]).numpy()  # (N, L, D)
    labels = torch.stack([it["labels"][:, 0] for it in items]).numpy() > 0.5  # (N, L)
    scored = torch.stack([it["scored"] for it in items]).numpy()
    return feats, labels, scored


def test_the_probe_is_a_logistic_regression_on_frozen_features_with_c_chosen_on_validation(tmp_path):
    cli = build_cli(["--config", _recipe(tmp_path), *EXON_ONLY])
    module, dm = cli.model, cli.datamodule
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    run = per_base_probe_run(module, dm, fold=None, seed=0, stride=4)
    assert all(torch.equal(v, module.backbone.state_dict()[k]) for k, v in before.items())  # frozen
    network = module.classifier
    # by hand: the training rows are every 4th scored base, the phase moving one base per window
    feats, labels, scored = _features(network, dm.unaugmented("train"))
    keep = np.zeros_like(scored)
    for w in range(len(keep)):
        keep[w, w % 4::4] = True
    keep &= scored
    x, y = feats[keep], labels[keep]
    assert run["training_bases"] == len(x) and 0 < y.mean() < 1
    fits = [make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(x, y) for C in PROBE_CS]
    val_feats, val_labels, val_scored = _features(network, dm.datasets["val"])
    val_mcc = [matthews_corrcoef(val_labels[val_scored], m.predict(val_feats[val_scored])) for m in fits]
    best = int(np.argmax(val_mcc))
    assert run["C"] == {"exon": PROBE_CS[best]} and run["val_mcc"] == pytest.approx(val_mcc[best], abs=1e-9)
    test_feats, test_labels, test_scored = _features(network, dm.datasets["test"])
    probs = fits[best].predict_proba(test_feats[test_scored])[:, 1]
    assert run["test"]["test/mcc/exon"] == pytest.approx(matthews_corrcoef(test_labels[test_scored], probs >= 0.5), abs=1e-9)
    auprc = BinaryAveragePrecision(thresholds=200)(torch.from_numpy(probs).float(), torch.from_numpy(test_labels[test_scored]).long())
    assert run["test"]["test/auprc/exon"] == pytest.approx(float(auprc), abs=1e-6)
    assert run["trainable_parameters"] == network.head_inputs(torch.zeros(1, 4, dtype=torch.long),
                                                              torch.ones(1, 4, dtype=torch.bool)).shape[-1] + 1


def test_the_protocol_runs_the_per_base_probe_once_per_split(tmp_path):
    from hnet_dna.finetune import main as protocol

    out = tmp_path / "out"
    protocol(["--config", _recipe(tmp_path), "--seeds", "0", "1", "--out", str(out), "--systems", "probe", *EXON_ONLY])
    result = json.loads((out / "results.json").read_text())
    first, second = result["runs"]
    assert first["system"] == second["system"] == "probe" and first["test"] == second["test"]  # deterministic
    assert result["summary"]["probe"]["test/mcc/exon"]["n"] == 1  # counted once, not once per seed
    assert "| probe |" in (out / "results.md").read_text()
    protocol(["--config", _recipe(tmp_path), "--seeds", "0", "1", "--out", str(out), "--systems", "probe", *EXON_ONLY])
    assert json.loads((out / "results.json").read_text())["runs"] == result["runs"]  # a rerun refits nothing


def test_c_is_chosen_per_element_on_validation_mcc():
    def confusion(tn, fp, fn, tp):
        return torch.tensor([[tn, fp], [fn, tp]], dtype=torch.float64)

    nothing, good, better = confusion(90, 0, 10, 0), confusion(85, 5, 5, 5), confusion(88, 2, 3, 7)
    absent = confusion(95, 5, 0, 0)
    table = torch.stack([torch.stack([nothing, good, better, better, good]),  # ties: the first (stronger) C
                         torch.stack([absent, absent, absent, absent, absent])])
    best, selected = choose_c(table)
    assert best == [2, 0]
    assert selected == [pytest.approx(matthews_corrcoef([0] * 88 + [0] * 2 + [1] * 3 + [1] * 7,
                                                        [0] * 88 + [1] * 2 + [0] * 3 + [1] * 7))]
