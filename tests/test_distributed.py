"""Scale-out and fault tolerance through Lightning, on CPU: 2-process DDP (gloo) whose held-out
bits per base equal a single process's, and a run killed with SIGKILL mid-epoch that resumes from
its last checkpoint with the same losses.

Every run that is compared with another is a subprocess with the same environment (one intra-op
thread): float reductions differ with the thread count, so runs made under different setups may
differ in the last bit even when nothing is wrong."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hnet_dna.cli import main

from .conftest import write_fasta

RUN_ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def cli(workdir: Path, *args: str, command: str = "fit", timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hnet_dna", command, *args], cwd=workdir, env=RUN_ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workdir(tmp_path, chr20_slices):
    write_fasta(tmp_path / "g.fa", {"chr20": chr20_slices["chr20_train"][:80_000]})
    config = {
        "seed_everything": 0,
        "model": {"class_path": "hnet_dna.tasks.PretrainModule",
                  "init_args": {"model": {"preset": "tiny-hnet", "d_model": [32, 48],
                                          "attn_cfg": {"num_heads": [2, 2], "rotary_emb_dim": [8, 12], "window_size": [63, -1]}}}},
        "data": {"class_path": "hnet_dna.data.GenomeDataModule",
                 "init_args": {"fasta": "g.fa", "val_regions": ["chr20:70001-80000"], "window": 512, "batch_size": 4,
                               "random_shift": 16, "reverse_complement": 0.5}},
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
                    "limit_val_batches": 0, "log_every_n_steps": 1},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def val_metrics(run: Path) -> dict[str, float]:
    """The validation metrics a run logged (its last validation)."""
    out = {}
    for metrics in sorted(run.glob("lightning_logs/version_*/metrics.csv")):
        with metrics.open() as f:
            for row in csv.DictReader(f):
                out.update({k: float(v) for k, v in row.items() if k.startswith("val/") and v})
    return out


def test_two_process_ddp_reads_different_windows_and_validates_like_one_process(workdir, monkeypatch):
    # 19 validation windows (chr20:70001-80000, 512 bases), batch 4: two ranks get 10 and 9, so
    # padding a rank with a repeated window, or dropping the last ones, changes the result.
    proc = cli(workdir, "--config", "base.yaml", "--trainer.devices", "2", "--trainer.strategy", "ddp",
               "--trainer.max_steps", "3", "--trainer.default_root_dir", "ddp",
               "--trainer.limit_val_batches", "1.0", "--trainer.val_check_interval", "3",
               "--trainer.num_sanity_val_steps", "0", "--trainer.callbacks+=hnet_dna.tasks.TrainingWindowLog")
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [next((workdir / "ddp").rglob(f"training_windows.rank{r}.tsv")) for r in (0, 1)]
    seen = [{tuple(line.split("\t")[1:4]) for line in p.read_text().splitlines()} for p in logs]
    assert len(seen[0]) == len(seen[1]) == 12  # 3 steps x batch 4 on each rank
    assert not seen[0] & seen[1]

    ckpt = next((workdir / "ddp").rglob("last.ckpt"))
    single = cli(workdir, "--config", "base.yaml", "--ckpt_path", str(ckpt), "--trainer.default_root_dir", "single",
                 "--trainer.limit_val_batches", "1.0", command="validate")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp_val, single_val = val_metrics(workdir / "ddp"), val_metrics(workdir / "single")
    assert 1.0 < single_val["val/bits_per_base"] < 4.0  # 3 steps in: not trained yet
    for key in ("val/bits_per_base", "val/lm_loss"):
        assert abs(ddp_val[key] - single_val[key]) <= 1e-6, (key, ddp_val[key], single_val[key])

    # resuming that 2-process run on one process would misalign the loader: a clear stop instead
    import contextlib
    import io

    monkeypatch.chdir(workdir)
    err = io.StringIO()
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(workdir / "base.yaml"), "--ckpt_path", str(ckpt),
              "--trainer.default_root_dir", str(workdir / "ddp"), "--trainer.max_steps", "6"])
    assert stop.value.code == 2
    assert f"--ckpt_path {ckpt} was written by a run on 2 process(es)" in err.getvalue()
    assert "--trainer.devices" in err.getvalue() and "Traceback" not in err.getvalue()
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


def losses(run: Path, version: int | None = None) -> dict[int, float]:
    """Step -> training loss logged by a run (one logger version, or all of them)."""
    out = {}
    pattern = f"version_{version}/metrics.csv" if version is not None else "version_*/metrics.csv"
    for metrics in sorted(run.glob(f"lightning_logs/{pattern}")):
        with metrics.open() as f:
            for row in csv.DictReader(f):
                if row.get("train/loss"):
                    out[int(row["step"])] = float(row["train/loss"])
    return out


def test_sigkill_mid_epoch_then_resume_gives_the_same_losses(workdir):
    # 136 training windows of 512 bases, batch 4: an epoch is 34 steps. The run is killed in
    # epoch 1 (the harder case: workers start fetching before Lightning sets the epoch).
    common = ["--config", "base.yaml", "--trainer.max_steps", "45", "--data.num_workers", "1",
              "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
              "--trainer.callbacks.save_last=true", "--trainer.callbacks.every_n_train_steps=5"]
    # the uninterrupted reference: a subprocess like the killed and resumed runs (same threads)
    full = cli(workdir, *common, "--trainer.default_root_dir", "full")
    assert full.returncode == 0, full.stderr[-3000:]
    reference = losses(workdir / "full")
    assert sorted(reference) == list(range(45))

    victim = subprocess.Popen([sys.executable, "-m", "hnet_dna", "fit", *common, "--trainer.default_root_dir", "killed"],
                              cwd=workdir, env=RUN_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline and len(losses(workdir / "killed")) < 37:
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_before = len(losses(workdir / "killed"))
    assert 37 <= done_before < 45, "the run should die in epoch 1, after the step-35 checkpoint"

    resumed = cli(workdir, *common, "--trainer.default_root_dir", "killed", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "--ckpt_path last: using" in resumed.stderr
    after = losses(workdir / "killed", version=1)  # what the resumed process computed
    first = min(after)
    assert 35 <= first <= done_before and first % 5 == 0, "resumed from the last (mid-epoch 1) checkpoint"
    assert sorted(after) == list(range(first, 45))
    for step, loss in after.items():
        assert loss == reference[step], (step, loss, reference[step])


def _leave_a_group(tmp_path, fails=False):
    """A stand-in for a run: makes a one-process gloo group, as a DDP fit does, and leaves it."""
    import torch.distributed as dist

    def run(*args, **kwargs):
        dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
        if fails:
            raise RuntimeError("the run failed")
    return run


@pytest.mark.parametrize("command", ["hnet_dna", "hnet_dna.finetune"])
def test_the_commands_destroy_the_process_group_their_run_made(tmp_path, monkeypatch, command):
    # A gloo group left to the interpreter's shutdown can abort a finished DDP fit (SIGABRT at exit).
    import torch.distributed as dist

    import hnet_dna.cli as cli_main
    from hnet_dna import finetune

    try:
        if command == "hnet_dna":
            monkeypatch.setattr(cli_main, "HNetCLI", _leave_a_group(tmp_path))
            main([])
        else:
            monkeypatch.setattr(finetune, "run_protocol", _leave_a_group(tmp_path))
            finetune.main(["--config", "recipe.yaml", "--out", str(tmp_path / "out")])
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_failed_run_keeps_its_error_and_a_callers_group_is_left_alone(tmp_path, monkeypatch):
    import torch.distributed as dist

    import hnet_dna.cli as cli_main

    try:
        monkeypatch.setattr(cli_main, "HNetCLI", _leave_a_group(tmp_path, fails=True))
        with pytest.raises(RuntimeError, match="the run failed"):  # the run's own error, not a shutdown's
            main([])
        monkeypatch.setattr(cli_main, "HNetCLI", lambda *a, **k: None)
        main([])  # the group was there before this run: the caller's, not the command's
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
