"""Causal-LM (or masked-LM) pretraining of an H-Net (or an isotropic baseline) as a LightningModule.

Loss: next-base cross-entropy + alpha * sum over chunking levels of the ratio loss (eq. 10).
Logged (``train/``, ``val/``, ``test/``): loss, lm_loss, bits_per_base (A/C/G/T targets), ratio_loss,
and per chunking level s: ``F_s`` (boundary fraction), ``G_s`` (mean boundary probability) and
``compression_s`` (bases per chunk); in training also ``bases_per_s`` and the learning rate.

A bidirectional model (``bidirectional: true``, e.g. the ``tiny-bihnet`` preset) is a masked LM: the
data module hides bases (``--data.mlm_fraction 0.15``), the loss is the cross-entropy at the hidden
bases, ``bits_per_base`` is the masked-base bits per base, and ``masked_accuracy`` is logged too.
A masked model with causal windows, or the reverse, is refused before anything is written.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torchmetrics.aggregation import MeanMetric

from ..config import ConfigError, HNetConfig
from ..model.loading import build_model
from ..optim import make_optimizer, stage_lr_multipliers

__all__ = ["PretrainModule", "build_model", "lr_factor", "describe_learning_rates"]


DECAY_SHAPES = ("linear", "1-sqrt")


def lr_factor(
    step: int, total: int, schedule: str, warmup: float, decay: float, floor: float, decay_shape: str = "linear"
) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based) of ``total``.

    * ``wsd`` (warmup-stable-decay, the paper's schedule: 10 % warmup, 20 % decay): linear warmup
      over ``round(warmup * total)`` steps to 1, constant, then over the last ``round(decay *
      total)`` steps a decay from 1 to ``floor``, which it reaches at step ``total`` (just after the last). The paper names
      the schedule and its fractions but its decay shape could not be checked here, so both
      common shapes are offered: ``linear`` (default, ``1 - x``) and ``1-sqrt`` (``1 - sqrt(x)``,
      the cooldown of Hägele et al. 2024), x the fraction of the decay done.
    * ``cosine``: warmup, then a half cosine from 1 to ``floor`` over the remaining steps.
    * ``constant``: warmup, then 1.
    """
    if decay_shape not in DECAY_SHAPES:
        raise ConfigError(f"decay_shape must be one of {DECAY_SHAPES}, got {decay_shape!r}")
    warm_steps = max(1, round(warmup * total))
    if step < warm_steps:
        return (step + 1) / warm_steps
    if schedule == "constant":
        return 1.0
    if schedule == "wsd":
        decay_steps = max(1, round(decay * total))
        decay_start = total - decay_steps
        if step < decay_start:
            return 1.0
        done = min(1.0, (step - decay_start) / decay_steps)  # 0 at the decay's first step, 1 at ``total``
        remaining = 1 - done if decay_shape == "linear" else 1 - math.sqrt(done)
        return floor + (1 - floor) * remaining
    progress = min(1.0, (step - warm_steps) / max(1, total - warm_steps))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def describe_learning_rates(config: HNetConfig, lr: float, schedule: str, total: int) -> str:
    """One line per stage: its peak learning rate, resolution and width."""
    lines = [f"hnet_dna: peak learning rates ({schedule} schedule over {total:,} optimizer steps):"]
    positions = 1.0
    for s, mult in enumerate(stage_lr_multipliers(config)):
        where = "base-pair resolution" if s == 0 else f"~{positions:g} bases per position"
        lines.append(f"  stage {s} ({where}, d_model {config.d_model[s]}): {lr * mult:.3g}  (lr x {mult:.3g})")
        if s < len(config.ratio_targets):
            positions *= config.ratio_targets[s]
    return "\n".join(lines)


