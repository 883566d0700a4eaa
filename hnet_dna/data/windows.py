"""Training / validation / test windows over one or more genomes, and the leakage check.

Coordinates:

* BED files are 0-based half-open (``chrom start end split``: the 4-column HyenaDNA / Caduceus
  layout; split is ``train``, ``valid`` (or ``val``, ``validation``) or ``test``).
* Region strings are written as samtools does, 1-based inclusive: ``chr20:10,000,001-11,000,000``;
  a bare ``chr20`` is the whole chromosome.
* Internally every window is 0-based half-open.

Windows of ``window`` bases are tiled every ``stride`` bases inside each interval. Windows with more
than ``max_n_fraction`` N are dropped. With FASTA alone, the regions of ``val_regions`` /
``test_regions`` are held out and the rest of every record is training sequence; training windows
keep ``random_shift`` bases away from held-out regions so that a shifted window cannot reach them.

Leakage check: no validation or test window may overlap the span a training window can cover
once shifted (``start - random_shift`` .. ``end + random_shift``). A :class:`DataError` names the
first overlap, unless ``allow_leakage`` is set.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .genome import DataError, FastaSource

__all__ = ["Region", "WindowTable", "parse_region", "read_split_bed", "build_windows", "SPLITS"]

SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}
REGION_RE = re.compile(r"^(?P<chrom>\S+?)(?::(?P<start>[\d,]+)-(?P<end>[\d,]+))?$")


@dataclass(frozen=True)
class Region:
    """A named stretch of one record of one FASTA, 0-based half-open."""

    source: int
    record: str
    start: int
    end: int
    origin: str = ""  # where the user gave it: "BED f, line 7 (...)" or "--data.val_regions 'chr20:1-9'"


def parse_region(text: str, sources: list[FastaSource]) -> Region:
    """``chrom[:start-end]`` (1-based inclusive, commas allowed) -> a resolved :class:`Region`."""
    m = REGION_RE.match(text.strip())
    whole_name = m is not None and m["start"] is None and any(s.resolve(m["chrom"]) for s in sources)
    if not m or (m["start"] is None and ":" in m["chrom"] and not whole_name):
        raise DataError(
            f"region {text!r}: expected chrom or chrom:start-end (1-based, inclusive, e.g. chr20:1000001-2000000)"
        )
    source, record = _resolve(m["chrom"], sources, f"region {text!r}")
    length = sources[source].records[record]
    origin = f"region {text!r}"
    if m["start"] is None:
        return Region(source, record, 0, length, origin)
    start, end = int(m["start"].replace(",", "")), int(m["end"].replace(",", ""))
    if start < 1 or end < start:
        raise DataError(f"region {text!r}: start must be >= 1 and end >= start (1-based, inclusive)")
    if end > length:
        raise DataError(f"region {text!r}: ends at {end}, past the end of {record} ({length:,} bases)")
    return Region(source, record, start - 1, end, origin)


def _resolve(chrom: str, sources: list[FastaSource], where: str) -> tuple[int, str]:
    hits = [(i, name) for i, s in enumerate(sources) if (name := s.resolve(chrom)) is not None]
    if not hits:
        names = "; ".join(f"{s.path.name}: {s.describe_names()}" for s in sources)
        raise DataError(f"{where}: chromosome {chrom!r} is in no FASTA (with aliases such as chr20/20, chrM/MT). Names there: {names}")
    if len(hits) > 1:
        files = ", ".join(str(sources[i].path) for i, _ in hits)
        raise DataError(f"{where}: chromosome {chrom!r} is in several FASTA files ({files}); rename one")
    return hits[0]


def read_split_bed(path: str | Path, sources: list[FastaSource]) -> dict[str, list[Region]]:
    """Read a ``chrom start end split`` BED into regions per split, checking every line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such BED file")
    out: dict[str, list[Region]] = {s: [] for s in SPLITS}
    resolved: dict[str, tuple[int, str]] = {}
    with path.open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open  # bed.gz is common: read it as it is
    try:
        with opener(path, "rt") as f:
            lines = f.readlines()
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable text BED file ({type(e).__name__}: {e})") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) < 4:
            fields = line.split()
        where = f"{path}, line {lineno}"
        if len(fields) < 4:
            raise DataError(f"{where}: expected 4 columns (chrom start end split), got {len(fields)}")
        chrom, start_s, end_s, split = fields[:4]
        if split not in SPLIT_NAMES:
            raise DataError(f"{where}: unknown split {split!r}; use train, valid (or val, validation) or test")
        try:
            start, end = int(start_s), int(end_s)
        except ValueError:
            raise DataError(f"{where}: start and end must be integers, got {start_s!r} {end_s!r}") from None
        if start < 0 or end <= start:
            raise DataError(f"{where}: need 0 <= start < end (BED is 0-based, half-open), got {start} {end}")
        if chrom not in resolved:
            resolved[chrom] = _resolve(chrom, sources, where)
        source, record = resolved[chrom]
        length = sources[source].records[record]
        if end > length:
            raise DataError(f"{where}: interval {chrom}:{start}-{end} ends past the end of {record} ({length:,} bases)")
        origin = f"{path}, line {lineno} ({chrom}\t{start}\t{end}\t{split})"
        out[SPLIT_NAMES[split]].append(Region(source, record, start, end, origin))
    if not any(out.values()):
        raise DataError(f"{path}: the BED file holds no intervals")
    return out


