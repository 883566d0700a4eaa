"""One pooling vocabulary (hnet_dna.model.pooling) for the heads, the protocol's probe and embed:
its one check, and the probe pooling exactly as a head pools."""

import pytest
import torch

from hnet_dna.config import ConfigError
from hnet_dna.model.pooling import (
    FROZEN_POOLINGS,
    POOLINGS,
    AttentionPooling,
    check_pooling,
    pool_features,
    pooled_features,
)

from ..conftest import DATA, make_model, read_fixture_fasta

SLICE = read_fixture_fasta(DATA / "chr20_slices.fa")["chr20_heldout"]
SEQUENCES = [SLICE[:37], SLICE[100:160], SLICE[300:309], SLICE[500:552]]


def test_one_vocabulary_and_its_one_check():
    assert POOLINGS == ("mean", "chunks", "last", "max", "attention", "flatten")
    assert "attention" not in FROZEN_POOLINGS  # a learned query: nothing to read frozen features with
    for pooling in POOLINGS:
        check_pooling(pooling, num_stages=2)
    with pytest.raises(ConfigError, match=r"--pooling must be one of mean, chunks, last, max, attention, flatten, got 'meen'"):
        check_pooling("meen", flag="--pooling")
    with pytest.raises(ConfigError, match="'chunks' needs an H-Net"):
        check_pooling("chunks", num_stages=1)
    check_pooling("last", num_stages=1)  # an isotropic model pools everything but chunks


@pytest.mark.parametrize("pooling", FROZEN_POOLINGS)
def test_the_probe_pools_each_sequence_as_a_head_pools_it_alone(pooling):
    model = make_model("tiny-hnet", seed=1).eval()  # fp64: batching and padding change nothing here
    longest = max(len(s) for s in SEQUENCES)
    got = pooled_features(model, SEQUENCES, pooling, max_length=longest, batch_size=3)  # (N, D) numpy
    for row, seq in enumerate(SEQUENCES):
        ids = model.tokenizer.encode(seq)[None]
        features = model.features(ids, torch.ones_like(ids, dtype=torch.bool))
        alone = pool_features(features, pooling, max_length=longest)[0].float()
        torch.testing.assert_close(torch.from_numpy(got[row]), alone, rtol=1e-6, atol=1e-6)
        if pooling == "last":  # the last base's output (the probe once read 'last' as 'mean')
            torch.testing.assert_close(alone, features.hidden[0, -1].float())
        if pooling == "flatten":  # every position in place, zeros after the sequence
            width = features.hidden.shape[-1]
            assert not got[row][len(seq) * width:].any()


@pytest.mark.parametrize("pooling", ["mean", "flatten"])
def test_the_probes_reverse_complement_average_keeps_forward_positions(pooling):
    model = make_model("tiny-hnet", seed=2).eval()
    seq = SEQUENCES[1]
    rc = model.tokenizer.reverse_complement(seq)
    both = pooled_features(model, [seq, rc], pooling, max_length=len(seq), rc_average=True)
    if pooling == "mean":  # a sequence and its reverse complement: one vector
        torch.testing.assert_close(torch.from_numpy(both[0]), torch.from_numpy(both[1]), rtol=1e-6, atol=1e-6)
    else:  # position i of seq is position L-1-i of its reverse complement
        width = model.config.d_model[0]
        forward, backward = (torch.from_numpy(x).reshape(len(seq), width) for x in both)
        torch.testing.assert_close(forward, backward.flip(0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("pooling", ["max", "attention"])
def test_max_and_attention_pooling_ignore_padding(pooling):
    """The same pooled vector for a sequence alone and padded in a batch with longer ones, padding
    at values that would win a max or take attention weight if they were read."""
    torch.manual_seed(0)
    hidden = torch.randn(1, 7, 5, dtype=torch.float64)
    attention = AttentionPooling(5).double()
    with torch.no_grad():
        attention.query.copy_(torch.randn(5))  # a trained query: unequal weights

    def pooled(h, mask):
        from hnet_dna.model.features import BackboneFeatures

        features = BackboneFeatures(hidden=h, mask=mask, levels=[])
        return pool_features(features, pooling, attention=attention)

    alone = pooled(hidden, torch.ones(1, 7, dtype=torch.bool))
    padded = torch.cat([hidden, torch.full((1, 5, 5), 100.0, dtype=torch.float64)], dim=1)  # (1, 12, 5)
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[:, :7] = True
    torch.testing.assert_close(pooled(padded, mask), alone, rtol=0, atol=1e-12)
    if pooling == "max":
        torch.testing.assert_close(alone, hidden.amax(1))


def test_attention_pooling_starts_as_mean_pooling_and_learns_where_to_look():
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 4)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    attention = AttentionPooling(4)
    start = attention(hidden, mask)
    mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(start, mean)  # query zero: uniform weights over the real bases
    start.sum().backward()
    assert attention.query.grad.abs().sum() > 0  # the query gets a gradient at its zero start
