"""Fine-tuning that keeps what pretraining learned (used by :class:`~hnet_dna.tasks.FinetuneModule`):

* **LoRA** through the ``peft`` library (:func:`add_lora`): low-rank adapters on the backbone's
  linear projections, every backbone weight frozen, the head trained fully; :func:`merge_lora`
  folds them into the weights (peft's own merge) for inference, giving the same logits.
* **A probe-initialised head** (:func:`init_head_from_probe`): the first half of LP-FT (Kumar et
  al. 2022, "Fine-Tuning can Distort Pretrained Features"): logistic regression fitted on the frozen
  model's head inputs (C chosen on validation), copied into the linear head, so that fine-tuning
  starts from a good head instead of tearing the features apart to fit a random one.

What LoRA adapts (:data:`LORA_TARGETS`): Mamba-2's ``in_proj`` and ``out_proj``, attention's ``Wqkv``
and ``out_proj``, the MLPs' ``fc1`` and ``fc2``. Not adapted, and why: the routing module's
``q_proj_layer`` / ``k_proj_layer`` (its fused kernels and the chunk-boundary cache read their
``.weight`` directly, which a peft wrapper would bypass; they also decide where the model cuts,
which adapters are meant to leave as pretrained), the depthwise ``conv1d`` of each Mamba-2 layer
(a grouped convolution of kernel 4: no low-rank structure to adapt), each stage's
``residual_proj`` (initialised to zero in the official model: it is left as pretrained), the
embedding and the norms (vectors). Mamba-2 calls a wrapped projection as a module (its CPU fast
paths read ``.weight``, which on a peft layer is the base weight alone: see
:meth:`~hnet_dna.model.mamba2.Mamba2._in_proj`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..config import ConfigError

__all__ = ["LORA_TARGETS", "add_lora", "merge_lora", "lora_layers", "init_head_from_probe", "head_probe_features"]

LORA_TARGETS = ("in_proj", "out_proj", "Wqkv", "fc1", "fc2")


def add_lora(backbone: nn.Module, rank: int, alpha: float, dropout: float = 0.0) -> list[str]:
    """Inject LoRA adapters (peft's ``inject_adapter_in_model``) into ``backbone``'s projections
    named in :data:`LORA_TARGETS`, and freeze every other backbone weight. Returns the adapted
    modules' names. The adapters' B starts at zero: the model's outputs are unchanged until trained."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, bias="none", target_modules=list(LORA_TARGETS))
    inject_adapter_in_model(config, backbone)
    adapted = [name for name, _ in lora_layers(backbone)]
    for name, p in backbone.named_parameters():
        p.requires_grad_(".lora_" in name)  # peft marks the same; said here, not assumed
    return adapted


def lora_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The peft LoRA layers inside ``module`` (empty without peft's adapters)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft is a dependency; without it there are no adapters to find
        return []
    return [(name, m) for name, m in module.named_modules() if isinstance(m, LoraLayer)]


@torch.no_grad()
def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA adapter inside ``module`` into its base weight (peft's ``merge``) and put the
    base layer back in its place: a plain model with the adapted weights. Returns how many."""
    layers = lora_layers(module)
    for name, layer in layers:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, child, layer.get_base_layer())
    return len(layers)


@torch.no_grad()
def head_probe_features(classifier, ids: list[torch.Tensor], to_model_ids, pad_id: int,
                        batch_size: int = 64) -> np.ndarray:
    """What ``classifier``'s linear layer reads (eval mode, no dropout), (N, F), for sequences of
    nucleotide-table ids; averaged with the reverse complement's when the classifier conjoins strands
    (its logits are then the mean of the two strands' linear outputs: the same linear map of the
    mean)."""
    from ..data.labelled_datamodule import pad_batch

    was_training = classifier.training
    classifier.eval()
    device = classifier.classifier.weight.device
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    out: list = [None] * len(ids)
    for k in range(0, len(order), batch_size):
        rows = order[k:k + batch_size]
        batch = pad_batch([{"input_ids": ids[i], "label": 0, "index": i} for i in rows], pad_id)
        x, mask = to_model_ids(batch["input_ids"].to(device)), batch["mask"].to(device)
        feats = classifier.head_inputs(x, mask).float()
        if classifier.rc_conjoin:
            rc = classifier.tokenizer.reverse_complement(x, mask=mask)
            feats = (feats + classifier.head_inputs(rc, mask).float()) / 2
        for row, i in enumerate(rows):
            out[i] = feats[row].cpu().numpy()
    classifier.train(was_training)
    return np.stack(out)


@torch.no_grad()
def init_head_from_probe(classifier, train: tuple[np.ndarray, list[int]], val: tuple[np.ndarray, list[int]],
                         seed: int = 0) -> dict:
    """Fit logistic regression on head inputs (standardised, C chosen on validation MCC:
    :func:`hnet_dna.baselines.linear_probe`) and write it into ``classifier``'s linear layer, the
    standardisation folded into the weights: the head's logits then equal the probe's decision
    function (binary: split evenly between the two logits, whose difference is what softmax reads).
    Returns ``{"C", "val_mcc"}``."""
    from ..baselines import linear_probe

    head = classifier.classifier
    classes = sorted(set(train[1]))
    if classes != list(range(head.out_features)):  # scikit-learn fits the classes it sees, in sorted order
        missing = [classifier.class_names[c] for c in range(head.out_features) if c not in classes]
        raise ConfigError(f"head_init probe: the training split has no sequence of class {', '.join(map(repr, missing))}; "
                          "a probe cannot give that class a weight (use head_init random, or data with every class)")
    fitted = linear_probe(train, val, seed=seed)
    scaler, regression = fitted["model"][0], fitted["model"][-1]
    coef = regression.coef_ / scaler.scale_  # (C or 1, F)
    intercept = regression.intercept_ - coef @ scaler.mean_  # (C or 1,)
    if coef.shape[0] == 1:  # binary: decision = w x + b is logit 1 minus logit 0
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    head.weight.copy_(torch.as_tensor(coef, dtype=head.weight.dtype))
    head.bias.copy_(torch.as_tensor(intercept, dtype=head.bias.dtype))
    return {"C": fitted["C"], "val_mcc": fitted["val_mcc"]}
