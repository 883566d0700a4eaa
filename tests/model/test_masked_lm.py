"""The bidirectional (masked-LM) H-Net: both directions read, padding never leaks, the layers equal
plain references, the loss scores hidden bases only, save/load round trips; causal models unchanged."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from hnet_dna import HNetConfig, HNetForCausalLM, HNetForMaskedLM
from hnet_dna.config import ConfigError
from hnet_dna.model.attention import two_way_attention
from hnet_dna.model.loading import build_model, load_model
from hnet_dna.model.bimamba import BiMamba2, reverse_real
from hnet_dna.tokenizer import NUCLEOTIDE_VOCAB, NucleotideTokenizer
from hnet_dna.weights import CheckpointError

from ..conftest import make_model, padded_batch


BIDIRECTIONAL = {"vocab_size": 9, "bidirectional": True}


@pytest.mark.parametrize("preset, overrides, reaches", [
    ("tiny-bihnet", {}, True),
    ("tiny-transformer", BIDIRECTIONAL, True),  # attention alone: two-way
    ("tiny-mamba2", BIDIRECTIONAL, True),  # BiMamba-2 alone: the reversed scan
    ("tiny-hnet", {}, False),
])
def test_the_last_base_reaches_the_first_position_only_in_a_bidirectional_model(preset, overrides, reaches):
    ids, mask = padded_batch([48], seed=1)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 4
    model = make_model(preset, seed=2, **overrides)
    first = [model(x, mask).logits[0, 0] for x in (ids, changed)]
    assert (not torch.allclose(first[0], first[1], rtol=0, atol=1e-9)) == reaches


def test_padded_rows_equal_rows_alone_in_both_directions():
    model = make_model("tiny-bihnet", seed=4)
    assert isinstance(model, HNetForMaskedLM)
    lengths = [37, 20, 6]
    ids, mask = padded_batch(lengths, seed=5)
    out = model(ids, mask=mask)
    for row, n in enumerate(lengths):
        alone = model(ids[row : row + 1, :n])
        torch.testing.assert_close(out.logits[row, :n], alone.logits[0], rtol=1e-9, atol=1e-9)
        for level, b in enumerate(out.boundaries):  # the same chunks, the first base a boundary
            assert bool(b[row, 0])
            torch.testing.assert_close(b[row][out.masks[level][row]], alone.boundaries[level][0][alone.masks[level][0]])


def test_bimamba_equals_a_forward_and_a_reversed_mamba_written_out():
    torch.manual_seed(0)
    layer = BiMamba2(32, d_state=8, headdim=8, chunk_size=8).double()
    for p in layer.parameters():
        p.data += 0.1 * torch.randn_like(p)  # the two directions' scalars and norms differ
    # the reversed direction as a plain Mamba-2: its own scan parameters, the shared projections
    reverse = copy.deepcopy(layer.fwd)
    for name in ("conv1d", "norm"):
        getattr(reverse, name).load_state_dict(getattr(layer.rev, name).state_dict())
    for name in ("dt_bias", "A_log", "D"):
        getattr(reverse, name).data.copy_(getattr(layer.rev, name))
    lengths = [19, 11, 4]
    u = torch.randn(3, 19, 32, dtype=torch.float64)
    mask = torch.arange(19)[None] < torch.tensor(lengths)[:, None]
    u = u.masked_fill(~mask[..., None], 7.0)  # padding that would show if it leaked
    out = layer(u, mask)
    for row, n in enumerate(lengths):
        x = u[row : row + 1, :n]
        expected = layer.fwd(x) + reverse(x.flip(1)).flip(1)
        torch.testing.assert_close(out[row : row + 1, :n], expected, rtol=1e-10, atol=1e-10)
    assert sum(p.numel() for p in layer.parameters()) < 1.2 * sum(p.numel() for p in layer.fwd.parameters())  # projections shared
    torch.testing.assert_close(reverse_real(reverse_real(u, mask), mask), u)


@pytest.mark.parametrize("window", [-1, 3])
def test_two_way_attention_equals_softmax_over_the_allowed_keys(window):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 9, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(9)[None] < torch.tensor([9, 6])[:, None]
    out = two_way_attention(q, k, v, mask, window)
    for b in range(2):
        for i in range(int(mask[b].sum())):
            keys = [j for j in range(9) if mask[b, j] and (window < 0 or abs(i - j) <= window)]
            w = torch.softmax(torch.einsum("hd,hkd->hk", q[b, :, i], k[b, :, keys]) / 2.0, -1)  # scale 1/sqrt(4)
            torch.testing.assert_close(out[b, :, i], torch.einsum("hk,hkd->hd", w, v[b, :, keys]), rtol=1e-10, atol=1e-10)


def test_bidirectional_dechunking_has_no_ema():
    """The decoder's input is each position's chunk state (no causal smoothing) plus the residual."""
    model = make_model("tiny-bihnet", seed=6)
    stage = model.backbone
    seen = {}
    stage.main_network.register_forward_hook(lambda m, args, out: seen.update(z=out[0]))
    stage.decoder.register_forward_hook(lambda m, args, out: seen.update(y=args[0]))
    stage.encoder.register_forward_hook(lambda m, args, out: seen.update(h=out))
    ids, mask = padded_batch([40], seed=7)
    out = model(ids, mask=mask)
    b = out.boundaries[0][0]
    chunk = b.long().cumsum(0) - 1
    expected = seen["z"][0, chunk] + stage._residual(seen["h"])[0]
    torch.testing.assert_close(seen["y"][0], expected.to(seen["y"].dtype), rtol=1e-9, atol=1e-9)
    assert b.sum() < 40  # there are chunks of several bases, where an EMA would have mixed states


def test_the_loss_scores_the_hidden_bases_only():
    model = make_model("tiny-bihnet", seed=8)
    tok = model.tokenizer
    ids, mask = padded_batch([30, 25], seed=9)
    hidden = torch.zeros_like(ids, dtype=torch.bool)
    hidden[0, [2, 7, 20]] = hidden[1, [0, 24]] = True
    x = ids.masked_fill(hidden, tok.mask_id)
    labels = ids.masked_fill(~hidden, -100)
    labels[1, 24] = tok.n_id  # an N label is never scored
    out = model(x, mask=mask, labels=labels)
    scored = hidden & (labels != tok.n_id)
    ce = F.cross_entropy(out.logits[scored], ids[scored])
    torch.testing.assert_close(out.lm_loss, ce)
    torch.testing.assert_close(out.bits_per_base, ce.detach() / math.log(2))
    torch.testing.assert_close(out.loss, out.lm_loss + model.config.ratio_loss_weight * out.ratio_loss)
    assert out.masked_accuracy == (out.logits[scored].argmax(-1) == ids[scored]).double().mean()
    with pytest.raises(NotImplementedError, match="does not generate"):
        model.generate(ids[:1, :5], max_new_tokens=2)


def test_save_load_round_trip_and_what_loads_it(tmp_path):
    model = make_model("tiny-bihnet", dtype=torch.float32, seed=10)
    model.save_pretrained(tmp_path / "mlm")
    ids, mask = padded_batch([12, 9], seed=11)
    for loaded in (HNetForCausalLM.from_pretrained(tmp_path / "mlm"), HNetForMaskedLM.from_pretrained(tmp_path / "mlm"),
                   build_model(str(tmp_path / "mlm"))):
        assert type(loaded) is HNetForMaskedLM and loaded.config.bidirectional
        torch.testing.assert_close(loaded(ids, mask=mask).logits, model(ids, mask=mask).logits)
    with pytest.raises(CheckpointError, match="a masked LM .*causal"):
        load_model(str(tmp_path / "mlm"), lm_head=True)  # score / ism's causal scores refuse it
    with pytest.raises(ConfigError, match="needs a bidirectional config"):
        HNetForMaskedLM(HNetConfig.from_preset("tiny-hnet"))
    with pytest.raises(ConfigError, match="<mask> id 8"):
        HNetConfig.from_preset("tiny-bihnet", vocab_size=8)


def test_causal_models_and_the_id_table_are_unchanged(tmp_path):
    tok = NucleotideTokenizer()
    assert NUCLEOTIDE_VOCAB[:8] == ("A", "C", "G", "T", "N", "<pad>", "<bos>", "<eos>") and tok.mask_id == 8
    assert NucleotideTokenizer(mode="byte").mask_id == 253
    config = HNetConfig.from_preset("tiny-hnet")
    assert "bidirectional" not in config.to_dict() and config.vocab_size == 8  # config.json as before
    causal = make_model("tiny-hnet", dtype=torch.float32, seed=12)
    causal.save_pretrained(tmp_path / "causal")
    assert "bidirectional" not in (tmp_path / "causal" / "config.json").read_text()
    loaded = build_model(str(tmp_path / "causal"))
    assert type(loaded) is HNetForCausalLM
    ids, mask = padded_batch([15], seed=13)
    torch.testing.assert_close(loaded(ids, mask=mask).logits, causal(ids, mask=mask).logits)


def test_padding_queries_beyond_a_window_leave_no_nan():
    """A padding query more than W past the last real key still has keys to attend to (no NaN rows
    that could reach real positions through later sums)."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 12, 4, generator=g) for _ in range(3))
    mask = torch.arange(12)[None] < 3
    out = two_way_attention(q, k, v, mask, window=2)
    assert torch.isfinite(out).all()
    every_key = torch.softmax(torch.einsum("hd,hkd->hk", q[0, :, 11], k[0]) / 2.0, -1)  # (H, L): the documented rule
    torch.testing.assert_close(out[0, :, 11], torch.einsum("hk,hkd->hd", every_key, v[0]))
    model = make_model("tiny-bihnet", seed=3, attn_cfg={"num_heads": [2, 2], "rotary_emb_dim": [16, 24], "window_size": [3, -1]})
    ids, mask = padded_batch([30, 4], seed=4)
    out = model(ids, mask=mask)
    assert torch.isfinite(out.logits[mask]).all()
    torch.testing.assert_close(out.logits[1, :4], model(ids[1:, :4]).logits[0], rtol=1e-9, atol=1e-9)


def test_causal_only_paths_refuse_a_masked_lm(tmp_path):
    from hnet_dna.hf import HNetDNAConfig, HNetDNAForCausalLM
    from hnet_dna.inference.score import sequence_bits
    from hnet_dna.model import InputError
    from hnet_dna.tasks.callbacks import score_windows

    config = HNetConfig.from_preset("tiny-bihnet")
    with pytest.raises(InputError, match="use HNetForMaskedLM"):
        HNetForCausalLM(config)
    mlm = HNetForMaskedLM(config)
    ids = torch.randint(0, 4, (2, 16))
    with pytest.raises(ConfigError, match="next-base bits of a causal model"):
        score_windows(mlm, ids, 2)
    with pytest.raises(ConfigError, match="no left-to-right likelihood"):
        sequence_bits(mlm, [ids[0]])
    with pytest.raises(CheckpointError, match="AutoModelForMaskedLM"):
        HNetDNAForCausalLM(HNetDNAConfig(**config.to_dict()))
