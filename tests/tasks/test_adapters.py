"""Fine-tuning that keeps the pretrained backbone (hnet_dna.tasks.adapters): LoRA through peft, a
probe-initialised head (LP-FT)."""

import numpy as np
import pytest
import torch

from hnet_dna.cli import main
from hnet_dna.config import ConfigError
from hnet_dna.tasks.adapters import LORA_TARGETS, lora_layers
from hnet_dna.tasks.finetune import FinetuneModule, load_classifier
from hnet_dna.weights import CheckpointError

from ..conftest import finetune_recipe, make_model, setup_labelled_module

TINY = {"preset": "tiny-hnet", "d_model": [32, 48],
        "attn_cfg": {"num_heads": [2, 2], "rotary_emb_dim": [8, 12], "window_size": [63, -1]}}


def _pretrained_folder(tmp_path):
    make_model("tiny-hnet", dtype=torch.float32, seed=1, d_model=[32, 48], attn_cfg=TINY["attn_cfg"]).save_pretrained(tmp_path / "pre")
    return str(tmp_path / "pre")


def test_lora_trains_only_adapters_and_head_and_merges_to_the_same_logits(tmp_path):
    folder = _pretrained_folder(tmp_path)
    main(["fit", "--config", finetune_recipe(tmp_path), "--model.backbone", folder, "--model.adapter", "lora",
          "--model.lora_rank", "4", "--model.lora_alpha", "8", "--model.pooling", "attention",
          "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false"])
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    pretrained = make_model("tiny-hnet", dtype=torch.float32, seed=1, d_model=[32, 48], attn_cfg=TINY["attn_cfg"]).state_dict()
    backbone = {k.removeprefix("classifier.backbone.").replace(".base_layer.", "."): v
                for k, v in state.items() if k.startswith("classifier.backbone.") and ".lora_" not in k}
    assert backbone.keys() == pretrained.keys()
    assert all(torch.equal(backbone[k], v) for k, v in pretrained.items())  # bit-identical after fit
    adapters = {k: v for k, v in state.items() if ".lora_B." in k}  # saved with the checkpoint
    adapted = {k.split(".lora_B.")[0].rsplit(".", 1)[-1] for k in adapters}
    assert adapted == set(LORA_TARGETS)  # Mamba-2 in/out, attention qkv/out, MLPs
    assert all(v.abs().max() > 0 for v in adapters.values()), "an adapter got no gradient (its B is still zero)"
    assert state["classifier.attention.query"].abs().max() > 0  # the head (attention query included) trained

    module = FinetuneModule.load_from_checkpoint(ckpt, weights_only=True).eval()
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or not n.startswith("classifier.backbone.") for n in trainable)
    torch.manual_seed(0)
    ids = torch.randint(0, 4, (3, 40))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[2, 25:] = False
    with pytest.raises(CheckpointError, match="unmerged LoRA weights"):  # a folder would not load: refused, nothing written
        module.classifier.save_pretrained(tmp_path / "unmerged")
    assert not (tmp_path / "unmerged").exists()
    with torch.no_grad():
        unmerged = module.logits(ids, mask)
        assert module.merge_adapters() == len(adapters)
        assert not lora_layers(module) and module.merge_adapters() == 0
        torch.testing.assert_close(module.logits(ids, mask), unmerged, rtol=1e-5, atol=1e-5)
        loaded = load_classifier(ckpt)
        assert not lora_layers(loaded)  # merged on load, for inference
        torch.testing.assert_close(loaded.logits(ids, mask), unmerged, rtol=1e-5, atol=1e-5)

    # embed reads the fine-tuned backbone, adapters merged: the merged backbone's mean-pooled features
    from hnet_dna.embed import main as embed
    from hnet_dna.model.pooling import pooled_features

    fasta = tmp_path / "two.fa"
    fasta.write_text(">a\nACGTTGCAGGCTAACGTTAGC\n>b\nGGCATTACGATCGATCGGATCCAT\n")
    embed(["--input", str(fasta), "--output", str(tmp_path / "e.npz"), "--model", str(ckpt), "--quiet"])
    got = np.load(tmp_path / "e.npz")["embeddings"]
    want = pooled_features(module.classifier.backbone, ["ACGTTGCAGGCTAACGTTAGC", "GGCATTACGATCGATCGGATCCAT"], "mean")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_lora_refuses_options_that_contradict_it():
    with pytest.raises(ConfigError, match="adapter lora already keeps every backbone weight"):
        FinetuneModule(backbone=TINY, adapter="lora", freeze_backbone=True)
    with pytest.raises(ConfigError, match="lora_rank must be >= 1"):
        FinetuneModule(backbone=TINY, adapter="lora", lora_rank=0)


