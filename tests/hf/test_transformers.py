"""hnet_dna.hf: our models through transformers' Auto classes, Trainer and peft, with our logits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hnet_dna import HNetForCausalLM
from hnet_dna.config import ConfigError, HNetConfig
from hnet_dna.model.heads import HNetForSequenceClassification
from hnet_dna.tokenizer import SequenceError

from ..conftest import make_model

transformers = pytest.importorskip("transformers")
from hnet_dna.hf import HNetDNAForCausalLM, HNetDNAForSequenceClassification, HNetDNATokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "hnet_dna" / "resources" / "default_model"
SEQS = ["ACGTTGCAGGCTAACGTTAGCNNACGT", "GGCATTACGATCGA", "acgtRYacgt"]

# A fresh process that has never imported hnet_dna.hf: the folder's own code files make the Auto
# classes find our classes (trust_remote_code=True); the logits must be ours.
FRESH = """
import json, sys, torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
assert "hnet_dna.hf" not in sys.modules
folder, seqs = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
enc = tok(seqs, padding=True, return_tensors="pt")
with torch.no_grad():
    out = model(**enc, labels=enc["input_ids"])
    hidden = AutoModel.from_pretrained(folder, trust_remote_code=True)(**enc).last_hidden_state
torch.save({"ids": enc["input_ids"], "mask": enc["attention_mask"], "logits": out.logits, "loss": out.loss,
            "hidden": hidden, "classes": [type(model).__name__, type(tok).__name__]}, sys.argv[3])
