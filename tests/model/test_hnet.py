import math

import pytest
import torch
import torch.nn.functional as F

from hnet_dna import HNetConfig, HNetForCausalLM, InputError
from hnet_dna.model.stage import HNetStage

from ..conftest import make_model, padded_batch

HNETS = ["tiny-hnet", "tiny-hnet-2stage"]


@pytest.mark.parametrize("preset", HNETS)
def test_causality_on_padded_batches_of_unequal_lengths(preset):
    # fp64, so any leak from a later position would stand far above rounding.
    model = make_model(preset, seed=1)
    lengths = [60, 41, 17]
    ids, mask = padded_batch(lengths, seed=2)
    base = model(ids, mask=mask).logits
    g = torch.Generator().manual_seed(3)
    for t in (1, 9, 16, 30):
        changed = ids.clone()
        for row, n in enumerate(lengths):
            if t < n:
                changed[row, t:n] = torch.randint(0, 4, (n - t,), generator=g)
        out = model(changed, mask=mask).logits
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-9)
        assert not torch.allclose(out[0, t:], base[0, t:])  # the change does reach later positions


@pytest.mark.parametrize("preset", HNETS + ["tiny-transformer", "tiny-mamba2"])
def test_padded_rows_equal_rows_alone(preset):
    model = make_model(preset, seed=4)
    ids, mask = padded_batch([33, 20, 5], seed=5)
    out = model(ids, mask=mask, labels=ids)
    for row, n in enumerate([33, 20, 5]):
        alone = model(ids[row : row + 1, :n])
        torch.testing.assert_close(out.logits[row, :n], alone.logits[0], rtol=1e-9, atol=1e-9)
        for b_batch, b_alone in zip(out.boundaries, alone.boundaries):
            n_s = int(b_alone.shape[1])
            assert torch.equal(b_batch[row, :n_s], b_alone[0])


def test_outputs_and_loss_composition():
    model = make_model("tiny-hnet-2stage", seed=6)
    ids, mask = padded_batch([30, 12], seed=7)
    ids[0, 5] = model.tokenizer.n_id  # an N target is ignored
    out = model(ids, mask=mask, labels=ids)
    assert out.logits.shape == (2, 30, 8)
    assert len(out.boundaries) == len(out.boundary_probs) == len(out.masks) == len(out.ratio_losses) == 2
    torch.testing.assert_close(out.ratio_loss, out.ratio_losses[0] + out.ratio_losses[1])
    torch.testing.assert_close(out.loss, out.lm_loss + 0.03 * out.ratio_loss)
    # lm_loss by hand: shift by one, skip padding and N targets
    logp = F.log_softmax(out.logits, -1)
    terms = [
        -logp[r, t, ids[r, t + 1]]
        for r, n in enumerate([30, 12])
        for t in range(n - 1)
        if ids[r, t + 1] < 4
    ]
    torch.testing.assert_close(out.lm_loss, torch.stack(terms).mean())
    torch.testing.assert_close(out.bits_per_base, torch.stack(terms).mean() / math.log(2))
    # -100 labels are ignored too
    labels = ids.clone()
    labels[1, 1:] = -100
    partial = model(ids, mask=mask, labels=labels)
    torch.testing.assert_close(partial.lm_loss, torch.stack(terms[:28]).mean())


def test_loss_weights_scale_targets():
    model = make_model("tiny-hnet", seed=8)
    ids, mask = padded_batch([20, 20], seed=9)
    w = torch.ones(2, 20, dtype=torch.float64)
    w[1] = 0.0
    weighted = model(ids, mask=mask, labels=ids, loss_weights=w)
    first_only = model(ids[:1], labels=ids[:1])
    torch.testing.assert_close(weighted.lm_loss, first_only.lm_loss)


def test_backward_reaches_every_parameter():
    model = make_model("tiny-hnet-2stage", dtype=torch.float32, seed=10)
    ids, mask = padded_batch([64, 50], seed=11)
    model(ids, mask=mask, labels=ids).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_isotropic_baselines_are_built_from_the_same_blocks():
    for preset in ("tiny-transformer", "tiny-mamba2"):
        model = make_model(preset)
        assert model.backbone.is_innermost and not hasattr(model.backbone, "routing_module")
        out = model(*padded_batch([10, 6]))
        assert out.boundaries == [] and out.ratio_loss == 0
    t9 = HNetConfig.from_preset("dna-transformer-t9")
    with torch.device("meta"):
        model = HNetForCausalLM(t9)
    assert [layer.kind for layer in model.backbone.main_network.layers] == ["T"] * 9


