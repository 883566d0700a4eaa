"""Lightning callbacks for genome pretraining runs."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from ..baselines import MarkovModel, TwoSidedMarkovModel
from ..config import ConfigError

__all__ = ["HeldOutReport", "TrainingWindowLog", "PredictionWriter", "TrainingCurves", "score_windows"]


def _log_dir(trainer: pl.Trainer) -> Path:
    """The run's log folder. Call it on every rank: under DDP ``trainer.log_dir`` is a collective."""
    return Path(trainer.log_dir or trainer.default_root_dir)


@torch.no_grad()
def score_windows(model, windows: torch.Tensor, batch_size: int, forward_context=contextlib.nullcontext):
    """Score equal-length windows (N, L) of ids with ``model`` in eval mode, ``batch_size`` at a
    time on the model's device: (bits per base over every A/C/G/T target, the number of those
    targets, outer-level bases per chunk or None for an isotropic model). Sums stay on the device
    until the end (one host sync). ``forward_context``: e.g. the trainer's autocast."""
    if model.config.bidirectional:
        raise ConfigError("score_windows gives next-base bits of a causal model; a masked LM's held-out bits come "
                          "from score_masked_windows on masked windows")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    base_ids = torch.tensor(model.tokenizer.base_ids, device=device)
    bits = torch.zeros((), dtype=torch.float64, device=device)
    bases = torch.zeros((), dtype=torch.long, device=device)
    real = torch.zeros((), dtype=torch.long, device=device)
    chunks = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(windows), batch_size):
        ids = windows[i : i + batch_size].to(device)
        with forward_context():
            out = model(ids, labels=ids)
        n = torch.isin(ids[:, 1:], base_ids).sum()
        bits += out.bits_per_base.double() * n
        bases += n
        if out.boundaries:
            real += out.masks[0].sum()
            chunks += (out.boundaries[0] & out.masks[0]).sum()
    model.train(was_training)
    bases, chunks = int(bases), int(chunks)
    return float(bits) / max(bases, 1), bases, (int(real) / chunks if chunks else None)


class HeldOutReport(pl.Callback):
    """When fitting ends, print the model's held-out bits per base beside order-k Markov models
    fitted on the same training windows, and write them to ``<log dir>/heldout_report.json``.

    Model and Markov models are scored on the same targets: every A/C/G/T position after the first
    of each held-out window (a Markov context cut short by the window start or an N backs off to a
    lower order; see :class:`hnet_dna.baselines.MarkovModel`). The report lists the count for each.

    Args:
        markov_orders: the Markov baselines to fit (default: 0 and 2).
        split: ``val`` or ``test`` windows of the data module.
        max_windows: at most this many windows (evenly spaced) of each split are used.
    """

    def __init__(self, markov_orders: list[int] = (0, 2), split: str = "val", max_windows: int = 20_000):
        self.markov_orders = list(markov_orders)
        self.split = split
        self.max_windows = max_windows

    @torch.no_grad()
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_train_end, not on_fit_end: the latter runs after the strategy's teardown has moved the
        # model back to the CPU, and the report would score a GPU-trained model on the CPU.
        log_dir = _log_dir(trainer)
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        model = pl_module.model
        if model.config.bidirectional:
            return self._masked_report(dm, model, log_dir)
        to_model = model.tokenizer.from_nucleotide_ids  # the data module's ids -> the model's (byte mode)
        held = [to_model(ids) for ids in dm.split_sequences(self.split, self.max_windows)]
        if not held:
            return
        bits, bases, _ = score_windows(model, torch.stack(held), dm.hparams.batch_size)
        markov = [MarkovModel(k, base_ids=model.tokenizer.base_ids) for k in self.markov_orders]
        for seq in dm.split_sequences("train", self.max_windows):  # one window in memory at a time
            for m in markov:
                m.update(to_model(seq))
        kind = "H-Net" if model.config.num_stages > 1 else "isotropic model"
        layout = json.dumps(model.config.arch_layout)
        rows = [(f"{kind} {layout}, {model.num_parameters() / 1e6:.2f} M parameters (this run)", bits)]  # already per base
        scored = {rows[0][0]: bases}
        for m in markov:
            total, n = m.score(held)
            name = f"order-{m.order} Markov (fitted on the training windows)"
            rows.append((name, total / max(n, 1)))
            scored[name] = n
        self._write(log_dir, f"Held-out bits per base ({self.split}: {len(held)} windows, {bases:,} scored bases)",
                    rows, scored, {"windows": len(held), "bases": bases}, "bits_per_base")

    def _write(self, log_dir: Path, title: str, rows: list, scored: dict, facts: dict, key: str) -> None:
        """Print the rows (this run first) under ``title`` and write them to heldout_report.json; a
        NaN for this run means it diverged."""
        width = max(len(name) for name, _ in rows)
        lines = [f"{title}:"] + [f"  {name:<{width}}  {value:.4f}" for name, value in rows]
        print("\n" + "\n".join(lines) + "\n", flush=True)
        path = log_dir / "heldout_report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"split": self.split, **facts, key: dict(rows), "scored_bases": scored}, indent=2))
        if math.isnan(rows[0][1]):
            raise RuntimeError(f"held-out {key.replace('_', ' ')} is NaN: the run diverged")

    def _masked_report(self, dm, model, log_dir: Path) -> None:
        """A masked LM's report: masked-base bits over the split's hidden bases (every one behind
        ``<mask>``) beside two-sided Markov models scored on the same bases, given the same visible
        context (:class:`~hnet_dna.baselines.TwoSidedMarkovModel`)."""
        to_model = model.tokenizer.from_nucleotide_ids
        pairs = [(to_model(ids), torch.where(labels >= 0, to_model(labels.clamp(min=0)), labels))
                 for ids, labels in dm.masked_windows(self.split, self.max_windows)]
        if not pairs:
            return
        inputs, labels = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        bits, bases = score_masked_windows(model, inputs, labels, dm.hparams.batch_size)
        orders = sorted({min(k, TwoSidedMarkovModel.MAX_ORDER) for k in self.markov_orders})  # 4^(2k+1) counts
        markov = [TwoSidedMarkovModel(k, base_ids=model.tokenizer.base_ids) for k in orders]
        for seq in dm.split_sequences("train", self.max_windows):
            for m in markov:
                m.update(to_model(seq))
        layout = json.dumps(model.config.arch_layout)
        rows = [(f"masked-LM H-Net {layout}, {model.num_parameters() / 1e6:.2f} M parameters (this run)", bits)]
        scored = {rows[0][0]: bases}
        for m in markov:
            total, n = m.score(pairs)
            name = f"two-sided order-{m.order} Markov ({m.order} visible bases each side, fitted on the training windows)"
            rows.append((name, total / max(n, 1)))
            scored[name] = n
        self._write(log_dir, f"Held-out masked-base bits per base ({self.split}: {len(pairs)} windows, {bases:,} hidden bases)",
                    rows, scored, {"windows": len(pairs), "objective": "masked LM", "bases": bases}, "masked_bits_per_base")


