"""``python -m hnet_dna.ism``: in-silico mutagenesis (ISM) maps: every single-base substitution of
each input sequence, scored by a language model or by a fine-tuned classifier.

::

    python -m hnet_dna.ism --input seqs.fa --output ism.npz                        # the default model
    python -m hnet_dna.ism --input promoters.csv --ckpt_path runs/x/best.ckpt --output ism.npz
    python -m hnet_dna.ism --fasta hg19.fa --region 20:1,000,001-1,000,400 --output ism.npz  # + ism.bw

Scorers:

* **language model** (``--model``, default the shipped model): the change in the log2 likelihood
  (bits) of the window when one base is substituted: ``effects[i, p, b] = LL(window with base b at
  p) - LL(window)``, the sum running over every scored base of the window (as ``score`` scores it),
  so a substitution counts through its own base and through every base after it. Also
  ``site_effects[i, p, b] = log2 p(b | bases before p) - log2 p(ref | bases before p)``, the
  zero-shot single-site score GPN-style models use (one forward pass per window; NaN at a window's
  first base, which has no context). Sequences longer than ``--window`` are read in windows as in
  ``score`` (each base mutated and scored in the earliest window holding it).
* **classifier** (``--ckpt_path``, a checkpoint written by fine-tuning): the change in each
  class's logit, ``effects_by_class[i, p, b, c]``; ``effects`` is the ``--target`` class's
  (default: the last class, the positive one of a binary set). A classifier reads a sequence whole.

Output ``OUT.npz`` (``numpy.load(path, allow_pickle=False)``), N sequences in input order, L the
longest: ``ids`` (N,), ``sequences`` (N,), ``lengths`` (N,), ``bases`` ``"ACGT"`` (the order of the
last axis), ``effects`` (N, L, 4) float32 with the reference base's entry 0, NaN past a sequence's
end and at a reference that is not A/C/G/T; ``importance`` (N, L): the mean absolute effect of the
three substitutions; ``scorer`` (``"lm"`` or ``"classifier"``); with a classifier also
``effects_by_class`` (N, L, 4, C), ``class_names`` and ``target``; with a language model
``site_effects``. ``OUT.png`` draws, for the first ``--plot`` sequences (or the ids given), the
importance track, the effect heatmap and the reference below. ``--region`` reads up to
``window - stride`` bases before the region as left context (as ``score`` does; they are not
mutated) and also writes ``OUT.bw``, a bigWig of the per-base importance on the genome's
coordinates.

Cost: 3 substitutions per base, each a forward pass over its window (a language model) or the whole
sequence (a classifier); all substitutions of a window go through the model in batches of
``--batch-size`` rows (plus the unmutated window in each batch, so that every difference is taken
between rows of one forward pass). Memory is that of ``score`` at ``--batch-size`` windows. A killed
run continues where it stopped when rerun with the same arguments (``OUT.npz.parts/``).

In Python: ``hnet_dna.ism(sequences, model=None, scorer="lm")`` (or ``scorer=`` a classifier task or
its checkpoint path) returns an :class:`ISMResult`.
"""

from __future__ import annotations

import argparse
import math
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .commands import (
    InputSequence,
    Progress,
    ResumableParts,
    atomic_path,
    check_output,
    check_windows,
    window_help,
    choose_device,
    encode_sequences,
    exit_on_user_error,
    fingerprint,
    read_sequences,
    resolve_region,
    tiles,
    write_bigwig,
)
from .config import ConfigError
from .data.genome import DataError, open_fasta
from .model.loading import load_model
from .tokenizer import NucleotideTokenizer

__all__ = ["ism", "ISMResult", "main"]

BASES = "ACGT"
DEFAULT_WINDOW = 512


@dataclass
class ISMResult:
    """Effects of every single-base substitution (module docstring), per sequence."""

    ids: list[str]
    sequences: list[str]
    effects: list[np.ndarray]  # per sequence (L, 4): the reference's entry 0, NaN at a non-ACGT reference
    scorer: str  # "lm" or "classifier"
    site_effects: list[np.ndarray] | None = None  # language model: (L, 4)
    effects_by_class: list[np.ndarray] | None = None  # classifier: (L, 4, C)
    class_names: list[str] | None = None
    target: str | None = None

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
        return out


