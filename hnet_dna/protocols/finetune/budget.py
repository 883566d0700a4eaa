"""One training budget for every system of a fine-tuning table (``--budget``), and what each run
spent (:func:`spent`).

* ``time:MINUTES``: each fit trains for at most MINUTES of wall time, within the recipe's
  ``max_epochs`` (which the learning-rate schedule spans: a fit that finishes them sooner stops there);
* ``epochs:N``: each fit runs at most N epochs (no time cap);
* ``flops:X``: each fit runs at most X training FLOPs: ``floor(X / FLOPs per optimizer step)`` steps,
  a step counted on a batch of the batch-size longest training sequences (an upper bound where lengths
  vary) with the data-efficiency benchmark's counter
  (:func:`~hnet_dna.protocols.data_efficiency.flops.count_step_flops`, ``torch`` convention: the
  FLOPs of the matmuls, convolutions and attention of the forward and backward);
* none given: the recipe's own trainer caps (``max_epochs``, ``max_time``).

Early stopping and model selection stay the recipe's, on validation only: a budget is a cap, and
the records say what each run spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning.pytorch as pl
import torch

from ...config import ConfigError

__all__ = ["Budget", "StopAtStep", "parse_budget", "step_flops", "count_parameters"]

KINDS = ("time", "epochs", "flops")


@dataclass(frozen=True)
class Budget:
    kind: str  # time, epochs or flops
    amount: float  # minutes, epochs or FLOPs

    def __str__(self) -> str:
        short = f"{self.amount:g}"  # "epochs:4", "flops:2e+14"; exact where 6 digits would round
        return f"{self.kind}:{short if float(short) == self.amount else repr(self.amount)}"

    def trainer_args(self, flops_per_step: float | None = None) -> list[str]:
        """The trainer overrides that impose the budget (after the recipe's, so they win)."""
        if self.kind == "time":
            seconds = round(self.amount * 60)
            days, rest = divmod(seconds, 86400)
            clock = f"{days:02d}:{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
            return ["--trainer.max_time", clock, "--trainer.max_steps", "-1"]
        if self.kind == "epochs":
            return ["--trainer.max_epochs", str(int(self.amount)), "--trainer.max_time", "null", "--trainer.max_steps", "-1"]
        # max_steps sets the schedule's length; StopAtStep makes the last step's validation run
        return ["--trainer.max_steps", str(self.steps(flops_per_step)), "--trainer.max_epochs", "-1",
                "--trainer.max_time", "null"]

    def steps(self, flops_per_step: float | None) -> int:
        """``flops``: the optimizer steps the budget buys (at least one)."""
        if not flops_per_step or flops_per_step <= 0:
            raise ValueError("a FLOPs budget needs the FLOPs of one optimizer step")
        return max(1, math.floor(self.amount / flops_per_step))


def parse_budget(text: str | None) -> Budget | None:
    """``time:MINUTES``, ``epochs:N`` or ``flops:X`` (``1e15`` and ``2.5e14`` work); None: the recipe's."""
    if text is None:
        return None
    kind, _, amount = text.strip().partition(":")
    kind, amount = kind.strip(), amount.strip()
    try:
        value = float(amount)
    except ValueError:
        value = math.nan
    if kind not in KINDS:
        problem = f"{kind!r} is not a budget kind"
    elif not amount:
        problem = "it names no amount after a colon"
    elif not math.isfinite(value) or value <= 0:
        problem = f"the amount {amount!r} is not a positive number"
    elif kind == "epochs" and value != int(value):
        problem = f"epochs must be a whole number, not {amount}"
    elif kind == "time" and value * 60 < 1:
        problem = f"{amount} minutes is under a second"
    else:
        return Budget(kind, value)
    raise ConfigError(f"--budget {text!r}: {problem}; give time:MINUTES, epochs:N or flops:X "
                      "(e.g. --budget epochs:10, --budget time:4, --budget flops:2e14)")


class StopAtStep(pl.Callback):
    """Stops a ``flops`` budget's fit at its last optimizer step through ``trainer.should_stop``,
    as EarlyStopping and ``max_time`` do, so that Lightning validates that step (reaching
    ``max_steps`` mid-epoch ends the fit without validating the steps since the epoch began)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def count_parameters(module: torch.nn.Module) -> dict[str, int]:
    """``trainable_parameters`` (requires_grad) and ``total_parameters`` of ``module``."""
    params = list(module.parameters())
    return {"trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
            "total_parameters": sum(p.numel() for p in params)}


def step_flops(task, datamodule) -> float:
    """Training FLOPs of one optimizer step of ``task`` (a classifier LightningModule whose head is
    built: :meth:`~hnet_dna.tasks.classifier.ClassifierTask.attach_data`): forward and backward of
    a batch of the batch-size longest training sequences (the caller multiplies by gradient
    accumulation). The random state and the gradients are left as they were."""
    from ...data.labelled_datamodule import pad_batch

    train = datamodule.datasets["train"]
    size = min(int(datamodule.hparams.batch_size), len(train))
    if getattr(datamodule, "task", None) == "segmentation":  # windows of one length: the first batch
        batch = torch.utils.data.default_collate([train[(0, i)] for i in range(size)])
        return _counted(task, batch)
    longest = sorted(range(len(train)), key=lambda i: (-len(train.ids[i]), i))[:size]
    batch = pad_batch([{"input_ids": train.ids[i], "label": train.labels[i], "index": i} for i in longest],
                      datamodule.tokenizer.pad_id)
    return _counted(task, batch)


def _counted(task, batch: dict) -> float:
    from ..data_efficiency.flops import count_step_flops

    device = next(task.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = task.training
    task.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        flops = count_step_flops(lambda: task(batch).loss, device.type)["torch"]
    task.zero_grad(set_to_none=True)
    task.train(was_training)
    return flops
