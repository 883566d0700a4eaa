import math

import numpy as np
import pytest
import torch

from hnet_dna.baselines import MarkovModel, markov_bits_per_base

from .conftest import DATA


def test_order0_equals_smoothed_frequencies():
    train = torch.tensor([0, 0, 0, 1, 2, 3])  # counts 3,1,1,1 + 1 each -> 4/10, 2/10, 2/10, 2/10
    test = torch.tensor([0, 1, 0])  # the first position is no target, as for a language model
    expected = -(math.log2(0.2) + math.log2(0.4)) / 2
    assert markov_bits_per_base(train, test, 0) == pytest.approx(expected)


def test_order1_learns_a_deterministic_cycle_and_skips_n():
    cycle = torch.tensor([0, 1, 2, 3] * 500)
    m = MarkovModel(1, alpha=1e-6).fit(cycle)
    assert m.bits_per_base(torch.tensor([0, 1, 2, 3, 0])) < 1e-6
    # after N (id 4) the context backs off to order 0: A->C is certain, G after N costs ~2 bits
    assert m.bits_per_base(torch.tensor([0, 1, 4, 2])) == pytest.approx(1.0, abs=1e-3)
    assert MarkovModel(0).fit(cycle).bits_per_base(torch.tensor([0, 1, 2, 3])) == pytest.approx(2.0, abs=1e-3)


def test_byte_ids_and_lists_of_sequences():
    ascii_ids = [np.frombuffer(b"ACGTACGT", dtype=np.uint8), np.frombuffer(b"ACGN", dtype=np.uint8)]
    bits = markov_bits_per_base(ascii_ids, ascii_ids[0], 1, alpha=1e-6, base_ids=tuple(b"ACGT"))
    assert bits < 1e-4


def test_markov_scores_exactly_the_language_model_targets():
    """Held-out comparisons score model and baseline on the same positions: every A/C/G/T target
    after the first position (N, padding never), contexts backing off near N."""
    from .conftest import make_model

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4, (3, 200), generator=g)
    ids[0, 50:60] = 4  # a run of N
    ids[1, 1] = 4
    ids[2, 150:] = 5  # padding
    mask = ids != 5
    model = make_model("tiny-hnet")
    out = model(ids, mask=mask, labels=ids)
    logp = torch.log_softmax(out.logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    is_target = (ids[:, 1:] < 4) & mask[:, 1:]
    model_targets = int(is_target.sum())
    torch.testing.assert_close(out.bits_per_base, -(logp * is_target).sum() / model_targets / math.log(2))
    for order in (0, 2, 5):
        m = MarkovModel(order).fit(torch.randint(0, 4, (5000,), generator=g))
        _, n = m.score([row[row != 5] for row in ids])
        assert n == model_targets
    # the back-off: right after the N run, order 2 predicts from order 0 and then order 1
    m = MarkovModel(2, alpha=1e-6).fit(torch.tensor([0, 1, 2, 3] * 500))
    total, n = m.score(torch.tensor([4, 0, 1, 2]))  # targets: A (order 0), C (order 1), G (order 2)
    assert n == 3 and total == pytest.approx(2.0, abs=1e-3)


def test_kmer_features_follow_the_strand_policy():
    """A motif and its reverse complement are one feature only where the labels are strand-symmetric
    (a splice donor read backwards is not a donor)."""
    from hnet_dna.baselines import _kmer_features

    motif, rc = "TATAAAGG", "CCTTTATA"
    specific, vocab = _kmer_features([motif, rc], 4)
    assert (specific[0] != specific[1]).nnz > 0  # the strand is seen
    assert "TATA" in vocab and "TTTA" in vocab
    symmetric, _ = _kmer_features([motif, rc], 4, strand_symmetric=True)
    assert (symmetric[0] != symmetric[1]).nnz == 0  # one row for both strands


def test_the_kmer_control_of_the_protocol_follows_the_recipes_strand_policy():
    from hnet_dna.data import LabelledDataModule
    from hnet_dna.protocols.finetune.systems import kmer_run

    dm = LabelledDataModule(str(DATA / "labelled" / "uci_splice_60bp.tsv"), val_fraction=0.25, test_fraction=0.25)
    assert kmer_run(dm, seed=0, fold=None)["strand_symmetric"] is False  # the data module's default
    dm = LabelledDataModule(str(DATA / "labelled" / "human_enhancers_iEnhancer2L.csv"), val_fraction=0.25,
                            test_fraction=0.25, strand_symmetric=True)
    assert kmer_run(dm, seed=0, fold=None)["strand_symmetric"] is True
