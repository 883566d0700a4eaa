"""The Lightning CLI behind ``python -m hnet_dna fit|validate|test|predict --config FILE``.

Model and data are chosen by class (subclass mode), so a recipe names them::

    model:
      class_path: hnet_dna.tasks.PretrainModule
      init_args: {model: tiny-hnet, lr: 3e-3}
    data:
      class_path: hnet_dna.data.GenomeDataModule
      init_args: {fasta: genome.fa, window: 1024}

and any field can be overridden on the command line (``--data.fasta PATH``, ``--trainer.max_steps
1000``). Fine-tuning recipes name ``hnet_dna.tasks.FinetuneModule`` and
``hnet_dna.data.LabelledDataModule`` the same way (``pipelines/finetune/``). Errors in the user's inputs (files, configs, sequences) are reported as one message and
exit status 2, before anything is written."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from .data.datamodule import check_resume_world_size
from .runs import closing_process_group, exit_on_user_error
from .weights import CheckpointError

__all__ = ["HNetCLI", "TRAINER_DEFAULTS", "build_cli", "read_checkpoint", "main"]

TRAINER_DEFAULTS = {"gradient_clip_val": 1.0}


class HNetCLI(LightningCLI):
    """LightningCLI whose checkpoints keep a ``last.ckpt`` unless told otherwise, where
    ``--ckpt_path last`` means the newest ``last*.ckpt`` anywhere under the trainer's
    ``default_root_dir`` (Lightning alone looks only in the new run's own version folder), and
    ``--ckpt_path best`` (validate / test / predict) the best model that run's ModelCheckpoint
    recorded, also in a new process. A checkpoint is checked before anything is written."""

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.checkpoint_callbacks:
            if callback.save_last is None:
                callback.save_last = True
        return trainer

    def _parse_ckpt_path(self) -> None:
        # Resolve --ckpt_path last / best and check the file before Lightning reads the
        # checkpoint's hyperparameters (here, before anything else): a damaged file is reported by
        # name, and the hyperparameters of the checkpoint actually used reach the model's config.
        subcommand = self.config.get("subcommand")
        if subcommand:
            config = self.config[subcommand]
            ckpt = config.get("ckpt_path")
            root = Path(config.get("trainer", {}).get("default_root_dir") or Path.cwd())
            if ckpt == "last":
                ckpt = _newest(root, "last*.ckpt")
                if ckpt is None and subcommand != "fit":
                    raise CheckpointError(f"--ckpt_path last: no last*.ckpt under {root} to {subcommand} with")
                note = f"using {ckpt}" if ckpt else f"no last*.ckpt under {root}: starting from scratch"
                print(f"hnet_dna: --ckpt_path last: {note}", file=sys.stderr, flush=True)
            elif ckpt == "best" and subcommand != "fit":
                ckpt = _best_checkpoint(root)
                print(f"hnet_dna: --ckpt_path best: using {ckpt}", file=sys.stderr, flush=True)
            elif ckpt not in (None, "best", "hpc", "registry") and not Path(ckpt).is_file():
                raise CheckpointError(f"--ckpt_path {ckpt}: no such checkpoint file")
            config.ckpt_path = str(ckpt) if ckpt is not None else None
            if ckpt is not None and Path(ckpt).is_file():
                self._checkpoint = read_checkpoint(ckpt)  # kept: fit checks its loader state later
        super()._parse_ckpt_path()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        world = self.trainer.world_size
        check = getattr(self.datamodule, "check_ready", None)
        if check is not None:
            check(subcommand, world)  # before the trainer writes anything
        check_data = getattr(self.model, "check_data", None)
        if check_data is not None and self.datamodule is not None:
            check_data(self.datamodule)  # a model and data that do not go together, said before any output
        ckpt = kwargs.get("ckpt_path")
        if subcommand == "fit" and ckpt not in (None, "best", "hpc", "registry"):
            state = getattr(self, "_checkpoint", None) or read_checkpoint(ckpt)
            for loader_state in _train_loader_states(state):
                check_resume_world_size(loader_state, world, checkpoint=f"--ckpt_path {ckpt}")
        return kwargs


def _newest(root: Path, pattern: str) -> Path | None:
    found = sorted(root.rglob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _best_checkpoint(root: Path) -> Path:
    """The best model of the newest run under ``root``, as its ModelCheckpoint recorded it in the
    run's last checkpoint (a new process has no callback state of its own)."""
    last = _newest(root, "last*.ckpt")
    if last is None:
        raise CheckpointError(f"--ckpt_path best: no run under {root} (no last*.ckpt); fit one first, or give a .ckpt path")
    callbacks = read_checkpoint(last).get("callbacks", {})
    for key, state in callbacks.items():
        path = state.get("best_model_path") if isinstance(state, dict) and key.startswith("ModelCheckpoint") else None
        if path and state.get("monitor"):
            if not Path(path).is_file():
                raise CheckpointError(f"--ckpt_path best: {last} names {path} as the best model, and that file is gone")
            return Path(path)
    raise CheckpointError(
        f"--ckpt_path best: {last} records no best model: the run needs a ModelCheckpoint with a monitor "
        "(e.g. val/mcc); give a .ckpt path instead"
    )


def read_checkpoint(path: str | Path) -> dict:
    """Open a Lightning checkpoint without reading its tensors (memory-mapped), or raise a
    :class:`CheckpointError` naming the file and what is wrong with it."""
    import torch

    path = Path(path)
    with path.open("rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # what torch.save writes
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)  # as Lightning loads it
    except Exception as e:  # noqa: BLE001: torch raises many kinds for a damaged file
        if is_zip:
            cause = ("it is damaged or truncated (a run killed while saving, a full disk, an incomplete copy): "
                     f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}")
        else:
            cause = "it is not a file written by torch.save (a Lightning .ckpt is a zip archive)"
        raise CheckpointError(
            f"--ckpt_path {path}: not a readable checkpoint: {cause}. Use another .ckpt of the run "
            f"(e.g. in {path.parent})."
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(
            f"--ckpt_path {path}: not a Lightning checkpoint (no 'state_dict'): give a .ckpt written by "
            "python -m hnet_dna fit; a save_pretrained folder goes to --model.model instead."
        )
    return state


def _train_loader_states(checkpoint: dict) -> list[dict]:
    """The saved states of our training loaders (see ``ResumableDataLoader.state_dict``)."""
    try:
        states = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    except (KeyError, TypeError):
        return []
    return [s for s in states if isinstance(s, dict) and "consumed_batches" in s]



def _cli(args: list[str] | None, **kwargs) -> HNetCLI:
    return HNetCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        trainer_defaults=TRAINER_DEFAULTS,
        args=args,
        **kwargs,
    )


def build_cli(args: list[str]) -> HNetCLI:
    """The CLI's model, data module and trainer for ``args`` (``--config FILE ...``), built but not
    run: what the fine-tuning protocol fits and tests with."""
    return _cli(args, run=False)


def main(args: list[str] | None = None) -> None:
    with closing_process_group():
        exit_on_user_error(lambda: _cli(
            args,
            parser_kwargs={"prog": "python -m hnet_dna", "description": "hnet_dna: pretrain, fine-tune and evaluate H-Net DNA models"},
        ))
