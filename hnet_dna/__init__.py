"""hnet_dna: tokenizer-free hierarchical DNA language models (H-Net) in PyTorch."""

from .config import AttnConfig, ConfigError, HNetConfig, SSMConfig, presets
from .model import HNetForCausalLM, HNetForMaskedLM, HNetOutput, InputError
from .model.heads import HNetForSequenceClassification
from .tokenizer import NucleotideTokenizer, SequenceError
from .model.loading import load_official_checkpoint
from .weights import CheckpointError


def embed_sequences(*args, **kwargs):
    """Embeddings of DNA sequences; see :func:`hnet_dna.inference.embed.embed_sequences`."""
    from .inference.embed import embed_sequences as run

    return run(*args, **kwargs)


def __getattr__(name: str):
    # ``hnet_dna.ism(...)``: the module is callable (see hnet_dna/ism.py); imported on first use, so
    # that ``python -m hnet_dna.ism`` does not find it imported already.
    if name == "ism":
        import importlib

        return importlib.import_module(".ism", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "HNetConfig",
    "SSMConfig",
    "AttnConfig",
    "HNetForCausalLM",
    "HNetForMaskedLM",
    "HNetForSequenceClassification",
    "embed_sequences",
    "ism",
    "HNetOutput",
    "NucleotideTokenizer",
    "presets",
    "load_official_checkpoint",
    "ConfigError",
    "InputError",
    "SequenceError",
    "CheckpointError",
]
