"""``python -m hnet_dna.data_efficiency --config pipelines/benchmarks/NAME.yaml --out DIR``

Data efficiency of an H-Net against isotropic baselines, as the paper measured it (HG38, Table 5
and Figure 5): every model is trained on the same stream of genome windows; held-out bits per base
is measured at log-spaced numbers of bases seen during the constant-learning-rate phase; the
multiplier is how many times fewer bases the H-Net needed to reach each baseline's final bits per
base.

How a run goes:

1. The config is read and every input checked (FASTA, BED, held-out sets, model configs) before
   ``DIR`` is written. ``DIR/plan.json`` records the resolved config; a rerun with the same config
   continues, a rerun with another one is refused.
2. The held-out windows are cut once and saved in ``DIR/heldout/`` so that every model is scored
   on exactly the same bases.
3. Each (seed, model) is fitted in its own subprocess (peak memory is per model) with the
   pretraining task (:class:`~hnet_dna.tasks.PretrainModule`) and data module
   (:class:`~hnet_dna.data.GenomeDataModule`), seeded with the run's seed: models of one seed see
   the same windows in the same order with the same augmentation draws
   (``DIR/runs/MODEL/seedS/training_windows.rank0.tsv`` lists them). The learning rate warms up,
   then stays constant up to the token budget (where the curve points are), then optionally decays
   (``decay_fraction``; its result is reported separately). A checkpoint is written at every curve
   point: a killed run continues with the models and points it has not finished.
4. ``DIR/curves.csv``, ``DIR/curves.png`` and ``DIR/summary.json`` are written (atomically) from
   the finished fits.

Compute: parameters and training FLOPs per base (forward + backward, counted by
``torch.utils.flop_counter.FlopCounterMode`` on a real training batch under
:func:`hnet_dna.backends.force_reference`, at the end of training, since an H-Net's cost depends
on the compression its routers reached).

The multiplier (:func:`data_multiplier`): for each seed, the baseline's bases at its last point
divided by the bases the H-Net needed to reach the baseline's final bits per base, found at the
first point where the H-Net's curve is at or below it and interpolated linearly in log(bases)
from the point before; ``None`` (``reached: false``) when it never does: nothing is extrapolated.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import inspect
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import yaml

from . import backends
from .commands import (
    atomic_path,
    encode_sequences,
    exit_on_user_error,
    fingerprint,
    read_sequences,
)
from .config import ConfigError
from .data.datamodule import GenomeDataModule
from .data.genome import DataError

__all__ = ["BenchmarkConfig", "HeldOutSet", "data_multiplier", "multiplier_summary", "run_pipeline", "main"]

CURVE_COLUMNS = ["model", "seed", "bases_seen", "heldout", "bits_per_base", "compression", "wall_s"]


# ------------------------------------------------------------------------------------ config
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
    """

    split: str | None = None
    fasta: str | None = None
    region: str | None = None
    windows: int = 64
    max_n_fraction: float = 0.1


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
    flops_tolerance: float = 0.15
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


# ------------------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """Everything a fit needs, derived from the config once."""

    config: dict
    steps: int  # optimizer steps of the constant phase (warmup included)
    warmup_steps: int
    decay_steps: int
    bases_per_step: int
    eval_steps: list[int]
    model_names: list[str]
    kinds: dict  # name -> "H-Net" / "isotropic"
    params: dict  # name -> parameter count
    baselines: list[str]


def eval_schedule(steps: int, warmup_steps: int, points: int, first_fraction: float) -> list[int]:
    """Log-spaced optimizer steps from ``first_fraction`` of ``steps`` (at least one step after the
    warmup) to ``steps``; duplicates after rounding are dropped."""
    first = max(warmup_steps + 1, int(round(first_fraction * steps)), 1)
    if first >= steps:
        raise ConfigError(f"the budget gives {steps} steps and warmup {warmup_steps}: no room for a curve; "
                          "raise budget_bases or lower warmup_fraction / first_eval_fraction")
    grid = np.unique(np.round(np.geomspace(first, steps, points)).astype(int))
    return [int(s) for s in grid]