"""


@pytest.mark.parametrize("source", ["saved", "shipped"])
def test_auto_classes_in_a_fresh_process_give_our_logits(tmp_path, source):
    if source == "saved":
        ours = make_model(dtype=torch.float32, seed=3)
        folder = tmp_path / "lm"
        ours.save_pretrained(folder)
    else:
        folder = DEFAULT
        ours = HNetForCausalLM.from_pretrained(folder)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", FRESH, str(folder), json.dumps(SEQS), str(tmp_path / "out.pt")],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    assert got["classes"] == ["HNetDNAForCausalLM", "HNetDNATokenizer"]
    batch = ours.tokenizer.batch_encode(SEQS)
    assert torch.equal(got["ids"], batch["input_ids"]) and torch.equal(got["mask"].bool(), batch["mask"])
    with torch.no_grad():
        want = ours.eval()(batch["input_ids"], mask=batch["mask"], labels=batch["input_ids"])
        hidden, _ = ours.backbone(ours.embeddings(batch["input_ids"]), batch["mask"])
    real = batch["mask"]
    torch.testing.assert_close(got["logits"][real], want.logits[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["loss"], want.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["hidden"][real], hidden[real], rtol=1e-5, atol=1e-5)


def test_the_folder_files_of_the_shipped_model_are_what_save_pretrained_writes(tmp_path):
    HNetForCausalLM.from_pretrained(DEFAULT).save_pretrained(tmp_path)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "configuration_hnet_dna.py",
                 "modeling_hnet_dna.py", "tokenization_hnet_dna.py"):
        assert (DEFAULT / name).read_text() == (tmp_path / name).read_text(), name


def test_a_transformers_config_json_reads_as_our_config_and_a_typo_is_still_refused(tmp_path):
    config = make_model(dtype=torch.float32).config
    HNetDNAForCausalLM(transformers.AutoConfig.for_model("hnet_dna", **config.to_dict())).config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["transformers_version"]  # transformers' own keys
    assert HNetConfig.from_json(tmp_path / "config.json") == config
    (tmp_path / "typo.json").write_text(json.dumps({**config.to_dict(), "d_modle": [1]}))
    with pytest.raises(ConfigError, match="unknown field"):
        HNetConfig.from_json(tmp_path / "typo.json")


def test_padding_through_attention_mask_equals_the_unpadded_rows(tmp_path):
    """Right padding changes nothing of a real row: not its logits, hidden states, LM loss or its
    class (mean pooling over real positions only)."""
    config = transformers.AutoConfig.for_model("hnet_dna", **make_model().config.to_dict(), num_labels=3)
    model = HNetDNAForCausalLM(config).eval()
    classifier = HNetDNAForSequenceClassification(config, model.hnet).eval()
    tok = HNetDNATokenizer()
    padded = tok(SEQS, padding=True, return_tensors="pt")
    with torch.no_grad():
        batch = model(**padded, output_hidden_states=True)
        classes = classifier(**padded).logits
        # hidden_states: the embeddings and the last hidden states before the LM head (B, L, D)
        last, _ = model.hnet.backbone(model.hnet.embeddings(padded["input_ids"]), padded["attention_mask"].bool())
        torch.testing.assert_close(batch.hidden_states[-1], last)
        for row, seq in enumerate(SEQS):
            one = tok([seq], return_tensors="pt")
            alone = model(**one, labels=one["input_ids"], output_hidden_states=True)
            n = alone.logits.shape[1]
            torch.testing.assert_close(batch.logits[row, :n], alone.logits[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(batch.hidden_states[-1][row, :n], alone.hidden_states[-1][0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(classes[row], classifier(**one).logits[0], rtol=1e-5, atol=1e-5)
            row_loss = model(**{k: v[row:row + 1] for k, v in padded.items()}, labels=padded["input_ids"][row:row + 1])
            torch.testing.assert_close(row_loss.loss, alone.loss, rtol=1e-5, atol=1e-6)  # padding never scored


def test_the_tokenizer_reads_dna_as_ours_does():
    tok = HNetDNATokenizer()
    ours = HNetForCausalLM.from_pretrained(DEFAULT).tokenizer
    assert tok("acgtRYN")["input_ids"] == ours.encode("acgtRYN").tolist() == [0, 1, 2, 3, 4, 4, 4]
    assert tok.decode(tok("ACGTN")["input_ids"]) == "ACGTN" and tok.pad_token_id == ours.pad_id == 5
    assert tok.reverse_complement("AACG") == "CGTT" and tok.padding_side == "right"
    with pytest.raises(SequenceError, match="not a DNA letter"):
        tok("ACGTZ")
    with pytest.raises(SequenceError):
        HNetDNATokenizer(policy="strict")("ACGTR")


@pytest.mark.parametrize("num_labels", [2, 3])
def test_sequence_classification_forward_loss_and_round_trip(tmp_path, num_labels):
    make_model(dtype=torch.float32, seed=2).save_pretrained(tmp_path / "lm")
    auto = transformers.AutoModelForSequenceClassification
    model = auto.from_pretrained(tmp_path / "lm", num_labels=num_labels)
    tok = HNetDNATokenizer.from_pretrained(tmp_path / "lm")
    enc = tok(SEQS, padding=True, return_tensors="pt")
    labels = torch.tensor([0, num_labels - 1, 1])
    out = model(**enc, labels=labels)
    assert out.logits.shape == (3, num_labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    model.save_pretrained(tmp_path / "cls")
    assert (tmp_path / "cls" / "classifier.json").is_file()  # our classifier folder
    loaded = auto.from_pretrained(tmp_path / "cls")
    assert loaded.config.num_labels == num_labels and loaded.config.id2label[num_labels - 1] == f"LABEL_{num_labels - 1}"
    with torch.no_grad():
        torch.testing.assert_close(loaded(**enc).logits, model.eval()(**enc).logits)
        ours = HNetForSequenceClassification.from_pretrained(tmp_path / "cls").eval()
        torch.testing.assert_close(ours(enc["input_ids"], mask=enc["attention_mask"].bool()).logits, loaded(**enc).logits)


def test_trainer_steps_and_peft_lora_leaves_the_base_weights(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    make_model(dtype=torch.float32, seed=2).save_pretrained(tmp_path / "lm")
    tok = HNetDNATokenizer.from_pretrained(tmp_path / "lm")
    rows = [{**tok(s), "label": y} for s, y in zip(["ACGTACGTAC" * 3, "TTTTGGGGCCA" * 2] * 4, [0, 1] * 4)]
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=2, per_device_train_batch_size=4,
                             report_to=[], use_cpu=True, save_strategy="no", learning_rate=1e-2)
    auto = transformers.AutoModelForSequenceClassification
    model = auto.from_pretrained(tmp_path / "lm", num_labels=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = Trainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tok)).train()
    assert result.global_step == 2 and any(not torch.equal(before[k], v) for k, v in model.state_dict().items())

    base = auto.from_pretrained(tmp_path / "lm", num_labels=2)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    wrapped = get_peft_model(base, LoraConfig(r=4, target_modules=["in_proj", "out_proj", "Wqkv", "fc1", "fc2"]))
    Trainer(model=wrapped, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tok)).train()
    after = {k.replace(".base_layer.", "."): v for k, v in wrapped.get_base_model().state_dict().items() if ".lora_" not in k}
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(v.abs().max() > 0 for k, v in wrapped.state_dict().items() if ".lora_B." in k)  # the adapters trained


def test_generate_is_our_sampler_and_our_state_dicts_load():
    config = transformers.AutoConfig.for_model("hnet_dna", **make_model().config.to_dict())
    model = HNetDNAForCausalLM(config).eval()
    enc = HNetDNATokenizer()(SEQS[:2], padding=True, return_tensors="pt")
    got = model.generate(**enc, max_new_tokens=4)
    want = model.hnet.generate(enc["input_ids"], mask=enc["attention_mask"].bool(), max_new_tokens=4, temperature=0.0)
    assert torch.equal(got, want.sequences)
    other = HNetDNAForCausalLM(config)
    other.load_state_dict(model.hnet.state_dict())  # hnet_dna's keys, no "hnet." prefix (a Trainer's checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values()))


def test_a_trainer_fine_tuned_folder_serves_embed_and_ism_and_score_refuses_it(tmp_path, capsys):
    """A classifier fine-tuned with transformers' Trainer and saved with save_pretrained: embed reads its
    fine-tuned backbone, ism --ckpt_path its logits; score (which needs the LM head fine-tuning left
    behind) and a peft adapter folder are refused with a line saying what to give instead."""
    import numpy as np
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from hnet_dna.embed import main as embed_main
    from hnet_dna.ism import main as ism_main
    from hnet_dna.score import main as score_main

    make_model(dtype=torch.float32, seed=2).save_pretrained(tmp_path / "lm")
    tok = HNetDNATokenizer.from_pretrained(tmp_path / "lm")
    rows = [{**tok(s), "label": y} for s, y in zip(["ACGTACGTAC" * 3, "TTTTGGGGCCA" * 2] * 4, [0, 1] * 4)]
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=2, per_device_train_batch_size=4,
                             report_to=[], use_cpu=True, save_strategy="no", learning_rate=1e-2)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "lm", num_labels=2)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tok)).train()
    model.save_pretrained(tmp_path / "ft")
    model.eval()
    fasta = tmp_path / "x.fa"
    seq = "ACGTTGCAGGCTAACGTTAGCCATGGCAT"
    fasta.write_text(f">x\n{seq}\n")

    for name in ("ft", "lm"):
        embed_main(["--input", str(fasta), "--output", str(tmp_path / f"{name}.npz"), "--model", str(tmp_path / name)])
    with torch.no_grad():
        ids = tok([seq], return_tensors="pt")["input_ids"]
        hidden = HNetDNAForCausalLM(model.config, model.hnet.backbone)(ids, output_hidden_states=True).hidden_states[-1]
    ft, lm = (np.load(tmp_path / f"{n}.npz")["embeddings"][0] for n in ("ft", "lm"))
    np.testing.assert_allclose(ft, hidden[0].mean(0).numpy(), atol=1e-5)  # the fine-tuned backbone's features
    assert not np.allclose(ft, lm, atol=1e-4)

    ism_main(["--input", str(fasta), "--output", str(tmp_path / "ism.npz"), "--ckpt_path", str(tmp_path / "ft"), "--quiet"])
    effects = np.load(tmp_path / "ism.npz")["effects_by_class"][0]  # (positions, 4, classes) of sequence 0
    mutant = seq[:5] + "A" + seq[6:]  # position 5 is G
    with torch.no_grad():
        logits = model(**tok([seq, mutant], return_tensors="pt")).logits.double()
    assert np.abs(logits[1] - logits[0]).max() > 1e-3  # a real change, compared below at 1e-5
    np.testing.assert_allclose(effects[5, 0], (logits[1] - logits[0]).numpy(), atol=1e-5)

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        score_main(["--input", str(fasta), "--output", str(tmp_path / "s.tsv"), "--model", str(tmp_path / "ft")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "a fine-tuned classifier's folder (classifier.json)" in err and "Traceback" not in err
    assert not (tmp_path / "s.tsv").exists()

    wrapped = get_peft_model(transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "lm", num_labels=2),
                             LoraConfig(r=4, target_modules=["in_proj", "out_proj"]))
    wrapped.save_pretrained(tmp_path / "adapters")
    with pytest.raises(SystemExit) as exc:
        embed_main(["--input", str(fasta), "--output", str(tmp_path / "a.npz"), "--model", str(tmp_path / "adapters")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "a peft adapter folder" in err and "merge_and_unload" in err


def test_a_masked_lm_folder_loads_as_auto_model_for_masked_lm():
    """The bidirectional H-Net through AutoModelForMaskedLM: our logits and loss, transformers' MLM collator
    feeds it; the causal and masked heads refuse each other's folders."""
    import tempfile

    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    from hnet_dna import HNetForMaskedLM

    with tempfile.TemporaryDirectory() as tmp:
        ours = make_model("tiny-bihnet", dtype=torch.float32, seed=3)
        ours.save_pretrained(Path(tmp) / "mlm")
        model = AutoModelForMaskedLM.from_pretrained(Path(tmp) / "mlm", trust_remote_code=True)
        tok = transformers.AutoTokenizer.from_pretrained(Path(tmp) / "mlm", trust_remote_code=True)
        assert isinstance(model.hnet, HNetForMaskedLM) and tok.mask_token == "<mask>" and tok.mask_token_id == 8
        torch.manual_seed(0)
        batch = DataCollatorForLanguageModeling(tok, mlm_probability=0.3)([tok(s) for s in SEQS[:2]])
        out = model(**batch)
        mine = ours(batch["input_ids"], mask=batch["attention_mask"].bool(), labels=batch["labels"])
        torch.testing.assert_close(out.logits, mine.logits)
        torch.testing.assert_close(out.loss, mine.loss)
        assert (batch["labels"] != -100).any()
        with pytest.raises(Exception, match="a masked LM .*AutoModelForMaskedLM"):
            transformers.AutoModelForCausalLM.from_pretrained(Path(tmp) / "mlm", trust_remote_code=True)
        make_model(dtype=torch.float32).save_pretrained(Path(tmp) / "causal")
        with pytest.raises(Exception, match="a causal LM; load it with AutoModelForCausalLM"):
            AutoModelForMaskedLM.from_pretrained(Path(tmp) / "causal", trust_remote_code=True)
