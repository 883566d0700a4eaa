"""``python -m hnet_dna fit|validate|test|predict --config FILE``: the Lightning CLI.

Model and data are chosen by class (subclass mode), so a recipe names them::

    model:
      class_path: hnet_dna.tasks.PretrainModule
      init_args: {model: tiny-hnet, lr: 3e-3}
    data:
      class_path: hnet_dna.data.GenomeDataModule
      init_args: {fasta: genome.fa, window: 1024}

and any field can be overridden on the command line (``--data.fasta PATH``, ``--trainer.max_steps
1000``). Errors in the user's inputs (files, configs, sequences) are reported as one message and
exit status 2, before anything is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from .config import ConfigError
from .data.datamodule import check_resume_world_size
from .data.genome import DataError
from .model.hnet import InputError
from .tokenizer import SequenceError
from .weights import CheckpointError

USER_ERRORS = (DataError, ConfigError, SequenceError, CheckpointError, InputError)


TRAINER_DEFAULTS = {"gradient_clip_val": 1.0}


class HNetCLI(LightningCLI):
    """LightningCLI whose checkpoints keep a ``last.ckpt`` unless told otherwise, and where
    ``--ckpt_path last`` means the newest ``last*.ckpt`` anywhere under the trainer's
    ``default_root_dir`` (Lightning alone looks only in the new run's own version folder)."""

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.checkpoint_callbacks:
            if callback.save_last is None:
                callback.save_last = True
        return trainer

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyperparameters here, before anything else: a damaged
        # file must be reported by name first, not as a zip-reader traceback.
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt and Path(ckpt).is_file():
            read_checkpoint(ckpt)
        super()._parse_ckpt_path()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        world = self.trainer.world_size
        check = getattr(self.datamodule, "check_ready", None)
        if check is not None:
            check(subcommand, world)  # before the trainer writes anything
        ckpt = kwargs.get("ckpt_path")
        if ckpt == "last":
            root = Path(self.trainer.default_root_dir)
            found = sorted(root.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
            if not found and subcommand != "fit":
                raise CheckpointError(f"--ckpt_path last: no last*.ckpt under {root} to {subcommand} with")
            kwargs["ckpt_path"] = str(found[-1]) if found else None
            note = f"using {found[-1]}" if found else f"no last*.ckpt under {root}: starting from scratch"
            print(f"hnet_dna: --ckpt_path last: {note}", file=sys.stderr, flush=True)
        elif ckpt not in (None, "best", "hpc", "registry") and not Path(ckpt).is_file():
            raise CheckpointError(f"--ckpt_path {ckpt}: no such checkpoint file")
        if kwargs.get("ckpt_path") not in (None, "best", "hpc", "registry"):
            state = read_checkpoint(kwargs["ckpt_path"])
            if subcommand == "fit":
                for loader_state in _train_loader_states(state):
                    check_resume_world_size(loader_state, world, checkpoint=f"--ckpt_path {kwargs['ckpt_path']}")
        return kwargs


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


def _user_error(exc: BaseException) -> BaseException | None:
    """Our input error, possibly wrapped by jsonargparse or Lightning."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, USER_ERRORS):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def main(args: list[str] | None = None) -> None:
    try:
        HNetCLI(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS,
            parser_kwargs={"prog": "python -m hnet_dna", "description": "hnet_dna: pretrain and evaluate H-Net DNA models"},
            args=args,
        )
    except Exception as exc:
        err = _user_error(exc)
        if err is None:
            raise
        print(f"hnet_dna: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
