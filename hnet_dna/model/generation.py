"""Sampling with incremental caches: each new base costs one step of every stage, not a rerun of
the prefix. Rows of a batch are decoded together even when they cut chunks at different places."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["generate", "GenerationOutput", "sample_next"]


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # (B, L_max + n): each prompt followed by its new bases, right-padded
    mask: torch.Tensor  # (B, L_max + n) bool
    new_ids: torch.Tensor  # (B, n) the generated ids
    logits: torch.Tensor | None = None  # (B, n, V) the logits each new id was drawn from


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, allowed: torch.Tensor | None, generator=None):
    """Draw one id per row from logits (B, V). temperature 0 = greedy; top_p < 1 = nucleus."""
    logits = logits.float()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    mask: torch.Tensor | None = None,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_p: float = 1.0,
    bases_only: bool = True,
    generator: torch.Generator | None = None,
    output_logits: bool = False,
) -> GenerationOutput:
    """Continue each prompt by ``max_new_tokens`` ids.

    Args:
        input_ids, mask: right-padded prompts (B, L) as from ``tokenizer.batch_encode``.
        temperature: softmax temperature; 0 picks the most likely id.
        top_p: nucleus sampling mass (1.0 = off).
        bases_only: sample only A, C, G, T (never N, padding or special ids).
        generator: a ``torch.Generator`` for reproducible draws.
        output_logits: keep the logits of every step.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1; got {temperature}, {top_p}")
    was_training = model.training
    model.eval()
    try:
        logits, cache = model.prefill(input_ids, mask)
        allowed = None
        if bases_only:
            allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            allowed[list(model.tokenizer.base_ids)] = True
        new_ids, all_logits = [], []
        for i in range(max_new_tokens):
            if output_logits:
                all_logits.append(logits)
            next_ids = sample_next(logits, temperature, top_p, allowed, generator)
            new_ids.append(next_ids)
            if i + 1 < max_new_tokens:
                logits, _ = model.step(next_ids, cache)
    finally:
        model.train(was_training)

    new = torch.stack(new_ids, dim=1)  # (B, n)
    batch, length = input_ids.shape
    lengths = (mask.sum(-1) if mask is not None else torch.full((batch,), length)).to(input_ids.device)
    n = new.shape[1]
    total = length + n
    sequences = torch.full((batch, total), model.tokenizer.pad_id, dtype=input_ids.dtype, device=input_ids.device)
    sequences[:, :length] = input_ids
    cols = lengths[:, None] + torch.arange(n, device=input_ids.device)[None, :]
    sequences.scatter_(1, cols, new.to(input_ids.dtype))
    out_mask = torch.arange(total, device=input_ids.device)[None, :] < (lengths + n)[:, None]
    sequences = sequences.masked_fill(~out_mask, model.tokenizer.pad_id)
    return GenerationOutput(
        sequences=sequences,
        mask=out_mask,
        new_ids=new,
        logits=torch.stack(all_logits, dim=1) if output_logits else None,
    )
