import shutil

import pytest
import torch

from hnet_dna.data import DataError, GenomeDataModule
from hnet_dna.data.datamodule import WindowSampler
from hnet_dna.tokenizer import NucleotideTokenizer

from ..conftest import DATA, write_fasta


@pytest.fixture
def fasta(tmp_path, chr20_slices):
    return write_fasta(tmp_path / "g.fa", {"chr20": chr20_slices["chr20_train"][:60_000]})


def make(fasta, **kw):
    args = dict(val_regions=["chr20:50001-60000"], window=256, batch_size=4, seed=3)
    args.update(kw)
    return GenomeDataModule(str(fasta), **args)


def batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_batches_are_deterministic_under_a_seed_and_change_with_epoch(fasta):
    a, b = make(fasta), make(fasta)
    for x, y in zip(batches(a.train_dataloader(), 3), batches(b.train_dataloader(), 3)):
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["coords"], y["coords"])
    loader = a.train_dataloader()
    first = next(iter(loader))["coords"]
    loader.sampler.set_epoch(1)
    assert not torch.equal(next(iter(loader))["coords"], first)
    assert not torch.equal(next(iter(make(fasta, seed=4).train_dataloader()))["coords"], first)


def test_workers_give_the_same_batches_as_the_main_process(fasta):
    plain = batches(make(fasta, random_shift=30).train_dataloader(), 4)
    workers = batches(make(fasta, random_shift=30, num_workers=2).train_dataloader(), 4)
    for x, y in zip(plain, workers):
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["coords"], y["coords"])


def test_reverse_complement_and_shift_augment_training_windows_only(fasta, chr20_slices):
    dm = make(fasta, reverse_complement=1.0, random_shift=40)
    seq = chr20_slices["chr20_train"]
    tok = NucleotideTokenizer()
    for item in (dm.datasets["train"][(0, i)] for i in range(20)):
        _, _, start, rc = item["coords"].tolist()
        assert rc == 1 and 0 <= start <= 50_000 - 256
        assert torch.equal(item["input_ids"], tok.reverse_complement(tok.encode(seq[start : start + 256])))
    starts = {dm.datasets["train"][(0, 5)]["coords"][2].item() for _ in range(3)}
    assert len(starts) == 1  # the same (epoch, window) draws the same shift
    table = dm.tables["train"]
    shifted = [dm.datasets["train"][(e, 5)]["coords"][2].item() - table.start[5] for e in range(30)]
    assert max(shifted) <= 40 and min(shifted) >= -40 and len(set(shifted)) > 5
    val = dm.datasets["val"][(0, 0)]
    assert val["coords"][3] == 0 and val["coords"][2] == dm.tables["val"].start[0]


def test_soft_masked_bases_get_their_loss_weight(tmp_path):
    shutil.copy(DATA / "hg38_chrM.fa", tmp_path)
    dm = GenomeDataModule(str(tmp_path / "hg38_chrM.fa"), val_regions=["MT:15001-16569"], window=1000,
                          reverse_complement=0.0, soft_mask_weight=0.25, batch_size=2)
    seq = (tmp_path / "hg38_chrM.fa").read_text().split("\n", 1)[1].replace("\n", "")
    for i in range(len(dm.datasets["train"])):
        item = dm.datasets["train"][(0, i)]
        start = item["coords"][2].item()
        lower = torch.tensor([c.islower() for c in seq[start : start + 1000]])
        assert torch.equal(item["loss_weights"], torch.where(lower, 0.25, 1.0))
        assert (item["input_ids"] < 5).all()  # upper-cased to A/C/G/T/N ids


