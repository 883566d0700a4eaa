import math

import pytest
import torch

from hnet_dna import HNetConfig, HNetForCausalLM
from hnet_dna.config import ConfigError
from hnet_dna.optim import (
    make_optimizer,
    param_groups,
    parameter_stages,
    stage_lr_multipliers,
)
from hnet_dna.tasks.pretrain import describe_learning_rates, lr_factor

from .conftest import make_model, padded_batch


def test_stage_multipliers_follow_eq_11_with_stage_0_at_lr():
    # lr is the base-pair-resolution rate: stage 0 (and an isotropic model) runs at exactly lr,
    # inner stages slower by eq. 11.
    cfg = HNetConfig.from_preset("dna-hnet-m3t1-t15-m4")  # N = 3, widths 512, 512
    assert stage_lr_multipliers(cfg) == pytest.approx([1.0, 1 / math.sqrt(3)])
    cfg2 = HNetConfig.from_preset("tiny-hnet-2stage")  # widths 32, 48, 64; N = 3, 3
    raw = [math.sqrt(1 / 32), math.sqrt(1 / 3 / 48), math.sqrt(1 / 9 / 64)]
    assert stage_lr_multipliers(cfg2) == pytest.approx([r / raw[0] for r in raw])
    assert stage_lr_multipliers(HNetConfig.from_preset("tiny-transformer")) == [1.0]


def test_configured_multipliers_are_relative_to_stage_0():
    cfg = HNetConfig.from_preset("tiny-hnet", lr_multipliers=[2.0, 1.0])
    assert stage_lr_multipliers(cfg) == [1.0, 0.5]
    with pytest.raises(ConfigError, match="positive"):
        HNetConfig.from_preset("tiny-hnet", lr_multipliers=[1.0, 0.0])


def test_optimizer_groups_run_stage_0_at_lr_and_the_run_prints_every_stage():
    model = make_model("tiny-hnet-2stage")
    lrs = {g["stage"]: g["lr"] for g in param_groups(model, lr=2e-3)}
    mult = stage_lr_multipliers(model.config)
    assert lrs[0] == 2e-3 and lrs[1] == pytest.approx(2e-3 * mult[1]) and lrs[2] == pytest.approx(2e-3 * mult[2])
    assert lrs[0] > lrs[1] > lrs[2]
    text = describe_learning_rates(model.config, 2e-3, "wsd", 100)
    assert "stage 0 (base-pair resolution, d_model 32): 0.002 " in text
    assert f"stage 2 (~9 bases per position, d_model 64): {2e-3 * mult[2]:.3g} " in text


def test_wsd_schedule_warmup_stable_linear_decay():
    f = [lr_factor(s, 20, "wsd", warmup=0.1, decay=0.2, floor=0.0) for s in range(20)]
    assert f[:2] == [0.5, 1.0]  # 2 warmup steps, linear
    assert f[2:16] == [1.0] * 14  # stable
    assert f[16:] == pytest.approx([1.0, 0.75, 0.5, 0.25])  # last 20 %: reaches 0 at step 20
    g = [lr_factor(s, 20, "wsd", 0.1, 0.2, floor=0.1) for s in range(16, 20)]
    assert g == pytest.approx([0.1 + 0.9 * x for x in (1.0, 0.75, 0.5, 0.25)])
    h = [lr_factor(s, 20, "wsd", 0.1, 0.2, 0.0, decay_shape="1-sqrt") for s in range(16, 20)]
    assert h == pytest.approx([1 - math.sqrt(x) for x in (0.0, 0.25, 0.5, 0.75)])
    with pytest.raises(ConfigError):
        lr_factor(0, 20, "wsd", 0.1, 0.2, 0.0, decay_shape="cubic")


def test_cosine_and_constant_schedules():
    c = [lr_factor(s, 11, "cosine", warmup=0.1, decay=0.2, floor=0.0) for s in range(11)]
    assert c[0] == 1.0  # one warmup step
    assert c[1:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 10)) for k in range(10)])
    c_floor = lr_factor(11, 11, "cosine", 0.1, 0.2, floor=0.2)
    assert c_floor == pytest.approx(0.2)
    k = [lr_factor(s, 10, "constant", warmup=0.3, decay=0.2, floor=0.0) for s in range(10)]
    assert k == pytest.approx([1 / 3, 2 / 3, 1.0] + [1.0] * 7)


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
