"""One fit's files across a restart: curve points and the training-window log are written once per
step, whether the killed attempt left a checkpoint or not."""

import torch

from hnet_dna.protocols.data_efficiency.worker import CurvePoints

HEADER = "step,bases_seen,heldout,bits_per_base,compression,wall_s\n"


def _killed_attempt(run_dir):
    """What a fit killed after its points at steps 2 and 4 leaves behind."""
    (run_dir / "points.csv").write_text(HEADER + "2,2048,x,1.9,3.0,1.0\n4,4096,x,1.8,3.0,2.0\n")
    (run_dir / "training_windows.rank0.tsv").write_text("".join(f"{s}\t0\tchr20\t{s * 100}\t0\n" for s in range(1, 5)))
    return CurvePoints({"eval_steps": [2, 4, 8]}, {}, run_dir)


def test_a_restart_keeps_the_rows_its_checkpoint_covers_and_without_one_none(tmp_path):
    points = _killed_attempt(tmp_path)
    torch.save({"global_step": 2}, tmp_path / "last.ckpt")  # checkpointed at the first point only
    points.resume_from(tmp_path / "last.ckpt")
    assert (tmp_path / "points.csv").read_text() == HEADER + "2,2048,x,1.9,3.0,1.0\n"
    assert [ln.split("\t")[0] for ln in (tmp_path / "training_windows.rank0.tsv").read_text().splitlines()] == ["1", "2"]

    (tmp_path / "last.ckpt").unlink()  # killed before its first checkpoint: the fit starts at step 0 again
    points = _killed_attempt(tmp_path)
    points.resume_from(tmp_path / "last.ckpt")
    assert (tmp_path / "points.csv").read_text() == HEADER  # nothing would be written twice
    assert (tmp_path / "training_windows.rank0.tsv").read_text() == ""
