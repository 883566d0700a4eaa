"""One run of each system of the fine-tuning protocol (see :mod:`hnet_dna.finetune`): ``model``,
``scratch`` and ``cnn`` fitted with the recipe's trainer and tested on the checkpoint selected on
``val/mcc``; ``probe`` (logistic regression on the frozen backbone's pooled features) and
``kmer_lr`` (logistic regression on k-mer frequencies), fitted once per split."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning.pytorch as pl
import torch

from ...baselines import kmer_logistic_regression, kmer_predict_proba, linear_probe
from ...cli import build_cli
from ...config import ConfigError
from ...model.pooling import pooled_features
from ...tasks import CNNBaselineModule, FinetuneModule
from ...tasks.classifier import classification_metrics

__all__ = ["trained_run", "kmer_run", "probe_features", "probe_run", "check_selection"]


def check_selection(cli, config: str = "the recipe") -> None:
    """The protocol selects each fit's checkpoint on ``val/mcc``, highest first: the recipe's
    ModelCheckpoint must monitor it with ``mode: max`` (``min`` would keep the worst epoch)."""
    callback = cli.trainer.checkpoint_callback
    if callback is None or callback.monitor != "val/mcc":
        raise ConfigError(f"{config}: the protocol needs a ModelCheckpoint with monitor: val/mcc (model selection); "
                          f"found {'none' if callback is None else f'monitor {callback.monitor!r}'}")
    if callback.mode != "max":
        raise ConfigError(f"{config}: the ModelCheckpoint monitors val/mcc with mode {callback.mode!r}, which would "
                          "select the worst checkpoint; set mode: max")
    for stopper in cli.trainer.early_stopping_callbacks:
        if stopper.monitor == "val/mcc" and stopper.mode != "max":
            raise ConfigError(f"{config}: the EarlyStopping on val/mcc has mode {stopper.mode!r}, which would stop "
                              "when the score rises; set mode: max")


def _fit_test(cli, module, system: str, seed: int, fold: int | None) -> dict:
    """fit ``module`` with the CLI's trainer and data, then test the checkpoint selected on val/mcc
    (the recipe's selection was checked before any run: :func:`check_selection`)."""
    cli.datamodule.check_ready("fit", cli.trainer.world_size)
    cli.datamodule.check_ready("test", cli.trainer.world_size)
    callback = cli.trainer.checkpoint_callback
    cli.trainer.fit(module, datamodule=cli.datamodule)
    best = callback.best_model_path
    if not best:
        raise SystemExit(f"hnet_dna.finetune: {system} seed {seed}: no checkpoint was selected on val/mcc (did validation run?); "
                         "nothing to test")
    results = cli.trainer.test(module, datamodule=cli.datamodule, ckpt_path=best, verbose=False)[0]
    return {"system": system, "fold": fold, "seed": seed, "checkpoint": best,
            "val_mcc": float(callback.best_model_score) if callback.best_model_score is not None else None,
            "test": {k: float(v) for k, v in results.items() if k.startswith("test/")}}


def trained_run(system: str, cli_args: list[str], seed: int, fold: int | None, root: Path) -> dict:
    """``model``, ``scratch`` or ``cnn``: one fit and test under ``seed``."""
    cli = build_cli([*cli_args, "--seed_everything", str(seed), "--data.sample_seed", str(seed),
                      "--trainer.default_root_dir", str(root)])
    module = cli.model if system == "model" else _control_module(system, cli.model, seed)
    return _fit_test(cli, module, system, seed, fold)


def _control_module(system: str, module, seed: int):
    """``scratch``: the recipe's module with its backbone's architecture freshly initialised;
    ``cnn``: the CNN baseline. Their initial weights depend on ``seed`` alone."""
    pl.seed_everything(seed, verbose=False)
    if system == "scratch":
        config = module.backbone.config.to_dict()  # the same architecture, random weights
        fields = inspect.signature(FinetuneModule).parameters
        return FinetuneModule(**{k: v for k, v in module.hparams.items() if k in fields and k not in ("backbone", "backbone_config")},
                              backbone=config)
    return CNNBaselineModule()


def _split(datamodule, name: str):
    ds = datamodule.datasets[name]
    return [r.sequence for r in ds.records], ds.labels


def _test_metrics(datamodule, probs) -> dict:
    probs = torch.as_tensor(probs, dtype=torch.float32)
    labels = torch.tensor(datamodule.datasets["test"].labels)
    metrics = classification_metrics(len(datamodule.class_names))
    for name, metric in metrics.items():
        metric.update(probs[:, 1] if probs.shape[1] == 2 and name == "auroc" else probs, labels)
    return {f"test/{k}": float(v) for k, v in metrics.compute().items()}


def kmer_run(datamodule, seed: int, fold: int | None) -> dict:
    fitted = kmer_logistic_regression(_split(datamodule, "train"), _split(datamodule, "val"),
                                      len(datamodule.class_names), seed=seed, strand_symmetric=datamodule.strand_symmetric)
    test = _test_metrics(datamodule, kmer_predict_proba(fitted, _split(datamodule, "test")[0]))
    return {"system": "kmer_lr", "fold": fold, "seed": seed, "checkpoint": None, "val_mcc": fitted["val_mcc"],
            "k": fitted["k"], "C": fitted["C"], "strand_symmetric": fitted["strand_symmetric"], "test": test}


def probe_features(backbone, datamodule, pooling: str) -> dict:
    """Features (N, D) of the frozen backbone for the train, val and test rows, pooled as the
    recipe's head pools them (:func:`~hnet_dna.model.pooling.pooled_features`: the heads' own
    pooling; ``flatten`` lays every position end to end, zero-padded to the longest training
    sequence, as a flatten head is sized), averaged with the reverse complement's where the labels
    are strand-symmetric."""
    splits = ("train", "val", "test")
    longest = max(len(ids) for ids in datamodule.datasets["train"].ids)  # as a flatten head is sized
    return {name: pooled_features(backbone, _split(datamodule, name)[0], pooling, max_length=longest,
                                  rc_average=datamodule.strand_symmetric) for name in splits}


def probe_run(features: dict, datamodule, seed: int, fold: int | None) -> dict:
    labels = {name: datamodule.datasets[name].labels for name in features}
    fitted = linear_probe((features["train"], labels["train"]), (features["val"], labels["val"]), seed=seed)
    test = _test_metrics(datamodule, fitted["model"].predict_proba(features["test"]))
    return {"system": "probe", "fold": fold, "seed": seed, "checkpoint": None, "val_mcc": fitted["val_mcc"],
            "C": fitted["C"], "test": test}

