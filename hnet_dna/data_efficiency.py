"""``python -m hnet_dna.data_efficiency --config pipelines/benchmarks/NAME.yaml --out DIR``: the
data-efficiency benchmark (:mod:`hnet_dna.protocols.data_efficiency`) from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .protocols.data_efficiency import FitFailed, load_config, run_pipeline
from .runs import exit_on_user_error


HELP = """How a run goes:

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

Compute (hnet_dna.protocols.data_efficiency.flops): parameters and training FLOPs per base (forward
+ backward, counted at the end of training on 4 seeded random training batches, their mean with
``flops_spread`` the range, since an H-Net's cost depends on the compression its routers reached
on the batch), in two conventions: ``flops_per_base`` as torch's
``FlopCounterMode`` counts it (the full L x L attention scores; a convolution's backward at its real
cost, which torch's formula overstates for grouped convolutions) and ``flops_per_base_causal``
(attention charged for the keys each query attends to: the work a causal kernel does). The config's
``flops_convention`` says which one decides ``compute_matched``.

The multiplier (hnet_dna.protocols.data_efficiency.multiplier): for each seed, the baseline's bases at
its last point divided by the bases the H-Net needed to reach the baseline's final bits per base
and stay there (the sustained crossing, interpolated in log(bases)); the first crossing is reported
beside it. ``None`` (``reached: false``) when the H-Net is above the target at its last point:
nothing is extrapolated. Every H-Net of the config gets multipliers against every baseline
(``summary.json``: ``multipliers_by_hnet[HNET][BASELINE][HELDOUT]``; ``multipliers`` is the
reference's).

Any config field can be overridden: --budget_bases 2000000 --data.fasta genome.fa
--trainer.precision bf16-mixed --seeds [0,1] --models.transformer.lr 0.01
"""  # the --help epilog


def _parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        prog="python -m hnet_dna.data_efficiency",
        description="Data efficiency of an H-Net against isotropic baselines on the same stream of genome windows.",
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="benchmark YAML (pipelines/benchmarks/*.yaml)")
    parser.add_argument("--out", help="run folder (created; rerun with the same config to continue)")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
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
