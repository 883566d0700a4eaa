"""The H-Net: one recursive stage, the causal-LM wrapper, losses and incremental decoding.

A stage (outermost first) is ``[encoder, inner, decoder]``; the innermost is ``[main]``::

    xhat = encoder(x)                                   # full resolution of this stage
    p, b = route(xhat)                                  # boundary probability and decision
    z    = inner(xhat[b])                               # the next stage, or the main network
    y    = upsample(EMA(z, p[b])) * STE(c) + residual_proj(xhat)
    out  = decoder(y)

Widths grow inward: a stage wider than its parent pads its input with a learned vector
(``pad_dimension``) and its output is cut back to the parent's width. Parameter names are the
official ones, so official state dicts load with ``strict=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import backends
from ..config import HNetConfig
from ..tokenizer import NucleotideTokenizer
from .chunking import (
    P_CLAMP,
    RoutingModule,
    boundary_index,
    confidence,
    dechunk,
    downsample,
    ema,
    ratio_loss,
    ste,
)
from .isotropic import Isotropic
from .layers import HI_DTYPE, hi

__all__ = ["HNetStage", "HNetForCausalLM", "HNetOutput", "HNetCache", "InputError"]


class InputError(ValueError):
    """Model inputs of the wrong shape, dtype or content."""


@dataclass
class HNetCache:
    """Decoding state of one stage; the innermost stage uses ``main`` only."""

    main: list | None = None  # innermost: one cache per layer
    encoder: list | None = None
    routing: object | None = None
    inner: "HNetCache | None" = None
    last_value: torch.Tensor | None = None  # (B, D) fp32: the EMA's last output
    decoder: list | None = None


class HNetStage(nn.Module):
    def __init__(self, config: HNetConfig, stage: int):
        super().__init__()
        self.stage = stage
        d = config.d_model[stage]
        layout = config.stage_layout(stage)
        self.is_innermost = len(layout) == 1
        blocks = "".join(part for part in layout if isinstance(part, str))
        attn = config.stage_attn(stage) if any(ch in "tT" for ch in blocks) else None

        def stack(spec: str) -> Isotropic:
            return Isotropic(spec, d, config.d_intermediate[stage], config.ssm_cfg.for_stage(stage), attn)

        if self.is_innermost:
            self.main_network = stack(layout[0])
        else:
            self.encoder = stack(layout[0])
            self.main_network = HNetStage(config, stage + 1)
            self.decoder = stack(layout[2])
            self.routing_module = RoutingModule(d)
            # fp32 even when the rest of the model is cast down: see ``_apply``.
            self.residual_proj = nn.Linear(d, d)
            nn.init.zeros_(self.residual_proj.weight)
        self.levels = config.num_stages - 1 - stage  # chunking levels from this stage inward
        widen = d - config.d_model[stage - 1] if stage > 0 else 0
        self.pad_dimension = nn.Parameter(torch.zeros(widen)) if widen > 0 else None

    def _apply(self, fn, recurse=True):
        # Keep the residual projection in fp32 under model.to(bfloat16) / .half().
        super()._apply(fn, recurse)
        if not self.is_innermost:
            proj = self.residual_proj
            if proj.weight.dtype in (torch.float16, torch.bfloat16):
                proj.weight.data = proj.weight.data.float()
                proj.bias.data = proj.bias.data.float()
        return self

    def _widen(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_dimension is None:
            return x
        return torch.cat([x, self.pad_dimension.to(x.dtype).expand(*x.shape[:-1], -1)], dim=-1)

    def _residual(self, h: torch.Tensor) -> torch.Tensor:
        with torch.autocast(h.device.type, enabled=False):
            return self.residual_proj(h.to(self.residual_proj.weight.dtype))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: HNetCache | None = None):
        """x: (B, L, D_parent), mask: (B, L) -> ((B, L, D_parent), [RoutingOutput per level])."""
        width = x.shape[-1]
        x = self._widen(x)
        if self.is_innermost:
            out = self.main_network(x, mask, None if cache is None else cache.main)
            return out[..., :width], []

        h = self.encoder(x, mask, None if cache is None else cache.encoder)  # (B, L, D)
        residual = self._residual(h)  # (B, L, D) fp32
        route = self.routing_module(h, mask, None if cache is None else cache.routing)
        p, b = route.boundary_prob, route.boundary_mask
        index, inner_mask = boundary_index(b)  # (B, M)
        z, inner_routes = self.main_network(
            downsample(h, index), inner_mask, None if cache is None else cache.inner
        )  # (B, M, D)
        route.chunk_index, route.chunk_mask, route.chunk_states = index, inner_mask, z
        P = downsample(p, index).clamp(P_CLAMP, 1 - P_CLAMP)  # (B, M)
        c = confidence(p, b) if route.confidence is None else route.confidence  # (B, L)
        kernels = backends.chunking_kernels(z, residual)
        if kernels is None:
            y = dechunk(z, P, b, c, residual)  # (B, L, D) fp32
        else:  # CUDA + Triton: one fused pass (kernels/dechunk.py), written in the decoder's dtype
            y = kernels.fused_dechunk(z, P, b, c, residual, out_dtype=h.dtype)
        if cache is not None:
            last_chunk = (inner_mask.sum(-1) - 1).clamp(min=0)
            zbar = ema(z, P)
            cache.last_value = zbar[torch.arange(zbar.shape[0], device=zbar.device), last_chunk]
        out = self.decoder(y.to(h.dtype), mask, None if cache is None else cache.decoder)
        return out[..., :width], [route] + inner_routes

    # ------------------------------------------------------------------------------ decoding
    def allocate_cache(self, batch: int) -> HNetCache:
        if self.is_innermost:
            return HNetCache(main=self.main_network.allocate_cache(batch))
        d = self.residual_proj.weight.shape[0]
        return HNetCache(
            encoder=self.encoder.allocate_cache(batch),
            routing=self.routing_module.allocate_cache(batch),
            inner=self.main_network.allocate_cache(batch),
            last_value=torch.zeros(batch, d, device=self.residual_proj.weight.device, dtype=HI_DTYPE(self.residual_proj.weight)),
            decoder=self.decoder.allocate_cache(batch),
        )

    def step(self, x: torch.Tensor, cache: HNetCache, active: torch.Tensor):
        """One position per row. x: (B, D_parent); rows where ``active`` is False keep their state.

        Returns ((B, D_parent), [(p, b) per level, outer first]). The inner stage is stepped for
        every row in one batched call, and only rows that hit a boundary keep its new state.
        """
        width = x.shape[-1]
        x = self._widen(x)
        if self.is_innermost:
            return self.main_network.step(x, cache.main, active)[..., :width], []
        h = self.encoder.step(x, cache.encoder, active)  # (B, D)
        residual = self._residual(h)
        p = self.routing_module.step(h, cache.routing, active)  # (B,)
        b = (p > 0.5) & active
        if bool(b.any()):  # one host sync per stage and step; the inner stage idles most steps
            z, inner_routes = self.main_network.step(h, cache.inner, b)
            P = p.clamp(P_CLAMP, 1 - P_CLAMP)[:, None]
            cache.last_value = torch.where(b[:, None], P * hi(z) + (1 - P) * cache.last_value, cache.last_value)
        else:
            inner_routes = [(torch.zeros_like(p), torch.zeros_like(b))] * self.main_network.levels
        zbar = cache.last_value
        y = zbar * ste(confidence(p, b))[:, None] + residual
        out = self.decoder.step(y.to(h.dtype), cache.decoder, active)
        return out[..., :width], [(p, b)] + inner_routes


    @torch.no_grad()
    def extend(self, x: torch.Tensor, cache: HNetCache):
        """A block of positions continuing from ``cache``: x (1, K, D_parent) -> ((1, K, D_parent),
        [p per level, outer first: (1, K_s) fp32 at the level's inputs in the block], [chunk
        states per level: (1, M_s, D_s), the inner network's output for the chunks the block
        starts]), the same as one forward over everything seen so far. One row: rows would cut
        different numbers of chunks from the same block."""
        width = x.shape[-1]
        x = self._widen(x)
        if self.is_innermost:
            return self.main_network.extend(x, cache.main)[..., :width], [], []
        h = self.encoder.extend(x, cache.encoder)  # (1, K, D)
        residual = self._residual(h)  # fp32
        p = self.routing_module.extend(h, cache.routing)  # (1, K)
        b = p > 0.5
        index = b[0].nonzero()[:, 0]  # (M,) the block's chunk starts
        zbar = cache.last_value[:, None]  # (1, 1, D): the chunk open when the block starts
        if len(index):
            z, inner_probs, inner_states = self.main_network.extend(h[:, index], cache.inner)  # (1, M, D)
            P = p[:, index].clamp(P_CLAMP, 1 - P_CLAMP)
            new = ema(z, P, initial=cache.last_value)  # (1, M, D) fp32
            cache.last_value = new[:, -1]
            zbar = torch.cat([zbar, new], dim=1)
        else:  # nothing reaches the inner stages
            z = h.new_zeros(1, 0, h.shape[-1])
            inner_probs, inner_states = self.main_network._no_chunks(p)
        # position t takes the latest chunk started at or before it (0: the one open before the
        # block); the straight-through confidence is 1 in value
        plug = b.long().cumsum(-1)  # (1, K)
        y = torch.gather(zbar, 1, plug[..., None].expand(-1, -1, zbar.shape[-1])) + residual
        out = self.decoder.extend(y.to(h.dtype), cache.decoder)[..., :width]
        return out, [p] + inner_probs, [z] + inner_states

    def _no_chunks(self, like: torch.Tensor):
        """What :meth:`extend` reports for its levels when no chunk reaches this stage: empty
        probabilities (1, 0) and chunk states (1, 0, D_s) per level."""
        if self.is_innermost:
            return [], []
        probs, states = self.main_network._no_chunks(like)
        d = self.residual_proj.weight.shape[0]
        return [like.new_zeros(1, 0)] + probs, [like.new_zeros(1, 0, d)] + states


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

    def __init__(self, config: HNetConfig, tokenizer: NucleotideTokenizer | None = None):
        super().__init__()
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
            out.lm_loss, out.bits_per_base = self._lm_loss(logits, labels, mask, loss_weights)
            out.loss = out.lm_loss + self.config.ratio_loss_weight * out.ratio_loss
        return out

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
        """Load a model written by :meth:`save_pretrained`."""
        from ..weights import load_pretrained

        return load_pretrained(directory, map_location=map_location)

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
