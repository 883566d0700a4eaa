"""Chunk lengths by where chunks start: in homopolymer runs, short tandem repeats and annotated
intervals, against the region's (the repeat trap of the official model: one chunk per base of a
long homopolymer)."""

from __future__ import annotations

import re

import numpy as np

__all__ = ["repeat_intervals", "chunk_length_stats"]

def repeat_intervals(letters: str, offset: int = 0, *, min_homopolymer: int = 8, min_str: int = 12) -> dict:
    """Homopolymer runs (one base repeated >= ``min_homopolymer`` times) and short tandem repeats
    (a 2-6 base unit, not itself one base repeated, >= 3 copies and >= ``min_str`` bases) of
    ``letters``, as (n, 2) arrays of half-open intervals at ``offset + position``."""

    upper = letters.upper()
    found = {"homopolymer": [m.span() for m in re.finditer(rf"([ACGT])\1{{{min_homopolymer - 1},}}", upper)]}
    strs = []
    for unit in range(2, 7):
        for m in re.finditer(rf"([ACGT]{{{unit}}})\1{{2,}}", upper):
            if len(set(m.group(1))) > 1 and m.end() - m.start() >= min_str:
                strs.append(m.span())
    merged = []  # a repeat of "CA" is also one of "CACA": one interval per stretch
    for a, b in sorted(strs):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    found["tandem_repeat"] = merged
    return {k: np.asarray(v, dtype=np.int64).reshape(-1, 2) + offset for k, v in found.items()}


def chunk_length_stats(starts: np.ndarray, start: int, end: int, classes: dict, valid: np.ndarray | None = None) -> list[dict]:
    """Chunks by where they start: for each class of intervals (name -> (n, 2) genome intervals;
    ``features`` counts those in the region) and for the whole region, the bases covered, the chunks starting there, bases per chunk, their
    mean length and the fraction of one-base chunks."""
    length = end - start
    valid = np.ones(length, dtype=bool) if valid is None else valid
    local = np.sort(starts - start)
    lengths = np.diff(np.append(local, length))  # (C,) each chunk's length, the last clipped to the region
    rows = []
    for name, intervals in {"region": np.array([[start, end]]), **classes}.items():
        inside = np.zeros(length, dtype=bool)
        intervals = np.asarray(intervals).reshape(-1, 2)
        intervals = intervals[(intervals[:, 1] > start) & (intervals[:, 0] < end)]  # those in the region
        for a, b in intervals:
            inside[max(a - start, 0):min(b - start, length)] = True
        inside &= valid
        chosen = lengths[inside[local]]
        bases = int(inside.sum())
        rows.append({"class": name, "features": int(len(intervals)), "bases": bases, "chunks": int(len(chosen)),
                     "bases_per_chunk": bases / len(chosen) if len(chosen) else float("nan"),
                     "mean_chunk_length": float(chosen.mean()) if len(chosen) else float("nan"),
                     "one_base_chunks": float((chosen == 1).mean()) if len(chosen) else float("nan")})
    overall = rows[0]["bases_per_chunk"]
    for r in rows:
        r["vs_region"] = r["bases_per_chunk"] / overall if overall == overall and overall > 0 else float("nan")
    return rows

