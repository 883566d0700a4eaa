"""Per-base annotation from interval files: what a segmentation task learns at every base.

Each element (``exon``, ``cpg``, ...) is one interval file:

* BED (``.bed``, ``.bed.gz``, anything not SAF): ``chrom start end [...]``, 0-based half-open;
  ``#``, ``track`` and ``browser`` lines are skipped. A strand column, when present, is not read:
  an element covers a base whichever strand it is annotated on (the labels of a reverse-complemented
  window are its forward labels reversed).
* SAF (``.saf``, ``.saf.gz``, or a first line ``GeneID Chr Start End Strand``, featureCounts'
  format): ``GeneID Chr Start End Strand``, 1-based inclusive, so ``Start - 1`` .. ``End`` here.

Chromosome names are matched with the FASTA's aliases (``chr20`` = ``20``). An interval on a
chromosome no FASTA holds is an error naming the file and line (annotation for another assembly or
species is the usual cause) unless ``skip_absent`` is set (a genome-wide file over a one-chromosome
FASTA); so is an interval past the end of its chromosome. Overlapping intervals are merged: a base
is in the element or not.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .genome import DataError, FastaSource

__all__ = ["ElementIntervals", "read_annotation", "element_labels"]

SAF_HEADER = ("geneid", "chr", "start", "end")


@dataclass
class ElementIntervals:
    """One element's merged intervals per FASTA record, 0-based half-open."""

    name: str
    path: Path
    intervals: dict[tuple[int, str], np.ndarray]  # (source, record) -> (n, 2) int64, sorted, disjoint

    def coverage(self, source: int, record: str, start: int, end: int) -> np.ndarray:
        """(end - start,) bool: bases of [start, end) inside the element."""
        out = np.zeros(end - start + 1, dtype=np.int32)
        spans = self.intervals.get((source, record))
        if spans is not None and len(spans):
            first = np.searchsorted(spans[:, 1], start, side="right")  # the first interval ending after start
            last = np.searchsorted(spans[:, 0], end, side="left")  # intervals starting before end
            hit = spans[first:last]
            np.add.at(out, np.clip(hit[:, 0], start, end) - start, 1)
            np.add.at(out, np.clip(hit[:, 1], start, end) - start, -1)
        return np.cumsum(out[:-1]) > 0


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if gz else open(path)


def _merge(spans: list[tuple[int, int]]) -> np.ndarray:
    if not spans:
        return np.zeros((0, 2), dtype=np.int64)
    a = np.array(sorted(spans), dtype=np.int64)
    merged = [list(a[0])]
    for s, e in a[1:]:
        if s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return np.array(merged, dtype=np.int64)


def read_annotation(name: str, path: str | Path, sources: list[FastaSource], skip_absent: bool = False) -> ElementIntervals:
    """Read one element's BED or SAF file (see the module docstring) against the FASTA ``sources``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--data.annotation {name}={path}: no such file")
    saf = path.name.lower().removesuffix(".gz").endswith(".saf")
    spans: dict[tuple[int, str], list[tuple[int, int]]] = {}
    resolved: dict[str, tuple[int, str] | None] = {}
    absent: dict[str, int] = {}
    with _open(path) as lines:
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#") or fields[0] in ("track", "browser"):
                continue
            if tuple(f.lower() for f in fields[:4]) == SAF_HEADER:
                saf = True  # featureCounts' header line
                continue
            where = f"{path}, line {number}"
            chrom_at, need = (1, 4) if saf else (0, 3)
            if len(fields) < need:
                layout = "GeneID Chr Start End Strand (SAF)" if saf else "chrom start end (BED)"
                raise DataError(f"{where}: expected {layout}, found {len(fields)} field(s): {line.strip()[:80]!r}")
            try:
                start, end = int(fields[chrom_at + 1]), int(fields[chrom_at + 2])
            except ValueError:
                raise DataError(f"{where}: start and end must be whole numbers, found {fields[chrom_at + 1]!r} and "
                                f"{fields[chrom_at + 2]!r}") from None
            if saf:
                start -= 1  # 1-based inclusive -> 0-based half-open
            if start < 0 or end <= start:
                raise DataError(f"{where}: an interval needs 0 <= start < end ({'1-based SAF' if saf else '0-based BED'}), "
                                f"found {fields[chrom_at + 1]}-{fields[chrom_at + 2]}")
            chrom = fields[chrom_at]
            if chrom not in resolved:
                hits = [(i, rec) for i, s in enumerate(sources) if (rec := s.resolve(chrom)) is not None]
                resolved[chrom] = hits[0] if hits else None
            key = resolved[chrom]
            if key is None:
                if not skip_absent:
                    names = "; ".join(f"{s.path.name}: {s.describe_names()}" for s in sources)
                    raise DataError(f"{where}: the {name} annotation is on chromosome {chrom!r}, which no FASTA holds "
                                    f"(names there: {names}); annotation of another assembly? Pass "
                                    "--data.skip_absent_chromosomes true to leave out chromosomes the FASTA lacks")
                absent[chrom] = absent.get(chrom, 0) + 1
                continue
            length = sources[key[0]].records[key[1]]
            if end > length:
                raise DataError(f"{where}: the {name} interval ends at {end:,}, past the end of {key[1]} "
                                f"({length:,} bases in {sources[key[0]].path.name}): annotation of another assembly?")
            spans.setdefault(key, []).append((start, end))
    if not spans:
        skipped = f" ({sum(absent.values()):,} on chromosomes the FASTA lacks were skipped)" if absent else ""
        raise DataError(f"--data.annotation {name}={path}: no interval on the FASTA's chromosomes{skipped}")
    return ElementIntervals(name, path, {key: _merge(v) for key, v in spans.items()})


def element_labels(elements: list[ElementIntervals], source: int, record: str, start: int, end: int) -> np.ndarray:
    """(end - start, E) uint8: 1 where a base of [start, end) is inside element e."""
    return np.stack([e.coverage(source, record, start, end) for e in elements], axis=1).astype(np.uint8)