def make_plan(config: BenchmarkConfig) -> Plan:
    from .model.loading import build_model

    window, batch = config.data.get("window", 1024), config.data.get("batch_size", 8)
    bases_per_step = window * batch
    steps = config.budget_bases // bases_per_step
    if steps < 2:
        raise ConfigError(f"budget_bases {config.budget_bases:,} is less than two steps of {batch} x {window} bases")
    warmup = int(round(config.warmup_fraction * steps))
    decay = int(round(config.decay_fraction * steps))
    kinds, params = {}, {}
    for name, spec in config.models.items():
        # On the meta device: counting parameters needs no memory or init time (weights a
        # save_pretrained folder holds are not read; torch warns about that).
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = build_model(spec["model"], flag=f"models.{name}.model")
        kinds[name] = "H-Net" if model.config.num_stages > 1 else "isotropic"
        params[name] = model.num_parameters()
        del model
    if kinds[config.reference] != "H-Net":
        raise ConfigError(f"reference {config.reference!r} is not an H-Net (it has one stage)")
    baselines = config.baselines if config.baselines is not None else [n for n, k in kinds.items() if k == "isotropic"]
    return Plan(
        config=asdict(config), steps=steps, warmup_steps=warmup, decay_steps=decay, bases_per_step=bases_per_step,
        eval_steps=eval_schedule(steps, warmup, config.eval_points, config.first_eval_fraction),
        model_names=list(config.models), kinds=kinds, params=params, baselines=list(baselines),
    )


def cut_heldout(config: BenchmarkConfig) -> dict[str, np.ndarray]:
    """The windows of every held-out set as ids, (n, window) uint8 arrays."""
    from .tokenizer import NucleotideTokenizer

    window = config.data.get("window", 1024)
    tokenizer = NucleotideTokenizer(policy=config.data.get("iupac_policy", "lenient"))
    dm = None
    out = {}
    for name, h in config.heldout.items():
        if h["split"]:
            if dm is None:
                dm = GenomeDataModule(**config.data)
            if len(dm.datasets[h["split"]]) == 0:
                raise DataError(f"heldout.{name}: the data has no {h['split']} windows; give data.{h['split']}_regions "
                                f"or a BED with that split")
            ids = list(dm.split_sequences(h["split"], h["windows"]))
        else:
            ids = _fasta_windows(name, h, window, tokenizer)
        out[name] = torch.stack(ids).numpy().astype(np.uint8)
    return out


def _fasta_windows(name: str, h: dict, window: int, tokenizer) -> list[torch.Tensor]:
    from .commands import parse_region

    records = read_sequences(h["fasta"])
    if h["region"]:
        chrom, start, end = parse_region(h["region"])
        match = [r for r in records if r.id == chrom]
        if not match:
            raise DataError(f"heldout.{name}: {h['fasta']} has no record {chrom!r} (records: "
                            f"{', '.join(r.id for r in records[:8])})")
        end = min(end, len(match[0].sequence)) if end else len(match[0].sequence)
        records = [type(match[0])(chrom, match[0].sequence[start - 1 : end], match[0].where)]
    candidates = []
    for r, ids in zip(records, encode_sequences(records, tokenizer)):  # "not DNA" names the file and record
        is_n = ids == tokenizer.n_id
        for s in range(0, len(ids) - window + 1, window):
            if float(is_n[s : s + window].float().mean()) <= h["max_n_fraction"]:
                candidates.append(ids[s : s + window])
    if not candidates:
        raise DataError(f"heldout.{name}: {h['fasta']}{' ' + h['region'] if h['region'] else ''} holds no window of "
                        f"{window:,} bases with at most {h['max_n_fraction']:.0%} N")
    picks = np.linspace(0, len(candidates) - 1, min(h["windows"], len(candidates))).astype(int)
    return [candidates[i] for i in picks]