# ------------------------------------------------------------------------------------ scoring
def _mutants(ids: torch.Tensor, lo: int, hi: int, base_ids: torch.Tensor):
    """Every substitution of bases ``lo..hi-1`` of ``ids`` (L,): positions (M,), base columns (M,)
    (0..3 = A, C, G, T); a reference that is not a base is not mutated."""
    ref_col = (ids[lo:hi, None] == base_ids[None, :])  # (n, 4)
    is_base = ref_col.any(-1)
    pos, col = torch.nonzero(is_base[:, None] & ~ref_col, as_tuple=True)
    return pos + lo, col, ref_col.float().argmax(-1), is_base


def _log2_likelihood(logits: torch.Tensor, ids: torch.Tensor, base_ids: torch.Tensor) -> torch.Tensor:
    """Log2 likelihood (B,) of each row of ``ids`` (B, L): every base after the first whose target
    is A/C/G/T, as ``score`` counts it."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, L-1, V) predicts positions 1..
    targets = ids[:, 1:]
    picked = logp.gather(-1, targets[..., None])[..., 0].double()
    return (picked * torch.isin(targets, base_ids)).sum(-1) / math.log(2)


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


def _lm_effects(model, ids: torch.Tensor, lo: int, hi: int, batch_size: int, device):
    """Effects (hi-lo, 4) and site effects (hi-lo, 4) of the substitutions of bases lo..hi-1 of the
    window ``ids`` (L,), under a causal language model."""
    base_ids = torch.tensor(model.tokenizer.base_ids)
    pos, col, ref_col, is_base = _mutants(ids, lo, hi, base_ids)
    effects = torch.full((hi - lo, 4), math.nan, dtype=torch.float64)
    effects[is_base] = 0.0
    mask = torch.ones(1, len(ids), dtype=torch.bool)

    def forward(rows):
        logits = model(rows, mask.expand(len(rows), -1).to(rows.device)).logits
        return _log2_likelihood(logits, rows, base_ids.to(rows.device))

    with torch.inference_mode():
        for part, delta in _forward_rows(forward, ids, pos, base_ids[col], batch_size, device):
            effects[pos[part] - lo, col[part]] = delta
        logits = model(ids[None].to(device), mask.to(device)).logits[0, :-1].float().cpu()  # (L-1, V)
    log2p = F.log_softmax(logits, -1)[:, base_ids].double() / math.log(2)  # (L-1, 4) p(base at t+1)
    site = torch.full((hi - lo, 4), math.nan, dtype=torch.float64)
    first = max(lo, 1)
    rows = log2p[first - 1:hi - 1]  # predicts positions first..hi-1
    ref = rows.gather(-1, ref_col[first - lo:, None])
    site[first - lo:] = torch.where(is_base[first - lo:, None], rows - ref, math.nan)
    return effects.float().numpy(), site.float().numpy()


def _classifier_effects(task, ids: torch.Tensor, batch_size: int, device):
    """Effects (L, 4, C) on the class logits of every substitution of ``ids`` (L,) (nucleotide
    table), under a fine-tuned classifier."""
    base_ids = torch.arange(4)
    pos, col, _, is_base = _mutants(ids, 0, len(ids), base_ids)
    classes = len(task.classifier.class_names)
    effects = torch.full((len(ids), 4, classes), math.nan, dtype=torch.float64)
    effects[is_base] = 0.0
    mask = torch.ones(1, len(ids), dtype=torch.bool)

    def forward(rows):
        return task.logits(rows, mask.expand(len(rows), -1).to(rows.device)).double()

    with torch.inference_mode():
        for part, delta in _forward_rows(forward, ids, pos, col, batch_size, device):
            effects[pos[part], col[part]] = delta
    return effects.float().numpy()


def ism(
    sequences,
    model=None,
    scorer="lm",
    *,
    ids: list[str] | None = None,
    target: str | None = None,
    window: int | None = DEFAULT_WINDOW,
    stride: int | None = None,
    batch_size: int = 64,
    device=None,
    progress: bool = False,
    context: list[int] | None = None,
    _resume_at: tuple[Path, str] | None = None,
    _wheres: list[str] | None = None,
) -> ISMResult:
    """ISM maps of ``sequences`` (strings, or a dict id -> string).

    Args:
        model: the language model (``scorer="lm"``): an :class:`~hnet_dna.model.HNetForCausalLM`,
            anything ``--model`` takes, or None for the default model.
        scorer: ``"lm"``, or a fine-tuned classifier: a task of :mod:`hnet_dna.tasks.finetune` or
            the path of its checkpoint.
        target: the class whose logit ``effects`` holds (a classifier; default the last class).
        window, stride: windows of a language model over long sequences (None: whole sequences).
        batch_size: mutants per forward pass. device: default the model's own device.
        context: per sequence, bases at its start that are read as left context only: not
            mutated, and left out of the result (a language model; what ``--region`` uses).
    """
    if isinstance(sequences, dict):
        ids, sequences = list(sequences), list(sequences.values())
    elif isinstance(sequences, str):
        sequences = [sequences]
    ids = list(ids) if ids is not None else [f"seq{i + 1}" for i in range(len(sequences))]
    if len(ids) != len(sequences):
        raise ConfigError(f"{len(ids)} ids for {len(sequences)} sequences")
    check_windows(window, stride, batch_size)
    wheres = _wheres or [f"sequence {i!r}" for i in ids]  # the command passes "FILE, record 'x'"
    records = [InputSequence(i, s, w) for i, s, w in zip(ids, sequences, wheres)]
    if isinstance(scorer, str) and scorer == "lm":
        lm = model if isinstance(model, torch.nn.Module) else load_model(model)
        lm.eval()
        encoded = encode_sequences(records, lm.tokenizer)
        net, kind = lm, "lm"
    else:
        from .tasks.finetune import ClassifierTask, load_classifier

        task = scorer if isinstance(scorer, ClassifierTask) else load_classifier(scorer)
        task.eval()
        encoded = encode_sequences(records, NucleotideTokenizer())
        limit = getattr(task.classifier, "max_length", None)
        for r, x in zip(records, encoded):
            if limit and len(x) > limit:
                raise DataError(f"{r.where}: {len(x):,} bases, longer than the classifier reads ({limit:,}, its "
                                "max_length); cut the sequence to the length it was fine-tuned on")
        names = list(task.classifier.class_names)
        target = names[-1] if target is None else target
        if target not in names:
            raise ConfigError(f"--target {target!r}: the classifier's classes are {names}")
        net, kind, window = task, "classifier", None
    _resume = ResumableParts(*_resume_at) if _resume_at is not None else None  # (output, fingerprint)
    device = next(net.parameters()).device if device is None else choose_device(device) if isinstance(device, str) else device
    net.to(device)
    context = context or [0] * len(encoded)
    if kind == "classifier" and any(context):
        raise ConfigError("context bases are for a language model; a classifier reads its sequence whole")
    units = [(i, t, max(t.own_start, context[i])) for i, x in enumerate(encoded) for t in tiles(len(x), window, stride)
             if t.own_end > context[i]]  # (sequence, window, its first base mutated)
    effects = [np.zeros((len(x), 4), np.float32) for x in encoded]
    site = [np.zeros((len(x), 4), np.float32) for x in encoded] if kind == "lm" else None
    by_class = [None] * len(encoded)
    bar = Progress(len(units), sum(3 * (t.own_end - lo) for _, t, lo in units), "ism", enabled=progress,
                   unit="window")
    for u, (i, t, lo) in enumerate(units):
        if _resume is not None and u in _resume:
            part = _resume.load(u)
        elif kind == "lm":
            e, s = _lm_effects(net, encoded[i][t.start:t.end], lo - t.start, t.own_end - t.start, batch_size, device)
            part = {"effects": e, "site": s}
        else:
            part = {"by_class": _classifier_effects(net, encoded[i], batch_size, device)}
        if _resume is not None and u not in _resume:
            _resume.save(u, part)
        if kind == "lm":
            effects[i][lo:t.own_end], site[i][lo:t.own_end] = part["effects"], part["site"]
        else:
            by_class[i] = part["by_class"]
            effects[i] = by_class[i][..., names.index(target)]
        bar.update(1, 3 * (t.own_end - lo))
    bar.close()
    c = context
    result = ISMResult(ids, [r.sequence[c[i]:] for i, r in enumerate(records)], [e[c[i]:] for i, e in enumerate(effects)],
                       kind, site_effects=[x[c[i]:] for i, x in enumerate(site)] if site is not None else None)
    if kind == "classifier":
        result.effects_by_class, result.class_names, result.target = by_class, names, target
    return result


# ------------------------------------------------------------------------------------- plot
def plot(result: ISMResult, path: Path, which: list[int], offset: int = 0, xlabel: str = "position (0-based)") -> None:
    """Per chosen sequence: the importance track, the effect heatmap (rows A, C, G, T) and the
    reference below (letters when they fit); positions drawn from ``offset``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 * len(which), 1, figsize=(12, 3.2 * len(which)), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": [1, 1.4] * len(which)})
    what = ("change in log2 likelihood (bits)" if result.scorer == "lm"
            else f"change in the {result.target!r} logit")
    for k, i in enumerate(which):
        seq, e, imp = result.sequences[i], result.effects[i], result.importance(i)
        x = np.arange(len(seq)) + offset
        top, heat = axes[2 * k, 0], axes[2 * k + 1, 0]
        top.bar(x, np.nan_to_num(imp), width=1.0, color="0.3")
        top.set_xlim(x[0] - 0.5, x[-1] + 0.5)
        top.set_ylabel("importance")
        top.set_title(f"{result.ids[i]} ({len(seq):,} bases): {what}", fontsize=9, loc="left")
        top.tick_params(labelbottom=False)
        bound = float(np.nanmax(np.abs(e))) if np.isfinite(e).any() else 1.0
        im = heat.imshow(e.T, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest",
                         extent=(x[0] - 0.5, x[-1] + 0.5, 3.5, -0.5))
        heat.set_yticks(range(4), list(BASES))
        if len(seq) <= 120:  # the reference, letter by letter
            heat.set_xticks(x, list(seq.upper()), fontsize=7, family="monospace")
        else:
            heat.set_xlabel(xlabel)
        fig.colorbar(im, ax=[top, heat], fraction=0.02, pad=0.01, label="effect")  # one for both: x stays aligned
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------- command
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hnet_dna.ism", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2].split("\n\nIn Python")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", help="sequences: FASTA, CSV/TSV, or BED (with --fasta)")
    what.add_argument("--region", help="CHROM:START-END (1-based, inclusive) of --fasta; also writes OUT.bw")
    p.add_argument("--output", required=True, help="OUT.npz (OUT.png beside it, and OUT.bw with --region)")
    p.add_argument("--fasta", default=None, help="the reference genome (BED input, --region)")
    scorer = p.add_mutually_exclusive_group()
    scorer.add_argument("--model", default=None,
                        help="language model: preset, save_pretrained folder, or pretraining .ckpt (default: the shipped model)")
    scorer.add_argument("--ckpt_path", "--ckpt-path", default=None, help="a fine-tuned classifier's checkpoint")
    p.add_argument("--target", default=None, help="classifier: the class whose logit 'effects' holds (default: the last)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=window_help(DEFAULT_WINDOW, 65, "language model: read longer sequences in windows of this many bases"))
    p.add_argument("--stride", type=int, default=None, help="bases between window starts (default window/2)")
    p.add_argument("--batch-size", type=int, default=64, help="mutants per forward pass (default 64)")
    p.add_argument("--plot", default="3", help="sequences drawn in OUT.png: a count (default 3; 0 = no plot) or ids, comma-separated")
    p.add_argument("--device", default="auto")
    p.add_argument("--sequence-column", "--sequence_column", default=None)
    p.add_argument("--id-column", "--id_column", default=None)
    p.add_argument("--index-dir", default=None, help="where to keep a FASTA index if its folder is read-only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _chosen(plot_arg: str, ids: list[str]) -> list[int]:
    if plot_arg.strip().isdigit():
        return list(range(min(int(plot_arg), len(ids))))
    wanted = [w.strip() for w in plot_arg.split(",") if w.strip()]
    missing = [w for w in wanted if w not in ids]
    if missing:
        raise DataError(f"--plot: no sequence with id {', '.join(map(repr, missing[:3]))} in the input")
    return [ids.index(w) for w in wanted]


def run(args: argparse.Namespace) -> None:
    check_windows(args.window, args.stride, args.batch_size)
    output = check_output(args.output, (".npz",))
    if args.target is not None and args.ckpt_path is None:
        raise ConfigError("--target chooses a classifier's class; it needs --ckpt_path")
    region = None
    if args.region is not None:
        if args.fasta is None:
            raise DataError("--region needs --fasta")
        genome = open_fasta(args.fasta, index_dir=args.index_dir)
        chrom, record, start, end = resolve_region(genome, args.region)
        region = (chrom, genome.records[record], start)
        # read with left context, as score's --region, so that the region's first bases have some too
        stride = args.stride or args.window // 2
        skip = min(start, args.window - stride) if args.ckpt_path is None else 0
        records = [InputSequence(f"{chrom}:{start + 1}-{end}", genome.fetch(record, start - skip, end),
                                 f"{genome.path}, {record}")]
    else:
        records = read_sequences(args.input, fasta=args.fasta, sequence_column=args.sequence_column,
                                 id_column=args.id_column, index_dir=args.index_dir)
    ids = [r.id for r in records]
    which = _chosen(args.plot, ids)
    context = [skip] if region is not None else None
    if args.ckpt_path is not None:
        from .tasks.finetune import load_classifier

        net = scorer = load_classifier(args.ckpt_path)
        model = None
    else:
        model = net = load_model(args.model, warn_untrained=True)
        scorer = "lm"
    device = choose_device(args.device)
    options = {"scorer": "lm" if model is not None else "classifier", "target": args.target, "window": args.window,
               "stride": args.stride, "batch_size": args.batch_size}
    key = fingerprint([(r.id, r.sequence) for r in records], net, options)
    result = ism([r.sequence for r in records], model, scorer, ids=ids, target=args.target, window=args.window,
                 stride=args.stride, batch_size=args.batch_size, device=device, progress=not args.quiet,
                 context=context, _resume_at=(output, key), _wheres=[r.where for r in records])
    with atomic_path(output) as tmp, open(tmp, "wb") as f:
        np.savez(f, **result.arrays())
    written = [output]
    if which:
        png = output.with_suffix(".png")
        plot(result, png, which, **({"offset": region[2] + 1, "xlabel": f"{region[0]} (1-based)"} if region else {}))
        written.append(png)
    if region is not None:
        chrom, chrom_length, start = region
        importance = result.importance(0)
        keep = np.flatnonzero(~np.isnan(importance))
        bw = output.with_suffix(".bw")
        write_bigwig(bw, chrom, chrom_length, start + keep, importance[keep])
        written.append(bw)
    ResumableParts.discard(output)
    mutants = sum(3 * int(np.isfinite(e[:, 0]).sum()) for e in result.effects)
    print(f"hnet_dna.ism: {len(records):,} sequences, {mutants:,} substitutions scored by the "
          f"{'language model' if result.scorer == 'lm' else 'classifier'} -> {', '.join(map(str, written))}")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    exit_on_user_error(lambda: run(args), prog="hnet_dna.ism")


class _CallableModule(types.ModuleType):
    """``hnet_dna.ism(...)`` calls :func:`ism` while ``python -m hnet_dna.ism`` runs the command:
    the module and the function share the name the issue gives them."""

    def __call__(self, *args, **kwargs):
        return ism(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    from . import backends

    backends.keep_freed_memory()  # long inputs: large activations are not page-faulted afresh per batch
    main()
