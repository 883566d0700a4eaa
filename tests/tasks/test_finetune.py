"""Fine-tuning as a LightningModule through the CLI: metrics, freezing, selection, checkpoints, strand policy, recipes."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

from hnet_dna import HNetConfig, HNetForCausalLM
from hnet_dna.cli import main
from hnet_dna.tasks.classifier import classification_metrics

from ..conftest import DATA, finetune_recipe, make_model, padded_batch, setup_labelled_module

LABELLED = DATA / "labelled"


def test_mcc_over_uneven_batches_equals_scikit_learn_on_the_whole_split():
    from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score

    g = torch.Generator().manual_seed(0)
    for classes in (2, 3):
        metrics = classification_metrics(classes)
        labels = torch.randint(0, classes, (50,), generator=g)
        probs = torch.softmax(torch.randn(50, classes, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, classes), -1)
        for lo, hi in ((0, 7), (7, 30), (30, 31), (31, 50)):  # uneven batches
            for name, metric in metrics.items():
                metric.update(probs[lo:hi, 1] if classes == 2 and name == "auroc" else probs[lo:hi], labels[lo:hi])
        got = {k: float(v) for k, v in metrics.compute().items()}
        pred = probs.argmax(-1)
        assert got["mcc"] == pytest.approx(matthews_corrcoef(labels, pred), abs=1e-6)
        assert got["f1_macro"] == pytest.approx(f1_score(labels, pred, average="macro"), abs=1e-6)
        auroc = roc_auc_score(labels, probs[:, 1]) if classes == 2 else roc_auc_score(labels, probs, multi_class="ovr")
        assert got["auroc"] == pytest.approx(auroc, abs=1e-6)
        batch_mean = sum(matthews_corrcoef(labels[lo:hi], pred[lo:hi]) for lo, hi in ((0, 7), (7, 30), (31, 50))) / 3
        assert abs(batch_mean - got["mcc"]) > 1e-3  # what averaging per batch would have reported


def test_frozen_backbone_is_unchanged_by_training(tmp_path):
    main(["fit", "--config", finetune_recipe(tmp_path), "--model.freeze_backbone", "true", "--trainer.max_epochs", "1",
          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false"])
    state = torch.load(next((tmp_path / "run").rglob("last.ckpt")), weights_only=True)["state_dict"]
    config = HNetConfig.from_preset("tiny-hnet", d_model=[32, 48],
                                    attn_cfg={"num_heads": [2, 2], "rotary_emb_dim": [8, 12], "window_size": [63, -1]})
    torch.manual_seed(0)  # the seed the run's backbone was built under: its initial weights
    fresh = HNetForCausalLM(config)
    backbone = {k.removeprefix("classifier.backbone."): v for k, v in state.items() if k.startswith("classifier.backbone.")}
    assert backbone.keys() == fresh.state_dict().keys()
    assert all(torch.equal(backbone[k], v) for k, v in fresh.state_dict().items())
    assert not torch.equal(state["classifier.classifier.weight"], torch.zeros_like(state["classifier.classifier.weight"]))


def test_selection_ignores_test_data_and_best_checkpoint_tests_in_a_new_process(tmp_path):
    other_test = tmp_path / "other_test.tsv"
    lines = (LABELLED / "promoter_tss_chr20_300bp.tsv").read_text().splitlines()
    other_test.write_text("\n".join([lines[0], *[line for line in lines[1:] if "\ttest\t" not in line]]) + "\n")
    tests_only = tmp_path / "tests_only.tsv"
    tests_only.write_text("\n".join([lines[0], *[line.replace("\ttest\t", "\ttrain\t") for line in lines[1:] if "\ttest\t" in line]]) + "\n")
    config = finetune_recipe(tmp_path)
    for name, extra in (("a", []), ("b", ["--data.train", str(other_test), "--data.test", str(tests_only)])):
        main(["fit", "--config", config, *extra, "--trainer.default_root_dir", str(tmp_path / name)])
    best = [torch.load(next((tmp_path / n).rglob("epoch=*.ckpt")), weights_only=True)["state_dict"] for n in "ab"]
    assert best[0].keys() == best[1].keys() and all(torch.equal(best[0][k], best[1][k]) for k in best[0])

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "hnet_dna", "test", "--config", config, "--ckpt_path", "best",
                           "--trainer.default_root_dir", str(tmp_path / "a")], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--ckpt_path best: using" in proc.stderr and "epoch=" in proc.stderr and "test/mcc" in proc.stdout


def test_predict_writes_one_row_per_sequence_with_class_probabilities(tmp_path):
    config = finetune_recipe(tmp_path)
    main(["fit", "--config", config, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "run")])
    fasta = tmp_path / "new.fa"
    fasta.write_text(">first\nACGTACGTTTGACCA\n>second desc\nGGGCCCGGGCCC\n")
    main(["predict", "--config", config, "--data.predict", str(fasta), "--ckpt_path", "last",
          "--trainer.default_root_dir", str(tmp_path / "run"),
          "--trainer.callbacks+=hnet_dna.tasks.ClassPredictionWriter", f"--trainer.callbacks.folder={tmp_path / 'pred'}"])
    rows = [line.split("\t") for line in (tmp_path / "pred" / "predictions.rank0.tsv").read_text().splitlines()]
    assert rows[0] == ["id", "predicted", "p_0", "p_1"] and [r[0] for r in rows[1:]] == ["first", "second"]
    for r in rows[1:]:
        assert r[1] in ("0", "1") and abs(float(r[2]) + float(r[3]) - 1) < 1e-5


def test_a_backbone_that_is_not_ours_stops_with_a_clear_message(tmp_path):
    (tmp_path / "notes.ckpt").write_text("hello")
    (tmp_path / "folder").mkdir()
    for backbone, message in [(str(tmp_path / "notes.ckpt"), "not a readable checkpoint"),
                              (str(tmp_path / "folder"), "no config.json; expected a folder written by save_pretrained"),
                              ("no-such-model", "--model.backbone 'no-such-model' is neither a preset")]:
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
            main(["fit", "--config", finetune_recipe(tmp_path), "--model.backbone", backbone, "--trainer.default_root_dir", str(tmp_path / "run")])
        assert stop.value.code == 2 and message in err.getvalue(), err.getvalue()
        assert not (tmp_path / "run").exists()


def test_a_pretraining_checkpoint_is_a_backbone(tmp_path):
    from hnet_dna.tasks.finetune import load_backbone

    root = tmp_path / "pretrain"
    main(["fit", "--config", str(DATA.parents[1] / "pipelines" / "pretrain" / "demo_cpu.yaml"), "--trainer.max_steps", "1",
          "--trainer.limit_val_batches", "0", "--data.num_workers", "0", "--trainer.logger", "false",
          "--trainer.callbacks", "[]", "--trainer.default_root_dir", str(root)])
    backbone = load_backbone(str(next(root.rglob("last.ckpt"))))
    exported = HNetForCausalLM.from_pretrained(root / "pretrained")
    assert all(torch.equal(v, exported.state_dict()[k]) for k, v in backbone.state_dict().items())


def test_a_byte_level_backbone_reads_its_own_ids():
    """The labelled data module encodes with the nucleotide table; a byte-level backbone must see
    the same sequences as ASCII codes (nucleotide ids would be read as padding and control bytes)."""
    from hnet_dna import NucleotideTokenizer
    from hnet_dna.tasks.finetune import FinetuneModule

    torch.manual_seed(0)
    module = FinetuneModule(backbone={"preset": "tiny-hnet", "vocab_size": 256}, class_names=["no", "yes"], dropout=0.0)
    module.eval()
    sequences = ["ACGTTGCAAC", "GGGTTTAAACCC"]
    batch = NucleotideTokenizer().batch_encode(sequences)  # what LabelledDataModule gives
    own = NucleotideTokenizer(mode="byte").batch_encode(sequences)
    with torch.no_grad():
        got = module(batch).logits
        expect = module.classifier(own["input_ids"], mask=own["mask"]).logits
    assert torch.equal(got, expect)


# ------------------------------------------------------------------ issue #17: the honest protocol
def test_rc_conjoining_follows_the_strand_policy(tmp_path):
    from hnet_dna.config import ConfigError
    from hnet_dna.tasks.classifier import CNNBaselineModule
    from hnet_dna.tasks.finetune import FinetuneModule

    tiny = {"preset": "tiny-hnet", "d_model": [32, 48]}
    for cls, kwargs in ((FinetuneModule, {"backbone": tiny}), (CNNBaselineModule, {})):
        specific, symmetric = cls(**kwargs), cls(**kwargs)
        setup_labelled_module(tmp_path, specific)
        setup_labelled_module(tmp_path, symmetric, strand_symmetric=True)
        assert not specific.classifier.rc_conjoin and symmetric.classifier.rc_conjoin
        with pytest.raises(ConfigError, match="wrong for strand-specific labels"):
            setup_labelled_module(tmp_path, cls(**kwargs, rc_conjoin=True))


def _per_base(path) -> bool:
    """A per-base annotation recipe (genome windows: labels on both strands by construction)."""
    return yaml.safe_load(path.read_text())["data"]["class_path"].endswith("AnnotationDataModule")


def test_every_recipe_states_its_strand_policy_with_a_reason():
    recipes = [p for p in sorted((DATA.parents[1] / "pipelines" / "finetune").glob("*.yaml")) if not _per_base(p)]
    assert len(recipes) >= 7
    # the sets whose labels do not depend on the strand: enhancers, and which elements a chr20 window holds
    expected = {"enhancers_iEnhancer2L": True, "chr20_multilabel": True}
    for path in recipes:
        data = yaml.safe_load(path.read_text())["data"]["init_args"]
        assert isinstance(data.get("strand_symmetric"), bool), f"{path.name}: no strand_symmetric"
        assert data["strand_symmetric"] == expected.get(path.stem, False), path.name
        assert "# Strand: " in path.read_text(), f"{path.name}: no reason given"
        if not data["strand_symmetric"]:
            assert not data.get("reverse_complement"), path.name


@pytest.mark.skipif(not (DATA.parents[2] / "shared" / "data" / "classification").is_dir(), reason="needs ../shared/data")
def test_every_labelled_recipe_builds_and_augments_only_strand_symmetric_sets(monkeypatch, tmp_path):
    import importlib.util

    from hnet_dna.cli import build_cli

    monkeypatch.chdir(DATA.parents[1])  # the recipes name ../shared/data relative to the checkout
    # the chr20 multilabel set is cut, not committed: cut it here every 100 kb (its own cutter, real data)
    script = DATA.parents[1] / "pipelines" / "finetune" / "chr20_annotation" / "make_chr20_annotation.py"
    spec = importlib.util.spec_from_file_location("make_chr20_annotation", script)
    cutter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cutter)
    shared = DATA.parents[2] / "shared" / "data"
    multilabel = tmp_path / "chr20_multilabel.tsv"
    cutter.write_multilabel(shared / "genomes" / "GRCh37_chr20.fa.gz", cutter.elements(shared / "annotation"), multilabel,
                            stride=100_000)
    for path in sorted((DATA.parents[1] / "pipelines" / "finetune").glob("*.yaml")):
        if path.stem == "default" or _per_base(path):  # needs --data.train; per-base: tests/tasks/test_segmentation.py
            continue
        cut = ["--data.train", str(multilabel)] if path.stem == "chr20_multilabel" else []
        cli = build_cli(["--config", str(path), "--trainer.logger", "false", *cut])
        dm = cli.datamodule
        assert (dm.datasets["train"].reverse_complement > 0) == dm.strand_symmetric, path.name
        assert all(len(dm.datasets[s]) > 0 for s in ("train", "val", "test")), path.name


def test_layer_wise_lr_decay_partial_freezing_and_decay_toward_the_pretrained_weights(tmp_path):
    from types import SimpleNamespace

    from hnet_dna.optim import layer_depths
    from hnet_dna.tasks.finetune import FinetuneModule

    tiny = {"preset": "tiny-hnet", "d_model": [32, 48]}
    module = FinetuneModule(backbone=tiny, lr=1e-3, head_lr=5e-3, lr_layer_decay=0.5, class_names=["a", "b"])
    depths, top = layer_depths(module.classifier.backbone)
    assert top == 7 and depths["embeddings.weight"] == 0 and depths["backbone.decoder.rmsnorm.weight"] == top
    assert depths["backbone.routing_module.q_proj_layer.weight"] == depths["backbone.encoder.layers.2.norm1.weight"]
    lr_of = {id(p): g["lr"] for g in module.param_groups() for p in g["params"]}
    named = dict(module.classifier.backbone.named_parameters())
    assert lr_of[id(named["backbone.decoder.layers.1.mixer.in_proj.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["backbone.encoder.layers.0.mixer.in_proj.weight"])] == pytest.approx(1e-3 * 0.5 ** 6)
    assert lr_of[id(named["embeddings.weight"])] == pytest.approx(1e-3 * 0.5 ** 7)
    assert lr_of[id(module.classifier.classifier.weight)] == pytest.approx(5e-3)
    assert lr_of[id(module.classifier.head_norm.weight)] == pytest.approx(5e-3)

    frozen = FinetuneModule(backbone=tiny, freeze_layers=2, class_names=["a", "b"])
    for name, p in frozen.classifier.backbone.named_parameters():
        assert p.requires_grad == (depths[name] > 2), name
    assert all(p.requires_grad for p in frozen.classifier.head_parameters())

    # decay toward the pretrained weights: with no gradient, a step leaves them where they started;
    # AdamW's decay toward zero shrinks them
    moved = {}
    for toward in ("pretrained", "zero"):
        torch.manual_seed(0)
        m = FinetuneModule(backbone=tiny, weight_decay=0.5, lr=0.1, decay_toward=toward, class_names=["a", "b"])
        m._trainer = SimpleNamespace(estimated_stepping_batches=10, is_global_zero=False)
        start = {k: v.clone() for k, v in m.classifier.backbone.state_dict().items()}
        m.on_fit_start()
        optimizer = m.configure_optimizers()["optimizer"]
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        m.classifier.backbone.backbone.encoder.layers[0].mixer.in_proj.weight.data.add_(1.0)  # fine-tuning moved it
        m.on_before_optimizer_step(optimizer)
        optimizer.step()
        w = m.classifier.backbone.backbone.encoder.layers[0].mixer.in_proj.weight
        moved[toward] = (w - start["backbone.encoder.layers.0.mixer.in_proj.weight"]).abs().mean().item()
    assert moved["pretrained"] < 0.99 * 1.0 and moved["zero"] > moved["pretrained"]


def test_checkpoints_rebuild_the_head_they_were_trained_with(tmp_path):
    """Old checkpoints (no head_norm) load; a head built from other data is refused by name; the
    L2-SP anchor is the pretrained weights even when a checkpoint restores fine-tuned ones."""
    import lightning.pytorch as pl

    from hnet_dna.config import ConfigError
    from hnet_dna.tasks.finetune import FinetuneModule

    tiny = {"preset": "tiny-hnet", "d_model": [32, 48]}
    torch.manual_seed(0)
    module = FinetuneModule(backbone=tiny, class_names=["a", "b"], rc_conjoin=False, head_norm=False)
    hparams = {k: v for k, v in module.hparams.items() if k != "head_norm"}  # written before head_norm existed
    old = {"state_dict": module.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": pl.__version__}
    torch.save(old, tmp_path / "old.ckpt")
    loaded = FinetuneModule.load_from_checkpoint(tmp_path / "old.ckpt")
    assert isinstance(loaded.classifier.head_norm, torch.nn.Identity) and not loaded.hparams.head_norm

    flat = FinetuneModule(backbone=tiny, class_names=["a", "b"], rc_conjoin=False, pooling="flatten", max_length=60)
    torch.save({"state_dict": flat.state_dict(), "hyper_parameters": dict(flat.hparams),
                "pytorch-lightning_version": pl.__version__}, tmp_path / "flat.ckpt")
    other = FinetuneModule(backbone=tiny, class_names=["a", "b"], rc_conjoin=False, pooling="flatten", max_length=80)
    with pytest.raises(ConfigError, match="built with max_length 60, this one with 80"):
        other.on_load_checkpoint(torch.load(tmp_path / "flat.ckpt", weights_only=False))

    anchored = FinetuneModule(backbone=tiny, class_names=["a", "b"], rc_conjoin=False, decay_toward="pretrained")
    start = {k: v.clone() for k, v in anchored.classifier.backbone.named_parameters()}
    with torch.no_grad():  # what restoring a half-fine-tuned checkpoint does before on_fit_start
        for p in anchored.classifier.backbone.parameters():
            p.add_(1.0)
    anchored.on_fit_start()
    for name, p in anchored.classifier.backbone.named_parameters():
        assert torch.equal(anchored._anchors[id(p)], start[name]), name

    unresolved = FinetuneModule(backbone=tiny, class_names=["EI", "IE", "N"])  # rc_conjoin follows the data
    setup_labelled_module(tmp_path, unresolved, strand_symmetric=True)
    assert unresolved.classifier.rc_conjoin and unresolved.hparams.rc_conjoin


def test_a_checkpoint_rebuilds_its_backbone_after_the_spec_changes_meaning(tmp_path):
    """A checkpoint fine-tuned from a folder (or from ``default``) loads after that folder holds
    another model: the backbone's architecture travels in the checkpoint."""
    import lightning.pytorch as pl

    from hnet_dna.tasks.finetune import FinetuneModule, load_classifier

    make_model("tiny-hnet", dtype=torch.float32, seed=1, d_model=[32, 48]).save_pretrained(tmp_path / "backbone")
    module = FinetuneModule(backbone=str(tmp_path / "backbone"), class_names=["a", "b"], rc_conjoin=False).eval()
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, tmp_path / "clf.ckpt")
    make_model("tiny-hnet", dtype=torch.float32, seed=2).save_pretrained(tmp_path / "backbone")  # now wider
    loaded = load_classifier(tmp_path / "clf.ckpt")
    ids, mask = padded_batch([30, 12], seed=3)
    with torch.no_grad():
        assert torch.equal(loaded.logits(ids, mask), module.logits(ids, mask))


