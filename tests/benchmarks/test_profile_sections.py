"""benchmarks/profile_sections.py's memory measures: what autograd keeps, by file, and the peak of live
tensors from the profiler's allocation records (a private profiler API: this test notices when a
torch release moves it)."""

from pathlib import Path

import pytest
import torch

from hnet_dna.model.loading import build_model

from ..conftest import import_benchmark

ROOT = Path(__file__).resolve().parents[2]
profile_sections = import_benchmark("profile_sections")  # its models, point child and memory measures


def test_kept_memory_by_file_and_the_live_peak_of_a_training_step():
    torch.manual_seed(0)
    model = build_model("tiny-hnet")
    ids = torch.randint(0, 4, (2, 256))
    kept = profile_sections.kept_for_backward(model, ids)
    assert {"ssd.py", "mamba2.py", "attention.py", "layers.py"} <= set(kept), kept
    live = profile_sections.peak_live_mb(model, ids)
    params = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    # every kept activation is live at the end of the forward (parameters were allocated before)
    assert live >= sum(kept.values()) - params > 0, (live, kept)
    # and the step's peak is of the same order, not a count of everything ever allocated
    assert live < 3 * sum(kept.values()), (live, kept)
    assert all(p.grad is None for p in model.parameters())


def test_every_section_measures_an_h_net_at_its_target_compression():
    # the cpu_small Mamba-main H-Net: its untrained router cuts about every 1.9 bases at seed 0
    spec = {"preset": "tiny-hnet", "arch_layout": ["m2t1", ["M2"], "m2"], "d_intermediate": [0, 128]}
    model = profile_sections._build(spec)
    with torch.no_grad():
        compression = model(torch.randint(0, 4, (2, 1024))).compression()
    assert compression[0] == pytest.approx(model.config.ratio_targets[0], rel=0.1), compression


def test_checkpointing_option_recomputes_the_chosen_models_blocks():
    import argparse

    for choice, checkpointed in (("none", set()), ("hnets", set(profile_sections.HNETS)),
                                 ("all", set(profile_sections.HNETS) | set(profile_sections.BASELINES))):
        args = argparse.Namespace(checkpointing=choice)
        names = list(profile_sections.HNETS) + list(profile_sections.BASELINES)
        assert {n for n in names if profile_sections._checkpointed(n, args)} == checkpointed, choice
    model = profile_sections._build({"preset": "tiny-transformer", "arch_layout": ["T1"]}, checkpointing=True)
    assert model.is_gradient_checkpointing
    assert not profile_sections._build({"preset": "tiny-transformer", "arch_layout": ["T1"]}).is_gradient_checkpointing


def test_checkpointing_reaches_the_fresh_process_that_measures_a_point(monkeypatch):
    import argparse
    import json

    args = argparse.Namespace(checkpointing="hnets", threads=torch.get_num_threads())
    spec = {"preset": "tiny-transformer", "arch_layout": ["T1"]}
    built = []
    real_build = profile_sections._build

    def recording_build(spec, checkpointing=False):
        built.append(checkpointing)
        return real_build(spec, checkpointing)

    monkeypatch.setattr(profile_sections, "_build", recording_build)
    monkeypatch.setattr(profile_sections, "_setup", lambda repo, threads: None)  # the child's process settings
    for name, expected in (("hnet_1stage", True), ("transformer", False)):
        point = json.loads(profile_sections._point_spec(name, spec, 64, 1, args, ROOT))
        profile_sections._point(point)  # what the child runs (here in this process, one tiny step)
        assert built[-1] is expected, name
