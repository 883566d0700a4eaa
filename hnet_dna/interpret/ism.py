"""In-silico mutagenesis (ISM): every single-base substitution of each sequence, scored by a
causal language model, a masked LM (masked marginals) or by a fine-tuned classifier (see :mod:`hnet_dna.ism` for the command, the
scores' definitions and the ``.npz`` layout).

All substitutions of a window go through the model in batches of ``batch_size`` rows, each batch
led by the unmutated window, so that every difference is taken between rows of one forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..data.genome import DataError
from ..inference.tiling import check_windows, choose_device, tiles
from ..io import InputSequence, encode_sequences
from ..model.loading import load_model
from ..runs import Progress, ResumableParts
from ..tokenizer import NucleotideTokenizer

__all__ = ["ism", "ISMResult", "BASES", "DEFAULT_WINDOW", "lm_downstream"]

BASES = "ACGT"


DEFAULT_WINDOW = 512



@dataclass
class ISMResult:
    """Effects of every single-base substitution (module docstring), per sequence."""

    ids: list[str]
    sequences: list[str]
    effects: list[np.ndarray]  # per sequence (L, 4): the reference's entry 0, NaN at a non-ACGT reference
    scorer: str  # "lm", "masked_lm", "classifier" (multiclass), "multilabel", "regression" or "segmentation"
    site_effects: list[np.ndarray] | None = None  # language model: (L, 4)
    effects_by_class: list[np.ndarray] | None = None  # classifier: (L, 4, C)
    class_names: list[str] | None = None
    target: str | None = None
    position: int | None = None  # segmentation: the base (0-based) whose outputs the effects are on

    def importance(self, i: int) -> np.ndarray:
        """(L,) mean absolute effect of the three substitutions at each base of sequence i."""
        e = np.abs(self.effects[i])
        with np.errstate(invalid="ignore"):
            return e.sum(-1) / 3  # the reference's entry is 0; NaN stays NaN

    def arrays(self) -> dict[str, np.ndarray]:
        """The ``.npz`` layout of the module docstring (padded with NaN to the longest sequence)."""
        n, longest = len(self.ids), max((len(s) for s in self.sequences), default=0)

        def padded(rows, tail):
            out = np.full((n, longest, *tail), np.nan, dtype=np.float32)
            for i, r in enumerate(rows):
                out[i, : len(r)] = r
            return out

        out = {
            "ids": np.array(self.ids, dtype=str),
            "sequences": np.array(self.sequences, dtype=str),
            "lengths": np.array([len(s) for s in self.sequences], dtype=np.int64),
            "bases": np.array(BASES),
            "scorer": np.array(self.scorer),
            "effects": padded(self.effects, (4,)),
            "importance": padded([self.importance(i) for i in range(n)], ()),
        }
        if self.site_effects is not None:
            out["site_effects"] = padded(self.site_effects, (4,))
        if self.effects_by_class is not None:
            out["effects_by_class"] = padded(self.effects_by_class, (4, len(self.class_names)))
            out["class_names"] = np.array(self.class_names, dtype=str)
            out["target"] = np.array(self.target)
        if self.position is not None:
            out["position"] = np.array(self.position)
        return out



def lm_downstream(window: int | None, stride: int | None, downstream: int | None) -> int | None:
    """The span D after each substituted base that a language model's effect sums (``ism``'s
    ``downstream``): default ``(window - stride) // 2``; at most ``window - stride - 1``, so that
    every mutated base keeps at least ``window - stride - D`` bases of left context in its window.
    None with ``window=None`` and no ``downstream``: every base to the sequence's end."""
    if window is None:
        if downstream is not None and downstream < 0:
            raise ConfigError(f"--downstream must be >= 0, got {downstream}")
        return downstream
    stride = stride or window // 2
    downstream = (window - stride) // 2 if downstream is None else downstream
    if not 0 <= downstream < window - stride:
        raise ConfigError(f"--downstream must be in 0..{window - stride - 1} (below window - stride, so that each "
                          f"mutated base keeps some left context in its window), got {downstream}")
    return downstream


# ------------------------------------------------------------------------------------ scoring
def _mutants(ids: torch.Tensor, lo: int, hi: int, base_ids: torch.Tensor):
    """Every substitution of bases ``lo..hi-1`` of ``ids`` (L,): positions (M,), base columns (M,)
    (0..3 = A, C, G, T); a reference that is not a base is not mutated."""
    ref_col = (ids[lo:hi, None] == base_ids[None, :])  # (n, 4)
    is_base = ref_col.any(-1)
    pos, col = torch.nonzero(is_base[:, None] & ~ref_col, as_tuple=True)
    return pos + lo, col, ref_col.float().argmax(-1), is_base