# --------------------------------------------------------------------------------- multiplier
def data_multiplier(hnet: list[tuple[float, float]], baseline: list[tuple[float, float]]) -> float | None:
    """How many times fewer bases the H-Net needed to reach the baseline's final bits per base.

    Both curves are ``[(bases_seen, bits_per_base), ...]``. The target is the baseline's value at
    its last point, ``B``; the H-Net needed ``b*`` bases, where its curve first comes down to the
    target, linearly interpolated in log(bases) between that point and the one before (the first
    point itself when the first point is already at or below it). Returns ``B / b*``, or None when
    the H-Net never reaches the target (nothing is extrapolated).
    """
    if not hnet or not baseline:
        return None
    hnet = sorted(hnet)
    final_bases, target = sorted(baseline)[-1]
    for i, (bases, bits) in enumerate(hnet):
        if bits <= target:
            if i == 0:
                needed = bases
            else:
                b0, y0 = hnet[i - 1]
                frac = (y0 - target) / (y0 - bits)
                needed = math.exp(math.log(b0) + frac * (math.log(bases) - math.log(b0)))
            return final_bases / needed
    return None


def multiplier_summary(per_seed: dict[int, float | None], lower_bound: dict[int, bool] | None = None) -> dict:
    """``{per_seed, mean, sd, reached, seeds_reached, lower_bound}``: mean and sample sd over seeds
    when every seed reached the baseline; otherwise mean and sd are None and ``reached`` is False.
    ``lower_bound`` (per seed, optional): the H-Net was already at the target at its first point,
    so the multiplier is at least the value given; the summary's flag is True if any seed was."""
    values = list(per_seed.values())
    reached = all(v is not None for v in values) and bool(values)
    mean = float(np.mean(values)) if reached else None
    sd = float(np.std(values, ddof=1)) if reached and len(values) > 1 else (0.0 if reached else None)
    return {"per_seed": {str(k): v for k, v in per_seed.items()}, "mean": mean, "sd": sd, "reached": reached,
            "seeds_reached": sum(v is not None for v in values),
            "lower_bound": any((lower_bound or {}).get(k, False) and per_seed[k] is not None for k in per_seed)}


# ---------------------------------------------------------------------------------- one fit
def _fit_one(spec_path: Path) -> None:
    """Fit one (model, seed) as the spec says (run in a subprocess by :func:`run_pipeline`)."""
    from .tasks.callbacks import TrainingWindowLog
    from .tasks.pretrain import PretrainModule

    spec = json.loads(spec_path.read_text())
    run_dir = spec_path.parent
    pl.seed_everything(spec["seed"], workers=True, verbose=False)
    data = dict(spec["data"], seed=spec["seed"])
    dm = GenomeDataModule(**data)
    total = spec["steps"] + spec["decay_steps"]
    task = PretrainModule(
        model=spec["model"], lr=spec["lr"], weight_decay=spec["weight_decay"],
        schedule="wsd" if spec["decay_steps"] else "constant",
        warmup_fraction=spec["warmup_steps"] / total, decay_fraction=spec["decay_steps"] / total,
        min_lr_fraction=0.0, export_dir=str(run_dir / "model"), export=spec["export_models"],
    )
    heldout = {name: torch.from_numpy(np.load(path).astype(np.int64)) for name, path in spec["heldout"].items()}
    points = CurvePoints(spec, heldout, run_dir)
    trainer = pl.Trainer(
        max_steps=total, limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        # The window log first: a fit killed right after a curve point has logged that point's batch.
        default_root_dir=str(run_dir), callbacks=[TrainingWindowLog(), points],
        **{"gradient_clip_val": 1.0, "enable_model_summary": False, "enable_progress_bar": False, **spec["trainer"]},
    )
    ckpt = run_dir / "last.ckpt"
    if ckpt.exists():
        points.truncate_after_checkpoint(ckpt)
    if trainer.strategy.root_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(task, datamodule=dm, ckpt_path=str(ckpt) if ckpt.exists() else None)
    device = trainer.strategy.root_device
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process max RSS"
    model = task.model
    batch = torch.stack([dm.datasets["train"][(0, i)]["input_ids"] for i in range(dm.hparams.batch_size)]).to(device)
    result = {
        "model": spec["name"], "seed": spec["seed"], "params": model.num_parameters(),
        "flops_per_base": training_flops_per_base(model, batch),
        "train_bases": points.trained_bases, "train_seconds": points.train_seconds,
        "train_bases_per_s": points.trained_bases / max(points.train_seconds, 1e-9),
        "peak_memory_mb": peak, "peak_memory_kind": kind, "device": _device_name(device),
        "decayed_bits_per_base": points.decayed,
    }
    with atomic_path(run_dir / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    ckpt.unlink(missing_ok=True)  # the fit is done: its result is kept, its resume point is not needed


def _cpu_attention_flops() -> dict:
    """Formulas for the CPU flash-attention ops, which ``FlopCounterMode`` does not know (it counts
    the CUDA ones): without them, attention scores would count 0 FLOPs on CPU. Same convention as
    torch's CUDA formulas: the full L x L score matrix, causal or not."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    mapping = {}
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None:
        mapping[fwd] = lambda query, key, value, *args, out_shape=None, **kwargs: fc.sdpa_flop_count(query, key, value)
    if bwd is not None:
        mapping[bwd] = lambda grad_out, query, key, value, *args, out_shape=None, **kwargs: fc.sdpa_backward_flop_count(
            grad_out, query, key, value)
    return mapping


def training_flops_per_base(model, ids: torch.Tensor) -> float:
    """Forward + backward FLOPs of one training step on ``ids`` (B, L), per base, counted by
    ``FlopCounterMode`` (matmuls, einsums, attention, convolutions; elementwise work is not
    counted) with the PyTorch reference forced, so what is counted is the reference's arithmetic
    (the chunked SSD scan of Mamba-2 included). Attention counts the full L x L scores as torch does."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.train()
    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops())
    with backends.force_reference(), torch.autocast(ids.device.type, enabled=False), counter:
        out = model(ids, labels=ids)
        out.loss.backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops() / ids.numel()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{backends.cpu_name()}, {torch.get_num_threads()} threads"


