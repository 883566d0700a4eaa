"""What every command's run shares: atomic outputs."""

from __future__ import annotations

import pytest

from hnet_dna.runs import atomic_path


def test_atomic_path_keeps_the_old_file_when_the_block_fails(tmp_path):
    out = tmp_path / "result.npz"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["result.npz"]
    with atomic_path(out) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path
        tmp.write_text("new")
    assert out.read_text() == "new"
