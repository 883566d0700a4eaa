"""Annotate a genome region with a per-base (segmentation) checkpoint: for each element, a bigWig of
its probability at every base and a BED of the bases called inside it (probability >= threshold).

    python -m hnet_dna.annotate --ckpt_path runs/.../best.ckpt --fasta genome.fa \\
        --region 20:60,000,001-60,100,000 --out annotated/chr20_60mb

writes ``OUT.<element>.bw`` and ``OUT.<element>.bed`` (0-based half-open, as BED is). The region is
read in windows of the checkpoint's training length (``--window``), every half window; a base read
by two windows gets the mean of their probabilities, so no base sits at the very edge of the only
window that reads it. N bases get no value (they are never scored in training either).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError
from .data.genome import DataError, open_fasta
from .io import resolve_region, write_bigwig
from .runs import atomic_write_text, exit_on_user_error

__all__ = ["annotate_sequence", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hnet_dna.annotate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="a SegmentationModule checkpoint (python -m hnet_dna fit)")
    parser.add_argument("--fasta", required=True)
    parser.add_argument("--region", required=True, help="CHROM:START-END, 1-based inclusive")
    parser.add_argument("--out", type=Path, required=True, help="prefix of OUT.<element>.bw and OUT.<element>.bed")
    parser.add_argument("--window", type=int, default=None, help="bases per window (default: the checkpoint's training window)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--index_dir", default=None)
    return parser


@torch.no_grad()
def annotate_sequence(module, ids: torch.Tensor, window: int, batch_size: int = 8) -> np.ndarray:
    """(L, E) probabilities of each element at each base of ``ids`` (L,), read in windows of
    ``window`` every ``window // 2`` bases (the mean where two overlap)."""
    length = len(ids)
    window = min(window, length)
    step = max(1, window // 2)
    starts = list(range(0, length - window + 1, step))
    if starts[-1] != length - window:
        starts.append(length - window)
    device = next(module.parameters()).device  # wherever the module is
    total = np.zeros((length, len(module.classifier.class_names)))
    count = np.zeros(length)
    for k in range(0, len(starts), batch_size):
        chunk = starts[k:k + batch_size]
        batch = torch.stack([ids[s:s + window] for s in chunk]).to(device)
        probs = module.classifier(batch, torch.ones_like(batch, dtype=torch.bool)).logits.float().sigmoid().cpu().numpy()
        for s, p in zip(chunk, probs):
            total[s:s + window] += p
            count[s:s + window] += 1
    return total / count[:, None]


def _called_intervals(calls: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], calls.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def run(args) -> list[Path]:
    from .tasks.segmentation import SegmentationModule  # noqa: PLC0415  (Lightning: after the checks)

    if not 0 < args.threshold < 1:
        raise ConfigError(f"--threshold is a probability in (0, 1), got {args.threshold}")
    if not args.out.parent.is_dir():
        raise DataError(f"--out {args.out}: no such folder {args.out.parent}")
    checkpoint = Path(args.ckpt_path)
    if not checkpoint.is_file():
        raise DataError(f"--ckpt_path {checkpoint}: no such file")
    genome = open_fasta(args.fasta, index_dir=args.index_dir)
    chrom, record, start, end = resolve_region(genome, args.region)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if "class_names" not in saved.get("hyper_parameters", {}) or saved.get("hyper_parameters", {}).get("network") is None:
        raise DataError(f"--ckpt_path {checkpoint}: not a per-base (SegmentationModule) checkpoint")
    window = args.window or saved.get("datamodule_hyper_parameters", {}).get("window") or 2048
    module = SegmentationModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    tokenizer = module.classifier.tokenizer
    ids = tokenizer.encode(genome.fetch(record, start, end), record=record)
    probs = annotate_sequence(module, ids, window, args.batch_size)
    keep = np.flatnonzero((ids < tokenizer.n_id).numpy())  # N: no value
    written = []
    for e, element in enumerate(module.classifier.class_names):
        bw = Path(f"{args.out}.{element}.bw")
        write_bigwig(bw, chrom, genome.records[record], start + keep, probs[keep, e])
        calls = np.zeros(len(ids), dtype=bool)
        calls[keep] = probs[keep, e] >= args.threshold
        bed = Path(f"{args.out}.{element}.bed")
        atomic_write_text(bed, "".join(f"{chrom}\t{start + a}\t{start + b}\t{element}\n" for a, b in _called_intervals(calls)))
        written += [bw, bed]
    print(f"hnet_dna.annotate: {chrom}:{start + 1:,}-{end:,} ({len(ids):,} bases, windows of {window:,}) -> "
          f"{', '.join(map(str, written))}")
    return written


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    exit_on_user_error(lambda: run(args), prog="hnet_dna.annotate")


if __name__ == "__main__":
    main()