class CurvePoints(pl.Callback):
    """Lightning callback: at each curve step, score the held-out windows and append rows to
    ``points.csv``; then write a checkpoint so that a killed fit resumes after the last point.
    Also counts training time (held-out scoring excluded) and, with a decay phase, scores the
    held-out sets once more at the very end (``decayed``)."""

    def __init__(self, spec: dict, heldout: dict[str, torch.Tensor], run_dir: Path):
        self.spec, self.heldout, self.run_dir = spec, heldout, run_dir
        self.eval_steps = set(spec["eval_steps"])
        self.path = run_dir / "points.csv"
        self.train_seconds = 0.0
        self.trained_bases = 0
        self.decayed: dict | None = None
        self._mark = None
        self._checkpointed_at = 0.0
        self._kill_after = int(os.environ.get("HNET_DNA_KILL_AFTER_POINTS", "0"))  # tests: SIGKILL mid-run
        self._points_written = 0

    # --- resume
    def state_dict(self) -> dict:
        return {"train_seconds": self.train_seconds, "trained_bases": self.trained_bases}

    def load_state_dict(self, state: dict) -> None:
        self.train_seconds, self.trained_bases = state["train_seconds"], state["trained_bases"]

    def truncate_after_checkpoint(self, ckpt: Path) -> None:
        """Drop rows written after the checkpoint (a kill between a point and its checkpoint)."""
        step = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        for path, col in ((self.path, "step"), (self.run_dir / "training_windows.rank0.tsv", None)):
            if not path.exists():
                continue
            lines = path.read_text().splitlines(keepends=True)
            if col:
                keep = lines[:1] + [ln for ln in lines[1:] if int(ln.split(",")[0]) <= step]
            else:
                keep = [ln for ln in lines if int(ln.split("\t")[0]) <= step]
            path.write_text("".join(keep))

    # --- hooks
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._mark is None:
            self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_seconds += time.perf_counter() - self._mark
        self.trained_bases += batch["input_ids"].numel()
        step = trainer.global_step
        if step in self.eval_steps:
            scores = self.score(trainer, pl_module)
            self._append(step, scores)
            print(f"step {step}: " + ", ".join(f"{k} {v[0]:.4f} bits/base" for k, v in scores.items())
                  + f" ({self.train_seconds:.0f} s of training)", flush=True)
            if self.train_seconds - self._checkpointed_at >= self.spec["checkpoint_interval_s"]:
                tmp = self.run_dir / "last.ckpt.tmp"
                trainer.save_checkpoint(tmp)
                os.replace(tmp, self.run_dir / "last.ckpt")
                self._checkpointed_at = self.train_seconds
            self._points_written += 1
            if self._kill_after and self._points_written >= self._kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        if self.spec["decay_steps"] and step == self.spec["steps"] + self.spec["decay_steps"]:
            self.decayed = {k: v[0] for k, v in self.score(trainer, pl_module).items()}
        self._mark = time.perf_counter()  # held-out scoring is not training time

    def score(self, trainer, pl_module) -> dict[str, tuple[float, float | None]]:
        """{held-out set: (bits per base over its A/C/G/T targets, outer-level bases per chunk)}."""
        from .tasks.callbacks import score_windows

        batch_size = self.spec["data"].get("batch_size", 8)
        out = {}
        for name, windows in self.heldout.items():
            bits, _, compression = score_windows(pl_module.model, windows, batch_size, trainer.precision_plugin.forward_context)
            out[name] = (bits, compression)
        return out

    def _append(self, step: int, scores: dict) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "bases_seen", "heldout", "bits_per_base", "compression", "wall_s"])
            for name, (bits, comp) in scores.items():
                w.writerow([step, step * self.spec["bases_per_step"], name, f"{bits:.6f}",
                            "" if comp is None else f"{comp:.4f}", f"{self.train_seconds:.2f}"])


