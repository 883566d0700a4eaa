"""The H-Net model: blocks, chunking, stages and the causal-LM wrapper."""

from .hnet import HNetForCausalLM, HNetOutput, InputError
from .stage import HNetCache, HNetStage

__all__ = ["HNetForCausalLM", "HNetOutput", "HNetStage", "HNetCache", "InputError"]