@torch.no_grad()
def score_masked_windows(model, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int):
    """A masked LM's (bits per base over the hidden A/C/G/T bases, their number) on masked windows
    (N, L) with their labels (-100 where nothing is hidden), ``batch_size`` at a time, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    base_ids = torch.tensor(model.tokenizer.base_ids, device=device)
    bits = torch.zeros((), dtype=torch.float64, device=device)
    bases = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(inputs), batch_size):
        ids, lab = inputs[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)
        out = model(ids, labels=lab)
        n = torch.isin(lab, base_ids).sum()
        bits += out.bits_per_base.double() * n
        bases += n
    model.train(was_training)
    return float(bits) / max(int(bases), 1), int(bases)


class TrainingWindowLog(pl.Callback):
    """Write the coordinates of every training window each rank used to
    ``<log dir>/training_windows.rank<r>.tsv`` (step, FASTA index, record, start, reverse-complemented):
    provenance for a run, and a check that ranks read different data."""

    def setup(self, trainer, pl_module, stage) -> None:
        self.path = _log_dir(trainer) / f"training_windows.rank{trainer.global_rank}.tsv"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        coords = batch.get("coords")
        if coords is None:
            return
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        records = trainer.datamodule.tables["train"].records
        with path.open("a") as f:
            for source, record, start, rc in coords.tolist():
                f.write(f"{trainer.global_step}\t{source}\t{records[record][1]}\t{start}\t{rc}\n")


class _TsvPredictionWriter(BasePredictionWriter):
    """Predictions as a TSV per rank, ``<folder>/predictions.rank<r>.tsv``, header first."""

    def __init__(self, folder: str | None = None):
        super().__init__(write_interval="batch")
        self.folder = folder

    def header(self, pl_module) -> list[str]:
        raise NotImplementedError

    def setup(self, trainer, pl_module, stage) -> None:
        folder = Path(self.folder) if self.folder else _log_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"predictions.rank{trainer.global_rank}.tsv"
        self.path.write_text("\t".join(self.header(pl_module)) + "\n")


class PredictionWriter(_TsvPredictionWriter):
    """Write what ``python -m hnet_dna predict`` computes to ``<folder>/predictions.rank<r>.tsv``:
    one row per window with its coordinates (1-based, inclusive), strand, bits per base and the
    number of outer-level chunks the router cut.

    Args:
        folder: where to write (default: the run's log folder).
    """

    def header(self, pl_module) -> list[str]:
        return ["record", "start", "end", "strand", "bits_per_base", "chunks"]

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        dm = trainer.datamodule
        records = dm.tables["train"].records
        window = batch["input_ids"].shape[1]
        chunks = prediction["boundaries"].sum(-1).tolist() if prediction["boundaries"] is not None else None
        with self.path.open("a") as f:
            for row, (_source, record, start, rc) in enumerate(prediction["coords"].tolist()):
                n = chunks[row] if chunks is not None else ""
                f.write(f"{records[record][1]}\t{start + 1}\t{start + window}\t{'-' if rc else '+'}\t"
                        f"{prediction['bits_per_base'][row]:.4f}\t{n}\n")


class TrainingCurves(pl.Callback):
    """Plot the run when fitting ends: bits per base (training steps and validations) and the
    compression each chunking level reached, saved as ``<log dir>/training_curves.png``.

    Values are taken from what the task logs (``train/bits_per_base``, ``val/bits_per_base``,
    ``train/compression_<s>``), so the plot needs no logger.
    """

    def __init__(self, filename: str = "training_curves.png"):
        self.filename = filename
        self.train: dict[str, list[tuple[int, torch.Tensor]]] = {}  # values stay on device until the plot
        self.val: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/") and (key.endswith("bits_per_base") or "compression_" in key):
                self.train.setdefault(key, []).append((trainer.global_step, value.detach().clone()))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val/bits_per_base" in trainer.callback_metrics:
            self.val.append((trainer.global_step, float(trainer.callback_metrics["val/bits_per_base"])))

    def on_fit_end(self, trainer, pl_module) -> None:
        path = _log_dir(trainer) / self.filename
        if not trainer.is_global_zero or not self.train:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = {k: [(step, float(v)) for step, v in points] for k, points in self.train.items()}

        levels = sorted(k for k in train if "compression_" in k)
        fig, axes = plt.subplots(1, 2 if levels else 1, figsize=(11 if levels else 6, 4), squeeze=False)
        ax = axes[0, 0]
        steps, bits = zip(*train.get("train/bits_per_base", [(0, math.nan)]))
        ax.plot(steps, bits, lw=0.6, alpha=0.5, label="train (per step)")
        if len(bits) >= 20:
            k = max(1, len(bits) // 20)
            smooth = torch.tensor(bits).unfold(0, k, 1).mean(-1).tolist()
            ax.plot(steps[k - 1 :], smooth, lw=1.5, label=f"train (mean of {k})")
        if self.val:
            ax.plot(*zip(*self.val), "o-", label="validation")
        ax.set(xlabel="optimizer step", ylabel="bits per base (A/C/G/T)", title="Next-base loss")
        ax.legend()
        if levels:
            ax = axes[0, 1]
            targets = pl_module.model.config.ratio_targets
            for key in levels:
                level = int(key.rsplit("_", 1)[1])
                line = ax.plot(*zip(*train[key]), lw=0.8, label=f"level {level}")[0]
                if level < len(targets):
                    ax.axhline(targets[level], color=line.get_color(), ls="--", lw=0.8, label=f"target N = {targets[level]:g}")
            ax.set(xlabel="optimizer step", ylabel="bases per chunk", title="Compression by the router", yscale="log")
            ax.legend()
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)


class ClassPredictionWriter(_TsvPredictionWriter):
    """Write what ``python -m hnet_dna predict`` classifies to ``<folder>/predictions.rank<r>.tsv``:
    one row per sequence, ``id``, ``predicted`` (the class name), then one probability column per
    class (``p_<class>``). A multilabel model: ``id``, ``predicted`` (the labels with probability
    at least 0.5, joined by ``;``), then ``p_<label>`` per label; a regression model: ``id``, then
    one column per target, in the target's units.

    Args:
        folder: where to write (default: the run's log folder).
    """

    def header(self, pl_module) -> list[str]:
        names = pl_module.classifier.class_names
        if getattr(pl_module, "task", "multiclass") == "regression":
            return ["id", *names]
        return ["id", "predicted", *[f"p_{c}" for c in names]]

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        records = trainer.datamodule.predict_records
        names = pl_module.classifier.class_names
        if "values" in prediction:  # multilabel probabilities or regression targets
            multilabel = pl_module.task == "multilabel"
            with self.path.open("a") as f:
                for i, v in zip(prediction["index"].tolist(), prediction["values"].tolist()):
                    called = [";".join(n for n, x in zip(names, v) if x >= 0.5)] if multilabel else []
                    f.write("\t".join([records[i].id, *called, *[f"{x:.6g}" for x in v]]) + "\n")
            return
        probs = prediction["probs"].tolist()
        with self.path.open("a") as f:
            for i, p in zip(prediction["index"].tolist(), probs):
                best = max(range(len(p)), key=p.__getitem__)
                f.write("\t".join([records[i].id, names[best], *[f"{x:.6f}" for x in p]]) + "\n")
