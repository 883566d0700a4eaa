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

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        self._check_split(subcommand)
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
        return kwargs

    def _check_split(self, subcommand: str) -> None:
        """Fail before the trainer writes anything when the data has no windows for the command."""
        datasets = getattr(self.datamodule, "datasets", None)
        if datasets is None:
            return
        needs = {"validate": ["val"], "test": ["test"], "predict": ["test", "val"]}.get(subcommand, [])
        if needs and not any(len(datasets[split]) for split in needs):
            raise DataError(
                f"{subcommand}: the data has no {' or '.join(needs)} windows; give --data.{needs[0]}_regions "
                f"or a BED with a {'valid' if needs[0] == 'val' else needs[0]} split"
            )


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
