"""ISM on the heads beyond one class per sequence (issue #33): a multilabel network's label logits,
a regression network's predictions in the target's units, a per-base network's element logits at
one base; each equal to the difference of two forward passes by hand."""

import numpy as np
import pytest
import torch

import hnet_dna
from hnet_dna.ism import main as ism_main
from hnet_dna.tasks import FinetuneModule, SegmentationModule
from hnet_dna.tasks.finetune import load_classifier
from hnet_dna.tokenizer import NucleotideTokenizer

from ..conftest import genome_fixture
from .test_ism import SLICE, TINY, _classifier_checkpoint, mutate


def _by_hand(outputs, seq: str, pos: int, base: str) -> np.ndarray:
    tok = NucleotideTokenizer()
    ids = torch.stack([tok.encode(seq), tok.encode(mutate(seq, pos, base))])
    with torch.no_grad():
        out = outputs(ids, torch.ones_like(ids, dtype=torch.bool)).double()
    return (out[1] - out[0]).numpy()


def test_regression_effects_are_prediction_changes_in_the_targets_units(tmp_path):
    torch.manual_seed(0)
    module = FinetuneModule(backbone=TINY, class_names=["activity", "expression"], task="regression", rc_conjoin=False,
                            target_mean=[5.0, -1.0], target_std=[10.0, 0.5])
    task = load_classifier(_classifier_checkpoint(tmp_path, module))
    seq = SLICE[300:340]
    with pytest.raises(hnet_dna.ConfigError, match="give --target"):  # two targets: which one?
        hnet_dna.ism([seq], scorer=task)
    result = hnet_dna.ism([seq], scorer=task, target="expression", batch_size=30)
    assert result.scorer == "regression" and result.effects_by_class[0].shape == (40, 4, 2)
    np.testing.assert_array_equal(result.effects[0], result.effects_by_class[0][..., 1])
    for pos in (0, 17, 39):
        base = "A" if seq[pos] != "A" else "G"
        logit_change = _by_hand(task.logits, seq, pos, base)
        np.testing.assert_allclose(result.effects_by_class[0][pos, "ACGT".index(base)],
                                   logit_change * np.array([10.0, 0.5]), rtol=1e-4, atol=1e-6)  # standardised x sd


def test_multilabel_effects_are_label_logit_changes(tmp_path):
    torch.manual_seed(1)
    module = FinetuneModule(backbone=TINY, class_names=["exon", "cpg", "tss"], task="multilabel", rc_conjoin=False)
    task = load_classifier(_classifier_checkpoint(tmp_path, module))
    seq = SLICE[100:136]
    result = hnet_dna.ism([seq], scorer=task, target="cpg", batch_size=16)
    assert result.scorer == "multilabel" and result.target == "cpg"
    base = "C" if seq[9] != "C" else "T"
    np.testing.assert_allclose(result.effects_by_class[0][9, "ACGT".index(base)], _by_hand(task.logits, seq, 9, base),
                               atol=1e-5)
    np.testing.assert_array_equal(result.effects[0], result.effects_by_class[0][..., 1])


@pytest.mark.parametrize("network", ["cnn", "hnet"])
def test_segmentation_effects_are_element_logit_changes_at_the_chosen_base(tmp_path, network):
    torch.manual_seed(2)
    module = SegmentationModule(backbone=TINY if network == "hnet" else None, network=network, class_names=["exon", "cpg"],
                                channels=16, blocks=3, dropout=0.0)
    task = load_classifier(_classifier_checkpoint(tmp_path, module))
    assert isinstance(task, SegmentationModule)
    seq, position = SLICE[2000:2080], 50
    with pytest.raises(hnet_dna.ConfigError, match="--position"):
        hnet_dna.ism([seq], scorer=task, target="exon")
    result = hnet_dna.ism([seq], scorer=task, target="exon", position=position, batch_size=64)
    assert result.scorer == "segmentation" and result.position == position

    def at_position(ids, mask):
        return task.classifier(ids, mask).logits[:, position]

    for pos in (10, 49, 50, 66, 79):
        base = "G" if seq[pos] != "G" else "A"
        np.testing.assert_allclose(result.effects_by_class[0][pos, "ACGT".index(base)],
                                   _by_hand(at_position, seq, pos, base), atol=1e-5)
    if network == "cnn":  # receptive field: stem +-4, dilated blocks +-2 (1 + 2 + 4): 18 bases each side
        importance = result.importance(0)
        far = np.abs(np.arange(80) - position) > 18
        assert np.all(importance[far] == 0) and np.all(importance[~far] > 0)


def test_the_command_maps_a_per_base_checkpoint_at_a_genome_position(tmp_path, capsys):
    torch.manual_seed(3)
    ckpt = _classifier_checkpoint(tmp_path, SegmentationModule(backbone=None, network="cnn", class_names=["exon"],
                                                               channels=16, blocks=3))
    genome, _ = genome_fixture(tmp_path, name="20")
    out = tmp_path / "seg.npz"
    ism_main(["--fasta", str(genome), "--region", "chr20:5,001-5,060", "--ckpt_path", ckpt, "--position", "5030",
              "--output", str(out), "--quiet"])
    with np.load(out, allow_pickle=False) as z:
        assert str(z["scorer"]) == "segmentation" and int(z["position"]) == 29 and str(z["target"]) == "exon"
        importance = z["importance"][0]
    assert importance[29] > 0 and importance[0] == 0  # 29 bases away: beyond the receptive field
    assert (tmp_path / "seg.png").is_file() and (tmp_path / "seg.bw").is_file()
    for argv, message in ((["--position", "6000"], "outside --region"), ([], "give --position")):
        bad = tmp_path / "bad.npz"
        with pytest.raises(SystemExit) as stop:
            ism_main(["--fasta", str(genome), "--region", "chr20:5,001-5,060", "--ckpt_path", ckpt, "--output", str(bad),
                      "--quiet", *argv])
        assert stop.value.code == 2 and message in capsys.readouterr().err and not bad.exists()


def test_embed_reads_a_per_base_checkpoints_fine_tuned_backbone_and_refuses_a_cnn(tmp_path, capsys):
    from hnet_dna.embed import main as embed
    from hnet_dna.model.pooling import pooled_features

    torch.manual_seed(4)
    module = SegmentationModule(backbone=TINY, network="hnet", class_names=["exon"])
    with torch.no_grad():  # a fine-tuned backbone is not the preset's initialisation
        for p in module.classifier.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ckpt = _classifier_checkpoint(tmp_path, module)
    fasta = tmp_path / "two.fa"
    fasta.write_text(f">a\n{SLICE[:50]}\n>b\n{SLICE[60:90]}\n")
    embed(["--input", str(fasta), "--output", str(tmp_path / "e.npz"), "--model", ckpt, "--quiet"])
    want = pooled_features(module.classifier.backbone, [SLICE[:50], SLICE[60:90]], "mean")
    np.testing.assert_allclose(np.load(tmp_path / "e.npz")["embeddings"], want, rtol=1e-4, atol=1e-5)
    (tmp_path / "cnn").mkdir()  # the checkpoint is named by its class: a folder of its own
    cnn = _classifier_checkpoint(tmp_path / "cnn", SegmentationModule(backbone=None, network="cnn", class_names=["exon"]))
    with pytest.raises(SystemExit) as stop:
        embed(["--input", str(fasta), "--output", str(tmp_path / "c.npz"), "--model", cnn, "--quiet"])
    assert stop.value.code == 2 and "no H-Net backbone" in capsys.readouterr().err and not (tmp_path / "c.npz").exists()