def test_init_follows_the_official_scheme():
    torch.manual_seed(0)
    cfg = HNetConfig.from_preset("tiny-hnet", d_model=[128, 192])
    model = HNetForCausalLM(cfg)
    bb = model.backbone
    assert torch.equal(bb.residual_proj.weight, torch.zeros(128, 128)) and bb.residual_proj.bias is not None
    assert torch.equal(bb.routing_module.k_proj_layer.weight, torch.eye(128))
    assert torch.equal(bb.main_network.pad_dimension, torch.zeros(64))
    assert model.embeddings.weight.std().item() == pytest.approx(1.0, rel=0.05)
    # n_res: outer encoder "m2t1" (3) + decoder "m2" (2) = 5; inner main "T2" adds 4 -> 9
    outer = bb.encoder.layers[0].mixer.out_proj.weight.std().item()
    inner = bb.main_network.main_network.layers[0].mlp.fc2.weight.std().item()
    assert outer == pytest.approx(0.02 / math.sqrt(5), rel=0.05)
    assert inner == pytest.approx(0.02 / math.sqrt(9), rel=0.05)
    assert bb.encoder.layers[0].mixer.in_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_a_bf16_model_keeps_fp32_where_it_matters_and_stays_close_to_fp32():
    model = make_model("tiny-hnet", dtype=torch.float32, seed=12)
    ids, mask = padded_batch([300, 180], seed=13)
    ref = model(ids, mask=mask)
    model.to(torch.bfloat16)
    assert model.backbone.residual_proj.weight.dtype == torch.float32
    assert model.backbone.encoder.layers[0].mixer.in_proj.weight.dtype == torch.bfloat16
    rotary = model.backbone.encoder.layers[2].mixer
    assert rotary.inv_freq.dtype == torch.float32
    torch.testing.assert_close(rotary.inv_freq, rotary._frequencies(None))
    out = model(ids, mask=mask)
    assert out.logits.dtype == torch.bfloat16
    agree = (out.boundaries[0] == ref.boundaries[0]).float().mean()
    assert agree > 0.97  # routing runs in fp32; only decisions near p = 0.5 may flip
    same = (out.boundaries[0] == ref.boundaries[0]).all(-1)
    for row in torch.nonzero(same).flatten().tolist():
        err = (out.logits[row].float() - ref.logits[row]).abs().mean() / ref.logits[row].abs().mean()
        assert err < 0.05


def test_cpu_autocast_forward_is_close_to_fp32():
    model = make_model("tiny-hnet-2stage", dtype=torch.float32, seed=14)
    ids, mask = padded_batch([200, 120], seed=15)
    ref = model(ids, mask=mask, labels=ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask=mask, labels=ids)
    assert abs(out.lm_loss.item() - ref.lm_loss.item()) < 0.02


def test_pad_dimension_exists_only_where_width_grows():
    cfg = HNetConfig.from_preset("tiny-hnet-2stage", d_model=[32, 32, 64])
    stage0 = HNetStage(cfg, 0)
    assert stage0.main_network.pad_dimension is None
    assert stage0.main_network.main_network.pad_dimension.shape == (32,)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m(torch.tensor([0, 1, 2])), r"shape \(batch, length\)"),
        (lambda m: m(torch.zeros(2, 4)), r"integer tensor.*dtype torch.float32"),
        (lambda m: m(torch.zeros(2, 0, dtype=torch.long)), "empty"),
        (lambda m: m(torch.full((1, 4), 9)), r"outside the vocabulary 0..7"),
        (lambda m: m(torch.zeros(2, 4, dtype=torch.long), mask=torch.ones(2, 3, dtype=torch.bool)), "mask must have the shape"),
        (lambda m: m(torch.zeros(1, 4, dtype=torch.long), mask=torch.tensor([[True, False, True, True]])), "right-padded"),
        (lambda m: m(torch.zeros(1, 4, dtype=torch.long), mask=torch.tensor([[False, True, True, True]])), "start with padding"),
        (lambda m: m(torch.zeros(1, 4, dtype=torch.long), mask=torch.full((1, 4), 0.5)), "mask must be bool"),
        (lambda m: m(torch.zeros(1, 4, dtype=torch.long), labels=torch.zeros(1, 4)), "labels must be integer"),
        (lambda m: m(torch.zeros(1, 4, dtype=torch.long), labels=torch.zeros(1, 3, dtype=torch.long)), "labels must have the shape"),
    ],
)
def test_bad_input_says_what_is_wrong(call, message):
    model = make_model("tiny-hnet", dtype=torch.float32)
    with pytest.raises(InputError, match=message):
        call(model)


def test_integer_masks_are_accepted():
    model = make_model("tiny-hnet", dtype=torch.float32)
    ids, mask = padded_batch([9, 4])
    a = model(ids, mask=mask).logits
    b = model(ids, mask=mask.long()).logits
    assert torch.equal(a, b)


