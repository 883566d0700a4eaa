"""hnet_dna: tokenizer-free hierarchical DNA language models (H-Net) in PyTorch."""

from .config import AttnConfig, ConfigError, HNetConfig, SSMConfig, presets
from .model import HNetForCausalLM, HNetOutput, InputError
from .model.heads import HNetForSequenceClassification
from .tokenizer import NucleotideTokenizer, SequenceError
from .weights import CheckpointError, load_official_checkpoint


def embed_sequences(*args, **kwargs):
    """Embeddings of DNA sequences; see :func:`hnet_dna.embed.embed_sequences`."""
    from .embed import embed_sequences as run

    return run(*args, **kwargs)


__version__ = "0.1.0"

__all__ = [
    "HNetConfig",
    "SSMConfig",
    "AttnConfig",
    "HNetForCausalLM",
    "HNetForSequenceClassification",
    "embed_sequences",
    "HNetOutput",
    "NucleotideTokenizer",
    "presets",
    "load_official_checkpoint",
    "ConfigError",
    "InputError",
    "SequenceError",
    "CheckpointError",
]