@dataclass
class WindowTable:
    """Windows of one split, as parallel arrays (0-based half-open)."""

    source: np.ndarray  # (n,) int: index into the FASTA list
    record: np.ndarray  # (n,) int: index into ``records``
    start: np.ndarray  # (n,) int64
    records: list[tuple[int, str]]  # (source, record name) per record index
    window: int
    region: np.ndarray | None = None  # (n,) int: index into ``regions``, the interval it was cut from
    regions: list[Region] | None = None

    def __len__(self) -> int:
        return len(self.start)

    @property
    def end(self) -> np.ndarray:
        return self.start + self.window

    problem: str | None = None  # why the split is empty, when it is (see build_windows)

    def describe(self, i: int) -> str:
        src, rec = self.records[self.record[i]]
        return f"{rec}:{self.start[i] + 1}-{self.start[i] + self.window}"

    def origin(self, i: int) -> str:
        """Where window ``i``'s interval was given (a BED line or a region), for messages."""
        if self.region is None or self.regions is None:
            return "an interval"
        region = self.regions[int(self.region[i])]
        return region.origin or f"the rest of {region.record} (outside the held-out regions)"


def _tile(start: int, end: int, window: int, stride: int) -> np.ndarray:
    if end - start < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(start, end - window + 1, stride, dtype=np.int64)


