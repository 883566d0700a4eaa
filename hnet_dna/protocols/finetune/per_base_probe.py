"""The ``probe`` control of per-base annotation: per element, a logistic regression on the frozen
backbone's per-base features, the features the trained head reads (both strands for a causal
backbone, layer-normalised; :meth:`~hnet_dna.model.per_base.HNetForBaseAnnotation.head_inputs`).

What the probe says: how much of each element the pretrained features hold linearly at each base,
with no weight of the backbone moved. Fitted once per split, like the classification probe:

* training rows: every ``stride``-th scored base of the training windows (phase shifted from window
  to window, so every offset is read), forward strand, no augmentation: 400 windows of 2 kb give
  51,200 rows at the default stride 16 (the features of every base would be 16 x the memory and
  solver time for rows that overlap their neighbours' windows);
* per element, C from ``PROBE_CS`` (standardised features, scikit-learn's LogisticRegression), chosen
  on the element's base-level MCC over every scored validation base (streamed, window by window:
  confusion matrices per C, never the split's features at once); an element absent from validation
  takes the strongest regularisation (the first C: nothing to choose it on);
* tested on every scored test base with the trained systems' metrics
  (:class:`~hnet_dna.tasks.segmentation.BaseLevelMetrics`, threshold 0.5).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from ...baselines import PROBE_CS
from ...config import ConfigError
from ...data.genome import DataError
from ...tasks.metrics import mcc_from_confusion
from ...tasks.segmentation import BaseLevelMetrics

__all__ = ["per_base_probe_run", "choose_c", "PROBE_STRIDE"]

PROBE_STRIDE = 16


@torch.no_grad()
def _batches(network, dataset, batch_size: int = 8):
    """(features (B, L, D) float32 on the CPU, labels (B, L, E) bool, scored (B, L) bool) per batch
    of ``dataset``, read by the frozen ``network`` where its parameters are."""
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            ids, mask = batch["input_ids"].to(device), batch["mask"].to(device)
            features = network.head_inputs(ids, mask).float().cpu()
            yield features, batch["labels"] > 0.5, batch["scored"] & batch["mask"]
    finally:
        network.train(was_training)


def _training_rows(network, dataset, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``stride``-th scored base of each window, the phase moving by one per window."""
    xs, ys, window = [], [], 0
    for features, labels, scored in _batches(network, dataset):
        for b in range(len(features)):
            keep = torch.zeros_like(scored[b])
            keep[(window % stride)::stride] = True
            keep &= scored[b]
            xs.append(features[b][keep].numpy())
            ys.append(labels[b][keep].numpy())
            window += 1
    return np.concatenate(xs), np.concatenate(ys)


def _fit(x: np.ndarray, y: np.ndarray, seed: int, names: list[str]) -> list[list]:
    """Per element, one standardised logistic regression per C in ``PROBE_CS``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fitted = []
    for e, name in enumerate(names):
        if y[:, e].all() or not y[:, e].any():
            raise DataError(f"the per-base probe's training bases are all {'inside' if y[:, e].any() else 'outside'} "
                            f"{name!r}: nothing to fit; give more --data.train_windows or check the annotation")
        fitted.append([make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
                       .fit(x, y[:, e]) for C in PROBE_CS])
    return fitted


def _probabilities(models: list, features: torch.Tensor) -> torch.Tensor:
    """(B, L, D) features -> (B, L, E) probabilities of the chosen model per element."""
    flat = features.reshape(-1, features.shape[-1]).numpy()
    probs = np.stack([m.predict_proba(flat)[:, 1] for m in models], axis=-1)
    return torch.from_numpy(probs).float().reshape(*features.shape[:2], len(models))


def choose_c(confusion: torch.Tensor) -> tuple[list[int], list[float]]:
    """confusion: (E, C, 2, 2) validation confusion matrices per element and C (rows: truth) ->
    per element the index of the C with the highest MCC (the first, the strongest regularisation,
    of ties; 0 for an element with no validation base inside it) and the chosen MCCs of the
    elements present (what the run's ``val_mcc`` averages)."""
    best, selected = [], []
    for per_c in confusion:
        if per_c[0, 1].sum() == 0:  # no validation base inside the element: nothing to choose on
            best.append(0)
            continue
        mcc = torch.stack([mcc_from_confusion(m) for m in per_c])
        best.append(int(torch.nonzero(mcc == mcc.max())[0]))
        selected.append(float(mcc.max()))
    return best, selected


def per_base_probe_run(module, datamodule, fold: int | None, seed: int, stride: int = PROBE_STRIDE) -> dict:
    """Fit, select and test the per-base probe on ``module``'s frozen backbone (a
    :class:`~hnet_dna.tasks.SegmentationModule` with an H-Net network); returns the protocol's run
    record (``seed`` is recorded; the fit is the same for every seed)."""
    start = time.perf_counter()
    if module.hparams.network != "hnet":
        raise ConfigError("--systems probe reads a pretrained backbone's features: the recipe's network is "
                          f"{module.hparams.network!r}; give --model.network hnet")
    module.attach_data(datamodule)
    network, names = module.classifier, list(datamodule.class_names)
    x, y = _training_rows(network, datamodule.unaugmented("train"), stride)
    candidates = _fit(x, y, seed=0, names=names)
    # choose C per element on every validation base: a confusion matrix per (element, C)
    confusion = torch.zeros(len(names), len(PROBE_CS), 2, 2, dtype=torch.float64)
    for features, labels, scored in _batches(network, datamodule.datasets["val"]):
        flat = features[scored].numpy()  # (N, D)
        truth = labels[scored].long()  # (N, E)
        for e, models in enumerate(candidates):
            for c, model in enumerate(models):
                called = torch.from_numpy(model.predict(flat)).long()
                confusion[e, c] += torch.bincount(truth[:, e] * 2 + called, minlength=4).reshape(2, 2).double()
    best, selected = choose_c(confusion)
    chosen = [candidates[e][c] for e, c in enumerate(best)]
    metrics = BaseLevelMetrics(names, module.hparams.edge_tolerance)
    for features, labels, scored in _batches(network, datamodule.datasets["test"]):
        metrics.update(_probabilities(chosen, features), labels, scored)
    test = {f"test/{k}": v for k, v in metrics.compute().items()}
    coefficients = sum(int(m[-1].coef_.size + m[-1].intercept_.size) for m in chosen)
    backbone = sum(p.numel() for p in module.backbone.parameters())
    return {"system": "probe", "fold": fold, "seed": seed, "checkpoint": None,
            "val_mcc": sum(selected) / len(selected) if selected else float("nan"),
            "C": {name: PROBE_CS[c] for name, c in zip(names, best)}, "training_bases": int(len(x)), "stride": stride,
            "epochs": None, "optimizer_steps": None, "training_flops": None,
            "wall_seconds": round(time.perf_counter() - start, 1),
            "trainable_parameters": coefficients, "total_parameters": coefficients + backbone, "test": test}
