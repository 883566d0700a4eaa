"""``python -m hnet_dna.ism``: in-silico mutagenesis (ISM) maps: every single-base substitution of
each input sequence, scored by a language model or by a fine-tuned classifier.

``--help`` says what it reads and writes. In Python: ``hnet_dna.ism(sequences, model=None,
scorer="lm")`` (or ``scorer=`` a classifier task or its checkpoint path) returns an
:class:`~hnet_dna.interpret.ism.ISMResult` (:mod:`hnet_dna.interpret.ism`).
"""

from __future__ import annotations

import argparse
import sys
import types

import numpy as np

from .config import ConfigError
from .data.genome import DataError, open_fasta
from .inference.tiling import check_windows, choose_device, window_help
from .interpret.ism import DEFAULT_WINDOW, ISMResult, ism, lm_downstream
from .interpret.plots import plot_ism
from .io import InputSequence, read_sequences, resolve_region, write_bigwig
from .model.loading import load_model
from .runs import ResumableParts, atomic_path, check_output, exit_on_user_error, fingerprint

HELP = """::

    python -m hnet_dna.ism --input seqs.fa --output ism.npz                        # the default model
    python -m hnet_dna.ism --input promoters.csv --ckpt_path runs/x/best.ckpt --output ism.npz
    python -m hnet_dna.ism --fasta hg19.fa --region 20:1,000,001-1,000,400 --output ism.npz  # + ism.bw

Scorers:

* **language model** (``--model``, default the shipped model): the change in the log2 likelihood
  (bits) when one base is substituted, summed over the substituted base and the D bases after it
  (D = ``--downstream``, default (window - stride) / 2: 128 at the defaults), each scored as
  ``score`` scores it: ``effects[i, p, b] = sum over t = p .. p+D of log2 p(x'_t | x'_<t) - log2
  p(x_t | x_<t)``, x' the sequence with base b at p. Every base gets the same span D (fewer only
  within D bases of the sequence's end), wherever it lies in a window: sequences longer than
  ``--window`` are read in windows every ``--stride`` bases, and each window owns (mutates) the
  ``stride`` bases that have D bases after them in it, so no window end shortens a base's span
  and importance has no period of the stride. Also ``site_effects[i, p, b] = log2 p(b | bases
  before p) - log2 p(ref | bases before p)``, the zero-shot single-site score GPN-style models use
  (one forward pass per window; NaN at a window's first base, which has no context).
* **masked language model** (``--model``, a bidirectional H-Net): each base hidden once behind
  ``<mask>`` in a window of ``--window`` bases centred on it, and ``effects[i, p, b] = log2 p(b) -
  log2 p(ref)`` there, the masked marginal (Meier et al. 2021; ``site_effects`` the same); one forward
  pass per base, ``--downstream`` does not apply; ``scorer`` is ``"masked_lm"``.
* **classifier** (``--ckpt_path``, a checkpoint written by fine-tuning, or a classifier folder): the change in each
  class's logit, ``effects_by_class[i, p, b, c]``; ``effects`` is the ``--target`` class's
  (default: the last class, the positive one of a binary set). A classifier reads a sequence whole.
  The same for the other fine-tuned heads, each output in ``effects_by_class`` and ``--target``
  naming the one ``effects`` holds (needed where there are several): a **multilabel** network's
  label logits; a **regression** network's predictions in the target's own units; a per-base
  **segmentation** network's element logits at the base ``--position`` (1-based in each sequence;
  with ``--region``, the genome coordinate, inside the region), i.e. which bases the call at
  that base rests on.

Output ``OUT.npz`` (``numpy.load(path, allow_pickle=False)``), N sequences in input order, L the
longest: ``ids`` (N,), ``sequences`` (N,), ``lengths`` (N,), ``bases`` ``"ACGT"`` (the order of the
last axis), ``effects`` (N, L, 4) float32 with the reference base's entry 0, NaN past a sequence's
end and at a reference that is not A/C/G/T; ``importance`` (N, L): the mean absolute effect of the
three substitutions; ``scorer`` (``"lm"``, ``"masked_lm"``, ``"classifier"``, ``"multilabel"``,
``"regression"`` or ``"segmentation"``); with a fine-tuned network also ``effects_by_class`` (N, L,
4, C), ``class_names`` and ``target`` (and ``position``, 0-based in the sequence, for segmentation); with a language model
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
"""  # the --help epilog

__all__ = ["ism", "ISMResult", "main"]


