"""One fit of one (model, seed): the pretraining task on the run's window stream, held-out points
along the way (:class:`CurvePoints`), then compute and memory figures in ``result.json``. Runs in
a child process of the pipeline (:mod:`hnet_dna.protocols.data_efficiency.pipeline`)."""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from ... import backends
from ...runs import atomic_path, json_text
from ...data.datamodule import GenomeDataModule
from .flops import count_training_flops

__all__ = ["fit_one", "CurvePoints", "flops_batch", "FLOPS_BATCHES"]

# An H-Net's FLOPs follow its compression, which varies from batch to batch (repeats, GC, N runs):
# counted on this many seeded random training batches, reported as mean and range.
FLOPS_BATCHES = 4


def fit_one(spec_path: Path) -> None:
    """Fit one (model, seed) as the spec says (run in a subprocess by :func:`run_pipeline`)."""
    from ...tasks.callbacks import TrainingWindowLog
    from ...tasks.pretrain import PretrainModule

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
    # stored in the nucleotide table; a byte-level model reads ASCII codes
    heldout = {name: task.model.tokenizer.from_nucleotide_ids(torch.from_numpy(np.load(path).astype(np.int64)))
               for name, path in spec["heldout"].items()}
    points = CurvePoints(spec, heldout, run_dir)
    trainer = pl.Trainer(
        max_steps=total, limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        # The window log first: a fit killed right after a curve point has logged that point's batch.
        default_root_dir=str(run_dir), callbacks=[TrainingWindowLog(), points],
        **{"gradient_clip_val": 1.0, "enable_model_summary": False, "enable_progress_bar": False, **spec["trainer"]},
    )
    ckpt = run_dir / "last.ckpt"
    points.resume_from(ckpt)  # rows of a killed attempt after its checkpoint (or all of them) go
    if trainer.strategy.root_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(task, datamodule=dm, ckpt_path=str(ckpt) if ckpt.exists() else None)
    device = trainer.strategy.root_device  # where it trained (peak memory is read there)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process max RSS"
    # Lightning's teardown has moved the model back to the CPU, wherever it trained: count on the
    # training device again (fast on a GPU), with the batch wherever the parameters are.
    model = task.model.to(device)
    counts = [count_training_flops(model, flops_batch(dm, model, seed=(spec["seed"], k))) for k in range(FLOPS_BATCHES)]
    flops = {c: float(np.mean([x[c] for x in counts])) for c in ("torch", "causal")}
    spread = {c: [float(min(x[c] for x in counts)), float(max(x[c] for x in counts))] for c in ("torch", "causal")}
    result = {
        "model": spec["name"], "seed": spec["seed"], "params": model.num_parameters(),
        "flops_per_base": flops["torch"], "flops_per_base_causal": flops["causal"],
        "flops_spread": {"batches": FLOPS_BATCHES, **spread},  # per convention: [min, max] over the batches
        "train_bases": points.trained_bases, "train_seconds": points.train_seconds,
        "train_bases_per_s": points.trained_bases / max(points.train_seconds, 1e-9),
        "peak_memory_mb": peak, "peak_memory_kind": kind, "device": _device_name(device),
        "decayed_bits_per_base": points.decayed,
    }
    with atomic_path(run_dir / "result.json") as tmp:
        tmp.write_text(json_text(result))
    ckpt.unlink(missing_ok=True)  # the fit is done: its result is kept, its resume point is not needed


def flops_batch(dm: GenomeDataModule, model, seed=0) -> torch.Tensor:
    """A training batch (B, L) for counting FLOPs: windows drawn at random (``seed``) from the whole
    training split (the first windows of a chromosome are its subtelomeric start, not typical), in
    the model's ids and on the device of the model's parameters (never assumed: after ``fit``
    Lightning has moved the model to the CPU)."""
    train = dm.datasets["train"]
    rng = np.random.default_rng(seed)
    ids = torch.stack([train[(0, int(i))]["input_ids"] for i in rng.integers(0, len(train), dm.hparams.batch_size)])
    return model.tokenizer.from_nucleotide_ids(ids).to(next(model.parameters()).device)


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

    def resume_from(self, ckpt: Path) -> None:
        """Before a fit starts: keep the rows of ``points.csv`` and of the training-window log that
        the checkpoint ``ckpt`` covers, and drop the rest (a kill between a point and its
        checkpoint). Without a checkpoint the fit starts at step 0 and every earlier row goes (a
        kill before the first checkpoint, e.g. within ``checkpoint_interval_s``): the rows are
        written again, never twice."""
        step = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"] if ckpt.exists() else -1
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
        from ...tasks.callbacks import score_windows

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




if __name__ == "__main__":  # the pipeline's child away from a fork server: python -m ...worker SPEC
    import sys

    fit_one(Path(sys.argv[1]))
