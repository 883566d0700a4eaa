"""benchmarks/scaling.py: the smoke sweep writes its CSV, plot and exponents; a point over a cap is
recorded with its status and the rest of its series as not run."""

import csv
import re
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from ..conftest import import_benchmark

ROOT = Path(__file__).resolve().parents[2]
scaling = import_benchmark("scaling")


def test_smoke_sweep_writes_the_table_plot_and_exponents(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with (tmp_path / "scaling.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["model", "d_model", "length", "mode", "batch", "seconds", "bases_per_s",
                                     "peak_mb", "status"]
        rows = list(reader)
    assert {(r["model"], r["length"], r["mode"]) for r in rows} == {
        (m, str(n), mode) for m in ("hnet_1stage_mamba", "transformer") for n in (256, 512) for mode in ("train", "infer")}
    for r in rows:
        assert r["status"] == "ok"
        assert float(r["seconds"]) > 0 and float(r["peak_mb"]) > 0
        # bases per second is what the step holds over its time: 1,024 bases per smoke step
        expected = int(r["batch"]) * int(r["length"]) / float(r["seconds"])  # seconds are written to 6 significant digits
        assert float(r["bases_per_s"]) == pytest.approx(expected, rel=2e-3)
    train = {r["model"]: float(r["peak_mb"]) for r in rows if r["mode"] == "train" and r["length"] == "512"}
    infer = {r["model"]: float(r["peak_mb"]) for r in rows if r["mode"] == "infer" and r["length"] == "512"}
    assert all(train[m] > infer[m] for m in train)  # a backward keeps activations; inference does not
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
    assert "| hnet_1stage_mamba | 64 | train | 512 |" in done.stdout
    # the H-Net was measured at its target compression (3 bases per chunk), not at its untrained
    # router's (about 1.9 for this model at seed 0)
    chunks = [float(c) for c in re.findall(r"model=hnet_1stage_mamba .* bases_per_chunk=([0-9.]+)", done.stdout)]
    assert len(chunks) == 4 and all(c == pytest.approx(3.0, rel=0.1) for c in chunks), chunks
    assert "time exponent" in (tmp_path / "scaling.md").read_text()


def _args(tmp_path, memory_cap=0.0, time_cap=60.0):
    return Namespace(out=tmp_path, bases=1024, time_cap=time_cap, memory_cap=memory_cap, threads=1)


def test_a_capped_point_is_written_with_its_status_and_its_series_stops(tmp_path):
    calls = []

    def fake(spec, length, batch, mode, args):
        calls.append((length, mode))
        if mode == "train" and length >= 512:
            return {"status": "memory_cap", "seconds": None, "peak_mb": None}
        return {"status": "ok", "seconds": 0.01, "peak_mb": 5.0}  # a step of 1,024 bases, whatever its shape

    rows = scaling.sweep({("m", 8): "spec"}, [256, 512, 1024], ["train", "infer"], _args(tmp_path), measure_point=fake)
    status = {(int(r["length"]), r["mode"]): r["status"] for r in rows}
    assert status == {(256, "train"): "ok", (512, "train"): "memory_cap", (1024, "train"): "not_run",
                      (256, "infer"): "ok", (512, "infer"): "ok", (1024, "infer"): "ok"}
    assert (1024, "train") not in calls  # not measured after its series was capped
    # a rerun with the same --out measures nothing again and keeps the capped series stopped
    calls.clear()
    rows = scaling.sweep({("m", 8): "spec"}, [256, 512, 1024], ["train", "infer"], _args(tmp_path), measure_point=fake)
    assert calls == [] and len(rows) == 6
    fits = {e["mode"]: e for e in scaling.exponents(rows)}
    # per sequence (the step over its batch): linear in length when a step's cost is its bases
    assert fits["infer"]["time_exponent"] == pytest.approx(1.0)
    assert fits["infer"]["memory_exponent"] == pytest.approx(1.0)
    assert fits["train"]["longest"] == 256


def test_a_real_point_over_a_cap_says_so(tmp_path):
    # each in its own process, as the sweep runs them (the memory guard limits the process)
    spec = next(s for (name, d), s in scaling.model_specs().items() if name == "transformer" and d < 256)
    r = scaling.measure(spec, 512, 2, "train", _args(tmp_path, memory_cap=1.0))
    assert r["status"] == "memory_cap"
    r = scaling.measure(spec, 256, 1, "infer", _args(tmp_path, time_cap=0.0))
    assert r["status"] == "time_cap" and r["seconds"] > 0
