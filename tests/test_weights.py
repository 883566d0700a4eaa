import json

import pytest
import torch

from hnet_dna import (
    CheckpointError,
    HNetConfig,
    HNetForCausalLM,
    NucleotideTokenizer,
    load_official_checkpoint,
)

from .conftest import DATA, make_model, padded_batch
from .official_reference import official_logits

MANIFEST = json.loads((DATA / "official_state_dict_shapes.json").read_text())


def build_on_meta(config: HNetConfig) -> HNetForCausalLM:
    with torch.device("meta"):
        return HNetForCausalLM(config)


@pytest.mark.parametrize("name", ["hnet_1stage_L", "hnet_2stage_L"])
def test_state_dict_keys_and_shapes_equal_the_official_manifest(name):
    cfg = HNetConfig.from_json(DATA / "official_configs" / f"{name}.json")
    assert cfg.to_official_dict() == MANIFEST[name]["config"]
    ours = {k: list(v.shape) for k, v in build_on_meta(cfg).state_dict().items()}
    assert ours == MANIFEST[name]["state_dict_shapes"]


@pytest.mark.parametrize(
    "name, millions",
    [("hnet_1stage_L", 679.4), ("hnet_2stage_L", 874.3), ("hnet_1stage_XL", 1270.8), ("hnet_2stage_XL", 1603.5)],
)
def test_official_parameter_counts_within_a_tenth_of_a_percent(name, millions):
    model = build_on_meta(HNetConfig.from_json(DATA / "official_configs" / f"{name}.json"))
    assert model.num_parameters() / 1e6 == pytest.approx(millions, rel=1e-3)


@pytest.mark.parametrize(
    "preset, millions",
    [("dna-transformer-t9", 29), ("dna-mamba2-m10", 33), ("dna-hnet-m3t1-t15-m4", 64), ("dna-hnet-m3t1-m15-m4", 66)],
)
def test_paper_dna_parameter_counts_within_one_million(preset, millions):
    model = build_on_meta(HNetConfig.from_preset(preset))
    assert abs(model.num_parameters() / 1e6 - millions) < 1.0


def official_format_config(two_stage: bool) -> HNetConfig:
    """The official hnet_{1,2}stage_L configs with every size shrunk (same structure, byte vocab)."""
    if two_stage:
        d = dict(
            arch_layout=["m1", ["T1m1", ["T2"], "m1T1"], "m1"], d_model=[32, 32, 48], d_intermediate=[0, 64, 96],
            attn_cfg=dict(num_heads=[2, 2, 2], rotary_emb_dim=[8, 8, 12], window_size=[5, 5, -1]),
        )
    else:
        d = dict(
            arch_layout=["m2", ["T2"], "m1"], d_model=[32, 48], d_intermediate=[0, 96],
            attn_cfg=dict(num_heads=[2, 2], rotary_emb_dim=[8, 12], window_size=[5, -1]),
        )
    d.update(vocab_size=256, tie_embeddings=False, ssm_cfg=dict(chunk_size=8, d_conv=4, d_state=8, expand=2, headdim=8))
    return HNetConfig.from_dict(d)


def random_official_state_dict(config: HNetConfig, seed: int) -> dict:
    """Every parameter random (zero-initialised ones too), routing near identity so that some
    positions are boundaries and some are not."""
    torch.manual_seed(seed)
    sd = build_on_meta(config).state_dict()
    out = {}
    for k, v in sd.items():
        if "routing_module" in k:
            out[k] = torch.eye(v.shape[0]) + 0.3 * torch.randn(v.shape)
        elif k.endswith("A_log"):
            out[k] = torch.log(torch.empty(v.shape).uniform_(1, 4))
        elif "norm" in k or k.endswith(".D"):
            out[k] = 1 + 0.1 * torch.randn(v.shape)
        elif k == "embeddings.weight":
            out[k] = torch.randn(v.shape)
        else:
            out[k] = 0.2 * torch.randn(v.shape)
    return out


@pytest.mark.parametrize("two_stage", [False, True], ids=["1stage", "2stage"])
def test_official_checkpoint_loads_strictly_and_computes_the_official_function(tmp_path, two_stage):
    cfg = official_format_config(two_stage)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_official_dict()))
    sd = random_official_state_dict(cfg, seed=1 + two_stage)
    torch.save(sd, tmp_path / "model.pt")
    model = load_official_checkpoint(tmp_path / "model.pt", tmp_path / "config.json").double()
    assert model.tokenizer.mode == "byte"
    ids = model.tokenizer.encode("ACGTTGACCATGGCATTACGGATCCAGTAGCATGAACGTA")
    out = model(ids[None])
    expected = official_logits(sd, cfg, ids)
    torch.testing.assert_close(out.logits[0], expected, rtol=1e-9, atol=1e-9)
    b = out.boundaries[0][0]
    assert 3 <= int(b.sum()) <= len(ids) - 3  # the check covers real chunking, not a degenerate case


class Payload:
    """Stands for any object a pickle could rebuild (and run code while doing so)."""


def test_a_pickle_with_code_is_refused(tmp_path):
    torch.save({"w": torch.zeros(1), "obj": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused to load.*Payload"):
        load_official_checkpoint(tmp_path / "evil.pt", official_format_config(False))


def test_mismatched_or_missing_checkpoints_are_clear_errors(tmp_path):
    cfg = official_format_config(False)
    sd = random_official_state_dict(cfg, seed=3)
    del sd["lm_head.weight"]
    sd["extra.weight"] = torch.zeros(2)
    torch.save(sd, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"missing \(1\): lm_head.weight[\s\S]*unexpected \(1\): extra.weight"):
        load_official_checkpoint(tmp_path / "m.pt", cfg)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_official_checkpoint(tmp_path / "nope.pt", cfg)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_official_checkpoint(tmp_path / "junk.pt", cfg)
    with pytest.raises(CheckpointError, match="no config.json"):
        HNetForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("tie", [False, True])
def test_save_and_load_pretrained_roundtrip(tmp_path, tie):
    model = make_model("tiny-hnet-2stage", dtype=torch.float32, seed=4, tie_embeddings=tie)
    model.tokenizer = NucleotideTokenizer(policy="strict")
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [  # ours, and what transformers' Auto classes read
        "config.json", "configuration_hnet_dna.py", "model.safetensors", "modeling_hnet_dna.py", "tokenization_hnet_dna.py",
        "tokenizer.json", "tokenizer_config.json"]
    again = HNetForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert again.config == model.config and again.tokenizer.policy == "strict"
    if tie:
        assert again.lm_head.weight.data_ptr() == again.embeddings.weight.data_ptr()
    ids, mask = padded_batch([25, 14])
    assert torch.equal(again(ids, mask=mask).logits, model(ids, mask=mask).logits)
