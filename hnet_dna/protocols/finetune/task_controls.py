"""The protocol's closed-form controls for multilabel and regression sets (issue #33), beside the
trained systems, with the same test metrics (:class:`~hnet_dna.tasks.objectives.TaskMetrics`):

* ``probe``: per output, on the frozen backbone's pooled features (standardised): a logistic
  regression per label (C chosen on the label's validation average precision), or a ridge
  regression per target (alpha chosen on the target's validation Pearson r), fitted on the targets
  in their own units;
* ``kmer_lr``: the same per output on k-mer frequencies (percent), k chosen on the mean of the
  outputs' validation scores: logistic regression per label, ridge regression per target (the
  k-mer ridge baseline of expression and MPRA work).

Each choice is made on validation only, per output (first of ties: the strongest regularisation);
an output whose validation split has one value only has no score and takes that first value.
Deterministic given the split: fitted once per split, like the multiclass controls.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ...baselines import KMER_CS, KMER_SIZES, PROBE_CS, _full_vocabulary, _kmer_features
from ...data.genome import DataError
from ...tasks.objectives import SELECTION_METRIC, TaskMetrics
from .systems import _split as rows_of  # the sequences and labels of a split, as the multiclass controls read them

__all__ = ["task_probe_run", "task_kmer_run", "RIDGE_ALPHAS"]

RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def _split(datamodule, name: str):
    sequences, labels = rows_of(datamodule, name)
    return sequences, np.asarray(labels, dtype=np.float64)  # (N,), (N, K)


def _score(task: str, truth: np.ndarray, predicted: np.ndarray) -> float:
    """Validation score of one output (nan where it cannot be had: one value in the split)."""
    from sklearn.metrics import average_precision_score

    if len(np.unique(truth)) < 2:
        return float("nan")
    if task == "multilabel":
        return float(average_precision_score(truth, predicted))
    if np.std(predicted) == 0:
        return float("nan")
    return float(np.corrcoef(truth, predicted)[0, 1])


def _model(task: str, value: float, seed: int, standardise: bool):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(C=value, max_iter=2000, random_state=seed) if task == "multilabel" else Ridge(alpha=value)
    return make_pipeline(StandardScaler(), model) if standardise else model


def _predict(task: str, model, x) -> np.ndarray:
    return model.predict_proba(x)[:, 1] if task == "multilabel" else model.predict(x)


def fit_per_output(task: str, names: list[str], train, val, grid, seed: int = 0, standardise: bool = True) -> dict:
    """Per output, the model of ``grid`` (C or alpha) with the best validation score.
    train, val: (features (N, D), targets (N, K)). Returns ``{"models", "values", "val_scores"}``."""
    models, values, scores = [], [], []
    for k, name in enumerate(names):
        if task == "multilabel" and len(np.unique(train[1][:, k])) < 2:
            raise DataError(f"the training split's label {name!r} has one value only: a linear control cannot be fitted "
                            "on it; drop the label or give a training split holding both values")
        best = None
        for value in grid:
            model = _model(task, value, seed, standardise).fit(train[0], train[1][:, k])
            score = _score(task, val[1][:, k], _predict(task, model, val[0]))
            if best is None or (score == score and not best[2] >= score):  # first of ties; nan never wins
                best = (model, value, score)
        models.append(best[0])
        values.append(best[1])
        scores.append(best[2])
    return {"models": models, "values": values, "val_scores": scores}


def _predictions(task: str, fitted: dict, x) -> np.ndarray:
    return np.stack([_predict(task, m, x) for m in fitted["models"]], axis=1)  # (N, K)


def _test_metrics(task: str, names: list[str], predictions: np.ndarray, labels: np.ndarray) -> dict:
    metrics = TaskMetrics(task, names)
    metrics.update(torch.as_tensor(predictions, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.float32))
    return {f"test/{k}": v for k, v in metrics.compute().items()}


def _record(task: str, system: str, fitted: dict, seed: int, fold, seconds: float, test: dict,
            backbone_parameters: int = 0) -> dict:
    """The run record of a control: its validation score under the task's selection metric's name,
    the chosen values, what it spent (coefficients as trainable parameters; no steps or FLOPs)."""
    scores = [s for s in fitted["val_scores"] if s == s]
    estimators = [m[-1] if hasattr(m, "steps") else m for m in fitted["models"]]  # a pipeline's last step
    coefficients = sum(int(np.size(e.coef_) + np.size(e.intercept_)) for e in estimators)
    return {"system": system, "fold": fold, "seed": seed, "checkpoint": None,
            f"val_{SELECTION_METRIC[task]}": sum(scores) / len(scores) if scores else None,
            ("C" if task == "multilabel" else "alpha"): fitted["values"],
            "epochs": None, "optimizer_steps": None, "training_flops": None, "wall_seconds": round(seconds, 1),
            "trainable_parameters": coefficients, "total_parameters": coefficients + backbone_parameters, "test": test}


def task_probe_run(features: dict, datamodule, seed: int, fold, backbone_parameters: int = 0,
                   feature_seconds: float = 0.0) -> dict:
    """``probe`` on the frozen backbone's pooled features (:func:`~.systems.probe_features`)."""
    start = time.perf_counter()
    task, names = datamodule.task, list(datamodule.class_names)
    labels = {s: _split(datamodule, s)[1] for s in ("train", "val", "test")}
    grid = PROBE_CS if task == "multilabel" else RIDGE_ALPHAS
    fitted = fit_per_output(task, names, (features["train"], labels["train"]), (features["val"], labels["val"]), grid,
                            seed=0)
    test = _test_metrics(task, names, _predictions(task, fitted, features["test"]), labels["test"])
    return _record(task, "probe", fitted, seed, fold, time.perf_counter() - start + feature_seconds, test,
                   backbone_parameters)


def task_kmer_run(datamodule, seed: int, fold) -> dict:
    """``kmer_lr``: k-mer frequencies, logistic (multilabel) or ridge (regression) per output."""
    start = time.perf_counter()
    task, names, symmetric = datamodule.task, list(datamodule.class_names), datamodule.strand_symmetric
    (train_seqs, y_train), (val_seqs, y_val), (test_seqs, y_test) = (_split(datamodule, s) for s in ("train", "val", "test"))
    grid = KMER_CS if task == "multilabel" else RIDGE_ALPHAS
    best = None
    for k in KMER_SIZES:
        x_train, vocab = _kmer_features(train_seqs, k, strand_symmetric=symmetric)
        x_val, _ = _kmer_features(val_seqs, k, vocabulary=_full_vocabulary(vocab), strand_symmetric=symmetric)
        fitted = fit_per_output(task, names, (x_train * 100, y_train), (x_val * 100, y_val), grid, standardise=False)
        scores = [s for s in fitted["val_scores"] if s == s]
        mean = sum(scores) / len(scores) if scores else float("-inf")
        if best is None or mean > best[0]:
            best = (mean, k, vocab, fitted)
    _, k, vocab, fitted = best
    x_test, _ = _kmer_features(test_seqs, k, vocabulary=_full_vocabulary(vocab), strand_symmetric=symmetric)
    test = _test_metrics(task, names, _predictions(task, fitted, x_test * 100), y_test)
    return {**_record(task, "kmer_lr", fitted, seed, fold, time.perf_counter() - start, test), "k": k,
            "strand_symmetric": symmetric}
