"""The H-Net model: blocks, chunking, stages and the causal-LM wrapper."""

from .hnet import HNetCache, HNetForCausalLM, HNetOutput, HNetStage, InputError

__all__ = ["HNetForCausalLM", "HNetOutput", "HNetStage", "HNetCache", "InputError"]