@pytest.mark.parametrize("strand_symmetric", [False, True])
def test_a_probe_initialised_head_starts_from_the_probes_weights(tmp_path, strand_symmetric):
    """The head's logits at the start of fitting are the probe's decision function on the same
    sequences: the probe's weights, its standardisation folded in (both strands with rc_conjoin)."""
    from hnet_dna.baselines import linear_probe
    from hnet_dna.tasks.adapters import head_probe_features

    torch.manual_seed(0)
    module = FinetuneModule(backbone=TINY, head_init="probe", pooling="mean")
    dm = setup_labelled_module(tmp_path, module, strand_symmetric=strand_symmetric)
    assert module.classifier.rc_conjoin == strand_symmetric
    module.trainer.ckpt_path = "resumed.ckpt"  # a resumed fit keeps its checkpoint's head: no probe
    module.on_fit_start()
    assert module.head_probe is None
    module.trainer.ckpt_path = None
    module.on_fit_start()  # a fresh fit: the probe, where the model is (Lightning has moved it by now)
    assert module.head_probe is not None and module.head_probe["C"] > 0 and module.head_probe["seconds"] >= 0
    features = {s: head_probe_features(module.classifier, dm.datasets[s].ids, module._model_ids, dm.tokenizer.pad_id)
                for s in ("train", "val")}
    probe = linear_probe((features["train"], dm.datasets["train"].labels), (features["val"], dm.datasets["val"].labels),
                         seed=dm.sample_seed)["model"]
    batch = [*dm.datasets["train"].ids, *dm.datasets["val"].ids]
    from hnet_dna.data.labelled_datamodule import pad_batch

    padded = pad_batch([{"input_ids": x, "label": 0, "index": i} for i, x in enumerate(batch)], dm.tokenizer.pad_id)
    module.eval()
    with torch.no_grad():
        logits = module.logits(padded["input_ids"], padded["mask"]).double().numpy()
    rows = head_probe_features(module.classifier, batch, module._model_ids, dm.tokenizer.pad_id)
    decision = probe.decision_function(rows)  # (N, C) for 3 classes
    np.testing.assert_allclose(logits - logits.mean(1, keepdims=True), decision - decision.mean(1, keepdims=True),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), -1).numpy(), probe.predict_proba(rows),
                               rtol=1e-4, atol=1e-5)


def test_a_binary_probe_head_splits_its_decision_between_the_two_logits(tmp_path):
    """Two classes: scikit-learn fits one weight vector; the head's logit difference is its decision."""
    from hnet_dna.tasks.adapters import head_probe_features, init_head_from_probe

    torch.manual_seed(0)
    module = FinetuneModule(backbone=TINY, pooling="max")
    dm = setup_labelled_module(tmp_path, module)
    rng = np.random.default_rng(0)
    ids = [torch.from_numpy(rng.integers(0, 4, 30)) for _ in range(40)]
    labels = [int(x[:10].sum() > 15) for x in ids]
    module.classifier.class_names = ["a", "b"]
    module.classifier.classifier = torch.nn.Linear(module.classifier.classifier.in_features, 2)
    feats = head_probe_features(module.classifier, ids, module._model_ids, dm.tokenizer.pad_id)
    fitted = init_head_from_probe(module.classifier, (feats, labels), (feats, labels))
    assert fitted["val_mcc"] > 0
    from hnet_dna.baselines import linear_probe

    probe = linear_probe((feats, labels), (feats, labels))["model"]
    with torch.no_grad():
        head = module.classifier.classifier(torch.from_numpy(feats)).double().numpy()
    np.testing.assert_allclose(head[:, 1] - head[:, 0], probe.decision_function(feats), rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="the training split has no sequence of class 'b'"):
        init_head_from_probe(module.classifier, (feats, [0] * len(labels)), (feats, labels))