def test_a_pooling_typo_fails_when_the_config_is_parsed_before_any_data_is_read(tmp_path, capsys):
    config = finetune_recipe(tmp_path, train=str(tmp_path / "not_there.tsv"))  # the data would fail later
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", config, "--model.pooling", "meen"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "pooling" in err and "meen" in err and "'mean', 'chunks', 'last', 'max', 'attention', 'flatten'" in err
    assert "not_there" not in err and not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize("module", ["flatten", "cnn"])
def test_a_head_that_reads_positions_is_sized_on_training_data_and_refuses_longer_inputs(tmp_path, module):
    """Positions past the longest training sequence never train: the head is not sized on them, and a
    split that reaches them is refused before any step."""
    from types import SimpleNamespace

    from hnet_dna.config import ConfigError
    from hnet_dna.data import LabelledDataModule
    from hnet_dna.tasks.classifier import CNNBaselineModule
    from hnet_dna.tasks.finetune import FinetuneModule

    header, *body = (LABELLED / "uci_splice_60bp.tsv").read_text().splitlines()  # label, id, sequence; 24 rows
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("\n".join([header, *body[0::2]]) + "\n")  # 12 rows, 4 per class, 60 bases each
    test.write_text("\n".join([header, *body[1::2]]) + "\n")
    label, name, seq = body[1].split("\t")
    longer = "\t".join([label, name + "-longer", seq + seq[:7]])

    def build(test_file):
        task = (FinetuneModule(backbone="tiny-hnet", pooling="flatten") if module == "flatten" else CNNBaselineModule())
        task._trainer = SimpleNamespace(datamodule=LabelledDataModule(str(train), test=str(test_file), val_fraction=0.25,
                                                                      batch_size=4))
        task.setup("fit")
        return task

    assert build(test).hparams.max_length == 60  # the training split's longest
    test.write_text("\n".join([header, *body[1::2], longer]) + "\n")  # one test row of 67 bases
    with pytest.raises(ConfigError, match="the test split has sequences of up to 67 bases, longer than the 60"):
        build(test)


def test_a_masked_lm_is_a_backbone_for_every_pooling(tmp_path):
    """The bidirectional H-Net's folder fine-tunes like a causal one: its features, the protocol's heads."""
    from hnet_dna import HNetForMaskedLM
    from hnet_dna.tasks.finetune import FinetuneModule

    make_model("tiny-bihnet", dtype=torch.float32, seed=1).save_pretrained(tmp_path / "mlm")
    for pooling in ("mean", "chunks", "attention", "flatten"):
        module = FinetuneModule(backbone=str(tmp_path / "mlm"), pooling=pooling)
        dm = setup_labelled_module(tmp_path, module)
        assert isinstance(module.classifier.backbone, HNetForMaskedLM)
        batch = next(iter(dm.train_dataloader()))
        loss = module(batch).loss
        loss.backward()
        assert torch.isfinite(loss) and module.classifier.backbone.embeddings.weight.grad is not None
