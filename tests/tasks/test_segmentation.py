"""Per-base annotation: the networks, the loss over scored bases, base-level metrics and the
protocol's segmentation table (issue #33)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from sklearn.metrics import average_precision_score, matthews_corrcoef

from hnet_dna.model.per_base import DilatedResidualCNN, HNetForBaseAnnotation
from hnet_dna.tasks.segmentation import BaseLevelMetrics, SegmentationModule, edge_counts

from ..conftest import DATA, make_model

TINY = {"preset": "tiny-hnet", "d_model": [32, 48],
        "attn_cfg": {"num_heads": [2, 2], "rotary_emb_dim": [8, 12], "window_size": [63, -1]}}


def test_both_strands_read_every_base_from_either_side():
    """A causal backbone read on both strands: the reverse complement's per-base inputs, flipped,
    are the sequence's with the two strands' halves swapped (padding kept at the end)."""
    head = HNetForBaseAnnotation(make_model(), ["exon", "cpg"]).double().eval()
    assert head.strands == "both"
    torch.manual_seed(0)
    ids = torch.randint(0, 4, (2, 40))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 31:] = False
    rc = head.tokenizer.reverse_complement(ids, mask=mask)
    from hnet_dna.model.bimamba import reverse_real

    with torch.no_grad():
        x, y = head.head_inputs(ids, mask), reverse_real(head.head_inputs(rc, mask), mask)
    d = x.shape[-1] // 2
    assert torch.allclose(y[mask], torch.cat([x[..., d:], x[..., :d]], -1)[mask], atol=1e-10)
    assert head(ids, mask).logits.shape == (2, 40, 2)
    assert HNetForBaseAnnotation(make_model(), ["exon"], strands="forward").classifier.in_features == d


def test_the_cnn_never_lets_padding_reach_a_real_base():
    cnn = DilatedResidualCNN(["exon"], channels=8, blocks=3).eval()
    ids = torch.randint(0, 4, (1, 50))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 30:] = False
    other = ids.clone()
    other[0, 30:] = 2
    assert torch.equal(cnn(ids, mask).logits[0, :30], cnn(other, mask).logits[0, :30])


def _batch(seed=0, length=64):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(3, length, 2)
    labels[:, 10:30, 0] = 1
    labels[1, 40:45, 1] = 1
    scored = torch.rand(3, length, generator=g) > 0.1
    mask = torch.ones(3, length, dtype=torch.bool)
    mask[2, 50:] = False
    return {"input_ids": torch.randint(0, 4, (3, length), generator=g), "mask": mask, "labels": labels, "scored": scored,
            "coords": torch.zeros(3, 4, dtype=torch.long)}


def test_padding_and_n_are_never_scored():
    torch.manual_seed(0)
    module = SegmentationModule(network="cnn", backbone=None, class_names=["exon", "cpg"], channels=8, blocks=2).eval()
    batch = _batch()
    other = {**batch, "labels": batch["labels"].clone()}
    unscored = ~(batch["scored"] & batch["mask"])
    other["labels"][unscored] = 1 - other["labels"][unscored]  # flip every label nobody may read
    assert module(batch).loss == module(other).loss
    for b in (batch, other):
        with torch.no_grad():
            module._evaluate("val", b)
    first = {k: v for k, v in module.metrics["val"].compute().items()}
    module.metrics["val"].reset()
    with torch.no_grad():
        module._evaluate("val", batch)
        module._evaluate("val", batch)
    assert module.metrics["val"].compute() == pytest.approx(first, nan_ok=True)


def test_base_level_metrics_equal_scikit_learns():
    g = torch.Generator().manual_seed(1)
    labels = (torch.rand(4, 100, 2, generator=g) > 0.7).float()
    probs = (0.6 * labels + 0.5 * torch.rand(4, 100, 2, generator=g)).clamp(0, 1)
    scored = torch.rand(4, 100, generator=g) > 0.2
    metrics = BaseLevelMetrics(["a", "b"])
    metrics.update(probs[:2], labels[:2], scored[:2])
    metrics.update(probs[2:], labels[2:], scored[2:])
    out = metrics.compute()
    for e, name in enumerate(["a", "b"]):
        y, p = labels[scored][:, e].numpy(), probs[scored][:, e].numpy()
        assert out[f"mcc/{name}"] == pytest.approx(matthews_corrcoef(y, p >= 0.5), abs=1e-5)
        assert out[f"auprc/{name}"] == pytest.approx(average_precision_score(y, p), abs=0.02)  # 200 thresholds
    assert out["mcc"] == pytest.approx((out["mcc/a"] + out["mcc/b"]) / 2)


def test_edges_count_within_the_tolerance_only():
    labels = torch.zeros(1, 30, 1, dtype=torch.bool)
    labels[0, 10:20] = True  # edges at 10 and 20
    calls = torch.zeros_like(labels)
    calls[0, 12:26] = True  # edges at 12 (2 away: found) and 26 (6 away: missed, and a false edge)
    scored = torch.ones(1, 30, dtype=torch.bool)
    found, true, near, called = edge_counts(calls, labels, scored, tolerance=2)[:, 0].tolist()
    assert (found, true, near, called) == (1, 2, 1, 2)
    assert edge_counts(calls, labels, scored, tolerance=1)[0, 0] == 0
    scored[0, 9] = False  # an edge beside an unscored base is no edge
    assert edge_counts(calls, labels, scored, tolerance=2)[1, 0] == 1


def test_a_network_that_calls_nothing_has_mcc_zero_as_scikit_learn_says():
    metrics = BaseLevelMetrics(["rare"])
    labels = torch.zeros(1, 1000, 1)
    labels[0, :20] = 1
    metrics.update(torch.full((1, 1000, 1), 0.1), labels, torch.ones(1, 1000, dtype=torch.bool))
    assert metrics.compute()["mcc/rare"] == 0.0 == matthews_corrcoef(labels.flatten().numpy(), np.zeros(1000))


def test_an_element_absent_from_the_split_has_no_mcc():
    metrics = BaseLevelMetrics(["a", "b"])
    labels = torch.zeros(1, 20, 2)
    labels[0, 5:10, 0] = 1
    metrics.update(labels * 0.9, labels, torch.ones(1, 20, dtype=torch.bool))  # b: no base, none called
    out = metrics.compute()
    assert out["mcc/a"] == pytest.approx(1.0) and np.isnan(out["mcc/b"]) and out["mcc"] == pytest.approx(1.0)


def _recipe(tmp_path) -> str:
    annotation = {"exon": str(DATA / "annotation" / "exon.saf"), "cpg": str(DATA / "annotation" / "cpg.bed")}
    config = {
        "seed_everything": 0,
        "model": {"class_path": "hnet_dna.tasks.SegmentationModule", "init_args": {"backbone": TINY, "lr": 3e-3,
                                                                                   "channels": 16, "blocks": 3}},
        "data": {"class_path": "hnet_dna.data.AnnotationDataModule",
                 "init_args": {"fasta": str(DATA / "chr20_slices.fa"), "annotation": annotation, "window": 256,
                               "val_regions": ["chr20_heldout:1-30000"], "test_regions": ["chr20_heldout:30001-60000"],
                               "train_windows": 8, "held_out_windows": 4, "batch_size": 4, "index_dir": str(tmp_path)}},
        "trainer": {"accelerator": "cpu", "max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False,
                    "log_every_n_steps": 1,
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"monitor": "val/mcc", "mode": "max"}}]},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_the_protocol_runs_the_segmentation_table_under_a_budget(tmp_path, capsys):
    from hnet_dna.finetune import main as protocol

    out = tmp_path / "out"
    protocol(["--config", _recipe(tmp_path), "--seeds", "0", "--out", str(out), "--budget", "epochs:1",
              "--systems", "model", "cnn"])
    result = json.loads((out / "results.json").read_text())
    assert result["class_names"] == ["exon", "cpg"] and result["split_sizes"] == {"train": 8, "val": 4, "test": 4}
    runs = {r["system"]: r for r in result["runs"]}
    assert runs["model"]["epochs"] == 1 and runs["cnn"]["epochs"] == 1
    assert runs["cnn"]["total_parameters"] != runs["model"]["total_parameters"]
    for run in runs.values():
        assert {"test/mcc", "test/auprc", "test/mcc/exon", "test/edge_recall/exon"} <= set(run["test"])
        assert run["training_flops"] > 0
    table = (out / "results.md").read_text()
    assert "| mcc | auprc | edge_recall | mcc/exon |" in table
    assert set(result["element_fractions"]) == {"train", "val", "test"} and "bases inside each element" in table
    assert set(result["element_fractions"]["val"]) == {"exon", "cpg"}
    with pytest.raises(SystemExit) as stop:
        protocol(["--config", _recipe(tmp_path), "--seeds", "0", "--out", str(tmp_path / "lora"), "--systems", "lora"])
    assert stop.value.code == 2 and "not for per-base annotation yet" in capsys.readouterr().err
    assert not (tmp_path / "lora").exists()


SHARED = DATA.parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "genomes").is_dir(), reason="needs ../shared/data")
def test_the_chr20_annotation_recipe_builds_its_splits_from_the_committed_elements(tmp_path, monkeypatch):
    from hnet_dna.cli import build_cli

    repo = DATA.parents[1]
    monkeypatch.chdir(repo)  # the recipe names ../shared/data and its BEDs relative to the checkout
    cli = build_cli(["--config", "pipelines/finetune/chr20_annotation.yaml", "--trainer.logger", "false",
                     "--data.index_dir", str(tmp_path)])
    dm = cli.datamodule
    assert dm.class_names == ["exon", "intron", "cpg", "tss"]
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [400, 200, 200]
    assert dm.tables["train"].end.max() <= 50_000_000 and dm.tables["val"].start.min() >= 50_000_000
    assert dm.tables["test"].start.min() >= 56_500_000
    fractions = dict(zip(dm.class_names, dm.element_fractions()))
    assert 0.01 < fractions["exon"] < fractions["intron"] and fractions["tss"] < fractions["cpg"]


def test_annotate_writes_the_models_per_base_outputs_over_a_region(tmp_path, capsys):
    import lightning.pytorch as pl
    import pyBigWig

    from hnet_dna.annotate import main as annotate
    from hnet_dna.data import AnnotationDataModule

    dm = AnnotationDataModule(str(DATA / "chr20_slices.fa"), {"exon": str(DATA / "annotation" / "exon.saf"),
                              "cpg": str(DATA / "annotation" / "cpg.bed")}, val_regions=["chr20_heldout"], window=256,
                              train_windows=8, held_out_windows=4, batch_size=4)
    torch.manual_seed(0)
    module = SegmentationModule(network="cnn", backbone=None, channels=8, blocks=2)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    checkpoint = tmp_path / "seg.ckpt"
    trainer.save_checkpoint(checkpoint)
    out = tmp_path / "ann"
    # a region of one window: the bigWig holds the network's own probabilities, base for base
    ids = dm.tokenizer.encode(dm.sources[0].fetch("chr20_heldout", 1000, 1256))[None]
    with torch.no_grad():
        expected = module.eval().classifier(ids, torch.ones_like(ids, dtype=torch.bool)).logits.sigmoid()[0].numpy()
    threshold = float(np.median(expected[:, 0]))  # some exon calls and some not
    annotate(["--ckpt_path", str(checkpoint), "--fasta", str(DATA / "chr20_slices.fa"), "--region", "chr20_heldout:1001-1256",
              "--out", str(out), "--threshold", f"{threshold:.9f}"])
    for e, element in enumerate(["exon", "cpg"]):
        bw = pyBigWig.open(str(out) + f".{element}.bw")
        values = np.array(bw.values("chr20_heldout", 1000, 1256))
        assert values == pytest.approx(expected[:, e], abs=1e-5)
        called = np.zeros(256, dtype=bool)
        for line in (tmp_path / f"ann.{element}.bed").read_text().splitlines():
            _, a, b, _ = line.split("\t")
            called[int(a) - 1000:int(b) - 1000] = True
        assert np.array_equal(called, expected[:, e] >= round(threshold, 9))
        assert e == 1 or 0 < called.sum() < 256
    with pytest.raises(SystemExit) as stop:
        annotate(["--ckpt_path", str(checkpoint), "--fasta", str(DATA / "chr20_slices.fa"), "--region", "chr7:1-100",
                  "--out", str(tmp_path / "none")])
    assert stop.value.code == 2 and "no chromosome 'chr7'" in capsys.readouterr().err
    assert not list(tmp_path.glob("none*"))


def test_balanced_pos_weight_weighs_each_elements_positives_by_the_training_ratio(tmp_path):
    from hnet_dna.cli import build_cli
    from hnet_dna.data import DataError

    args = ["--config", _recipe(tmp_path), "--model.network", "cnn", "--model.pos_weight", "balanced"]
    few = build_cli(args)  # 8 training windows: no exon or CpG base among them
    with pytest.raises(DataError, match="no training base lies inside 'exon', 'cpg'"):
        few.model.attach_data(few.datamodule)
    cli = build_cli([*args, "--data.train_windows", "5000"])  # every training window
    module, dm = cli.model, cli.datamodule
    module.attach_data(dm)
    module.eval()  # no dropout: losses compared exactly
    fractions = np.array(dm.element_fractions("train"))  # exon, cpg
    assert module.hparams.pos_weight_values == pytest.approx(((1 - fractions) / fractions).tolist())
    batch = _batch()
    scored = batch["scored"] & batch["mask"]
    logits = module.classifier(batch["input_ids"], batch["mask"]).logits.float()[scored]
    labels = batch["labels"].float()[scored]
    weight = torch.tensor(module.hparams.pos_weight_values)
    by_hand = -(weight * labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits)).mean()
    torch.testing.assert_close(module(batch).loss, by_hand)
    # a checkpoint carries the weights: the loss is the same without the data
    path = tmp_path / "w.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": "2.5.0"}, path)
    loaded = SegmentationModule.load_from_checkpoint(path).eval()
    torch.testing.assert_close(loaded(batch).loss, by_hand)
    plain = SegmentationModule(network="cnn", backbone=None, class_names=["exon", "cpg"], channels=16, blocks=3).eval()
    plain.load_state_dict(module.state_dict())
    assert plain(batch).loss < by_hand  # rare positives weigh more
    from hnet_dna.protocols.finetune.systems import _control_module

    control = _control_module("cnn", cli.model, seed=0)  # the protocol's CNN trains with the recipe's weighting
    assert control.hparams.pos_weight == "balanced" and control.hparams.pos_weight_values == module.hparams.pos_weight_values
