"""The benchmark config: errors that name the field, before anything is written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hnet_dna.config import ConfigError
from hnet_dna.protocols.data_efficiency import (
    load_config,
)

from .conftest import (
    ROOT,
    SMOKE,
)


# ---------------------------------------------------------------------------------- config
def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="reference 'nope' is not one of the models"):
        load_config(SMOKE, [("reference", "nope")])
    with pytest.raises(ConfigError, match="trainer.max_steps: max_steps set by the benchmark"):
        load_config(SMOKE, [("trainer.max_steps", "10")])
    with pytest.raises(ConfigError, match="data.windw: not a GenomeDataModule argument"):
        load_config(SMOKE, [("data.windw", "10")])
    with pytest.raises(ConfigError, match="heldout.ecoli: give either split"):
        load_config(SMOKE, [("heldout.ecoli.split", "val")])
    from hnet_dna.protocols.data_efficiency import make_plan

    with pytest.raises(ConfigError, match="models.hnet.model is a masked LM"):  # next-base curves are causal
        make_plan(load_config(SMOKE, [("models.hnet", "tiny-bihnet")]))


def test_bad_input_exits_2_before_writing(tmp_path):
    protein = tmp_path / "protein.fa"
    protein.write_text(">p\nMKVLQEERWLLPAFGHIKSTWYV\n" * 20)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hnet_dna.data_efficiency", "--config", str(SMOKE), "--out", str(out),
           f"--heldout.ecoli.fasta={protein}"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "protein.fa" in r.stderr and "not DNA" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