# --------------------------------------------------------------------------------- pipeline
class FitFailed(RuntimeError):
    """A model's fit stopped (its subprocess failed); what was finished is kept."""


def run_pipeline(config: BenchmarkConfig, out: Path, command: str = "", progress: bool = True) -> dict:
    """Fit every (seed, model) not yet finished under ``out``, then write curves and summary."""
    plan = make_plan(config)
    heldout = cut_heldout(config)  # validates the data before anything is written
    # The config and the held-out bases decide the work (the rest of the plan follows from them).
    key = fingerprint(plan.config, {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in heldout.items()})
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder (created if missing)")
    plan_path = out / "plan.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old.get("fingerprint") != key:
            raise ConfigError(
                f"--out {out}: holds a run of another config (or other data); give a new --out folder, or delete "
                f"{out} to start over"
            )
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not a data-efficiency run folder; give a new or empty folder")
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    heldout_paths = {}
    for name, arr in heldout.items():
        p = out / "heldout" / f"{name}.npy"
        if not p.exists():
            with atomic_path(p) as tmp:
                np.save(tmp, arr)
        heldout_paths[name] = str(p.resolve())
    if not plan_path.exists():
        with atomic_path(plan_path) as tmp:
            tmp.write_text(json.dumps({"fingerprint": key, "started": _provenance(command), **asdict(plan)}, indent=2) + "\n")

    say = (lambda msg: print(f"hnet_dna.data_efficiency: {msg}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    say(f"{len(plan.model_names)} models x {len(config.seeds)} seeds; {plan.steps} steps of {plan.bases_per_step:,} "
        f"bases (warmup {plan.warmup_steps}{f', then decay {plan.decay_steps}' if plan.decay_steps else ''}); "
        f"curve points at steps {plan.eval_steps}")
    for seed in config.seeds:
        for name in plan.model_names:
            run_dir = out / "runs" / name / f"seed{seed}"
            if (run_dir / "result.json").exists():
                say(f"{name} seed {seed}: done earlier, kept")
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            spec = {
                "name": name, "seed": seed, "model": config.models[name]["model"],
                "lr": config.models[name].get("lr", config.lr), "weight_decay": config.weight_decay,
                "data": config.data, "trainer": config.trainer, "steps": plan.steps,
                "warmup_steps": plan.warmup_steps, "decay_steps": plan.decay_steps,
                "bases_per_step": plan.bases_per_step, "eval_steps": plan.eval_steps, "heldout": heldout_paths,
                "checkpoint_interval_s": config.checkpoint_interval_s, "export_models": config.export_models,
            }
            spec_path = run_dir / "spec.json"
            spec_path.write_text(json.dumps(spec, indent=2) + "\n")
            resumed = " (resuming)" if (run_dir / "last.ckpt").exists() else ""
            say(f"{name} seed {seed}: fitting{resumed}; log in {run_dir / 'fit.log'}")
            t0 = time.perf_counter()
            rc = _run_fit(spec_path, run_dir / "fit.log", config.trainer.get("accelerator", "auto"))
            if rc != 0:
                tail = "".join((run_dir / "fit.log").read_text().splitlines(keepends=True)[-15:])
                raise FitFailed(f"fitting {name} (seed {seed}) failed with exit status {rc}; the end of "
                                   f"{run_dir / 'fit.log'}:\n{tail}\nRerun the same command to continue.")
            say(f"{name} seed {seed}: done in {time.perf_counter() - t0:.0f} s")
    started = json.loads(plan_path.read_text()).get("started")
    summary = write_results(plan, config, out, {"started": started, "finished": _provenance(command)})
    say(f"wrote {out / 'curves.csv'}, {out / 'curves.png'}, {out / 'summary.json'}")
    print(format_summary(summary))
    return summary


def _run_fit(spec_path: Path, log_path: Path, accelerator: str) -> int:
    """Fit in a child process; its output goes to ``log_path``; returns its exit status.

    On CPU (where the platform has it) the child comes from a fork server that imported this
    module once: fits start in a fraction of a second instead of re-importing Lightning, and the
    server has run no computation, so a child never inherits an OpenMP pool (forking a process
    that has run parallel torch ops can hang the child). Anywhere else the child is a fresh
    interpreter (a GPU is initialised in the child only).
    """
    import multiprocessing

    if accelerator == "cpu" and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["hnet_dna.data_efficiency"])
        child = ctx.Process(target=_fit_in_child, args=(spec_path, log_path, dict(os.environ), os.getcwd()))
        child.start()
        child.join()
        return child.exitcode
    with log_path.open("a") as log:
        return subprocess.call([sys.executable, "-m", "hnet_dna.data_efficiency", "--fit-one", str(spec_path)],
                               stdout=log, stderr=subprocess.STDOUT)


