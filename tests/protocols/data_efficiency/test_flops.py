"""Training FLOPs per base: torch's count and the causal count, convolutions counted at their real cost."""

from __future__ import annotations

import pytest
import torch


def test_flops_per_base_count_attention_scores_on_cpu():
    """torch's counter knows only the CUDA attention kernels: on CPU the scores must still count.
    A Transformer's matmul FLOPs per base do not depend on the window; its attention grows with it,
    by exactly torch's SDPA formulas (forward + backward, per layer)."""
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    from hnet_dna.model.loading import build_model
    from hnet_dna.protocols.data_efficiency import training_flops_per_base

    torch.manual_seed(0)
    model = build_model({"preset": "tiny-transformer", "arch_layout": ["T2"]})
    heads, d = model.config.attn_cfg.num_heads[0], model.config.d_model[0]

    def attention(length):  # per base, both layers, batch 2
        shape = (2, heads, length, d // heads)
        return 2 * (sdpa_flop_count(shape, shape, shape) + sdpa_backward_flop_count(shape, shape, shape, shape)) / (2 * length)

    short, long = (training_flops_per_base(model, torch.randint(0, 4, (2, n))) for n in (64, 256))
    assert long - short == pytest.approx(attention(256) - attention(64), rel=1e-6)
    assert long > 1.2 * short


@pytest.mark.parametrize("window, pairs", [(-1, 1 + 2 + 3 + 4 + 5 + 6), (2, 1 + 2 + 3 + 3 + 3 + 3)])
def test_causal_flops_of_a_hand_sized_attention_layer(window, pairs):
    """One attention layer, batch 1, length 6, 2 heads of 4 dims. Query i attends to keys
    max(0, i - W) .. i: 21 (query, key) pairs when global, 15 with a window of 2. Each pair costs
    2 x 4 FLOPs for q.k and 2 x 4 for p.v; torch's backward formula counts 2.5x its forward. So the
    attention ops count (2 + 2 + 2.5 x 4) x 4 x 2 heads = 112 FLOPs a pair, causal count; torch's
    count charges the whole matrices SDPA is called with (36 pairs; with the window, on CPU, blocks
    of 3 queries: two own-block squares of 3 x 3 and one previous-block square of 2 x 2, 22 pairs)."""
    from torch.utils.flop_counter import FlopCounterMode

    from hnet_dna.model.attention import CausalSelfAttention
    from hnet_dna.protocols.data_efficiency.flops import _formulas

    torch.manual_seed(0)
    layer = CausalSelfAttention(d_model=8, num_heads=2, window_size=window)
    x = torch.randn(1, 6, 8)
    unattended = []
    counter = FlopCounterMode(display=False, custom_mapping=_formulas(unattended))
    with counter:
        layer(x).sum().backward()
    flops = counter.get_flop_counts()["Global"]
    attention = sum(v for k, v in flops.items() if "attention" in str(k))  # torch's count
    rest = sum(v for k, v in flops.items() if "attention" not in str(k))
    counts = {"torch": attention, "causal": attention - sum(unattended)}
    assert counts["causal"] == 112 * pairs
    assert counts["torch"] == 112 * (36 if window < 0 else 2 * 3 * 3 + 2 * 2)
    # projections counted once, alike; per attention call one forward and one backward op
    assert rest > 0 and len(unattended) == (2 if window < 0 else 4)


def test_attended_fraction_of_masks_windows_and_alignments():
    """The fraction of (query, key) pairs an attention call computes, from its arguments: a boolean
    or additive mask (which the band attention on CPU no longer passes, but the masked forms do),
    torch's top-left and bottom-right causal alignments, flash-attn's windows."""
    from hnet_dna.protocols.data_efficiency.flops import attended_fraction

    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    assert attended_fraction(4, 4, mask=causal) == 10 / 16
    additive = torch.zeros(4, 4).masked_fill(~causal, float("-inf"))
    assert attended_fraction(4, 4, mask=additive) == 10 / 16
    assert attended_fraction(4, 4, is_causal=True, mask=torch.ones(4, 4, dtype=torch.bool).triu()) == 4 / 16
    assert attended_fraction(2, 4, is_causal=True) == 3 / 8  # top-left: query i sees keys 0 .. i
    assert attended_fraction(2, 4, is_causal=True, bottom_right=True) == 7 / 8  # keys 0 .. i + 2
    assert attended_fraction(4, 4, window_left=1, is_causal=True) == 7 / 16  # keys i - 1 .. i


def test_causal_flops_of_a_model_subtract_exactly_the_masked_attention():
    """A 2-layer Transformer at length 64: the causal count is torch's less the attention pairs a
    causal kernel skips (64 x 63 / 2 a head per layer), at the same 112/8 FLOPs per pair and head
    dimension as above; an isotropic Mamba-2 has no attention, so both counts agree."""
    from hnet_dna.model.loading import build_model
    from hnet_dna.protocols.data_efficiency import training_flops_per_base

    torch.manual_seed(0)
    model = build_model({"preset": "tiny-transformer", "arch_layout": ["T2"]})
    heads, d = model.config.attn_cfg.num_heads[0], model.config.d_model[0]
    ids = torch.randint(0, 4, (2, 64))
    torch_count = training_flops_per_base(model, ids, "torch")
    causal = training_flops_per_base(model, ids, "causal")
    skipped = 2 * 2 * heads * (64 * 63 // 2) * (112 // 8) * (d // heads)  # layers x batch x heads x pairs x ...
    assert torch_count - causal == pytest.approx(skipped / ids.numel())
    mamba = build_model("tiny-mamba2")
    assert training_flops_per_base(mamba, ids, "causal") == training_flops_per_base(mamba, ids, "torch")
    with pytest.raises(ValueError, match="convention"):
        training_flops_per_base(model, ids, "halved")


@pytest.mark.parametrize("groups", [16, 1])
def test_a_convolution_backward_costs_what_its_forward_costs_per_gradient(groups):
    """A convolution's input and weight gradients each multiply the same pairs its forward does.
    Torch's formula charges a grouped convolution's weight gradient as a dense one (groups times
    more: Mamba-2's depthwise convolution was charged about 0.2 MFLOP per base per layer for about
    1 kFLOP of work); ours counts forward + backward at 3x the forward, grouped or dense."""
    from torch.utils.flop_counter import FlopCounterMode

    from hnet_dna.protocols.data_efficiency.flops import _formulas

    conv = torch.nn.Conv1d(16, 16, 4, groups=groups, padding=3)
    x = torch.randn(2, 16, 32, requires_grad=True)
    forward = 2 * 2 * 16 * (16 // groups) * 4 * 35  # 2 FLOPs x batch x out channels x in per group x taps x outputs
    counter = FlopCounterMode(display=False, custom_mapping=_formulas([]))
    with counter:
        conv(x).sum().backward()
    assert counter.get_total_flops() == 3 * forward


def test_flops_of_mamba2_count_its_convolution_as_the_reference_runs_it():
    """On CPU the layer's convolution has a hand-written backward whose weight gradient is
    elementwise work (not counted); the count forces the reference, whose backward is counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from hnet_dna import backends
    from hnet_dna.model.mamba2 import Mamba2
    from hnet_dna.protocols.data_efficiency.flops import _formulas

    torch.manual_seed(0)
    layer = Mamba2(16, d_state=8, headdim=8, chunk_size=8)
    u = torch.randn(1, 16, 16, requires_grad=True)
    counter = FlopCounterMode(display=False, custom_mapping=_formulas([]))
    with backends.force_reference(), counter:
        layer(u).sum().backward()
    flops = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    # 2 FLOPs x outputs x channels x taps; the padded convolution makes 16 + 3 outputs (3 dropped)
    forward = 2 * (16 + 3) * layer.conv_dim * 4
    assert flops["aten.convolution_backward"] == 2 * forward  # input and weight gradients


def test_flops_batch_follows_the_model_parameters():
    """After ``fit`` Lightning's teardown moves the model to the CPU whatever device it trained on:
    the FLOP-count batch goes where the parameters are (here the meta device stands in for a device
    other than the trainer's), in the model's ids (a byte-level model reads ASCII codes)."""
    from hnet_dna.data.datamodule import GenomeDataModule
    from hnet_dna.model.loading import build_model
    from hnet_dna.protocols.data_efficiency.worker import flops_batch

    dm = GenomeDataModule(fasta="builtin:demo_chr20.fa", window=64, batch_size=3)
    with torch.device("meta"):
        moved = build_model("tiny-hnet")
    batch = flops_batch(dm, moved)
    assert batch.device.type == "meta" and batch.shape == (3, 64)
    byte_model = build_model({"preset": "tiny-hnet", "vocab_size": 256})
    ids = flops_batch(dm, byte_model)
    assert set(ids.unique().tolist()) <= {ord(c) for c in "ACGTN"}


def test_flops_are_counted_on_random_batches_from_the_whole_training_split():
    """Not the first windows (a chromosome's start is its subtelomere, after its leading N run):
    seeded draws from the whole split, other batches for other seeds."""
    from hnet_dna.data.datamodule import GenomeDataModule
    from hnet_dna.model.loading import build_model
    from hnet_dna.protocols.data_efficiency.worker import flops_batch

    dm = GenomeDataModule(fasta="builtin:demo_chr20.fa", window=64, batch_size=4)
    model = build_model("tiny-hnet")
    first = torch.stack([dm.datasets["train"][(0, i)]["input_ids"] for i in range(4)])
    batches = [flops_batch(dm, model, seed=(0, k)) for k in range(3)]
    assert not any(torch.equal(b, first) for b in batches)
    assert not torch.equal(batches[0], batches[1])
    assert torch.equal(batches[0], flops_batch(dm, model, seed=(0, 0)))  # seeded: the same batch again

