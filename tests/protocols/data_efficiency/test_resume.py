"""What a rerun may keep: the fingerprint covers what defines the work (model files' contents,
presets defined in code, the training FASTA), and a kept run fitted to another spec is refused."""

from __future__ import annotations

import json

import pytest

from hnet_dna.config import ConfigError
from hnet_dna.protocols.data_efficiency import cut_heldout, load_config, make_plan, run_pipeline
from hnet_dna.protocols.data_efficiency.pipeline import work_fingerprint

from .conftest import DEMO, ROOT, SMOKE


def _key(*overrides) -> str:
    config = load_config(SMOKE, [("heldout", "{x: {split: val, windows: 2}}"), *overrides])
    return work_fingerprint(make_plan(config), cut_heldout(config))


def test_the_fingerprint_follows_file_contents_and_presets_not_names(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    from hnet_dna import HNetConfig

    fields = HNetConfig.from_preset("tiny-transformer").to_dict()
    model = tmp_path / "transformer.json"
    model.write_text(json.dumps({**fields, "arch_layout": ["T4"]}))
    fasta = tmp_path / "genome.fa"
    fasta.write_text(DEMO.read_text())
    overrides = [("models.transformer.model", str(model)), ("data.fasta", str(fasta))]
    key = _key(*overrides)
    assert _key(*overrides) == key  # the same work: the same key
    model.write_text(json.dumps({**fields, "arch_layout": ["T3"]}))  # the same path, another model
    assert _key(*overrides) != key
    model.write_text(json.dumps({**fields, "arch_layout": ["T4"]}))
    text = DEMO.read_text()
    at = text.index("\n", text.index("\n") + 1) + 1  # a base on the second sequence line
    fasta.write_text(text[:at] + ("A" if text[at] != "A" else "C") + text[at + 1:])  # one base changed
    assert _key(*overrides) != key
    fasta.write_text(text)
    assert _key(*overrides) == key

    from hnet_dna import HNetForCausalLM
    from hnet_dna import config as config_module

    folder = tmp_path / "saved"  # a save_pretrained folder: its weights, not only its config
    HNetForCausalLM(HNetConfig.from_dict({**fields, "arch_layout": ["T4"]})).save_pretrained(folder)
    saved = [("models.transformer.model", str(folder)), ("data.fasta", str(fasta))]
    key_saved = _key(*saved)
    HNetForCausalLM(HNetConfig.from_dict({**fields, "arch_layout": ["T4"]})).save_pretrained(folder)  # new weights
    assert _key(*saved) != key_saved

    original = config_module._PRESETS["tiny-hnet"]  # the smoke config's reference, named by its preset
    monkeypatch.setitem(config_module._PRESETS, "tiny-hnet", lambda: {**original(), "initializer_range": 0.03})
    assert _key(*overrides) != key  # a preset redefined in code is other work under the same name


def test_a_kept_run_fitted_to_another_spec_is_refused(tmp_path, monkeypatch):
    """The two-core workflow of cpu_small.yaml: a seed fitted in another folder is copied in. A
    copy fitted under other overrides is refused, naming the spec it was fitted to."""
    from hnet_dna.protocols.data_efficiency import pipeline

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(pipeline, "_run_fit", lambda spec, log, accelerator: (log.write_text("no fit here\n"), 1)[1])
    monkeypatch.setattr(pipeline, "write_results", lambda *args: pytest.fail("nothing is finished"))
    config = load_config(SMOKE, [("heldout", "{x: {split: val, windows: 2}}")])
    out = tmp_path / "out"
    with pytest.raises(pipeline.FitFailed):
        run_pipeline(config, out, progress=False)  # plan.json and the first run's spec.json
    run = out / "runs" / "hnet" / "seed0"
    spec = json.loads((run / "spec.json").read_text())
    (run / "result.json").write_text("{}")  # as if fitted elsewhere and copied in...
    (run / "spec.json").write_text(json.dumps({**spec, "lr": 0.05, "heldout": {"x": "/elsewhere/x.npy"}}))  # ...at lr 0.05
    with pytest.raises(ConfigError, match=r"runs/hnet/seed0: its finished run was fitted to .*spec.json.*in lr"):
        run_pipeline(config, out, progress=False)
    # the same fit, made elsewhere with other settings that do not change it: kept
    other = {**spec, "heldout": {"x": "/elsewhere/x.npy"}, "checkpoint_interval_s": 60,
             "data": {**spec["data"], "num_workers": 2}, "trainer": {**spec["trainer"], "enable_progress_bar": True}}
    (run / "spec.json").write_text(json.dumps(other))
    with pytest.raises(pipeline.FitFailed, match="transformer"):  # kept; the next run is fitted
        run_pipeline(config, out, progress=False)
    # a copied run that is not finished but checkpointed is checked too before it resumes
    (run / "result.json").unlink()
    (run / "last.ckpt").write_bytes(b"")
    (run / "spec.json").write_text(json.dumps({**spec, "data": {**spec["data"], "window": 512}}))
    with pytest.raises(ConfigError, match="in data"):
        run_pipeline(config, out, progress=False)


def test_the_shipped_default_model_is_fingerprinted_by_its_weights(monkeypatch):
    from hnet_dna.model.loading import default_model_path
    from hnet_dna.runs import file_sha256

    monkeypatch.chdir(ROOT)
    config = load_config(SMOKE, [("heldout", "{x: {split: val, windows: 2}}"), ("models.hnet", "default")])
    identity = make_plan(config).models["hnet"]
    assert identity["weights_sha256"] == file_sha256(default_model_path() / "model.safetensors")
    assert make_plan(load_config(SMOKE)).models["transformer"]["weights_sha256"] is None  # a preset: its config only
