"""Weights in and out: our safetensors format and the official goombalab/hnet ``.pt`` files.

``save_pretrained(dir)`` writes::

    dir/model.safetensors   the state dict (official key names)
    dir/config.json         HNetConfig.to_json (official fields + hnet_dna's), and for transformers'
                            AutoConfig its model_type and auto_map
    dir/tokenizer.json      the tokenizer's settings (mode, policy)
    dir/tokenizer_config.json, configuration_hnet_dna.py, modeling_hnet_dna.py,
    tokenization_hnet_dna.py
                            what ``transformers``' Auto classes read (``trust_remote_code=True``):
                            one-line files importing hnet_dna.hf's classes from the installed package

Official checkpoints are plain state dicts saved with ``torch.save``. They are read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers, so a
checkpoint cannot run code on load. Files only: the model classes that fill themselves from these
(``HNetForCausalLM.from_pretrained``, :func:`hnet_dna.model.loading.load_official_checkpoint`) import
this module, never the other way round.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from .config import HNetConfig
from .tokenizer import NucleotideTokenizer

__all__ = ["save_pretrained", "read_pretrained", "load_pretrained_weights", "read_official_state", "CheckpointError"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TOKENIZER_NAME = "tokenizer.json"

# transformers' Auto classes (hnet_dna.hf): the model type, and the code files a folder carries
TRANSFORMERS_MODEL_TYPE = "hnet_dna"
_AUTO_CLASSES = {
    "configuration_hnet_dna": {"AutoConfig": "HNetDNAConfig"},
    "modeling_hnet_dna": {"AutoModel": "HNetDNAModel", "AutoModelForCausalLM": "HNetDNAForCausalLM",
                          "AutoModelForSequenceClassification": "HNetDNAForSequenceClassification",
                          "AutoModelForMaskedLM": "HNetDNAForMaskedLM"},
    "tokenization_hnet_dna": {"AutoTokenizer": "HNetDNATokenizer"},
}
_AUTO_CODE = """# What transformers runs for {auto} (trust_remote_code=True).
# The code is the installed hnet_dna's (pip install "hnet_dna[hf]"); after `import hnet_dna.hf`
# the Auto classes need no remote code.
from hnet_dna.hf import {names}  # noqa: F401
"""


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit its config."""


def save_pretrained(model, directory: str | Path) -> None:
    adapters = [k for k in model.state_dict() if ".lora_" in k]  # peft's LoRA weights, unmerged
    if adapters:
        raise CheckpointError(
            f"not saved to {directory}: the model carries {len(adapters)} unmerged LoRA weights ({adapters[0]}, ...), which "
            "a save_pretrained folder does not hold; merge them first (FinetuneModule.merge_adapters(), or "
            "hnet_dna.tasks.adapters.merge_lora(model))")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_config(directory, model.config.to_dict())
    (directory / TOKENIZER_NAME).write_text(json.dumps(model.tokenizer.settings, indent=2) + "\n")
    write_transformers_files(directory, model.tokenizer.settings)
    save_model(model, str(directory / WEIGHTS_NAME))  # handles tied embeddings


def write_config(directory: Path, config: dict) -> None:
    """``config.json``: an HNetConfig's fields, and the model type and ``auto_map`` that
    ``transformers``' AutoConfig reads (HNetConfig.from_json ignores them)."""
    auto_map = {auto: f"{module}.{name}" for module, classes in _AUTO_CLASSES.items() if module != "tokenization_hnet_dna"
                for auto, name in classes.items()}
    text = json.dumps({**config, "model_type": TRANSFORMERS_MODEL_TYPE, "auto_map": auto_map}, indent=2)
    (directory / CONFIG_NAME).write_text(text + "\n")


def write_transformers_files(directory: Path, tokenizer_settings: dict) -> None:
    """``tokenizer_config.json`` and the one-line code files of ``transformers``' Auto classes."""
    for module, classes in _AUTO_CLASSES.items():
        (directory / f"{module}.py").write_text(
            _AUTO_CODE.format(auto=", ".join(classes), names=", ".join(classes.values())))
    tokenizer_config = {"tokenizer_class": "HNetDNATokenizer", "policy": tokenizer_settings.get("policy", "lenient"),
                        "mode": tokenizer_settings.get("mode", "nucleotide"),
                        "auto_map": {"AutoTokenizer": ["tokenization_hnet_dna.HNetDNATokenizer", None]}}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


def read_pretrained(directory: str | Path) -> tuple[HNetConfig, NucleotideTokenizer | None]:
    """The config and tokenizer a ``save_pretrained`` folder describes (after checking that its
    config and weights are there); the weights go in with :func:`load_pretrained_weights`."""
    directory = Path(directory)
    if (directory / "adapter_config.json").is_file() and not (directory / WEIGHTS_NAME).is_file():
        raise CheckpointError(
            f"{directory}: a peft adapter folder (adapter_config.json), which holds the adapters without the model; "
            "merge them into the model and save that: model = PeftModel.from_pretrained(base, folder)"
            ".merge_and_unload(); model.save_pretrained(out)"
        )
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise CheckpointError(
                f"{directory}: no {name}; expected a folder written by save_pretrained "
                f"({WEIGHTS_NAME}, {CONFIG_NAME}, {TOKENIZER_NAME})"
            )
    config = HNetConfig.from_json(directory / CONFIG_NAME)
    tokenizer = None
    if (directory / TOKENIZER_NAME).is_file():
        tokenizer = NucleotideTokenizer.from_settings(json.loads((directory / TOKENIZER_NAME).read_text()))
    return config, tokenizer


def load_pretrained_weights(model: torch.nn.Module, directory: str | Path, map_location="cpu") -> None:
    """Fill ``model`` (built from :func:`read_pretrained`'s config) with the folder's weights; a
    weight that does not fit is a :class:`CheckpointError`."""
    path = Path(directory) / WEIGHTS_NAME
    missing, unexpected = load_model(model, str(path), strict=False, device=str(map_location))  # tied embeddings too
    if missing or unexpected:
        raise CheckpointError(_mismatch(path, missing, unexpected))


def read_official_state(checkpoint: str | Path, map_location="cpu") -> dict[str, torch.Tensor]:
    """The state dict of an official ``.pt`` file (``torch.load(weights_only=True)``: tensors and
    plain containers only)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such checkpoint file")
    try:
        state = torch.load(checkpoint, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            found = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln), "")
            raise CheckpointError(
                f"{checkpoint}: refused to load: it holds Python objects other than tensors, and "
                f"loading them could run code. Only plain state dicts are accepted. ({found})"
            ) from None
        raise CheckpointError(f"{checkpoint}: not a readable PyTorch checkpoint (the file is damaged or of another kind)") from None
    except Exception as e:  # corrupt zip, truncated file, not a torch file
        raise CheckpointError(f"{checkpoint}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{checkpoint}: expected a state dict (parameter name -> tensor)")
    return state


def check_fit(path, missing, unexpected) -> None:
    """A :class:`CheckpointError` naming the keys when weights do not fit their model."""
    if missing or unexpected:
        raise CheckpointError(_mismatch(path, missing, unexpected))


def _mismatch(path, missing, unexpected) -> str:
    lines = [f"{path}: the weights do not fit the model built from its config"]
    if missing:
        lines.append(f"  missing ({len(missing)}): {', '.join(sorted(missing)[:8])}")
    if unexpected:
        lines.append(f"  unexpected ({len(unexpected)}): {', '.join(sorted(unexpected)[:8])}")
    lines.append("  Check that the config JSON is the one this checkpoint was trained with.")
    return "\n".join(lines)
