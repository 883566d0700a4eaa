"""Classification heads on a backbone: pooling, reverse-complement conjoining, the head's norm, save/load; the CNN control."""


import pytest
import torch

from hnet_dna import HNetForCausalLM
from hnet_dna.model.heads import HNetForSequenceClassification

from ..conftest import make_model, padded_batch


@pytest.mark.parametrize("preset, pooling", [("tiny-hnet", "mean"), ("tiny-hnet", "chunks"), ("tiny-hnet", "last"),
                                             ("tiny-hnet-2stage", "chunks"), ("tiny-transformer", "mean"),
                                             ("tiny-hnet", "flatten")])
def test_pooling_is_unchanged_by_extra_padding(preset, pooling):
    torch.manual_seed(0)
    clf = HNetForSequenceClassification(make_model(preset, seed=1), ["a", "b", "c"], pooling=pooling,
                                        max_length=60).double().eval()
    ids, mask = padded_batch([40, 23, 9], seed=2)
    wider = torch.cat([ids, torch.full((3, 17), 5)], 1)
    wider_mask = torch.cat([mask, torch.zeros(3, 17, dtype=torch.bool)], 1)
    torch.testing.assert_close(clf(wider, wider_mask).logits, clf(ids, mask).logits, rtol=1e-10, atol=1e-10)
    alone = clf(ids[2:, :9], mask[2:, :9]).logits
    torch.testing.assert_close(clf(ids, mask).logits[2:], alone, rtol=1e-10, atol=1e-10)


def test_features_map_every_level_back_to_bases():
    model = make_model("tiny-hnet-2stage", seed=3)
    ids, mask = padded_batch([50, 31], seed=4)
    features = model.features(ids, mask)
    assert features.hidden.shape == (2, 50, 32) and len(features.levels) == 2
    outer, inner = features.levels
    for row in range(2):
        starts = outer.positions[row][outer.mask[row]]
        assert torch.equal(starts, torch.nonzero(outer.boundaries[row]).flatten())  # outer level: base positions
        inner_starts = inner.positions[row][inner.mask[row]]
        assert torch.equal(inner_starts, starts[torch.nonzero(inner.boundaries[row][: len(starts)]).flatten()])
    assert outer.states.shape[-1] == 32 and inner.states.shape[-1] == 48
    torch.testing.assert_close(model.lm_head(features.hidden), model(ids, mask=mask).logits)


def test_rc_conjoined_logits_are_identical_for_a_sequence_and_its_reverse_complement():
    torch.manual_seed(0)
    clf = HNetForSequenceClassification(make_model("tiny-hnet", seed=5), ["0", "1"], rc_conjoin=True).double().eval()
    tok = clf.tokenizer
    seqs = ["ACGTTGCAAGGCTTAACGGATC", "TTGACCA"]
    batch = tok.batch_encode(seqs)
    rc = tok.batch_encode([tok.reverse_complement(s) for s in seqs])
    torch.testing.assert_close(clf(batch["input_ids"], batch["mask"]).logits, clf(rc["input_ids"], rc["mask"]).logits,
                               rtol=1e-12, atol=1e-12)
    plain = HNetForSequenceClassification(clf.backbone, ["0", "1"], rc_conjoin=False).double().eval()
    assert not torch.allclose(plain(batch["input_ids"], batch["mask"]).logits, plain(rc["input_ids"], rc["mask"]).logits)


@pytest.mark.parametrize("pooling", ["chunks", "flatten"])
def test_classifier_save_and_load_give_identical_logits(tmp_path, pooling):
    torch.manual_seed(0)
    clf = HNetForSequenceClassification(make_model("tiny-hnet", dtype=torch.float32, seed=6), ["EI", "IE", "N"],
                                        pooling=pooling, rc_conjoin=True, max_length=32).eval()
    torch.nn.init.normal_(clf.head_norm.weight)  # a trained head's norm is not at its initial values
    clf.save_pretrained(tmp_path / "clf")
    again = HNetForSequenceClassification.from_pretrained(tmp_path / "clf").eval()
    assert again.class_names == ["EI", "IE", "N"] and again.pooling == pooling and again.rc_conjoin
    assert again.max_length == (32 if pooling == "flatten" else None)
    ids, mask = padded_batch([30, 12], seed=7)
    assert torch.equal(again(ids, mask).logits, clf(ids, mask).logits)
    assert isinstance(HNetForCausalLM.from_pretrained(tmp_path / "clf"), HNetForCausalLM)  # the backbone alone


def test_the_head_reads_normalised_features():
    """A pretrained backbone's features are small (final norm gain ~0.45): the head must not care."""
    torch.manual_seed(0)
    backbone = make_model("tiny-hnet", seed=8)
    ids, mask = padded_batch([30, 19], seed=9)
    for pooling in ("mean", "flatten"):
        clf = HNetForSequenceClassification(backbone, ["a", "b"], pooling=pooling, max_length=30).double().eval()
        before = clf(ids, mask).logits
        with torch.no_grad():
            backbone.backbone.decoder.rmsnorm.weight.mul_(0.1)
        torch.testing.assert_close(clf(ids, mask).logits, before, rtol=0, atol=2e-3)  # LayerNorm's eps: not exact
        with torch.no_grad():
            backbone.backbone.decoder.rmsnorm.weight.mul_(10)
    raw = HNetForSequenceClassification(backbone, ["a", "b"], head_norm=False).double().eval()
    before = raw(ids, mask).logits
    with torch.no_grad():
        backbone.backbone.decoder.rmsnorm.weight.mul_(0.1)
    assert (raw(ids, mask).logits - before).abs().max() > 1e-2


def test_the_cnn_baseline_is_the_fields_size_and_ignores_padding():
    from hnet_dna.model.cnn import CNNClassifier

    for length in (60, 400):  # the shared sets' shortest and longest windows
        assert 100_000 <= CNNClassifier(["a", "b", "c"], length).num_parameters() <= 500_000
    torch.manual_seed(0)
    cnn = CNNClassifier(["a", "b", "c"], max_length=64, dropout=0.0).double().eval()
    ids, mask = padded_batch([40, 23, 9], seed=2)
    wider = torch.cat([ids, torch.full((3, 17), 5)], 1)
    wider_mask = torch.cat([mask, torch.zeros(3, 17, dtype=torch.bool)], 1)
    torch.testing.assert_close(cnn(wider, wider_mask).logits, cnn(ids, mask).logits, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cnn(ids, mask).logits[2:], cnn(ids[2:, :9], mask[2:, :9]).logits, rtol=1e-10, atol=1e-10)
    moved = ids.clone()
    moved[0, :8], moved[0, 20:28] = ids[0, 20:28], ids[0, :8]  # the same bases in other places
    assert not torch.allclose(cnn(moved, mask).logits[0], cnn(ids, mask).logits[0])  # position is read