def test_lm_loss_alone_gives_the_router_a_gradient_that_gradcheck_confirms(monkeypatch):
    """The router learns from the next-base loss (through P in the EMA and the STE confidence),
    not only from the ratio loss. The gradient is checked against finite differences on a copy of
    the stage where STE(c) is c: the STE's forward is constant, so a finite difference through it
    sees nothing."""
    model = make_model("tiny-hnet", seed=20)
    ids, mask = padded_batch([40, 29], seed=21)
    model(ids, mask=mask, labels=ids).lm_loss.backward()
    routing = model.backbone.routing_module
    for proj in (routing.q_proj_layer, routing.k_proj_layer):
        assert proj.weight.grad is not None and proj.weight.grad.abs().max() > 1e-6

    import hnet_dna.model.chunking as chunking

    monkeypatch.setattr(chunking, "ste", lambda c: c)  # the copy: STE(c) -> c
    stage = model.backbone
    x = model.embeddings(ids).detach()
    wq0, wk0 = routing.q_proj_layer.weight.detach(), routing.k_proj_layer.weight.detach()
    g = torch.Generator().manual_seed(22)
    directions = torch.randn(4, *wq0.shape, generator=g, dtype=torch.float64) * 0.05
    with torch.no_grad():
        p = stage(x, mask)[1][0].boundary_prob
    assert (p[mask] - 0.5).abs().min() > 1e-4, "no decision may sit at p = 0.5 (finite differences would flip it)"

    def stage_output(a):  # a: (4,) moves W_q along two directions and W_k along two others
        params = {
            "routing_module.q_proj_layer.weight": wq0 + torch.einsum("i,ijk->jk", a[:2], directions[:2]),
            "routing_module.k_proj_layer.weight": wk0 + torch.einsum("i,ijk->jk", a[2:], directions[2:]),
        }
        out, _ = torch.func.functional_call(stage, params, (x, mask))
        return out.sum(-1)  # (B, L)

    a = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(stage_output, (a,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_each_chunking_level_uses_its_own_ratio_target():
    from hnet_dna.model.chunking import ratio_loss

    model = make_model("tiny-hnet-2stage", seed=23, ratio_targets=[2.5, 4.0])
    ids, mask = padded_batch([48, 31], seed=24)
    out = model(ids, mask=mask, labels=ids)
    for s, target in enumerate([2.5, 4.0]):
        expected, _, _ = ratio_loss(out.boundaries[s], out.boundary_probs[s], out.masks[s], target)
        torch.testing.assert_close(out.ratio_losses[s], expected)


def test_padding_is_never_a_target_whatever_id_fills_it():
    model = make_model("tiny-hnet", seed=25)
    lengths = [30, 18, 7]
    ids, mask = padded_batch(lengths, seed=26)  # padding holds pad_id
    as_base = ids.masked_fill(~mask, 0)  # the same batch with padding holding A
    out = model(ids, mask=mask, labels=ids)
    out_a = model(as_base, mask=mask, labels=as_base)
    torch.testing.assert_close(out_a.lm_loss, out.lm_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(out_a.bits_per_base, out.bits_per_base, rtol=1e-12, atol=0)
    # and both are the mean over every row's own targets
    per_row = [model(ids[r : r + 1, :n], labels=ids[r : r + 1, :n]).lm_loss * (n - 1) for r, n in enumerate(lengths)]
    torch.testing.assert_close(out.lm_loss, torch.stack(per_row).sum() / sum(n - 1 for n in lengths))


def test_lm_head_starts_at_the_initializer_range():
    torch.manual_seed(0)
    model = HNetForCausalLM(HNetConfig.from_preset("tiny-hnet", d_model=[128, 192]))
    assert model.lm_head.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.lm_head.weight.mean().abs().item() < 0.005


def _loss_and_grads(model, ids, mask):
    model.zero_grad(set_to_none=True)
    out = model(ids, mask=mask, labels=ids)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _saved_bytes(model, ids, mask) -> int:
    """Bytes autograd keeps for the backward pass of one forward (what checkpointing cuts)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, mask=mask, labels=ids).loss
    return total[0]


@pytest.mark.parametrize("preset", ["tiny-hnet", "tiny-hnet-2stage", "tiny-transformer", "tiny-mamba2"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients_with_less_saved(preset):
    torch.manual_seed(0)
    model = HNetForCausalLM(HNetConfig.from_preset(preset))
    ids = torch.randint(0, 4, (2, 300))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 250:] = False
    loss, grads = _loss_and_grads(model, ids, mask)
    saved = _saved_bytes(model, ids, mask)
    assert not model.is_gradient_checkpointing
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    loss_ckpt, grads_ckpt = _loss_and_grads(model, ids, mask)
    saved_ckpt = _saved_bytes(model, ids, mask)
    torch.testing.assert_close(loss_ckpt, loss, rtol=1e-6, atol=1e-6)
    assert grads_ckpt.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # Only block inputs (and what routing and the head keep) remain: well under half.
    assert saved_ckpt < 0.5 * saved, (saved_ckpt, saved)
    with torch.no_grad():  # inference never recomputes
        torch.testing.assert_close(model(ids, mask=mask).logits, model.gradient_checkpointing_enable(False)(ids, mask=mask).logits)
