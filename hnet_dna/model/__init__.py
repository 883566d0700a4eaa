"""The H-Net model: blocks, chunking, stages, and the causal-LM and masked-LM wrappers."""

from .hnet import HNetForCausalLM, HNetOutput, InputError
from .masked_lm import HNetForMaskedLM
from .stage import HNetCache, HNetStage

__all__ = ["HNetForCausalLM", "HNetForMaskedLM", "HNetOutput", "HNetStage", "HNetCache", "InputError"]
