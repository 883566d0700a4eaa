"""One run of each system of the fine-tuning protocol (see :mod:`hnet_dna.finetune`): ``model``,
``lpft``, ``lora``, ``scratch`` and ``cnn`` fitted with the recipe's trainer under the table's budget
and tested on the checkpoint selected on ``val/mcc`` (a multilabel set's ``val/auprc``, a
regression set's ``val/pearson``); ``probe`` (logistic regression on the frozen
backbone's pooled features) and ``kmer_lr`` (logistic regression on k-mer frequencies), fitted once
per split. Every run records what it spent: ``epochs``, ``optimizer_steps``, ``training_flops``,
``wall_seconds``, ``trainable_parameters`` and ``total_parameters``."""

from __future__ import annotations

import inspect
import math
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from ...baselines import kmer_logistic_regression, kmer_predict_proba, linear_probe
from ...cli import build_cli
from ...config import ConfigError
from ...model.pooling import pooled_features
from ...tasks import CNNBaselineModule, SegmentationModule
from ...tasks.classifier import classification_metrics
from .budget import Budget, StopAtStep, count_parameters, step_flops

__all__ = ["trained_run", "kmer_run", "probe_features", "probe_run", "check_selection", "system_args", "TRAINED",
           "LPFT_LR_SCALE"]

TRAINED = ("model", "lpft", "lora", "scratch", "cnn")  # fitted by the trainer, under the budget

LPFT_LR_SCALE = 0.1  # lpft: the whole model at a tenth of the recipe's backbone rate, the head at the same rate


def system_args(system: str, recipe_lr: float) -> list[str]:
    """The overrides that make the recipe's module into ``system``: ``lpft`` (LP-FT, Kumar et al.
    2022): the head starts from a linear probe on the frozen features, then everything trains at
    ``LPFT_LR_SCALE`` times the recipe's backbone rate, the head at that rate too (a probe-fitted
    head at ten times it would tear the features apart, what LP-FT avoids); ``lora``: low-rank
    adapters (peft) at the recipe's rate, the backbone frozen (the recipe's freeze_backbone,
    freeze_layers and decay_toward pretrained, which adapters make moot, are unset)."""
    if system == "lpft":
        lr = f"{recipe_lr * LPFT_LR_SCALE:.6g}"
        return ["--model.head_init", "probe", "--model.lr", lr, "--model.head_lr", lr]
    if system == "lora":  # the adapters keep the backbone where it was: the recipe's freezing and anchoring go
        return ["--model.adapter", "lora", "--model.freeze_backbone", "false", "--model.freeze_layers", "0",
                "--model.decay_toward", "zero"]
    return []


def check_selection(cli, config: str = "the recipe", monitor: str = "val/mcc") -> None:
    """The protocol selects each fit's checkpoint on ``monitor`` (``val/mcc``; a multilabel set's
    ``val/auprc``, a regression set's ``val/pearson``), highest first: the recipe's ModelCheckpoint
    must monitor it with ``mode: max`` (``min`` would keep the worst epoch)."""
    callback = cli.trainer.checkpoint_callback
    if callback is None or callback.monitor != monitor:
        raise ConfigError(f"{config}: the protocol needs a ModelCheckpoint with monitor: {monitor} (model selection); "
                          f"found {'none' if callback is None else f'monitor {callback.monitor!r}'}")
    if callback.mode != "max":
        raise ConfigError(f"{config}: the ModelCheckpoint monitors {monitor} with mode {callback.mode!r}, which would "
                          "select the worst checkpoint; set mode: max")
    for stopper in cli.trainer.early_stopping_callbacks:
        if stopper.monitor == monitor and stopper.mode != "max":
            raise ConfigError(f"{config}: the EarlyStopping on {monitor} has mode {stopper.mode!r}, which would stop "
                              "when the score rises; set mode: max")


def _fit_test(cli, module, system: str, seed: int, fold: int | None, flops_per_step: float) -> dict:
    """fit ``module`` with the CLI's trainer and data, then test the checkpoint selected on the
    recipe's monitor (checked before any run: :func:`check_selection`)."""
    cli.datamodule.check_ready("fit", cli.trainer.world_size)
    cli.datamodule.check_ready("test", cli.trainer.world_size)
    trainer, callback = cli.trainer, cli.trainer.checkpoint_callback
    parameters = count_parameters(module.classifier)  # adapters included, counted before fit
    start = time.perf_counter()
    trainer.fit(module, datamodule=cli.datamodule)
    wall = time.perf_counter() - start
    best = callback.best_model_path
    if not best:
        raise SystemExit(f"hnet_dna.finetune: {system} seed {seed}: no checkpoint was selected on {callback.monitor} (did validation run?); "
                         "nothing to test")
    steps = int(trainer.global_step)
    per_epoch = math.ceil(trainer.num_training_batches / max(1, trainer.accumulate_grad_batches))  # optimizer steps per epoch
    results = trainer.test(module, datamodule=cli.datamodule, ckpt_path=best, verbose=False)[0]
    selected_on = "val_" + callback.monitor.removeprefix("val/")  # val_mcc; val_auprc, val_pearson
    run = {"system": system, "fold": fold, "seed": seed, "checkpoint": best,
           selected_on: float(callback.best_model_score) if callback.best_model_score is not None else None,
           "epochs": round(steps / per_epoch, 3) if per_epoch else None, "optimizer_steps": steps,
           "training_flops": steps * flops_per_step, "flops_per_step": flops_per_step,
           "wall_seconds": round(wall, 1), **parameters,
           "test": {k: float(v) for k, v in results.items() if k.startswith("test/")}}
    if getattr(module, "head_probe", None) is not None:
        run["head_probe"] = module.head_probe  # lpft: the probe the head started from (C, validation MCC)
    return run


