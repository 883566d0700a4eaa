import json

import pytest

import hnet_dna
from hnet_dna import ConfigError, HNetConfig

from .conftest import DATA

OFFICIAL = sorted((DATA / "official_configs").glob("*.json"))


def test_presets_lists_paper_and_tiny_models():
    assert hnet_dna.presets() == [
        "dna-transformer-t9",
        "dna-mamba2-m10",
        "dna-hnet-m3t1-t15-m4",
        "dna-hnet-m3t1-m15-m4",
        "tiny-hnet",
        "tiny-hnet-2stage",
        "tiny-transformer",
        "tiny-mamba2",
        "tiny-bihnet",
    ]
    for name in hnet_dna.presets():
        cfg = HNetConfig.from_preset(name)
        assert cfg.vocab_size == (9 if cfg.bidirectional else 8) and cfg.tokenizer_mode == "nucleotide"  # 9: <mask>
        assert cfg.ratio_targets == [3.0] * (cfg.num_stages - 1)


def test_paper_presets_have_the_paper_layouts():
    cfg = HNetConfig.from_preset("dna-hnet-m3t1-t15-m4")
    assert cfg.arch_layout == ["m3T1", ["T15"], "m4"]
    assert cfg.d_model == [512, 512] and cfg.d_intermediate == [1408, 1408]
    assert HNetConfig.from_preset("dna-hnet-m3t1-m15-m4").d_intermediate == [1408, 1024]
    assert HNetConfig.from_preset("dna-transformer-t9").arch_layout == ["T9"]
    assert HNetConfig.from_preset("dna-mamba2-m10").d_intermediate == [1024]


@pytest.mark.parametrize("path", OFFICIAL, ids=[p.stem for p in OFFICIAL])
def test_official_config_json_reads_unchanged(path):
    raw = json.loads(path.read_text())
    cfg = HNetConfig.from_json(path)
    assert cfg.to_official_dict() == raw
    assert cfg.tokenizer_mode == "byte" and cfg.vocab_size == 256
    assert cfg.ratio_targets == [3.0] * (len(raw["d_model"]) - 1)


def test_to_json_roundtrip_keeps_our_fields(tmp_path):
    cfg = HNetConfig.from_preset("tiny-hnet-2stage", ratio_targets=[2.0, 4.0], ratio_loss_weight=0.05, lr_multipliers=[2.0, 1.5, 1.0])
    cfg.to_json(tmp_path / "c.json")
    again = HNetConfig.from_json(tmp_path / "c.json")
    assert again == cfg
    written = json.loads((tmp_path / "c.json").read_text())
    assert written["ratio_targets"] == [2.0, 4.0] and written["ssm_cfg"]["headdim"] == 16


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"d_model": [96, 64]}, "must not shrink going inward"),
        ({"arch_layout": ["m2x", ["T2"], "m2"]}, "not a run of <block><count>"),
        ({"arch_layout": ["m2", "T2"]}, "must be \\[encoder, \\[inner...\\], decoder\\]"),
        ({"d_intermediate": [0, 0]}, "d_intermediate\\[1\\]"),
        ({"d_model": [64]}, "one per stage"),
        ({"ratio_targets": [0.5]}, "ratio_targets"),
        ({"attn_cfg": {"num_heads": [3, 2], "rotary_emb_dim": [16, 24], "window_size": [7, -1]}}, "not divisible by num_heads"),
        ({"vocab_size": 4}, "too small"),
        ({"tokenizer_mode": "kmer"}, "tokenizer_mode"),
    ],
)
def test_invalid_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(ConfigError, match=message):
        HNetConfig.from_preset("tiny-hnet", **overrides)


def test_unknown_fields_and_presets_and_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown field\\(s\\) d_modle"):
        HNetConfig.from_dict({"d_modle": [64]})
    with pytest.raises(ConfigError, match="unknown field\\(s\\) dstate.*SSMConfig"):
        HNetConfig.from_preset("tiny-mamba2", ssm_cfg={"dstate": 4})
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*tiny-hnet"):
        HNetConfig.from_preset("huge")
    with pytest.raises(ConfigError, match="no such config file"):
        HNetConfig.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{\"d_model\": [64,\n")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        HNetConfig.from_json(tmp_path / "bad.json")


def test_ssm_settings_may_differ_per_stage():
    cfg = HNetConfig.from_preset("tiny-hnet", ssm_cfg={"d_state": [16, 8], "headdim": 16, "chunk_size": 32})
    assert cfg.ssm_cfg.for_stage(1).d_state == 8 and cfg.ssm_cfg.for_stage(0).headdim == 16
    from hnet_dna import HNetForCausalLM

    model = HNetForCausalLM(cfg)
    assert model.backbone.encoder.layers[0].mixer.d_state == 16
    assert model.backbone.decoder.layers[0].mixer.d_state == 16
    with pytest.raises(ConfigError, match="ssm_cfg.d_state must be one value or a list of 2"):
        HNetConfig.from_preset("tiny-hnet", ssm_cfg={"d_state": [16, 8, 4]})
