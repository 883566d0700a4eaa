"""The run's plan (steps, curve points, model kinds) and its held-out windows, both derived from
the config before anything is trained."""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ...io import encode_sequences, read_sequences
from ...runs import file_sha256
from ...config import ConfigError
from ...data.datamodule import GenomeDataModule
from ...data.genome import DataError, chrom_aliases, resolve_path
from ...data.windows import Region, WindowTable, check_leakage
from .config import BenchmarkConfig

__all__ = ["Plan", "eval_schedule", "make_plan", "cut_heldout"]


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
    # What defines each model beyond its name in the config: the resolved config (presets are
    # code; a config JSON is read) and, for a save_pretrained folder, its weights' SHA-256.
    models: dict | None = None
    data_sha256: dict | None = None  # the training FASTA / BED files' SHA-256, by path as given


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
    from ...model.loading import build_model

    window, batch = config.data.get("window", 1024), config.data.get("batch_size", 8)
    bases_per_step = window * batch
    steps = config.budget_bases // bases_per_step
    if steps < 2:
        raise ConfigError(f"budget_bases {config.budget_bases:,} is less than two steps of {batch} x {window} bases")
    warmup = int(round(config.warmup_fraction * steps))
    decay = int(round(config.decay_fraction * steps))
    kinds, params, identities = {}, {}, {}
    for name, spec in config.models.items():
        # On the meta device: counting parameters needs no memory or init time (weights a
        # save_pretrained folder holds are not read; torch warns about that).
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = build_model(spec["model"], flag=f"models.{name}.model")
        if model.config.bidirectional:
            raise ConfigError(f"models.{name}.model is a masked LM (bidirectional): the data-efficiency curves are "
                              "next-base bits of causal models; compare masked LMs downstream (the fine-tuning table)")
        kinds[name] = "H-Net" if model.config.num_stages > 1 else "isotropic"
        params[name] = model.num_parameters()
        identities[name] = {"config": model.config.to_dict(), "weights_sha256": _weights_sha256(spec["model"])}
        del model
    if kinds[config.reference] != "H-Net":
        raise ConfigError(f"reference {config.reference!r} is not an H-Net (it has one stage)")
    baselines = config.baselines if config.baselines is not None else [n for n, k in kinds.items() if k == "isotropic"]
    return Plan(
        config=asdict(config), steps=steps, warmup_steps=warmup, decay_steps=decay, bases_per_step=bases_per_step,
        eval_steps=eval_schedule(steps, warmup, config.eval_points, config.first_eval_fraction),
        model_names=list(config.models), kinds=kinds, params=params, baselines=list(baselines),
        models=identities, data_sha256=_training_files_sha256(config.data),
    )


def _weights_sha256(model_spec) -> str | None:
    """The SHA-256 of a ``save_pretrained`` folder's weights (None for a preset or a config)."""
    from ...model.loading import DEFAULT_MODEL, default_model_path
    from ...weights import WEIGHTS_NAME

    if model_spec == DEFAULT_MODEL:  # the shipped model: its folder's weights
        model_spec = str(default_model_path())
    if isinstance(model_spec, str) and Path(model_spec).is_dir() and (Path(model_spec) / WEIGHTS_NAME).is_file():
        return file_sha256(Path(model_spec) / WEIGHTS_NAME)
    return None


def _training_files_sha256(data: dict) -> dict:
    """{path as given: SHA-256} of the training FASTA(s) and the split BED: their contents, not
    their names, decide the windows every model sees."""
    fastas = data.get("fasta")
    paths = [*(fastas if isinstance(fastas, (list, tuple)) else [fastas]), data.get("bed")]
    return {str(p): file_sha256(resolve_path(p)) for p in paths if p is not None and resolve_path(p).is_file()}

