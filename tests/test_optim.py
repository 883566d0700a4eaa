import math

import pytest
import torch

from hnet_dna import HNetConfig, HNetForCausalLM
from hnet_dna.optim import make_optimizer, param_groups, parameter_stages, stage_lr_multipliers

from .conftest import make_model, padded_batch


def test_stage_multipliers_follow_eq_11_or_the_config():
    cfg = HNetConfig.from_preset("dna-hnet-m3t1-t15-m4")  # N = 3, widths 512, 512
    assert stage_lr_multipliers(cfg) == pytest.approx([math.sqrt(3), 1.0])
    cfg2 = HNetConfig.from_preset("tiny-hnet-2stage")  # widths 32, 48, 64; N = 3, 3
    raw = [math.sqrt(1 / 32), math.sqrt(1 / 3 / 48), math.sqrt(1 / 9 / 64)]
    assert stage_lr_multipliers(cfg2) == pytest.approx([r / raw[-1] for r in raw])
    cfg3 = HNetConfig.from_preset("tiny-hnet", lr_multipliers=[2.0, 1.0])
    assert stage_lr_multipliers(cfg3) == [2.0, 1.0]
    assert stage_lr_multipliers(HNetConfig.from_preset("tiny-transformer")) == [1.0]


def test_each_parameter_belongs_to_its_innermost_stage():
    model = make_model("tiny-hnet-2stage")
    stages = parameter_stages(model)
    assert stages["embeddings.weight"] == 0 and stages["lm_head.weight"] == 0
    assert stages["backbone.encoder.layers.0.mixer.in_proj.weight"] == 0
    assert stages["backbone.routing_module.q_proj_layer.weight"] == 0
    assert stages["backbone.main_network.pad_dimension"] == 1
    assert stages["backbone.main_network.routing_module.k_proj_layer.weight"] == 1
    assert stages["backbone.main_network.main_network.main_network.layers.0.mixer.Wqkv.weight"] == 2


def test_no_weight_decay_on_norms_biases_embeddings_and_ssm_scalars():
    model = make_model("tiny-hnet")
    groups = param_groups(model, lr=1e-3, weight_decay=0.1)
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    decay = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    for name in [
        "embeddings.weight",
        "backbone.encoder.layers.0.norm1.weight",
        "backbone.encoder.layers.0.mixer.A_log",
        "backbone.encoder.layers.0.mixer.D",
        "backbone.encoder.layers.0.mixer.dt_bias",
        "backbone.encoder.layers.0.mixer.conv1d.bias",
        "backbone.residual_proj.bias",
        "backbone.main_network.pad_dimension",
        "backbone.encoder.rmsnorm.weight",
    ]:
        assert name in no_decay, name
    for name in ["lm_head.weight", "backbone.encoder.layers.0.mixer.in_proj.weight", "backbone.residual_proj.weight"]:
        assert name in decay, name
    assert len(no_decay | decay) == len(list(model.parameters()))
    lrs = {g["stage"]: g["lr"] for g in groups}
    mult = stage_lr_multipliers(model.config)
    assert lrs == pytest.approx({0: 1e-3 * mult[0], 1: 1e-3 * mult[1]})


def test_tied_embeddings_are_one_parameter_and_optimizer_steps():
    torch.manual_seed(0)
    model = HNetForCausalLM(HNetConfig.from_preset("tiny-hnet", tie_embeddings=True))
    groups = param_groups(model, lr=1e-3)
    names = [n for g in groups for n in g["names"]]
    assert "embeddings.weight" in names and "lm_head.weight" not in names
    opt = make_optimizer(model, lr=1e-2)
    ids, mask = padded_batch([32, 20])
    before = model.lm_head.weight.detach().clone()
    model(ids, mask=mask, labels=ids).loss.backward()
    opt.step()
    assert not torch.equal(before, model.lm_head.weight)