def _fit_in_child(spec_path: Path, log_path: Path, environ: dict, cwd: str) -> None:
    # As a fresh subprocess would: the caller's environment and folder of now (the fork server
    # keeps those of when it started), output to the log.
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    log = log_path.open("a")
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    try:
        _fit_one(spec_path)
    except BaseException:  # noqa: BLE001  (reported in the log; the parent sees the exit status)
        import traceback

        traceback.print_exc(file=log)
        log.flush()
        os._exit(1)
    log.flush()
    os._exit(0)  # skip the interpreter's exit handlers: the fork server's, not this fit's


def _read_runs(plan: Plan, config: BenchmarkConfig, out: Path):
    rows, results = [], {}
    for name in plan.model_names:
        for seed in config.seeds:
            run_dir = out / "runs" / name / f"seed{seed}"
            results[(name, seed)] = json.loads((run_dir / "result.json").read_text())
            with (run_dir / "points.csv").open() as f:
                for r in csv.DictReader(f):
                    rows.append({"model": name, "seed": seed, "bases_seen": int(r["bases_seen"]), "heldout": r["heldout"],
                                 "bits_per_base": float(r["bits_per_base"]),
                                 "compression": float(r["compression"]) if r["compression"] else None,
                                 "wall_s": float(r["wall_s"])})
    return rows, results