class PretrainModule(pl.LightningModule):
    """Pretraining task.

    Args:
        model: preset name, config JSON, ``save_pretrained`` folder, or inline config fields.
        lr: peak learning rate at base-pair resolution: stage 0 of an H-Net and every layer of an
            isotropic model run at ``lr``; inner stages at ``lr`` times their eq. 11 multiplier
            (below 1; see ``hnet_dna.optim``). Each stage's rate is printed when fitting starts.
        weight_decay, betas: AdamW settings (no decay on norms, biases, embeddings, SSM scalars).
        schedule: ``wsd`` (warmup-stable-decay), ``cosine`` or ``constant`` (see :func:`lr_factor`).
        warmup_fraction, decay_fraction: of the total optimizer steps.
        decay_shape: ``linear`` or ``1-sqrt``: the shape of the ``wsd`` decay.
        min_lr_fraction: the schedule's final learning rate as a fraction of ``lr``.
        export_dir: where ``save_pretrained`` writes the model when fitting ends (default:
            ``<log dir>/pretrained``).
        export: False = no export when fitting ends (the checkpoints still hold the weights).
        gradient_checkpointing: recompute each block in the backward pass instead of keeping its
            activations (:meth:`HNetForCausalLM.gradient_checkpointing_enable`): less training
            memory for long windows, about a third more time per step, same results.
    """

    def __init__(
        self,
        model: str | dict = "tiny-hnet",
        lr: float = 3e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        schedule: str = "wsd",
        warmup_fraction: float = 0.1,
        decay_fraction: float = 0.2,
        min_lr_fraction: float = 0.0,
        export_dir: str | None = None,
        decay_shape: str = "linear",
        export: bool = True,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if schedule not in ("wsd", "cosine", "constant"):
            raise ConfigError(f"--model.schedule must be wsd, cosine or constant, got {schedule!r}")
        if decay_shape not in DECAY_SHAPES:
            raise ConfigError(f"--model.decay_shape must be one of {', '.join(DECAY_SHAPES)}, got {decay_shape!r}")
        if not lr > 0:
            raise ConfigError(f"--model.lr must be positive, got {lr}")
        self.save_hyperparameters()
        self.model = build_model(model).gradient_checkpointing_enable(gradient_checkpointing)
        self._batch_started = None
        self.is_masked_lm = bool(self.model.config.bidirectional)
        names = ["loss", "lm_loss", "bits_per_base", "ratio_loss"] + (["masked_accuracy"] if self.is_masked_lm else [])
        for s in range(self.model.config.num_stages - 1):
            names += [f"F_{s}", f"G_{s}", f"compression_{s}"]
        self.heldout_metrics = torch.nn.ModuleDict(
            {f"{prefix}_{name}": MeanMetric().set_dtype(torch.float64) for prefix in ("val", "test") for name in names}
        )

    # ------------------------------------------------------------------------------- steps
    def _model_ids(self, batch: dict) -> dict:
        # The genome data module encodes with the nucleotide table; a byte-level model (the
        # official checkpoints) takes ASCII codes.
        tok = self.model.tokenizer
        out = {**batch, "input_ids": tok.from_nucleotide_ids(batch["input_ids"])}
        if "labels" in batch:  # a masked LM's labels hold -100 where nothing is scored
            labels = batch["labels"]
            out["labels"] = torch.where(labels >= 0, tok.from_nucleotide_ids(labels.clamp(min=0)), labels)
        return out

    def check_data(self, datamodule) -> None:
        """Refuse a masked LM with causal windows (nothing hidden) or a causal LM with masked windows."""
        fraction = float(getattr(datamodule, "hparams", {}).get("mlm_fraction", 0.0) or 0.0)
        if self.is_masked_lm and fraction <= 0:
            raise ConfigError("the model is a masked LM (bidirectional) and the data hide no bases: set "
                              "--data.mlm_fraction 0.15 (BERT's), or pretrain a causal model")
        if not self.is_masked_lm and fraction > 0:
            raise ConfigError(f"--data.mlm_fraction {fraction:g} hides bases for a masked LM, and the model is causal "
                              "(it would learn to predict <mask>); set it to 0, or pretrain a bidirectional model "
                              "(e.g. --model.model tiny-bihnet)")

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.datamodule is not None:
            self.check_data(self.trainer.datamodule)

    def forward(self, batch: dict, weighted: bool = True):
        return self.model(
            batch["input_ids"], mask=batch.get("mask"), labels=batch["labels"],
            loss_weights=batch.get("loss_weights") if weighted else None,
        )

    def _log_outputs(self, prefix: str, out, batch: dict, on_step: bool) -> None:
        values = {"loss": out.loss, "lm_loss": out.lm_loss, "bits_per_base": out.bits_per_base, "ratio_loss": out.ratio_loss}
        if self.is_masked_lm:
            values["masked_accuracy"] = out.masked_accuracy
        for s, (b, m, p) in enumerate(zip(out.boundaries, out.masks, out.boundary_probs)):
            real = m.sum().clamp(min=1)
            frac = (b & m).sum() / real
            values.update({f"F_{s}": frac, f"G_{s}": p.sum() / real, f"compression_{s}": 1.0 / frac.clamp(min=1e-6)})
        bar = {"bits_per_base"} | ({"loss", "compression_0"} if prefix == "train" else set())
        if on_step:  # step values are not averaged: no count (and no host sync) needed
            size = batch["labels"].shape[0]
            for name, value in values.items():
                self.log(f"{prefix}/{name}", value, on_step=True, on_epoch=False, prog_bar=name in bar, batch_size=size)
            return
        # Held-out means over the whole split, each batch weighted by its A/C/G/T targets. The sums
        # are torchmetrics states (fp64), summed over processes: the result does not depend on the
        # number of devices (Lightning's own DDP mean truncates the summed batch size to an integer).
        targets = batch["labels"] if self.is_masked_lm else batch["labels"][:, 1:]  # the hidden bases / next bases
        scored = torch.isin(targets, torch.tensor(self.model.tokenizer.base_ids, device=targets.device)).sum()
        for name, value in values.items():
            metric = self.heldout_metrics[f"{prefix}_{name}"]
            metric.update(value.detach().double(), scored.double())
            self.log(f"{prefix}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name in bar)

    def training_step(self, batch: dict, batch_idx: int):
        batch = self._model_ids(batch)
        out = self(batch)
        self._log_outputs("train", out, batch, on_step=True)
        return out.loss

    def validation_step(self, batch: dict, batch_idx: int):
        batch = self._model_ids(batch)
        self._log_outputs("val", self(batch, weighted=False), batch, on_step=False)

    def test_step(self, batch: dict, batch_idx: int):
        batch = self._model_ids(batch)
        self._log_outputs("test", self(batch, weighted=False), batch, on_step=False)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Per window: coordinates, bits per base and the outer level's boundary positions."""
        batch = self._model_ids(batch)
        out = self.model(batch["input_ids"], mask=batch.get("mask"))
        logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
        targets = batch["input_ids"][:, 1:]
        if self.is_masked_lm:  # bits of the hidden bases (-100 elsewhere: not a base id)
            logp, targets = torch.log_softmax(out.logits.float(), -1), batch["labels"]
        nll = -logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        is_base = torch.isin(targets, torch.tensor(self.model.tokenizer.base_ids, device=targets.device))
        bits = (nll * is_base).sum(-1) / is_base.sum(-1).clamp(min=1) / math.log(2)
        return {
            "coords": batch.get("coords"),
            "bits_per_base": bits,
            "boundaries": out.boundaries[0] if out.boundaries else None,
        }

    # ------------------------------------------------------------------------- throughput
    def on_train_batch_start(self, batch, batch_idx):
        # Bases per second between consecutive batch starts: the whole step (data, forward,
        # backward, optimizer) in steady state, without a device sync.
        now = time.perf_counter()
        if self._batch_started is not None and batch_idx > 0:
            seconds, bases = now - self._batch_started[0], self._batch_started[1]
            self.log("train/bases_per_s", bases / max(seconds, 1e-9), on_step=True, on_epoch=False)
        self._batch_started = (now, batch["input_ids"].numel() * self.trainer.world_size)

    # ------------------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        hp = self.hparams
        optimizer = make_optimizer(self.model, lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_factor(
                step, total, hp.schedule, hp.warmup_fraction, hp.decay_fraction, hp.min_lr_fraction, hp.decay_shape
            ),
        )
        if self.trainer.is_global_zero:
            print(describe_learning_rates(self.model.config, hp.lr, hp.schedule, total), file=sys.stderr, flush=True)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------------------- export
    def export_path(self) -> Path:
        if self.hparams.export_dir:
            return Path(self.hparams.export_dir)
        root = self.trainer.log_dir or self.trainer.default_root_dir
        return Path(root) / "pretrained"

    def on_fit_end(self) -> None:
        if not self.hparams.export:
            return
        path = self.export_path()  # on every rank: trainer.log_dir is a collective under DDP
        if self.trainer.is_global_zero:
            self.model.save_pretrained(path)
