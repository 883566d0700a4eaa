"""One pooling vocabulary (hnet_dna.model.pooling) for the heads, the protocol's probe and embed:
its one check, and the probe pooling exactly as a head pools."""

import pytest
import torch

from hnet_dna.config import ConfigError
from hnet_dna.model.pooling import POOLINGS, check_pooling, pool_features, pooled_features

from ..conftest import DATA, make_model, read_fixture_fasta

SLICE = read_fixture_fasta(DATA / "chr20_slices.fa")["chr20_heldout"]
SEQUENCES = [SLICE[:37], SLICE[100:160], SLICE[300:309], SLICE[500:552]]


def test_one_vocabulary_and_its_one_check():
    assert POOLINGS == ("mean", "chunks", "last", "flatten")
    for pooling in POOLINGS:
        check_pooling(pooling, num_stages=2)
    with pytest.raises(ConfigError, match=r"--pooling must be one of mean, chunks, last, flatten, got 'meen'"):
        check_pooling("meen", flag="--pooling")
    with pytest.raises(ConfigError, match="'chunks' needs an H-Net"):
        check_pooling("chunks", num_stages=1)
    check_pooling("last", num_stages=1)  # an isotropic model pools everything but chunks


@pytest.mark.parametrize("pooling", POOLINGS)
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
