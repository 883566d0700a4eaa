"""The plan: curve points, held-out windows and their leakage check."""

from __future__ import annotations

import pytest
import torch

from hnet_dna.data.genome import DataError
from hnet_dna.protocols.data_efficiency import (
    cut_heldout,
    eval_schedule,
)

from .conftest import (
    DEMO,
    demo_sequence,
    heldout_config,
)


def test_eval_points_are_log_spaced_after_warmup():
    steps = eval_schedule(400, 40, 8, 0.125)
    assert steps[0] == 50 and steps[-1] == 400 and len(steps) == 8
    ratios = [b / a for a, b in zip(steps, steps[1:])]
    assert max(ratios) / min(ratios) < 1.05  # even steps in log space (up to rounding)
    assert eval_schedule(100, 30, 4, 0.1)[0] == 31  # never inside the warmup


def test_heldout_fasta_region_is_one_based_inclusive_and_a_bare_record_is_all_of_it(tmp_path):
    from hnet_dna.tokenizer import NucleotideTokenizer

    seq = "ACGT" * 64 + "GGCC" * 64 + "TTAA" * 64  # 768 bases, three windows of 256
    fasta = tmp_path / "other.fa"
    fasta.write_text(f">other\n{seq}\n")
    tok = NucleotideTokenizer()

    def windows(region):
        return [tok.decode(torch.from_numpy(w.astype("int64"))) for w in cut_heldout(heldout_config(fasta, region=region))["x"]]

    assert windows("other:257-768") == [seq[256:512], seq[512:768]]  # bases 257.. are 0-based 256..
    assert windows("other:3-258") == [seq[2:258]]  # one window, starting at base 3
    assert windows("other:1-256") == [seq[:256]]  # a region starting at 1 is not empty
    assert windows("other") == [seq[:256], seq[256:512], seq[512:]]  # a bare record name: all of it
    hla = tmp_path / "hla.fa"  # a record name with a colon (HLA alleles) is still a bare name
    hla.write_text(f">HLA-A*01:01\n{seq}\n")
    fasta = hla
    assert windows("HLA-A*01:01") == [seq[:256], seq[256:512], seq[512:]]
    assert windows("HLA-A*01:01:257-512") == [seq[256:512]]
    fasta = tmp_path / "other.fa"
    with pytest.raises(DataError, match="no record 'nope'"):
        windows("nope:1-300")


def test_heldout_fasta_overlapping_the_training_data_is_refused(tmp_path):
    seq = demo_sequence()
    # The training genome's record under an alias (chr20_demo = 20_demo), in another file.
    alias = tmp_path / "copy.fa"
    alias.write_text(f">20_demo\n{seq[:2048]}\n")
    with pytest.raises(DataError, match=r"leakage: heldout.x window 20_demo:1-256 overlaps the span of training "
                                         r"window chr20_demo:1-256.*copy.fa.*heldout.x.allow_leakage: true"):
        cut_heldout(heldout_config(alias))
    with pytest.raises(DataError, match="leakage: heldout.x"):  # the training FASTA itself
        cut_heldout(heldout_config(DEMO, region="chr20_demo:400001-402000"))
    assert len(cut_heldout(heldout_config(alias, allow_leakage=True))["x"]) == 8  # asked for: kept
    # The smoke config's validation region (900,001-1,000,000) is not training data.
    assert len(cut_heldout(heldout_config(DEMO, region="chr20_demo:900001-902000"))["x"]) == 7
    other = tmp_path / "other.fa"  # another record name: not the training data
    other.write_text(f">plasmid\n{seq[:2048]}\n")
    assert len(cut_heldout(heldout_config(other))["x"]) == 8