def cut_heldout(config: BenchmarkConfig) -> dict[str, np.ndarray]:
    """The windows of every held-out set as ids of the nucleotide table, (n, window) uint8 arrays
    (a byte-level model's fit translates them with its tokenizer). A ``fasta`` set is checked
    against the training windows: overlap is refused unless the set says ``allow_leakage``."""
    from ...tokenizer import NucleotideTokenizer

    window = config.data.get("window", 1024)
    tokenizer = NucleotideTokenizer(policy=config.data.get("iupac_policy", "lenient"))
    dm = None
    out = {}
    for name, h in config.heldout.items():
        if dm is None and (h["split"] or not h["allow_leakage"]):  # the training windows are needed
            dm = GenomeDataModule(**config.data)
        if h["split"]:
            if len(dm.datasets[h["split"]]) == 0:
                raise DataError(f"heldout.{name}: the data has no {h['split']} windows; give data.{h['split']}_regions "
                                f"or a BED with that split")
            ids = list(dm.split_sequences(h["split"], h["windows"]))
        else:
            picked = _fasta_windows(name, h, window, tokenizer)
            if not h["allow_leakage"]:
                _check_against_training(name, h, picked, dm.tables["train"], config.data.get("random_shift", 0))
            ids = [w[2] for w in picked]
        out[name] = torch.stack(ids).numpy().astype(np.uint8)
    return out


def _fasta_windows(name: str, h: dict, window: int, tokenizer) -> list[tuple[str, int, torch.Tensor]]:
    """``(record, 0-based start, ids)`` of the windows kept: non-overlapping windows of each record
    (or of ``region``), those with at most ``max_n_fraction`` N, ``windows`` of them evenly spaced."""
    from ...io import parse_region

    records = read_sequences(h["fasta"])
    offset = 0
    if h["region"]:
        if re.search(r":\d[\d,]*-\d[\d,]*$", h["region"]):
            chrom, offset, end = parse_region(h["region"])
        else:  # a bare record name: all of it
            chrom, end = h["region"], None
        match = [r for r in records if r.id == chrom]
        if not match:
            raise DataError(f"heldout.{name}: {h['fasta']} has no record {chrom!r} (records: "
                            f"{', '.join(r.id for r in records[:8])})")
        end = min(end, len(match[0].sequence)) if end else len(match[0].sequence)
        records = [type(match[0])(chrom, match[0].sequence[offset:end], match[0].where)]
    candidates = []
    for r, ids in zip(records, encode_sequences(records, tokenizer)):  # "not DNA" names the file and record
        is_n = ids == tokenizer.n_id
        for s in range(0, len(ids) - window + 1, window):
            if float(is_n[s : s + window].float().mean()) <= h["max_n_fraction"]:
                candidates.append((r.id, offset + s, ids[s : s + window]))
    if not candidates:
        raise DataError(f"heldout.{name}: {h['fasta']}{' ' + h['region'] if h['region'] else ''} holds no window of "
                        f"{window:,} bases with at most {h['max_n_fraction']:.0%} N")
    picks = np.linspace(0, len(candidates) - 1, min(h["windows"], len(candidates))).astype(int)
    return [candidates[i] for i in picks]


def _check_against_training(name: str, h: dict, picked: list, train: WindowTable, shift: int) -> None:
    """Refuse held-out windows whose record is a training record (by name or alias: ``20`` is
    ``chr20``) and whose coordinates overlap a training window's span (``random_shift`` included),
    whatever file either comes from."""
    by_name: dict[str, list[int]] = {}  # alias -> training record indices (one per training FASTA)
    for i, (_, record) in enumerate(train.records):
        for alias in chrom_aliases(record):
            by_name.setdefault(alias, []).append(i)
    rows = [(i, start) for rec, start, _ in picked for i in by_name.get(rec, [])]
    if not rows:
        return
    names = list(train.records)  # same record indices as the training table, the held-out file's names
    for rec, _, _ in picked:
        for i in by_name.get(rec, []):
            names[i] = (0, rec)
    where = f"heldout.{name} ({h['fasta']}{', ' + h['region'] if h['region'] else ''})"
    held = WindowTable(
        source=np.zeros(len(rows), dtype=np.int64), record=np.array([r for r, _ in rows]),
        start=np.array([s for _, s in rows], dtype=np.int64), records=names, window=train.window,
        region=np.zeros(len(rows), dtype=np.int64), regions=[Region(0, "", 0, 0, where)],
    )
    check_leakage(train, held, f"heldout.{name}", shift,
                  hint=f"Hold out other sequence, or set heldout.{name}.allow_leakage: true if this is intended.")
