"""The benchmark's YAML config: fields, overrides from the command line, and checks that run
before anything is written."""

from __future__ import annotations

import inspect
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import yaml

from ...config import ConfigError
from ...data.datamodule import GenomeDataModule
from .flops import CONVENTIONS

__all__ = ["BenchmarkConfig", "HeldOutSet", "load_config", "TRAINER_FIXED"]


@dataclass
class HeldOutSet:
    """Where a held-out set's windows come from.

    Args:
        split: ``val`` or ``test``: that split of the training data module (a held-out region of
            the training genome). Exclusive with ``fasta``.
        fasta: a FASTA the models never train on (plain, gzip or BGZF); every record is cut into
            windows of the training window size.
        region: with ``fasta``: only ``record`` or ``record:start-end`` (1-based, inclusive).
        windows: how many windows to keep, evenly spaced over what is available.
        max_n_fraction: windows with more N than this are skipped.
        allow_leakage: with ``fasta``: accept windows that overlap the training intervals (same
            record, by name or alias, and overlapping coordinates). Off: such a set is refused.
    """

    split: str | None = None
    fasta: str | None = None
    region: str | None = None
    windows: int = 64
    max_n_fraction: float = 0.1
    allow_leakage: bool = False


@dataclass
class BenchmarkConfig:
    """A data-efficiency benchmark (the YAML files in ``pipelines/benchmarks/``).

    Args:
        models: ``{name: {model: preset | config JSON | inline fields, lr: optional override}}``
            (a bare preset name is accepted for ``{model: name}``).
        reference: the H-Net whose data efficiency is measured (a name in ``models``).
        baselines: the models it is compared with (default: every model that is not an H-Net;
            none: curves only, no multipliers).
        seeds: one fit per model and seed; a seed fixes the model init, the window order and the
            augmentation draws.
        lr: peak learning rate at base-pair resolution, the same for every model (inner H-Net stages
            get their eq. 11 multipliers on top; see ``hnet_dna.optim``).
        budget_bases: training bases per fit in the constant phase (rounded down to whole steps).
        warmup_fraction: of the budget, linear warmup from 0.
        decay_fraction: an optional linear decay to 0 AFTER the budget, this fraction of it long;
            its final bits per base are reported apart from the curves (0 = none).
        eval_points: how many curve points, log-spaced from ``first_eval_fraction`` of the budget
            (at least one step after warmup) to the whole budget.
        data: :class:`~hnet_dna.data.GenomeDataModule` arguments (``seed`` is the run's seed).
        heldout: ``{name: HeldOutSet fields}``.
        trainer: ``lightning.Trainer`` arguments (accelerator, precision, ...; the step count comes
            from the budget).
        flops_tolerance: a model is called compute-matched when its FLOPs per base are within this
            fraction of the reference's.
        flops_convention: which count the match uses: ``causal`` (attention charged for the keys
            each query attends to: the work a causal kernel does) or ``torch`` (FlopCounterMode's
            full score matrix). Both are reported; see :mod:`hnet_dna.protocols.data_efficiency.flops`.
        weight_decay: AdamW weight decay (as ``PretrainModule``).
        checkpoint_interval_s: a fit writes its resume checkpoint at a curve point only once this
            many seconds of training have passed since the last one (0: at every point; large
            models on a GPU train faster than their checkpoints write).
        export_models: save each fitted model (``save_pretrained``) in ``runs/MODEL/seedS/model``.
    """

    models: dict
    reference: str
    data: dict
    heldout: dict
    baselines: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    lr: float = 3e-3
    budget_bases: int = 1_000_000
    warmup_fraction: float = 0.1
    decay_fraction: float = 0.0
    eval_points: int = 8
    first_eval_fraction: float = 0.125
    trainer: dict = field(default_factory=dict)
    flops_tolerance: float = 0.1
    flops_convention: str = "causal"
    weight_decay: float = 0.1
    checkpoint_interval_s: float = 0.0
    export_models: bool = True


TRAINER_FIXED = {"max_steps", "max_epochs", "min_steps", "max_time", "limit_train_batches", "limit_val_batches",
                 "val_check_interval", "num_sanity_val_steps", "logger", "enable_checkpointing", "callbacks",
                 "default_root_dir", "accumulate_grad_batches"}