def test_ranks_get_disjoint_shares_and_resume_skips(fasta):
    dm = make(fasta)
    ds = dm.datasets["train"]
    shares = [list(WindowSampler(ds, shuffle=True, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    flat = [i for s in shares for _, i in s]
    assert len(flat) == len(set(flat)) and all(len(s) == len(shares[0]) for s in shares)
    sampler = WindowSampler(ds, shuffle=True, seed=1)
    full = list(sampler)
    sampler.resume(0, 10)
    assert list(sampler) == full[10:]
    assert list(sampler) == full  # the skip applies to one pass only
    loader = dm.train_dataloader()
    loader.load_state_dict({"epoch": 0, "consumed_batches": 2, "batch_size": 4})
    resumed = next(iter(loader))["coords"]
    assert torch.equal(resumed, batches(dm.train_dataloader(), 3)[2]["coords"])


def test_loader_state_resumes_later_epochs_and_epoch_ends(fasta):
    dm = make(fasta, num_workers=2)
    def epoch_batches(epoch):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [b["coords"] for b in loader]
    epoch1, epoch2 = epoch_batches(1), epoch_batches(2)
    # a checkpoint 3 batches into epoch 1; the iterator is created before anyone calls set_epoch
    loader = dm.train_dataloader()
    loader.load_state_dict({"epoch": 1, "consumed_batches": 3, "batch_size": 4})
    assert torch.equal(next(iter(loader))["coords"], epoch1[3])
    # a checkpoint at the end of epoch 1 continues with epoch 2
    loader = dm.train_dataloader()
    loader.load_state_dict({"epoch": 1, "consumed_batches": len(loader), "batch_size": 4})
    assert torch.equal(next(iter(loader))["coords"], epoch2[0])


def test_fasta_weights_set_the_mix(fasta, tmp_path, chr20_slices):
    other = write_fasta(tmp_path / "o.fa", {"plasmid": chr20_slices["chr20_heldout"][:20_000]})
    dm = GenomeDataModule([str(fasta), str(other)], fasta_weights=[1.0, 3.0], val_regions=["chr20:50001-60000"],
                          window=256, batch_size=8, epoch_windows=4000)
    sources = torch.cat([b["coords"][:, 0] for b in dm.train_dataloader()])
    assert len(sources) == 4000 and abs(sources.float().mean().item() - 0.75) < 0.03
    with pytest.raises(DataError, match="fasta_weights: need 2"):
        GenomeDataModule([str(fasta), str(other)], fasta_weights=[1.0], val_regions=["chr20:50001-60000"])


def test_bad_settings_stop_at_construction(fasta):
    with pytest.raises(DataError, match="reverse_complement is a probability"):
        make(fasta, reverse_complement=2.0)
    with pytest.raises(DataError, match="iupac_policy"):
        make(fasta, iupac_policy="drop")
    with pytest.raises(DataError, match="no such FASTA"):
        make(str(fasta) + ".missing")
    few = make(fasta, window=9_000, batch_size=8)  # fine for evaluation ...
    few.check_ready("validate")
    with pytest.raises(DataError, match=r"5 training windows over 1 process\(es\) is less than one batch of 8"):
        few.check_ready("fit")  # ... not for training


def test_reverse_complement_flips_the_soft_mask_weights_with_the_sequence(tmp_path, chr20_slices):
    seq = chr20_slices["chr20_train"][:4000].upper()
    seq = seq[:1000] + seq[1000:1300].lower() + seq[1300:]  # one soft-masked stretch, off-centre
    path = write_fasta(tmp_path / "soft.fa", {"chr20": seq})
    dm = GenomeDataModule(str(path), val_regions=["chr20:3001-4000"], window=1000, reverse_complement=1.0,
                          soft_mask_weight=0.25, batch_size=1)
    tok = NucleotideTokenizer()
    for i in range(len(dm.datasets["train"])):
        item = dm.datasets["train"][(0, i)]
        start = item["coords"][2].item()
        assert item["coords"][3].item() == 1
        window = seq[start : start + 1000]
        lower = torch.tensor([c.islower() for c in window])
        # position j of a reverse-complemented window is base (999 - j) of the forward strand
        assert torch.equal(item["input_ids"], tok.reverse_complement(tok.encode(window)))
        assert torch.equal(item["loss_weights"], torch.where(lower.flip(0), 0.25, 1.0))
