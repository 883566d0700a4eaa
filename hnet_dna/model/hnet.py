"""The H-Net causal LM: embeddings, the outermost stage (:mod:`hnet_dna.model.stage`: encoder,
routing, inner stage, dechunking, decoder), the LM head, losses (next-base cross-entropy in bits,
ratio loss) and incremental decoding. Parameter names are the official ones, so official state
dicts load with ``strict=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import HNetConfig
from ..tokenizer import NucleotideTokenizer
from .chunking import ratio_loss
from .isotropic import Isotropic
from .layers import hi
from .stage import HNetCache, HNetStage

__all__ = ["HNetStage", "HNetForCausalLM", "HNetOutput", "HNetCache", "InputError"]


class InputError(ValueError):
    """Model inputs of the wrong shape, dtype or content."""


@dataclass
class HNetOutput:
    """What :meth:`HNetForCausalLM.forward` returns. Lists run over chunking levels, outer first."""

    logits: torch.Tensor  # (B, L, V)
    boundaries: list = field(default_factory=list)  # (B, L_s) bool, False on padding
    boundary_probs: list = field(default_factory=list)  # (B, L_s) fp32, 0 on padding
    masks: list = field(default_factory=list)  # (B, L_s) bool: real positions at level s
    ratio_losses: list = field(default_factory=list)  # unweighted eq. 10 per level (scalars)
    ratio_loss: torch.Tensor | None = None  # their sum
    loss: torch.Tensor | None = None  # lm_loss + alpha * ratio_loss (when labels are given)
    lm_loss: torch.Tensor | None = None  # mean next-token cross-entropy (nats)
    bits_per_base: torch.Tensor | None = None  # mean cross-entropy in bits over A/C/G/T targets
    masked_accuracy: torch.Tensor | None = None  # masked LM: fraction of hidden bases predicted right

    def compression(self) -> list[float]:
        """Achieved ratio per level: real positions in / chunks out (the paper's L_s / L_{s+1})."""
        return [float(m.sum()) / max(float(b.sum()), 1.0) for m, b in zip(self.masks, self.boundaries)]


class HNetForCausalLM(nn.Module):
    """Embedding -> H-Net backbone -> LM head, Hugging Face style.

    Example::

        cfg = HNetConfig.from_preset("tiny-hnet")
        model = HNetForCausalLM(cfg)
        batch = model.tokenizer.batch_encode(["ACGTTGCA", "ACG"])
        out = model(batch["input_ids"], mask=batch["mask"], labels=batch["input_ids"])
        out.loss.backward()
    """

    masked_lm_class: type | None = None  # HNetForMaskedLM, which registers itself (it imports this module)

    def __init__(self, config: HNetConfig, tokenizer: NucleotideTokenizer | None = None):
        super().__init__()
        if config.bidirectional and type(self) is HNetForCausalLM:
            raise InputError("a bidirectional config builds a masked LM: use HNetForMaskedLM (or "
                             "hnet_dna.model.loading.model_for(config)); a causal LM must not read the base it predicts")
        self.config = config
        self.tokenizer = tokenizer or NucleotideTokenizer(mode=config.tokenizer_mode)
        if self.tokenizer.mode != config.tokenizer_mode:
            raise InputError(
                f"tokenizer mode {self.tokenizer.mode!r} does not match the config's {config.tokenizer_mode!r}"
            )
        d0 = config.d_model[0]
        self.embeddings = nn.Embedding(config.vocab_size, d0)
        self.backbone = HNetStage(config, 0)
        self.lm_head = nn.Linear(d0, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embeddings.weight
        self.init_weights()

    # ----------------------------------------------------------------------------------- init
    def init_weights(self) -> None:
        """The official init: linears N(0, r); ``out_proj`` / ``fc2`` N(0, r / sqrt(n_res)) with
        n_res counted per stage; embeddings N(0, 1); routing identity; residual projection zero."""
        r = self.config.initializer_range
        nn.init.normal_(self.lm_head.weight, std=r)
        nn.init.normal_(self.embeddings.weight, std=1.0)
        _init_stage(self.backbone, r, parent_residuals=0)

    def gradient_checkpointing_enable(self, enabled: bool = True) -> "HNetForCausalLM":
        """Activation checkpointing per block: each block of every isotropic stack (encoders,
        decoders, main network) keeps only its input for the backward pass and is run again there.
        Training memory then holds one block's activations at a time instead of every block's,
        for about one more forward pass of compute; results are unchanged (float noise aside).
        Routing, chunking and the LM head are not recomputed: a recomputed routing decision could
        change the inner sequence's length."""
        for module in self.modules():
            if isinstance(module, Isotropic):
                module.gradient_checkpointing = enabled
        return self

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(m.gradient_checkpointing for m in self.modules() if isinstance(m, Isotropic))

    # -------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        loss_weights: torch.Tensor | None = None,
    ) -> HNetOutput:
        """Args:
            input_ids: (B, L) integer ids, right-padded.
            mask: (B, L) bool, True on real positions; None = all real.
            labels: (B, L) aligned with ``input_ids`` (shifted inside). -100, pad and N targets
                are ignored.
            loss_weights: (B, L) optional per-target weights aligned with ``labels``.
        """
        mask = self._check_inputs(input_ids, mask, labels, loss_weights)
        hidden, routes = self.backbone(self.embeddings(input_ids), mask)
        logits = self.lm_head(hidden)
        out = HNetOutput(logits=logits)
        for s, route in enumerate(routes):
            out.boundaries.append(route.boundary_mask)
            out.boundary_probs.append(route.boundary_prob.masked_fill(~route.mask, 0.0))
            out.masks.append(route.mask)
            loss_s, _, _ = ratio_loss(
                route.boundary_mask, route.boundary_prob, route.mask, self.config.ratio_targets[s]
            )
            out.ratio_losses.append(loss_s)
        out.ratio_loss = torch.stack(out.ratio_losses).sum() if routes else logits.new_zeros(())
        if labels is not None:
            self._fill_lm_loss(out, labels, mask, loss_weights)
            out.loss = out.lm_loss + self.config.ratio_loss_weight * out.ratio_loss
        return out

    def _fill_lm_loss(self, out: HNetOutput, labels, mask, loss_weights) -> None:
        """``out.lm_loss`` and ``out.bits_per_base`` (next-base targets; a masked LM overrides this)."""
        out.lm_loss, out.bits_per_base = self._lm_loss(out.logits, labels, mask, loss_weights)

    def _lm_loss(self, logits, labels, mask, loss_weights):
        tok = self.tokenizer
        targets = labels[:, 1:]
        ignore = (targets == -100) | (targets == tok.pad_id) | (targets == tok.n_id) | ~mask[:, 1:]
        ce = F.cross_entropy(
            hi(logits[:, :-1]).flatten(0, 1),
            targets.masked_fill(ignore, 0).flatten(),
            reduction="none",
        ).view_as(targets)
        keep = (~ignore).to(ce.dtype)
        weights = keep if loss_weights is None else keep * loss_weights[:, 1:].to(ce.dtype)
        lm_loss = (ce * weights).sum() / weights.sum().clamp(min=1e-8)
        is_base = torch.isin(targets, torch.tensor(tok.base_ids, device=targets.device)) & ~ignore
        bits = (ce.detach() * is_base).sum() / is_base.sum().clamp(min=1) / math.log(2)
        return lm_loss, bits

    def _check_inputs(self, input_ids, mask, labels, loss_weights) -> torch.Tensor:
        integer = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in integer or input_ids.dim() != 2:
            what = (
                f"shape {tuple(input_ids.shape)}, dtype {input_ids.dtype}"
                if isinstance(input_ids, torch.Tensor)
                else type(input_ids).__name__
            )
            raise InputError(
                f"input_ids must be an integer tensor of shape (batch, length); got {what}. "
                "Use model.tokenizer.batch_encode(...) to make one (add [None] for a single sequence)."
            )
        batch, length = input_ids.shape
        if batch == 0 or length == 0:
            raise InputError(f"input_ids is empty (shape {tuple(input_ids.shape)}): nothing to model")
        if mask is None:
            mask = torch.ones_like(input_ids, dtype=torch.bool)
        else:
            if not isinstance(mask, torch.Tensor) or mask.shape != input_ids.shape:
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise InputError(f"mask must have the shape of input_ids {tuple(input_ids.shape)}; got {shape}")
            if mask.dtype != torch.bool:
                if mask.is_floating_point() or not ((mask == 0) | (mask == 1)).all():
                    raise InputError(f"mask must be bool (or 0/1 integers); got dtype {mask.dtype}")
                mask = mask.bool()
        starts_padded = ~mask[:, 0]  # (B,)
        gaps = (~mask[:, :-1] & mask[:, 1:]).any(-1)  # (B,)
        # One host sync for every content check (this runs on every forward pass).
        lo, hi, bad_start, bad_gap = torch.stack(
            [input_ids.min().long(), input_ids.max().long(), starts_padded.any().long(), gaps.any().long()]
        ).tolist()
        if lo < 0 or hi >= self.config.vocab_size:
            raise InputError(
                f"input_ids holds ids outside the vocabulary 0..{self.config.vocab_size - 1} "
                f"(min {lo}, max {hi}); were they made by this model's tokenizer ({self.tokenizer})?"
            )
        if bad_start:
            rows = torch.nonzero(starts_padded).flatten().tolist()
            raise InputError(
                f"every row needs at least one real position at the start; row(s) {rows[:5]} "
                "start with padding (or are empty): batches must be right-padded"
            )
        if bad_gap:
            rows = torch.nonzero(gaps).flatten().tolist()
            raise InputError(
                f"mask must be right-padded (real positions, then padding); row(s) {rows[:5]} "
                "have a real position after padding"
            )
        for name, t in (("labels", labels), ("loss_weights", loss_weights)):
            if t is not None and (not isinstance(t, torch.Tensor) or t.shape != input_ids.shape):
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise InputError(f"{name} must have the shape of input_ids {tuple(input_ids.shape)}; got {shape}")
        if labels is not None and labels.dtype not in integer:
            raise InputError(f"labels must be integer ids (-100 to ignore); got dtype {labels.dtype}")
        return mask

    def features(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None):
        """Hidden states and per-level chunk states and boundaries, without the LM head; see
        :mod:`hnet_dna.model.features`."""
        from .features import backbone_features

        return backbone_features(self, input_ids, mask)

    # ------------------------------------------------------------------------------ decoding
    def allocate_cache(self, batch: int) -> HNetCache:
        return self.backbone.allocate_cache(batch)

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None):
        """Run the prompt once and keep every stage's state. Returns (logits at each row's last
        real position (B, V), cache)."""
        mask = self._check_inputs(input_ids, mask, None, None)
        cache = self.allocate_cache(input_ids.shape[0])
        hidden, _ = self.backbone(self.embeddings(input_ids), mask, cache)
        last = mask.sum(-1) - 1
        hidden_last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.lm_head(hidden_last), cache

    @torch.no_grad()
    def step(self, next_ids: torch.Tensor, cache: HNetCache):
        """Feed one base per row (B,) and return (logits (B, V), [(p, b) per level])."""
        active = torch.ones(next_ids.shape[0], dtype=torch.bool, device=next_ids.device)
        hidden, routes = self.backbone.step(self.embeddings(next_ids), cache, active)
        return self.lm_head(hidden), routes

    @torch.no_grad()
    def extend(self, input_ids: torch.Tensor, cache: HNetCache) -> torch.Tensor:
        """Feed a block of bases (1, K) that continues from ``cache`` (from :meth:`allocate_cache`
        for a sequence's start, or earlier calls); returns their logits (1, K, V).

        Blocks in turn give the logits of one forward over the whole sequence (float rounding
        aside) with every base seeing all of its left context, at a memory and cost per block
        that grow with what came before only through global attention layers (their keys).
        """
        return self.lm_head(self.extend_features(input_ids, cache)[0])

    @torch.no_grad()
    def extend_features(self, input_ids: torch.Tensor, cache: HNetCache):
        """:meth:`extend` without the LM head: (hidden (1, K, D_0), [boundary probabilities per
        level over its inputs in the block, (1, K_s) fp32, outer first: a level's inputs are the
        previous level's chunk starts, p > 0.5], [chunk states per level: (1, M_s, D_s) for the
        chunks the block starts, as :class:`~hnet_dna.model.features.ChunkLevel` ``states``])."""
        self._check_inputs(input_ids, None, None, None)  # an integer (B, K) tensor of known ids
        if input_ids.shape[0] != 1:
            raise InputError(f"extend takes one row of ids, (1, K); got shape {tuple(input_ids.shape)}")
        return self.backbone.extend(self.embeddings(input_ids), cache)

    def generate(self, input_ids, mask=None, **kwargs):
        """Sample continuations; see :func:`hnet_dna.model.generation.generate`."""
        from .generation import generate

        return generate(self, input_ids, mask=mask, **kwargs)

    # -------------------------------------------------------------------------------- weights
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``model.safetensors``, ``config.json`` and ``tokenizer.json`` into ``directory``."""
        from ..weights import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location="cpu") -> "HNetForCausalLM":
        """Load a model written by :meth:`save_pretrained` (a masked LM's folder: an
        :class:`~hnet_dna.model.masked_lm.HNetForMaskedLM`)."""
        from ..weights import load_pretrained_weights, read_pretrained

        config, tokenizer = read_pretrained(directory)
        if config.bidirectional and cls is HNetForCausalLM:  # a masked LM's folder gives that model
            cls = HNetForCausalLM.masked_lm_class  # set by hnet_dna.model.masked_lm
        model = cls(config, tokenizer=tokenizer)
        load_pretrained_weights(model, directory, map_location=map_location)
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


def _init_stage(stage: HNetStage, r: float, parent_residuals: int) -> None:
    """Depth-scaled init of one stage (recursive). n_res = parent's + this stage's encoder and
    decoder heights (the innermost: its main network's height)."""
    if stage.is_innermost:
        n_res = parent_residuals + stage.main_network.height
        stacks = [stage.main_network]
    else:
        n_res = parent_residuals + stage.encoder.height + stage.decoder.height
        stacks = [stage.encoder, stage.decoder]
    for stack in stacks:
        for name, module in stack.named_modules():
            if isinstance(module, nn.Linear):
                scaled = name.endswith("out_proj") or name.endswith("fc2")
                nn.init.normal_(module.weight, std=r / math.sqrt(n_res) if scaled else r)
    if not stage.is_innermost:
        _init_stage(stage.main_network, r, n_res)
