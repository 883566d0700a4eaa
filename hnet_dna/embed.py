"""``python -m hnet_dna.embed``: embeddings of DNA sequences from a pretrained model.

``--help`` says what it reads and writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .inference.embed import DEFAULT_WINDOW, embed_sequences
from .inference.tiling import window_help
from .io import read_sequences
from .model.loading import load_model
from .model.pooling import FROZEN_POOLINGS
from .runs import ResumableParts, atomic_path, check_output, exit_on_user_error, fingerprint

HELP = """::

    python -m hnet_dna.embed --input seqs.fa --output seqs.npz                  # the default model
    python -m hnet_dna.embed --input peaks.bed --fasta hg19.fa --output peaks.npz --model runs/x/pretrained
    python -m hnet_dna.embed --input set.tsv --output set.npz --pooling chunks --rc-average --boundaries

Inputs: FASTA, CSV/TSV, Parquet/Arrow or BED + ``--fasta`` (see :mod:`hnet_dna.io`). The output ``.npz``
opens with ``numpy.load(path, allow_pickle=False)`` and holds, for N sequences in input order:

* ``ids`` (N,) unicode; ``lengths`` (N,) bases;
* pooled modes (:mod:`hnet_dna.model.pooling`): ``embeddings`` (N, D) float32. ``mean``: the mean of
  the backbone's output over the sequence's bases (D = the outer width); ``chunks``: the mean of the
  innermost chunking level's chunk states, before dechunking (D = the inner width; H-Nets only);
  ``last``: the output at the sequence's last base;
* ``--pooling flatten`` (or its older name ``none``): every position, ``position_embeddings`` (sum of lengths, D) and ``position_offsets`` (N+1,):
  sequence i is rows ``position_offsets[i]:position_offsets[i+1]``;
* ``--boundaries``: per chunking level s (0 = outermost), ``boundaries_<s>`` (flat, int64) and
  ``boundary_offsets_<s>`` (N+1,): the 0-based positions in the input sequence where the level's
  chunks start (the first is always 0).

Sequences longer than ``--window`` (default 4,096; ``None`` in Python reads every sequence whole)
are read in windows every ``--stride`` bases (default half a window); each base's output, and each chunk (by its first base), is taken from the earliest window
holding it, so pooling over a long sequence is pooling over its bases (or chunks) each counted
once; ``--exact-context`` instead reads each sequence once in blocks that continue from the
model's caches, every base's output made with all the bases before it. ``--rc-average`` averages the pooled vectors (or, with ``flatten``, each position's vectors) of
a sequence and of its reverse complement, so a sequence and its reverse complement get the same
embedding; boundaries are always those of the sequence as given.

A killed run continues where it stopped when rerun with the same arguments (finished parts are kept
in ``OUTPUT.parts/``); the output appears only when complete. The Python function is
:func:`hnet_dna.inference.embed.embed_sequences` (also ``hnet_dna.embed_sequences``).
"""  # the --help epilog

__all__ = ["embed_sequences", "main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hnet_dna.embed", description=__doc__.split("\n\n")[0], epilog=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="FASTA, CSV/TSV, Parquet/Arrow, or BED (with --fasta)")
    p.add_argument("--output", required=True, help="the .npz to write")
    p.add_argument("--model", default=None,
                   help="preset, save_pretrained folder, pretraining .ckpt, or a fine-tuned classifier's .ckpt or folder (its "
                        "backbone, adapters merged; default: the shipped tiny chr20 model)")
    p.add_argument("--pooling", default="mean", choices=(*FROZEN_POOLINGS, "none"),
                   help="mean, chunks, last or max: one vector per sequence; flatten (or its older name none): every "
                        "position (position_embeddings); see hnet_dna.model.pooling (default mean)")
    p.add_argument("--rc-average", action="store_true", help="average with the reverse complement")
    p.add_argument("--boundaries", action="store_true", help="also write each level's chunk starts")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help=window_help(DEFAULT_WINDOW, 32))
    p.add_argument("--stride", type=int, default=None, help="bases between window starts (default window/2)")
    p.add_argument("--exact-context", action="store_true",
                   help="read each sequence once from its start in blocks of --window bases that continue from "
                        "the model's caches: every base's output with all the bases before it, as one whole "
                        "read would give it (see score --help for the memory of global attention layers)")
    p.add_argument("--fasta", default=None, help="the genome a BED input is read from")
    p.add_argument("--sequence-column", "--sequence_column", default=None)
    p.add_argument("--id-column", "--id_column", default=None)
    p.add_argument("--index-dir", default=None, help="where to keep a FASTA index if its folder is read-only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _model(spec: str | None):
    """The model to embed with: what ``load_model`` reads, or the fine-tuned backbone of a classifier
    checkpoint (``python -m hnet_dna fit`` / ``hnet_dna.finetune`` with FinetuneModule, any task, or
    a per-base SegmentationModule with an H-Net network), its LoRA adapters merged into the weights. A classifier's ``save_pretrained`` folder (ours or a
    transformers Trainer's) holds its fine-tuned backbone as any folder does: ``load_model`` reads it."""
    if spec is not None and spec.endswith(".ckpt") and Path(spec).is_file():
        from .model.loading import read_lightning_checkpoint

        _, hparams = read_lightning_checkpoint(Path(spec), "--model")
        if hparams.get("class_names") and "backbone" in hparams:
            from .tasks.finetune import load_classifier  # Lightning: only for a classifier

            backbone = getattr(load_classifier(spec, "--model").classifier, "backbone", None)
            if backbone is None:  # a per-base CNN control: convolutions, no language model inside
                from .weights import CheckpointError

                raise CheckpointError(f"--model {spec}: a CNN checkpoint, with no H-Net backbone to embed with; give "
                                      "an H-Net checkpoint (network: hnet) or a language model")
            return backbone
    return load_model(spec, warn_untrained=True)


def run(args: argparse.Namespace) -> None:
    output = check_output(args.output, (".npz",))
    records = read_sequences(args.input, fasta=args.fasta, sequence_column=args.sequence_column,
                             id_column=args.id_column, index_dir=args.index_dir)
    model = _model(args.model)
    options = {k: getattr(args, k) for k in ("pooling", "rc_average", "boundaries", "batch_size", "window", "stride",
                                             "exact_context")}
    key = fingerprint([(r.id, r.sequence) for r in records], model, options)
    arrays = embed_sequences(records, model, device=args.device, progress=not args.quiet, _resume_at=(output, key),
                             **options)
    ids = np.array([r.id for r in records], dtype=f"<U{max(len(r.id) for r in records)}")
    with atomic_path(output) as tmp, open(tmp, "wb") as f:  # a handle: np.savez adds no suffix
        np.savez(f, ids=ids, **arrays)
    ResumableParts.discard(output)
    shape = arrays.get("embeddings", arrays.get("position_embeddings")).shape
    print(f"hnet_dna.embed: {len(records):,} sequences ({int(arrays['lengths'].sum()):,} bases) -> {output} "
          f"({'embeddings' if 'embeddings' in arrays else 'position_embeddings'} {shape})")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    exit_on_user_error(lambda: run(args), prog="hnet_dna.embed")



if __name__ == "__main__":
    from . import backends

    backends.keep_freed_memory()  # long inputs: large activations are not page-faulted afresh per batch
    main()