def write_results(plan: Plan, config: BenchmarkConfig, out: Path, provenance: dict | None = None) -> dict:
    rows, results = _read_runs(plan, config, out)
    with atomic_path(out / "curves.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CURVE_COLUMNS)
        for r in rows:
            comp = "" if r["compression"] is None else f"{r['compression']:.4f}"
            w.writerow([r["model"], r["seed"], r["bases_seen"], r["heldout"], f"{r['bits_per_base']:.6f}", comp,
                        f"{r['wall_s']:.2f}"])
    curves = {}  # (model, seed, heldout) -> [(bases, bits)]
    for r in rows:
        curves.setdefault((r["model"], r["seed"], r["heldout"]), []).append((r["bases_seen"], r["bits_per_base"]))
    heldouts = list(config.heldout)
    models = {}
    for name in plan.model_names:
        res = [results[(name, s)] for s in config.seeds]
        finals = {h: {str(s): sorted(curves[(name, s, h)])[-1][1] for s in config.seeds} for h in heldouts}
        comp = [r["compression"] for r in rows if r["model"] == name and r["compression"] is not None
                and r["bases_seen"] == plan.eval_steps[-1] * plan.bases_per_step]
        models[name] = {
            "kind": plan.kinds[name], "params": res[0]["params"],
            "flops_per_base": float(np.mean([r["flops_per_base"] for r in res])),
            "final_bits_per_base": {h: float(np.mean(list(v.values()))) for h, v in finals.items()},
            "final_bits_per_base_per_seed": finals,
            "final_compression": float(np.mean(comp)) if comp else None,
            "train_bases_per_s": float(np.mean([r["train_bases_per_s"] for r in res])),
            "peak_memory_mb": float(max(r["peak_memory_mb"] for r in res)),
            "peak_memory_kind": res[0]["peak_memory_kind"], "device": res[0]["device"],
            "lr": config.models[name].get("lr", config.lr),
        }
        if plan.decay_steps:
            models[name]["decayed_bits_per_base"] = {
                h: float(np.mean([r["decayed_bits_per_base"][h] for r in res])) for h in heldouts}
    ref = config.reference
    for name, m in models.items():
        m["flops_ratio_to_reference"] = m["flops_per_base"] / models[ref]["flops_per_base"]
        m["compute_matched"] = abs(m["flops_ratio_to_reference"] - 1) <= config.flops_tolerance
    hnets = [n for n in plan.model_names if plan.kinds[n] == "H-Net"]

    def multipliers_of(hnet: str) -> dict:
        def one(b: str, h: str) -> dict:
            per_seed, bound = {}, {}
            for s in config.seeds:
                mine, theirs = curves[(hnet, s, h)], curves[(b, s, h)]
                per_seed[s] = data_multiplier(mine, theirs)
                bound[s] = min(mine)[1] <= max(theirs)[1]  # at the target already at the first point
            return multiplier_summary(per_seed, bound)

        return {b: {h: one(b, h) for h in heldouts} for b in plan.baselines if b != hnet}

    summary = {
        "reference": ref, "baselines": plan.baselines, "heldout": heldouts, "seeds": config.seeds,
        "bases_per_step": plan.bases_per_step, "steps": plan.steps, "warmup_steps": plan.warmup_steps,
        "decay_steps": plan.decay_steps, "eval_bases": [s * plan.bases_per_step for s in plan.eval_steps],
        "models": models,
        "multipliers": multipliers_of(ref),
        "multipliers_by_hnet": {h: multipliers_of(h) for h in hnets},
        # reference training bases/s over each model's (> 1: the reference trains faster)
        "reference_speed_ratio": {n: models[ref]["train_bases_per_s"] / m["train_bases_per_s"] for n, m in models.items()},
        "provenance": provenance or {},
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    try:
        plot_curves(rows, summary, out / "curves.png")
    except ImportError as e:  # matplotlib is a dependency; a bare GPU image may lack it
        print(f"hnet_dna.data_efficiency: no curves.png ({e}); curves.csv and summary.json are written",
              file=sys.stderr)
    return summary


def _provenance(command: str) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "command": command, "machine": f"{backends.cpu_name()} ({os.cpu_count()} cores)",
            "torch": torch.__version__}


def plot_curves(rows: list[dict], summary: dict, path: Path) -> None:
    """Bits per base against bases seen (log x), one panel per held-out set: each seed thin, the
    mean over seeds thick; each baseline's final value as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heldouts = summary["heldout"]
    names = list(summary["models"])
    fig, axes = plt.subplots(1, len(heldouts), figsize=(6.2 * len(heldouts), 4.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, h in zip(axes[0], heldouts):
        for i, name in enumerate(names):
            colour = colours[i % len(colours)]
            mine = [r for r in rows if r["model"] == name and r["heldout"] == h]
            for seed in summary["seeds"]:
                pts = sorted((r["bases_seen"], r["bits_per_base"]) for r in mine if r["seed"] == seed)
                ax.plot(*zip(*pts), color=colour, lw=0.7, alpha=0.45)
            xs = sorted({r["bases_seen"] for r in mine})
            mean = [np.mean([r["bits_per_base"] for r in mine if r["bases_seen"] == x]) for x in xs]
            m = summary["models"][name]
            label = f"{name} ({m['params'] / 1e6:.2f} M, {m['flops_per_base'] / 1e6:.2f} MFLOP/base)"
            ax.plot(xs, mean, "o-", color=colour, lw=2, ms=3.5, label=label)
            if name in summary["baselines"]:
                ax.axhline(m["final_bits_per_base"][h], color=colour, ls=":", lw=1)
        mult = summary["multipliers"]
        text = [f"{summary['reference']} vs {b}: "
                + (f"{'>= ' if v[h]['lower_bound'] else ''}{v[h]['mean']:.2f}x ± {v[h]['sd']:.2f}" if v[h]["reached"]
                   else "not reached") for b, v in mult.items()]
        ax.text(0.98, 0.97, "\n".join(text), transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
        ax.set(xscale="log", xlabel="training bases seen", ylabel="held-out bits per base", title=f"held out: {h}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Data efficiency (constant learning rate; thin: seeds, thick: mean; dotted: baselines' final)",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def format_summary(summary: dict) -> str:
    """A plain-text table of the summary (what the command prints at the end)."""
    heldouts = summary["heldout"]
    lines = ["", "| model | params | MFLOP/base (x ref) | " + " | ".join(f"final bits {h}" for h in heldouts)
             + " | bases/s | peak MB |", "|" + "---|" * (5 + len(heldouts))]
    for name, m in summary["models"].items():
        finals = " | ".join(f"{m['final_bits_per_base'][h]:.4f}" for h in heldouts)
        lines.append(f"| {name} | {m['params'] / 1e6:.2f} M | {m['flops_per_base'] / 1e6:.2f} "
                     f"({m['flops_ratio_to_reference']:.2f}) | {finals} | {m['train_bases_per_s']:,.0f} | "
                     f"{m['peak_memory_mb']:,.0f} |")
    if summary["decay_steps"]:
        lines.append("")
        for name, m in summary["models"].items():
            after = ", ".join(f"{h} {m['decayed_bits_per_base'][h]:.4f}" for h in heldouts)
            lines.append(f"{name} after the {summary['decay_steps']}-step decay: {after} bits/base")
    lines.append("")
    for b, per in summary["multipliers"].items():
        for h, v in per.items():
            seeds = ", ".join("-" if x is None else f"{x:.2f}" for x in v["per_seed"].values())
            value = (f"{'>= ' if v['lower_bound'] else ''}{v['mean']:.2f}x ± {v['sd']:.2f}" if v["reached"]
                     else f"not reached ({v['seeds_reached']} of {len(v['per_seed'])} seeds did)")
            lines.append(f"{summary['reference']} vs {b} on {h}: {value} (per seed: {seeds})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- CLI
def _parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        prog="python -m hnet_dna.data_efficiency",
        description="Data efficiency of an H-Net against isotropic baselines on the same stream of genome windows.",
        epilog="Any config field can be overridden: --budget_bases 2000000 --data.fasta genome.fa "
               "--trainer.precision bf16-mixed --seeds [0,1] --models.transformer.lr 0.01",
    )
    parser.add_argument("--config", help="benchmark YAML (pipelines/benchmarks/*.yaml)")
    parser.add_argument("--out", help="run folder (created; rerun with the same config to continue)")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--fit-one", help=argparse.SUPPRESS)  # the subprocess entry point
    args, rest = parser.parse_known_args(argv)
    overrides = []
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--") or token == "--":
            parser.error(f"unexpected argument {token!r}")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        elif i + 1 < len(rest):
            key, value = token[2:], rest[i + 1]
            i += 2
        else:
            parser.error(f"{token} needs a value")
        overrides.append((key, value))
    return parser, args, overrides


def main(argv: list[str] | None = None) -> None:
    parser, args, overrides = _parse(argv)
    if args.fit_one:
        _fit_one(Path(args.fit_one))
        return
    if not args.config or not args.out:
        parser.error("--config and --out are required")
    command = "python -m hnet_dna.data_efficiency " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        exit_on_user_error(
            lambda: run_pipeline(load_config(args.config, overrides), Path(args.out), command, progress=not args.no_progress),
            prog="hnet_dna.data_efficiency",
        )
    except FitFailed as e:
        print(f"hnet_dna.data_efficiency: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
