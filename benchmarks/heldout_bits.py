"""Held-out bits per base of pretrained models on a pretraining recipe's validation windows, scored
as ``HeldOutReport`` scores them (the same windows, targets and scorer).

    python benchmarks/heldout_bits.py [--config pipelines/pretrain/chr20_below_50mb_cpu.yaml] MODEL [MODEL ...]

MODEL: anything ``--model`` takes (a ``save_pretrained`` folder, a pretraining ``.ckpt``, ``default``).
Prints one JSON line per model: bits per base, scored bases, outer-level bases per chunk.
"""

from __future__ import annotations

import argparse
import json

import lightning.pytorch as pl
import torch

from hnet_dna.cli import HNetCLI
from hnet_dna.model.loading import load_model
from hnet_dna.tasks.callbacks import score_windows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--config", default="pipelines/pretrain/chr20_below_50mb_cpu.yaml")
    p.add_argument("--max-windows", type=int, default=2000, help="as HeldOutReport's max_windows")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    cli = HNetCLI(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                  run=False, args=["--config", args.config, "--trainer.logger", "false", "--data.num_workers", "0"])
    dm = cli.datamodule
    dm.setup("fit")
    held = list(dm.split_sequences("val", args.max_windows))
    for spec in args.models:
        model = load_model(None if spec == "default" else spec).eval()
        windows = torch.stack([model.tokenizer.from_nucleotide_ids(x) for x in held])
        bits, bases, compression = score_windows(model, windows, args.batch_size)
        print(json.dumps({"model": spec, "parameters": model.num_parameters(), "windows": len(held),
                          "bits_per_base": round(bits, 6), "scored_bases": bases,
                          "bases_per_chunk": None if compression is None else round(compression, 4)}), flush=True)


if __name__ == "__main__":
    main()
