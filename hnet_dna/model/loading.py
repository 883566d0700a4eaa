"""Models from what users name on the command line: a preset, a config JSON, a ``save_pretrained``
folder, a pretraining ``.ckpt`` written by ``python -m hnet_dna fit``, or nothing (the small
pretrained default shipped in ``hnet_dna/resources/default_model``)."""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path

import torch

from ..config import ConfigError, HNetConfig, presets
from ..weights import CheckpointError, check_fit, read_official_state
from .hnet import HNetForCausalLM

__all__ = ["build_model", "load_model", "load_official_checkpoint", "is_untrained", "default_model_path", "DEFAULT_MODEL"]

DEFAULT_MODEL = "default"  # the name of the shipped model wherever a model is taken


def default_model_path() -> Path:
    """The folder of the shipped default model (see its README.md)."""
    return Path(str(files("hnet_dna") / "resources" / "default_model"))


def model_for(config: HNetConfig) -> HNetForCausalLM:
    """A fresh model of ``config``: :class:`HNetForMaskedLM` when it is bidirectional."""
    if config.bidirectional:
        from .masked_lm import HNetForMaskedLM

        return HNetForMaskedLM(config)
    return HNetForCausalLM(config)


def build_model(spec: str | dict, flag: str = "--model.model") -> HNetForCausalLM:
    """A model from a preset name, a config JSON, a ``save_pretrained`` folder (weights loaded),
    or inline config fields (a dict; ``{"preset": name, ...}`` overrides a preset's fields)."""
    if isinstance(spec, dict):
        fields = dict(spec)
        base = fields.pop("preset", None)
        config = HNetConfig.from_preset(base, **fields) if base else HNetConfig.from_dict(fields, source="model")
        return model_for(config)
    if spec in presets():
        return model_for(HNetConfig.from_preset(spec))
    if spec == DEFAULT_MODEL:
        return HNetForCausalLM.from_pretrained(default_model_path())
    path = Path(spec)
    if path.is_dir():
        return HNetForCausalLM.from_pretrained(path)
    if path.is_file():
        return model_for(HNetConfig.from_json(path))
    raise ConfigError(
        f"{flag} {spec!r} is neither a preset ({', '.join(presets())}), '{DEFAULT_MODEL}', a config "
        "JSON, nor a save_pretrained folder"
    )


def is_untrained(spec: str | dict | None) -> bool:
    """Whether ``spec`` gives random weights (inline fields, a preset or a config JSON)."""
    if spec is None:
        return False
    return isinstance(spec, dict) or spec in presets() or (spec.endswith(".json") and Path(spec).is_file())


def load_model(spec: str | dict | None, flag: str = "--model", warn_untrained: bool = False,
               lm_head: bool = False, masked_lm_ok: bool = False) -> HNetForCausalLM:
    """Everything :func:`build_model` takes, plus a pretraining ``.ckpt``; None = the default model.
    ``warn_untrained``: say on stderr when the spec gives random weights (a preset, a config).
    ``lm_head``: the caller reads the language model's head (base probabilities), so a fine-tuned
    classifier's folder is refused: fine-tuning moved its backbone and left its LM head behind (its
    backbone alone, for features or chunk boundaries, loads as any folder does), and so is a masked
    LM unless ``masked_lm_ok`` (the caller has masked-LM scores)."""
    if spec is None:
        spec = DEFAULT_MODEL
    if lm_head and isinstance(spec, str) and (Path(spec) / "classifier.json").is_file():
        raise CheckpointError(
            f"{flag} {spec}: a fine-tuned classifier's folder (classifier.json): fine-tuning changed its backbone "
            "but not its language-model head, so the base probabilities it would give mean nothing. Give the "
            "language model it was fine-tuned from (its pretrained folder); for the classifier's own view of "
            "each base use python -m hnet_dna.ism --ckpt_path FOLDER"
        )
    if warn_untrained and is_untrained(spec):
        print(f"hnet_dna: warning: {flag} {spec} has random weights (a preset or a config, not a trained model): "
              "its outputs mean nothing beyond testing; give a save_pretrained folder or a .ckpt, or omit "
              f"{flag} for the default model", file=sys.stderr)
    if isinstance(spec, str) and spec.endswith(".ckpt"):
        model = _from_lightning_checkpoint(Path(spec), flag)
    elif isinstance(spec, str) and Path(spec).is_file() and not spec.endswith(".json"):
        raise CheckpointError(
            f"{flag} {spec}: not a model of hnet_dna; give a preset, a save_pretrained folder, a config "
            "JSON or a .ckpt written by python -m hnet_dna fit"
        )
    else:
        model = build_model(spec, flag)
    if lm_head and model.config.bidirectional and not masked_lm_ok:
        raise CheckpointError(
            f"{flag} {spec}: a masked LM (bidirectional H-Net); this command's scores are a causal LM's "
            "(each base given the bases before it). Give a causal model; a masked LM's features go to "
            "python -m hnet_dna.embed and to fine-tuning"
        )
    return model


def read_lightning_checkpoint(path: Path, flag: str) -> tuple[dict, dict]:
    """(the checkpoint, its hyperparameters) of a Lightning ``.ckpt``, read safely; a missing or
    damaged file is a :class:`CheckpointError` naming ``flag``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{flag} {path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 (torch raises many kinds for a damaged file)
        raise CheckpointError(f"{flag} {path}: not a readable checkpoint ({type(e).__name__})") from None
    return state, (state.get("hyper_parameters", {}) if isinstance(state, dict) else {})


def _from_lightning_checkpoint(path: Path, flag: str) -> HNetForCausalLM:
    state, hparams = read_lightning_checkpoint(path, flag)
    if "model" not in hparams or "state_dict" not in state:
        raise CheckpointError(
            f"{flag} {path}: not a pretraining checkpoint of hnet_dna (no model spec in its "
            "hyperparameters); give a .ckpt written by python -m hnet_dna fit with PretrainModule"
        )
    model = build_model(hparams["model"], flag)
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{flag} {path}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model


def load_official_checkpoint(checkpoint: str | Path, config: str | Path | HNetConfig, map_location="cpu") -> HNetForCausalLM:
    """Build a model from an official config JSON and load an official ``.pt`` into it (strict).

    Args:
        checkpoint: the ``.pt`` file (a state dict saved with ``torch.save``; read safely, see
            :func:`hnet_dna.weights.read_official_state`).
        config: the official config JSON (or an :class:`HNetConfig`).
    """
    if not isinstance(config, HNetConfig):
        config = HNetConfig.from_json(config)
    state = read_official_state(checkpoint, map_location=map_location)
    model = HNetForCausalLM(config)
    result = model.load_state_dict(state, strict=False)
    check_fit(checkpoint, result.missing_keys, result.unexpected_keys)
    return model