def _log2_probs(logits: torch.Tensor, ids: torch.Tensor, base_ids: torch.Tensor) -> torch.Tensor:
    """log2 p(base | the bases before it) (B, L) of each row of ``ids`` (B, L), 0 where a base is not
    scored (the first, which has no context, and any target that is not A/C/G/T), as ``score``
    counts it."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, L-1, V) predicts positions 1..
    targets = ids[:, 1:]
    picked = logp.gather(-1, targets[..., None])[..., 0].double()
    return F.pad(picked * torch.isin(targets, base_ids), (1, 0)) / math.log(2)


def _forward_rows(forward, ids: torch.Tensor, pos: torch.Tensor, new_ids: torch.Tensor, batch_size: int, device):
    """``forward`` on the unmutated ``ids`` (L,) and on every mutant (pos[m] set to new_ids[m]), in
    batches of ``batch_size`` mutants each led by the unmutated row. Yields (slice of mutants,
    the batch's output for them minus its output for the unmutated row)."""
    for k in range(0, len(pos), batch_size):
        p, v = pos[k:k + batch_size], new_ids[k:k + batch_size]
        rows = ids.expand(len(p) + 1, -1).clone()  # (1 + b, L)
        rows[torch.arange(1, len(p) + 1), p] = v
        out = forward(rows.to(device))
        yield slice(k, k + len(p)), (out[1:] - out[:1]).cpu()


def _lm_effects(model, ids: torch.Tensor, lo: int, hi: int, batch_size: int, device, downstream: int | None = None):
    """Effects (hi-lo, 4) and site effects (hi-lo, 4) of the substitutions of bases lo..hi-1 of the
    window ``ids`` (L,), under a causal language model: the change in log2 likelihood of the
    substituted base and the ``downstream`` bases after it (None: every base after it in the
    window), within the window."""
    base_ids = torch.tensor(model.tokenizer.base_ids)
    pos, col, ref_col, is_base = _mutants(ids, lo, hi, base_ids)
    effects = torch.full((hi - lo, 4), math.nan, dtype=torch.float64)
    effects[is_base] = 0.0
    mask = torch.ones(1, len(ids), dtype=torch.bool)

    def forward(rows):
        logits = model(rows, mask.expand(len(rows), -1).to(rows.device)).logits
        return _log2_probs(logits, rows, base_ids.to(rows.device))  # (B, L)

    span = len(ids) if downstream is None else downstream + 1  # the substituted base and those after it
    with torch.inference_mode():
        for part, delta in _forward_rows(forward, ids, pos, base_ids[col], batch_size, device):
            summed = F.pad(delta.cumsum(-1), (1, 0))  # (b, L + 1): summed[:, t] = sum of delta[:, :t]
            first, last = pos[part], (pos[part] + span).clamp(max=len(ids))  # bases first .. last - 1
            effects[pos[part] - lo, col[part]] = summed.gather(1, last[:, None])[:, 0] - summed.gather(1, first[:, None])[:, 0]
        logits = model(ids[None].to(device), mask.to(device)).logits[0, :-1].float().cpu()  # (L-1, V)
    log2p = F.log_softmax(logits, -1)[:, base_ids].double() / math.log(2)  # (L-1, 4) p(base at t+1)
    site = torch.full((hi - lo, 4), math.nan, dtype=torch.float64)
    first = max(lo, 1)
    rows = log2p[first - 1:hi - 1]  # predicts positions first..hi-1
    ref = rows.gather(-1, ref_col[first - lo:, None])
    site[first - lo:] = torch.where(is_base[first - lo:, None], rows - ref, math.nan)
    return effects.float().numpy(), site.float().numpy()


def _network_outputs(task, task_kind: str, position: int | None):
    """rows (B, L) -> what a fine-tuned network's ISM differences (B, K): the class logits
    (multiclass), the label logits (multilabel), the predicted targets in their own units
    (regression), or every element's logit at base ``position`` (segmentation)."""

    def forward(rows):
        mask = torch.ones_like(rows, dtype=torch.bool)
        if task_kind == "segmentation":
            return task.classifier(rows, mask).logits[:, position].double()  # (B, E) at the chosen base
        out = task.logits(rows, mask)
        return (task.objective.predictions(out) if task_kind == "regression" else out).double()

    return forward


def _classifier_effects(forward, ids: torch.Tensor, base_ids: torch.Tensor, outputs: int, batch_size: int, device):
    """Effects (L, 4, K) on a fine-tuned network's outputs (``forward``: :func:`_network_outputs`)
    of every substitution of ``ids`` (L,)."""
    pos, col, _, is_base = _mutants(ids, 0, len(ids), base_ids)
    effects = torch.full((len(ids), 4, outputs), math.nan, dtype=torch.float64)
    effects[is_base] = 0.0
    with torch.inference_mode():
        for part, delta in _forward_rows(forward, ids, pos, base_ids[col], batch_size, device):
            effects[pos[part], col[part]] = delta
    return effects.float().numpy()


def _chosen_output(names: list[str], target: str | None, task_kind: str) -> str:
    """The output ``effects`` holds: ``target``; by default the last class of a multiclass
    classifier (the positive one of a binary set), the only output of any other network."""
    if target is None:
        if task_kind == "multiclass" or len(names) == 1:
            return names[-1]
        what = {"multilabel": "label", "regression": "target", "segmentation": "element"}[task_kind]
        raise ConfigError(f"the checkpoint has {len(names)} outputs ({', '.join(names)}): give --target, the {what} "
                          "whose change 'effects' holds (effects_by_class holds them all)")
    if target not in names:
        raise ConfigError(f"--target {target!r}: the checkpoint's outputs are {names}")
    return target


def ism(
    sequences,
    model=None,
    scorer="lm",
    *,
    ids: list[str] | None = None,
    target: str | None = None,
    position: int | None = None,
    window: int | None = DEFAULT_WINDOW,
    stride: int | None = None,
    downstream: int | None = None,
    batch_size: int = 64,
    device=None,
    progress: bool = False,
    context: list[int] | None = None,
    trailing: list[int] | None = None,
    _resume_at: tuple[Path, str] | None = None,
    _wheres: list[str] | None = None,
) -> ISMResult:
    """ISM maps of ``sequences`` (strings, or a dict id -> string).

    Args:
        model: the language model (``scorer="lm"``): an :class:`~hnet_dna.model.HNetForCausalLM`,
            anything ``--model`` takes, or None for the default model.
        scorer: ``"lm"``, or a fine-tuned network: a task of :mod:`hnet_dna.tasks` (multiclass,
            multilabel, regression or per-base segmentation) or the path of its checkpoint.
        target: the output ``effects`` holds: a multiclass classifier's class (its logit; default
            the last class), a multilabel network's label (its logit), a regression network's
            target (the prediction in the target's units), a segmentation network's element (its
            logit at ``position``); required where a non-multiclass network has several outputs.
        position: a segmentation network's base (0-based, in every sequence) whose outputs change.
        window, stride: windows of a language model over long sequences (None: whole sequences).
        downstream: a language model's effect of a substitution sums the likelihood change of the
            substituted base and of this many bases after it, never more, so that every base gets
            the same downstream span (fewer only near the sequence's end): default
            ``(window - stride) // 2``, or every base to the sequence's end with ``window=None``.
            Each window owns the bases that have this many after them in it.
        batch_size: mutants per forward pass. device: default the model's own device.
        context, trailing: per sequence, bases at its start (its end) that are read as context
            only: not mutated, and left out of the result (a language model; ``--region`` reads the
            genome around the region so that its first bases have left context and its last
            bases the same ``downstream`` span as the others).
    """
    if isinstance(sequences, dict):
        ids, sequences = list(sequences), list(sequences.values())
    elif isinstance(sequences, str):
        sequences = [sequences]
    ids = list(ids) if ids is not None else [f"seq{i + 1}" for i in range(len(sequences))]
    if len(ids) != len(sequences):
        raise ConfigError(f"{len(ids)} ids for {len(sequences)} sequences")
    check_windows(window, stride, batch_size)
    downstream_given = downstream is not None
    downstream = lm_downstream(window, stride, downstream)
    wheres = _wheres or [f"sequence {i!r}" for i in ids]  # the command passes "FILE, record 'x'"
    records = [InputSequence(i, s, w) for i, s, w in zip(ids, sequences, wheres)]
    if isinstance(scorer, str) and scorer == "lm":
        lm = model if isinstance(model, torch.nn.Module) else load_model(model)
        lm.eval()
        encoded = encode_sequences(records, lm.tokenizer)
        net, kind = lm, "lm"
        if lm.config.bidirectional:
            if downstream_given:
                raise ConfigError("--downstream sets a causal model's span; a masked LM scores each substitution "
                                  "at its own masked site")
            return _masked_lm_ism(lm, ids, records, encoded, window, batch_size, device, progress, context, trailing)
    else:
        from ..tasks.finetune import load_classifier

        task = load_classifier(scorer) if isinstance(scorer, (str, Path)) else scorer
        task.eval()
        task_kind = getattr(task, "task", "multiclass")
        tokenizer = task.classifier.tokenizer if task_kind == "segmentation" else NucleotideTokenizer()
        encoded = encode_sequences(records, tokenizer)
        limit = getattr(task.classifier, "max_length", None)
        for r, x in zip(records, encoded):
            if limit and len(x) > limit:
                raise DataError(f"{r.where}: {len(x):,} bases, longer than the classifier reads ({limit:,}, its "
                                "max_length); cut the sequence to the length it was fine-tuned on")
        _check_position(position, task_kind, records, encoded)
        names = list(task.classifier.class_names)
        target = _chosen_output(names, target, task_kind)
        outputs = _network_outputs(task, task_kind, position)
        base_ids = torch.tensor(tokenizer.base_ids)
        net, kind, window = task, "classifier", None
    _resume = ResumableParts(*_resume_at) if _resume_at is not None else None  # (output, fingerprint)
    device = next(net.parameters()).device if device is None else choose_device(device) if isinstance(device, str) else device
    net.to(device)
    context = context or [0] * len(encoded)
    trailing = trailing or [0] * len(encoded)
    if kind == "classifier" and (any(context) or any(trailing)):
        raise ConfigError("context bases are for a language model; a classifier reads its sequence whole")
    units = []  # (sequence, window, its first and last + 1 base mutated)
    for i, x in enumerate(encoded):
        for t in tiles(len(x), window, stride, trail=downstream if kind == "lm" and window else 0):
            lo, hi = max(t.own_start, context[i]), min(t.own_end, len(x) - trailing[i])
            if hi > lo:
                units.append((i, t, lo, hi))
    effects = [np.zeros((len(x), 4), np.float32) for x in encoded]
    site = [np.zeros((len(x), 4), np.float32) for x in encoded] if kind == "lm" else None
    by_class = [None] * len(encoded)
    bar = Progress(len(units), sum(3 * (hi - lo) for _, _, lo, hi in units), "ism", enabled=progress, unit="window")
    for u, (i, t, lo, hi) in enumerate(units):
        if _resume is not None and u in _resume:
            part = _resume.load(u)
        elif kind == "lm":
            e, s = _lm_effects(net, encoded[i][t.start:t.end], lo - t.start, hi - t.start, batch_size, device,
                               downstream)
            part = {"effects": e, "site": s}
        else:
            part = {"by_class": _classifier_effects(outputs, encoded[i], base_ids, len(names), batch_size, device)}
        if _resume is not None and u not in _resume:
            _resume.save(u, part)
        if kind == "lm":
            effects[i][lo:hi], site[i][lo:hi] = part["effects"], part["site"]
        else:
            by_class[i] = part["by_class"]
            effects[i] = by_class[i][..., names.index(target)]
        bar.update(1, 3 * (hi - lo))
    bar.close()
    keep = [slice(context[i], len(x) - trailing[i]) for i, x in enumerate(encoded)]  # context bases left out
    result = ISMResult(ids, [r.sequence[k] for r, k in zip(records, keep)], [e[k] for e, k in zip(effects, keep)],
                       kind, site_effects=[x[k] for x, k in zip(site, keep)] if site is not None else None)
    if kind == "classifier":
        result.effects_by_class, result.class_names, result.target = by_class, names, target
        result.scorer = "classifier" if task_kind == "multiclass" else task_kind
        result.position = position
    return result


def _check_position(position: int | None, task_kind: str, records, encoded) -> None:
    """A per-base network's effects are on its output at one base, inside every sequence."""
    if task_kind != "segmentation":
        if position is not None:
            raise ConfigError("--position chooses the base of a per-base (segmentation) network's output; this "
                              f"checkpoint is a {task_kind} network with one output per sequence")
        return
    if position is None:
        raise ConfigError("a per-base (segmentation) checkpoint has an output at every base: give --position, the "
                          "base whose element logits the effects are on")
    for r, x in zip(records, encoded):
        if not 0 <= position < len(x):
            raise DataError(f"{r.where}: {len(x):,} bases, so no base at --position {position + 1:,} (1-based)")



def _masked_lm_ism(lm, ids, records, encoded, window, batch_size, device, progress, context, trailing) -> ISMResult:
    """ISM under a masked LM: each base hidden once behind ``<mask>`` (in a window centred on it), and
    every substitution's effect its masked marginal ``log2 p(alt) - log2 p(ref)`` there (Meier et al.
    2021); ``effects`` and ``site_effects`` are the same array. One forward pass per base."""
    from ..inference.masked_score import base_columns, masked_base_log2_probs

    device = next(lm.parameters()).device if device is None else choose_device(device) if isinstance(device, str) else device
    probs = masked_base_log2_probs(lm, encoded, window=window, batch_size=batch_size, device=device, progress=progress)
    effects = []
    for x, p in zip(encoded, probs):
        e = p - p.gather(1, base_columns(lm.tokenizer, x)[:, None])  # NaN rows (N) stay NaN
        effects.append(e.float().numpy())
    context = context or [0] * len(encoded)
    trailing = trailing or [0] * len(encoded)
    keep = [slice(context[i], len(x) - trailing[i]) for i, x in enumerate(encoded)]
    kept = [e[k] for e, k in zip(effects, keep)]
    return ISMResult(ids, [r.sequence[k] for r, k in zip(records, keep)], kept, "masked_lm",
                     site_effects=[e.copy() for e in kept])
