import math

import numpy as np
import pytest
import torch

from hnet_dna.baselines import MarkovModel, markov_bits_per_base


def test_order0_equals_smoothed_frequencies():
    train = torch.tensor([0, 0, 0, 1, 2, 3])  # counts 3,1,1,1 + 1 each -> 4/10, 2/10, 2/10, 2/10
    test = torch.tensor([0, 1])
    expected = -(math.log2(0.4) + math.log2(0.2)) / 2
    assert markov_bits_per_base(train, test, 0) == pytest.approx(expected)


def test_order1_learns_a_deterministic_cycle_and_skips_n():
    cycle = torch.tensor([0, 1, 2, 3] * 500)
    m = MarkovModel(1, alpha=1e-6).fit(cycle)
    assert m.bits_per_base(torch.tensor([0, 1, 2, 3, 0])) < 1e-6
    # windows touching N (id 4) are not scored: only A->C counts here
    assert m.bits_per_base(torch.tensor([0, 1, 4, 2])) < 1e-6
    assert MarkovModel(0).fit(cycle).bits_per_base(torch.tensor([0, 1, 2, 3])) == pytest.approx(2.0, abs=1e-3)


def test_byte_ids_and_lists_of_sequences():
    ascii_ids = [np.frombuffer(b"ACGTACGT", dtype=np.uint8), np.frombuffer(b"ACGN", dtype=np.uint8)]
    bits = markov_bits_per_base(ascii_ids, ascii_ids[0], 1, alpha=1e-6, base_ids=tuple(b"ACGT"))
    assert bits < 1e-4