def load_config(path: str | Path, overrides: list[tuple[str, str]] = ()) -> BenchmarkConfig:
    """Read a benchmark YAML, apply ``--a.b value`` overrides (values parsed as YAML), check it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of fields at the top level")
    for key, value in overrides:
        parts = key.split(".")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--{key}: {p} is not a group of fields")
        node[parts[-1]] = yaml.safe_load(value)
    known = {f for f in BenchmarkConfig.__dataclass_fields__}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    missing = [f for f in ("models", "reference", "data", "heldout") if f not in raw]
    if missing:
        raise ConfigError(f"{path}: missing field(s) {', '.join(missing)}")
    config = BenchmarkConfig(**raw)
    _check_config(config, path)
    return config


def _check_config(c: BenchmarkConfig, source) -> None:
    if not isinstance(c.models, dict) or not c.models:
        raise ConfigError(f"{source}: models must map names to model specs")
    for name, spec in list(c.models.items()):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            raise ConfigError(f"{source}: model name {name!r}: use letters, digits, '_', '-', '.' (it names folders)")
        if isinstance(spec, str):
            c.models[name] = spec = {"model": spec}
        if not isinstance(spec, dict) or "model" not in spec or set(spec) - {"model", "lr"}:
            raise ConfigError(f"{source}: models.{name} must be a preset name or {{model: ..., lr: optional}}")
    if c.reference not in c.models:
        raise ConfigError(f"{source}: reference {c.reference!r} is not one of the models ({', '.join(c.models)})")
    if c.baselines is not None:
        bad = [b for b in c.baselines if b not in c.models or b == c.reference]
        if bad:
            raise ConfigError(f"{source}: baselines {bad} must name models other than the reference")
    if not c.seeds or len(set(c.seeds)) != len(c.seeds):
        raise ConfigError(f"{source}: seeds must be a non-empty list of distinct integers, got {c.seeds}")
    if not c.lr > 0 or c.budget_bases <= 0:
        raise ConfigError(f"{source}: lr and budget_bases must be positive")
    if not (0 <= c.warmup_fraction < 1 and 0 <= c.decay_fraction <= 1 and 0 < c.first_eval_fraction <= 1):
        raise ConfigError(f"{source}: warmup_fraction must be in [0, 1), decay_fraction in [0, 1], "
                          "first_eval_fraction in (0, 1]")
    if c.flops_convention not in CONVENTIONS:
        raise ConfigError(f"{source}: flops_convention must be one of {', '.join(CONVENTIONS)}, got {c.flops_convention!r}")
    if c.eval_points < 2:
        raise ConfigError(f"{source}: eval_points must be at least 2 (a curve)")
    if not isinstance(c.heldout, dict) or not c.heldout:
        raise ConfigError(f"{source}: heldout must name at least one held-out set")
    for name, spec in list(c.heldout.items()):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            raise ConfigError(f"{source}: held-out set name {name!r}: use letters, digits, '_', '-', '.'")
        try:
            h = HeldOutSet(**(spec or {}))
        except TypeError as e:
            raise ConfigError(f"{source}: heldout.{name}: {e}") from None
        if (h.split is None) == (h.fasta is None):
            raise ConfigError(f"{source}: heldout.{name}: give either split (val/test) or fasta")
        if h.split not in (None, "val", "test") or h.windows < 1:
            raise ConfigError(f"{source}: heldout.{name}: split must be val or test and windows >= 1")
        if h.region is not None and h.fasta is None:
            raise ConfigError(f"{source}: heldout.{name}: region goes with fasta (a split is a region already)")
        c.heldout[name] = asdict(h)
    _check_kwargs(c.data, GenomeDataModule, "data", exclude={"seed"})
    _check_kwargs(c.trainer, pl.Trainer, "trainer", exclude=TRAINER_FIXED)
    if c.trainer.get("devices", 1) not in (1, "1", [0]) or c.trainer.get("num_nodes", 1) != 1:
        raise ConfigError("trainer.devices / num_nodes: the benchmark fits each model on one device "
                          "(its throughput is per device); run more benchmarks in parallel instead")


def _check_kwargs(values: dict, klass, group: str, exclude: set) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{group}: expected a group of fields")
    allowed = set(inspect.signature(klass.__init__).parameters) - {"self"} - exclude
    bad = sorted(set(values) - allowed)
    if bad:
        fixed = [b for b in bad if b in exclude]
        why = (f"{', '.join(fixed)} set by the benchmark (the budget and evaluation points decide them)"
               if fixed else f"not a {klass.__name__} argument")
        raise ConfigError(f"{group}.{bad[0]}: {why}; allowed: {', '.join(sorted(allowed))}")


