"""BERT masking of genome windows for masked-LM pretraining (hnet_dna.data.masking)."""

import numpy as np
import pytest
import torch

from hnet_dna.data import DataError, GenomeDataModule
from hnet_dna.data.masking import IGNORE, bert_mask
from hnet_dna.tokenizer import NucleotideTokenizer

from ..conftest import write_fasta

TOK = NucleotideTokenizer()


def test_fifteen_percent_of_bases_eighty_ten_ten_never_n():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4, (200_000,), generator=g)
    ids[::50] = TOK.n_id  # N never chosen
    masked, labels = bert_mask(ids, np.random.default_rng(1), TOK, 0.15)
    chosen = labels != IGNORE
    eligible = ids != TOK.n_id
    assert not chosen[~eligible].any()
    assert abs(chosen.sum().item() / eligible.sum().item() - 0.15) < 0.003
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(masked[~chosen], ids[~chosen])
    as_mask = (masked[chosen] == TOK.mask_id).double().mean().item()
    changed = (masked[chosen] != ids[chosen]) & (masked[chosen] != TOK.mask_id)
    # 10 % get a random base, a quarter of which is the base itself: 7.5 % changed, 2.5 % + 10 % unchanged
    assert abs(as_mask - 0.8) < 0.006 and abs(changed.double().mean().item() - 0.075) < 0.004
    assert set(masked[chosen].unique().tolist()) <= {0, 1, 2, 3, TOK.mask_id}
    held, held_labels = bert_mask(ids, np.random.default_rng(1), TOK, 0.15, corrupt=False)
    assert torch.equal(held_labels, labels) and (held[chosen] == TOK.mask_id).all()  # held out: every chosen hidden


def test_windows_mask_by_epoch_in_training_and_never_in_held_out_splits(tmp_path, chr20_slices):
    seq = chr20_slices["chr20_train"][:30_000]
    seq = seq[:1000] + "N" * 40 + seq[1040:]  # under max_n_fraction: a window holds it
    write_fasta(tmp_path / "g.fa", {"chr1": seq})
    dm = GenomeDataModule(str(tmp_path / "g.fa"), val_regions=["chr1:25001-30000"], window=512, mlm_fraction=0.15, seed=3)
    train, val = dm.datasets["train"], dm.datasets["val"]
    saw_n = False
    for i in range(len(train)):  # the window over the N run: never a hidden N
        item = train[(0, i)]
        hidden = item["labels"] != IGNORE
        saw_n |= bool((item["input_ids"] == TOK.n_id).any())
        assert (item["labels"][hidden] < 4).all() and (item["input_ids"][~hidden] != TOK.mask_id).all()
    assert saw_n
    a, b, again = train[(0, 2)], train[(1, 2)], train[(0, 2)]
    assert not torch.equal(a["labels"], b["labels"])  # new masks each epoch
    assert torch.equal(a["input_ids"], again["input_ids"]) and torch.equal(a["labels"], again["labels"])  # resumable
    v0, v5 = val[(0, 1)], val[(5, 1)]
    assert torch.equal(v0["input_ids"], v5["input_ids"])  # held-out masks do not move
    hidden = v0["labels"] != IGNORE
    assert (v0["input_ids"][hidden] == TOK.mask_id).all() and 0.1 < hidden.double().mean() < 0.2
    plain = GenomeDataModule(str(tmp_path / "g.fa"), val_regions=["chr1:25001-30000"], window=512, seed=3)
    assert torch.equal(plain.datasets["train"][(0, 2)]["labels"], plain.datasets["train"][(0, 2)]["input_ids"])
    with pytest.raises(DataError, match="mlm_fraction"):
        GenomeDataModule(str(tmp_path / "g.fa"), window=512, mlm_fraction=1.5)