# ---------------------------------------------------------------------------------- command
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hnet_dna.ism", description=__doc__.split("\n\n")[0],
                                epilog=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", help="sequences: FASTA, CSV/TSV, Parquet/Arrow, or BED (with --fasta)")
    what.add_argument("--region", help="CHROM:START-END (1-based, inclusive) of --fasta; also writes OUT.bw")
    p.add_argument("--output", required=True, help="OUT.npz (OUT.png beside it, and OUT.bw with --region)")
    p.add_argument("--fasta", default=None, help="the reference genome (BED input, --region)")
    scorer = p.add_mutually_exclusive_group()
    scorer.add_argument("--model", default=None,
                        help="language model: preset, save_pretrained folder, or pretraining .ckpt (default: the shipped model)")
    scorer.add_argument("--ckpt_path", "--ckpt-path", default=None, help="a fine-tuned network (classifier, multilabel, regression or per-base): its .ckpt, or a classifier's save_pretrained folder (classifier.json; also one a transformers Trainer fine-tuned)")
    p.add_argument("--target", default=None, help="fine-tuned network: the class, label, target or element 'effects' "
                                                  "holds (default: a classifier's last class, or the only output)")
    p.add_argument("--position", type=int, default=None,
                   help="segmentation network: the base whose element logits change (1-based in each sequence; "
                        "with --region, the genome coordinate)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=window_help(DEFAULT_WINDOW, 65, "language model: read longer sequences in windows of this many bases",
                                    "window - stride - D to window - D - 1 (D: --downstream)"))
    p.add_argument("--stride", type=int, default=None, help="bases between window starts (default window/2)")
    p.add_argument("--downstream", type=int, default=None,
                   help="language model: an effect sums the substituted base and this many bases after it, for "
                        "every base alike (default (window - stride) / 2; below window - stride)")
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
    if args.position is not None and args.ckpt_path is None:
        raise ConfigError("--position chooses the base of a per-base network's output; it needs --ckpt_path")
    if args.position is not None and args.position < 1:
        raise ConfigError(f"--position is 1-based, got {args.position}")
    if args.downstream is not None and args.ckpt_path is not None:
        raise ConfigError("--downstream sets a language model's span; a classifier reads its sequence whole")
    downstream = lm_downstream(args.window, args.stride, args.downstream) if args.ckpt_path is None else 0
    model = None
    if args.ckpt_path is None:
        model = load_model(args.model, warn_untrained=True, lm_head=True, masked_lm_ok=True)
    masked = model is not None and model.config.bidirectional
    region, after = None, 0
    if args.region is not None:
        if args.fasta is None:
            raise DataError("--region needs --fasta")
        genome = open_fasta(args.fasta, index_dir=args.index_dir)
        chrom, record, start, end = resolve_region(genome, args.region)
        region = (chrom, genome.records[record], start)
        # read with left context, as score's --region, so that the region's first bases have some too,
        # and with the span after it, so that its last bases sum as many bases after them as the others
        stride = args.stride or args.window // 2
        skip = min(start, args.window - stride) if args.ckpt_path is None else 0
        after = min(downstream, genome.records[record] - end)
        if masked:  # each base read with both sides: half a window beyond each edge of the region
            skip, after = min(start, args.window // 2), min(args.window // 2, genome.records[record] - end)
        records = [InputSequence(f"{chrom}:{start + 1}-{end}", genome.fetch(record, start - skip, end + after),
                                 f"{genome.path}, {record}")]
    else:
        records = read_sequences(args.input, fasta=args.fasta, sequence_column=args.sequence_column,
                                 id_column=args.id_column, index_dir=args.index_dir)
    position = None if args.position is None else args.position - 1  # 0-based in each sequence
    if region is not None and position is not None:
        if not start < args.position <= end:
            raise DataError(f"--position {args.position:,} lies outside --region {args.region}")
        position = args.position - 1 - start
    ids = [r.id for r in records]
    which = _chosen(args.plot, ids)
    context = [skip] if region is not None else None
    if args.ckpt_path is not None:
        from .tasks.finetune import load_classifier  # noqa: PLC0415  (Lightning: only for a classifier)

        net = scorer = load_classifier(args.ckpt_path)
        model = None
    else:
        net, scorer = model, "lm"
    device = choose_device(args.device)
    options = {"scorer": "lm" if model is not None else "classifier", "target": args.target, "position": position,
               "window": args.window,
               "stride": args.stride, "downstream": args.downstream, "batch_size": args.batch_size}
    key = fingerprint([(r.id, r.sequence) for r in records], net, options)
    result = ism([r.sequence for r in records], model, scorer, ids=ids, target=args.target, position=position,
                 window=args.window,
                 stride=args.stride, downstream=args.downstream, batch_size=args.batch_size, device=device, progress=not args.quiet,
                 context=context, trailing=[after] if region is not None else None, _resume_at=(output, key),
                 _wheres=[r.where for r in records])
    with atomic_path(output) as tmp, open(tmp, "wb") as f:
        np.savez(f, **result.arrays())
    written = [output]
    if which:
        png = output.with_suffix(".png")
        plot_ism(result, png, which, **({"offset": region[2] + 1, "xlabel": f"{region[0]} (1-based)"} if region else {}))
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
          f"{SCORERS[result.scorer]} -> {', '.join(map(str, written))}")


SCORERS = {"lm": "language model", "masked_lm": "masked language model (masked marginals)", "classifier": "classifier",
           "multilabel": "multilabel network", "regression": "regression network",
           "segmentation": "per-base network"}


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