def trained_run(system: str, cli_args: list[str], seed: int, fold: int | None, root: Path,
                budget: Budget | None = None) -> dict:
    """One of :data:`TRAINED`: one fit and test under ``seed`` and ``budget`` (None: the recipe's
    trainer caps)."""
    run_args = [*cli_args, "--seed_everything", str(seed), "--data.sample_seed", str(seed),
                "--trainer.default_root_dir", str(root)]
    timed = budget is not None and budget.kind != "flops"
    cli = build_cli([*run_args, *(budget.trainer_args() if timed else [])])
    module, flops_per_step = _built_module(cli, system, seed)
    if budget is not None and budget.kind == "flops":  # the step count the FLOPs buy
        cli = build_cli([*run_args, *budget.trainer_args(flops_per_step)])
        module, flops_per_step = _built_module(cli, system, seed)
        cli.trainer.callbacks.append(StopAtStep(budget.steps(flops_per_step)))
    return _fit_test(cli, module, system, seed, fold, flops_per_step)


def _built_module(cli, system: str, seed: int):
    """The system's module with its head built from the data, and the FLOPs of one optimizer step."""
    module = cli.model if system in ("model", "lpft", "lora") else _control_module(system, cli.model, seed)
    module.attach_data(cli.datamodule)
    # one optimizer step: a batch per process, per accumulated micro-batch
    batches = max(1, cli.trainer.accumulate_grad_batches) * max(1, cli.trainer.world_size)
    return module, step_flops(module, cli.datamodule) * batches


def _control_module(system: str, module, seed: int):
    """``scratch``: the recipe's module with its backbone's architecture freshly initialised;
    ``cnn``: the CNN baseline. Their initial weights depend on ``seed`` alone."""
    pl.seed_everything(seed, verbose=False)
    if system == "scratch":
        config = module.backbone.config.to_dict()  # the same architecture, random weights
        fields = inspect.signature(type(module)).parameters
        return type(module)(**{k: v for k, v in module.hparams.items() if k in fields and k not in ("backbone", "backbone_config")},
                            backbone=config)
    if getattr(module, "task", None) == "segmentation":  # the dilated CNN, the recipe's CNN shape
        fields = ("class_names", "lr", "weight_decay", "warmup_fraction", "min_lr_fraction", "channels", "blocks",
                  "kernel_size", "edge_tolerance", "pos_weight", "pos_weight_values")
        return SegmentationModule(network="cnn", backbone=None, **{k: module.hparams[k] for k in fields})
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
    start = time.perf_counter()
    fitted = kmer_logistic_regression(_split(datamodule, "train"), _split(datamodule, "val"),
                                      len(datamodule.class_names), seed=seed, strand_symmetric=datamodule.strand_symmetric)
    fitted["wall_seconds"] = round(time.perf_counter() - start, 1)
    test = _test_metrics(datamodule, kmer_predict_proba(fitted, _split(datamodule, "test")[0]))
    return {"system": "kmer_lr", "fold": fold, "seed": seed, "checkpoint": None, "val_mcc": fitted["val_mcc"],
            "k": fitted["k"], "C": fitted["C"], "strand_symmetric": fitted["strand_symmetric"], **_closed_form(fitted),
            "test": test}


def _closed_form(fitted: dict, backbone_parameters: int = 0) -> dict:
    """What a logistic-regression control spent: no epochs, steps or counted FLOPs (a solver on
    fixed features, not a trainer; the probe's one forward pass over the splits is not counted);
    its coefficients are its trainable parameters."""
    model = fitted["model"]
    regression = model[-1] if hasattr(model, "steps") else model  # a pipeline (scaler, regression) or the regression
    coefficients = int(regression.coef_.size + regression.intercept_.size)
    return {"epochs": None, "optimizer_steps": None, "training_flops": None, "wall_seconds": fitted.get("wall_seconds"),
            "trainable_parameters": coefficients, "total_parameters": coefficients + backbone_parameters}


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


def probe_run(features: dict, datamodule, seed: int, fold: int | None, backbone_parameters: int = 0,
              feature_seconds: float = 0.0) -> dict:
    """The probe on ``features`` (:func:`probe_features`, which took ``feature_seconds``)."""
    start = time.perf_counter()
    labels = {name: datamodule.datasets[name].labels for name in features}
    fitted = linear_probe((features["train"], labels["train"]), (features["val"], labels["val"]), seed=seed)
    fitted["wall_seconds"] = round(time.perf_counter() - start + feature_seconds, 1)
    test = _test_metrics(datamodule, fitted["model"].predict_proba(features["test"]))
    return {"system": "probe", "fold": fold, "seed": seed, "checkpoint": None, "val_mcc": fitted["val_mcc"],
            "C": fitted["C"], **_closed_form(fitted, backbone_parameters), "test": test}

