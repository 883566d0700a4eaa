"""Training helpers: per-stage learning-rate multipliers and AdamW parameter groups.

* ``lr`` is the learning rate at base-pair resolution: stage 0 (embeddings, outer encoder and
  decoder, LM head) runs at exactly ``lr``, as do isotropic baselines, so one ``lr`` means the same
  thing for every model (the paper states its DNA learning rate this way). Inner stages see fewer,
  wider positions and run slower, by eq. 11: ``lambda_s ∝ sqrt(positions at stage s / width_s)``,
  i.e. with target ratios N_0..N_{s-1}, ``lambda_s = sqrt(d_0 / (N_0 ... N_{s-1} * d_s))`` after
  dividing by stage 0's value. ``HNetConfig.lr_multipliers`` overrides this; its values are
  relative and are divided by the first one too, so stage 0 always runs at ``lr``.
* A parameter belongs to the innermost stage that holds it; embeddings and the LM head belong
  to stage 0.
* No weight decay on norms, biases, embeddings, ``pad_dimension`` and Mamba's ``A_log``, ``D``,
  ``dt_bias`` (every parameter with fewer than 2 dimensions, plus the embedding matrix). The
  routing projections keep weight decay like any matrix: the cosine they feed is invariant to
  their scale, so decay changes their effective step size, not the boundaries they define.
"""

from __future__ import annotations

import math

import torch

from .config import HNetConfig

__all__ = ["stage_lr_multipliers", "parameter_stages", "param_groups", "make_optimizer", "layer_depths"]

NO_DECAY_MATRICES = ("embeddings.weight",)


def stage_lr_multipliers(config: HNetConfig) -> list[float]:
    """Learning-rate multiplier per stage, outer first; stage 0 (base-pair resolution) is 1."""
    if config.lr_multipliers:
        raw = list(config.lr_multipliers)
    else:
        raw, positions = [], 1.0
        for s, width in enumerate(config.d_model):
            raw.append(math.sqrt(positions / width))
            if s < len(config.ratio_targets):
                positions /= config.ratio_targets[s]
    return [x / raw[0] for x in raw]


def parameter_stages(model) -> dict[str, int]:
    """Parameter name -> stage index (innermost stage holding it; 0 outside the backbone)."""
    from .model.stage import HNetStage

    stages = {name: 0 for name, _ in model.named_parameters()}
    for prefix, module in model.named_modules():
        if isinstance(module, HNetStage):
            for name, _ in module.named_parameters(prefix=prefix):
                stages[name] = max(stages.get(name, 0), module.stage)
    return stages


def layer_depths(model) -> tuple[dict[str, int], int]:
    """Parameter name -> depth in the order the input meets it, and the number of blocks.

    Depth 0 is the embedding; each block (Mamba-2 or attention layer) of every stack counts one, in
    forward order (outer encoder, inner stages, outer decoder); a stack's final norm shares its last
    block's depth; a stage's routing module, residual projection and padding dimension sit at the
    end of its encoder (they read the encoder's output). The LM head, unused by a classifier, gets
    the top depth. For layer-wise learning-rate decay and partial freezing in fine-tuning.
    """
    from .model.stage import HNetStage

    depths: dict[str, int] = {}
    depth = 0

    def put(module, prefix: str, at: int) -> None:
        for name, _ in module.named_parameters(prefix=prefix):
            depths.setdefault(name, at)

    def stack(isotropic, prefix: str) -> None:
        nonlocal depth
        for i, block in enumerate(isotropic.layers):
            depth += 1
            put(block, f"{prefix}.layers.{i}", depth)
        put(isotropic, prefix, depth)  # its final norm

    def walk(stage: HNetStage, prefix: str) -> None:
        if stage.is_innermost:
            stack(stage.main_network, f"{prefix}.main_network")
        else:
            stack(stage.encoder, f"{prefix}.encoder")
            for name in ("routing_module", "residual_proj"):
                put(getattr(stage, name), f"{prefix}.{name}", depth)
            # the inner stage's pad_dimension widens what the encoder hands it
            depths.setdefault(f"{prefix}.main_network.pad_dimension", depth)
            walk(stage.main_network, f"{prefix}.main_network")
            stack(stage.decoder, f"{prefix}.decoder")

    put(model.embeddings, "embeddings", 0)
    walk(model.backbone, "backbone")
    put(model, "", depth)  # the LM head
    names = {name for name, _ in model.named_parameters()}
    return {k: v for k, v in depths.items() if k in names}, depth


def param_groups(model, lr: float, weight_decay: float = 0.1) -> list[dict]:
    """AdamW groups, one per (stage, decay) pair, with ``lr`` scaled by the stage multiplier.

    Each group carries ``stage`` and ``lr_multiplier`` keys, so schedulers that rescale
    ``group["lr"]`` can be written as ``base_lr * group["lr_multiplier"] * factor``.
    """
    multipliers = stage_lr_multipliers(model.config)
    stages = parameter_stages(model)
    groups: dict[tuple[int, bool], dict] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))  # a tied LM head shares the embedding tensor
        stage = stages[name]
        decay = param.dim() >= 2 and name not in NO_DECAY_MATRICES
        key = (stage, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "lr": lr * multipliers[stage],
                "lr_multiplier": multipliers[stage],
                "weight_decay": weight_decay if decay else 0.0,
                "stage": stage,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def make_optimizer(model, lr: float, weight_decay: float = 0.1, betas=(0.9, 0.95), eps: float = 1e-8):
    """AdamW over :func:`param_groups` (the ``names`` entries are dropped)."""
    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(model, lr, weight_decay)]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
