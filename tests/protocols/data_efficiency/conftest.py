"""Shared helpers of the data-efficiency tests: the smoke config and the command in this process."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path

from hnet_dna.data_efficiency import main
from hnet_dna.protocols.data_efficiency import (
    load_config,
)

from ...conftest import DATA

ROOT = Path(__file__).resolve().parents[3]


SMOKE = ROOT / "pipelines" / "benchmarks" / "cpu_smoke.yaml"


GPU = ROOT / "pipelines" / "benchmarks" / "gpu.yaml"


ECOLI = f"--heldout.ecoli.fasta={DATA / 'ecoli_slice.fa'}"


def run(out: Path, *args: str, config: Path = SMOKE, env: dict | None = None) -> tuple[int, str]:
    """The command in this process (its fits run in forked children): (exit status, stderr)."""
    err, saved, cwd = io.StringIO(), dict(os.environ), os.getcwd()
    os.environ.update(env or {})
    os.chdir(ROOT)  # the configs' paths are relative to the repository root
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main(["--config", str(config), "--out", str(out), *args])
        return 0, err.getvalue()
    except SystemExit as e:
        return e.code, err.getvalue()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        os.chdir(cwd)


def read_curves(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------ held out
DEMO = ROOT / "hnet_dna" / "resources" / "demo_chr20.fa"


def demo_sequence() -> str:
    return "".join(DEMO.read_text().splitlines()[1:])


def heldout_config(fasta: Path, **fields):
    """The smoke config with one FASTA held-out set named ``x`` (windows of 256 bases)."""
    spec = json.dumps({"fasta": str(fasta), "windows": 1000, **fields})
    return load_config(SMOKE, [("heldout", "{chr20_demo_last_100kb: {split: val, windows: 2}, x: " + spec + "}")])