def _subtract(start: int, end: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, end) minus the holes, as sorted pieces."""
    pieces, cursor = [], start
    for a, b in sorted(holes):
        if b <= cursor or a >= end:
            continue
        if a > cursor:
            pieces.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < end:
        pieces.append((cursor, end))
    return pieces


def build_windows(
    sources: list[FastaSource],
    window: int,
    stride: int,
    *,
    bed: str | Path | None = None,
    val_regions: list[str] = (),
    test_regions: list[str] = (),
    max_n_fraction: float = 0.1,
    random_shift: int = 0,
    allow_leakage: bool = False,
) -> dict[str, WindowTable]:
    """Windows per split (``train``, ``val``, ``test``), N-filtered and leakage-checked.

    Checks run in this order, so the first error names the real cause: every letter of every
    FASTA (not DNA?), the BED or regions, then window sizes against the intervals, then leakage.
    An empty training split is not an error here (``validate`` / ``test`` / ``predict`` need none):
    :func:`training_problem` says why it is empty, for ``fit`` to report.
    """
    if window < 1 or stride < 1:
        raise DataError(f"window and stride must be positive, got window={window}, stride={stride}")
    if not 0 <= max_n_fraction <= 1:
        raise DataError(f"max_n_fraction must be within [0, 1], got {max_n_fraction}")
    for source in sources:
        source.scan()  # content errors (a protein FASTA, stray characters) before any size error
    if bed is not None:
        if val_regions or test_regions:
            raise DataError("give held-out data either as a BED split column or as val/test regions, not both")
        regions = read_split_bed(bed, sources)
        inset = 0
    else:
        held = {"val": [parse_region(r, sources) for r in val_regions], "test": [parse_region(r, sources) for r in test_regions]}
        regions = {"train": _training_regions(sources, held["val"] + held["test"]), **held}
        inset = random_shift  # keep shifted training windows off the held-out regions

    record_ids: dict[tuple[int, str], int] = {}
    tables = {}
    longest_train = 0  # the longest training interval once kept off held-out regions
    for split in SPLITS:
        src, rec, starts, reg = [], [], [], []
        for r_index, region in enumerate(regions[split]):
            lo, hi = region.start, region.end
            if split == "train" and inset:
                length = sources[region.source].records[region.record]
                lo, hi = (lo + inset if lo > 0 else lo), (hi - inset if hi < length else hi)
            if split == "train":
                longest_train = max(longest_train, hi - lo)
            s = _tile(lo, hi, window, stride)
            if not len(s):
                continue
            scan = sources[region.source].scan()[region.record]
            keep = scan.n_count(s, s + window) <= max_n_fraction * window
            s = s[keep]
            key = (region.source, region.record)
            rid = record_ids.setdefault(key, len(record_ids))
            src.append(np.full(len(s), region.source))
            rec.append(np.full(len(s), rid))
            starts.append(s)
            reg.append(np.full(len(s), r_index))
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64)  # noqa: E731
        tables[split] = WindowTable(cat(src), cat(rec), cat(starts), [], window, cat(reg), regions[split])
    records = sorted(record_ids, key=record_ids.get)
    for t in tables.values():
        t.records = records

    _check_held_out_not_empty(tables, regions, window)
    tables["train"].problem = _training_problem(tables["train"], regions["train"], window, sources, bed, longest_train, inset)
    if not allow_leakage:
        for split in ("val", "test"):
            check_leakage(tables["train"], tables[split], split, random_shift)
        check_leakage(tables["val"], tables["test"], "test", 0, against="validation")
    return tables


def _training_regions(sources: list[FastaSource], held: list[Region]) -> list[Region]:
    out = []
    for i, s in enumerate(sources):
        for name, length in s.records.items():
            holes = [(r.start, r.end) for r in held if r.source == i and r.record == name]
            out += [Region(i, name, a, b) for a, b in _subtract(0, length, holes)]
    return out


def _training_problem(table, train: list[Region], window: int, sources, bed, longest: int, inset: int) -> str | None:
    """Why the training split has no window (None when it has some): the real cause first."""
    if len(table):
        return None
    if not train:
        if bed is not None:
            return f"{bed}: the BED has no train interval, so there is nothing to fit on"
        files = ", ".join(str(s.path) for s in sources)
        return (f"no training sequence: --data.val_regions / --data.test_regions cover every record of {files}. "
                "fit needs some sequence outside them (validate / test / predict need none)")
    if longest < window:
        shift = f" once kept {inset} bases (random_shift) away from held-out regions" if inset else ""
        return (f"window of {window:,} bases is longer than every training interval (the longest is {longest:,}{shift}): "
                "use a shorter --data.window")
    return ("no training window is left after dropping windows with more than --data.max_n_fraction N "
            f"(the training intervals are mostly N); check the {'BED' if bed else 'regions'} and the FASTA")


def _check_held_out_not_empty(tables, regions, window) -> None:
    for split in ("val", "test"):
        if regions[split] and len(tables[split]) == 0:
            longest = max(r.end - r.start for r in regions[split])
            cause = (f"window of {window:,} bases is longer than every {split} interval (the longest is {longest:,})"
                     if longest < window else f"every {split} window has more than --data.max_n_fraction N")
            raise DataError(f"the {split} regions give no window: {cause}")


def check_leakage(train: WindowTable, held: WindowTable, split: str, shift: int, against: str = "training",
                  hint: str = "Fix the splits, or pass --data.allow_leakage true if this is intended.") -> None:
    """Raise a :class:`DataError` naming the first ``held`` window that overlaps the span of a
    ``train`` window (extended by ``shift`` either way); records are matched by index."""
    if not len(held) or not len(train):
        return
    for rid in range(len(train.records)):
        t = train.record == rid
        h = held.record == rid
        if not t.any() or not h.any():
            continue
        t_start = np.sort(train.start[t]) - shift
        t_end_max = np.maximum.accumulate(t_start + train.window + 2 * shift)  # spans sorted by start
        h_start = held.start[h]
        h_end = h_start + held.window
        # training spans that start before a held-out window ends; do any of them reach into it?
        n_before = np.searchsorted(t_start, h_end, side="left")
        reach = np.where(n_before > 0, t_end_max[np.maximum(n_before - 1, 0)], -1)
        bad = np.flatnonzero(reach > h_start)
        if bad.size:
            i = np.flatnonzero(h)[bad[0]]
            # the training window whose span reaches into it (any one of them)
            spans = np.flatnonzero(t & (train.start - shift < h_end[bad[0]]) & (train.start + train.window + shift > held.start[i]))
            j = int(spans[0])
            extended = f" (training windows extended by random_shift={shift})" if shift else ""
            raise DataError(
                f"leakage: {split} window {held.describe(i)} overlaps the span of {against} window "
                f"{train.describe(j)}{extended}; they come from {held.origin(i)} and {train.origin(j)}. {hint}"
            )
