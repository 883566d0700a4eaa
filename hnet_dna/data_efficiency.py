"""``python -m hnet_dna.data_efficiency --config pipelines/benchmarks/NAME.yaml --out DIR``: the
data-efficiency benchmark (:mod:`hnet_dna.protocols.data_efficiency`) from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .protocols.data_efficiency import FitFailed, load_config, run_pipeline
from .runs import exit_on_user_error


def _parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        prog="python -m hnet_dna.data_efficiency",
        description="Data efficiency of an H-Net against isotropic baselines on the same stream of genome windows.",
        epilog="Any config field can be overridden: --budget_bases 2000000 --data.fasta genome.fa "
               "--trainer.precision bf16-mixed --seeds [0,1] --models.transformer.lr 0.01",
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
