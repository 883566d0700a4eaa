"""Models from a preset, folder, checkpoint or the shipped default."""

from __future__ import annotations

import pytest

from hnet_dna.model.loading import default_model_path, load_model
from hnet_dna.weights import CheckpointError


def test_default_model_ships_with_the_package_and_says_what_it_is():
    folder = default_model_path()
    assert {"model.safetensors", "config.json", "README.md", "heldout_report.json"} <= {p.name for p in folder.iterdir()}
    assert (folder / "model.safetensors").stat().st_size < 5e6
    model = load_model(None)
    assert model.config.num_stages == 2 and model.num_parameters() < 1e6
    assert "chromosome 20 only" in (folder / "README.md").read_text()


def test_load_model_refuses_files_that_are_not_ours(tmp_path):
    junk = tmp_path / "weights.bin"
    junk.write_bytes(b"\0" * 100)
    with pytest.raises(CheckpointError, match="not a model of hnet_dna"):
        load_model(str(junk))
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors|no config.json"):
        load_model(str(folder))
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(str(ckpt))
