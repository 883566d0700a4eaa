"""Reference genomes on disk: FASTA access through pyfaidx, indexes, chromosome aliases, and a
one-time scan that checks every letter and records where the N runs are.

Files:

* Uncompressed FASTA and BGZF-compressed FASTA (``bgzip``, as UCSC / Ensembl / samtools produce)
  are read with random access. Plain gzip cannot be read at random and is refused with what to
  run (``gunzip x.fa.gz && bgzip x.fa``).
* A missing ``.fai`` (and ``.gzi`` for BGZF), or one older than the FASTA, is built beside the
  FASTA when that folder is writable, else in ``index_dir``; with neither, a :class:`DataError`
  says to pass one. Indexes are written under a temporary name and renamed, so parallel ranks
  cannot half-write them.
* The scan (letters checked, N runs found) is cached as ``<fasta name>.hnet_scan.npz`` beside the
  index (or in ``index_dir`` when that folder is read-only) and reused while the FASTA's size
  and mtime are unchanged.

``builtin:NAME`` names a FASTA shipped inside the package (``builtin:demo_chr20.fa``: 1 Mb of
human chr20, GRCh37 20:10,000,001-11,000,000, for the demo recipe).

Chromosome names are matched with aliases: ``20`` = ``chr20``, ``MT`` = ``M`` = ``chrM`` = ``chrMT``,
``X`` = ``chrX``. A name that matches nothing is reported with the names the FASTA has.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..tokenizer import IUPAC_AMBIGUOUS

__all__ = ["DataError", "FastaSource", "RecordScan", "chrom_aliases", "open_fasta", "resolve_path"]

SCAN_BLOCK = 1 << 24  # bases read at a time by the scan
PROTEIN_ONLY = set("EFIJLOPQXZ*")  # letters of protein FASTA that no DNA alphabet uses
SCAN_VERSION = 1


class DataError(ValueError):
    """Input data that cannot be used: the message names the file, the record or line, what is
    wrong and what to do."""


def chrom_aliases(name: str) -> list[str]:
    """Names that denote the same chromosome as ``name`` (itself first)."""
    base = name[3:] if name.lower().startswith("chr") else name
    if base.upper() in ("M", "MT"):
        bases = [base, "M", "MT"]
    else:
        bases = [base]
    out = [name]
    for b in bases:
        for candidate in (b, f"chr{b}"):
            if candidate not in out:
                out.append(candidate)
    return out


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _is_gzip(path: Path) -> tuple[bool, bool]:
    """(is gzip-compressed, is BGZF)."""
    with path.open("rb") as f:
        head = f.read(18)
    if head[:2] != b"\x1f\x8b":
        return False, False
    # BGZF: gzip with the FEXTRA flag and a 'BC' extra subfield
    return True, len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC"


@dataclass
class RecordScan:
    """One record of a scanned FASTA: its length and its runs of N (0-based half-open)."""

    name: str
    length: int
    n_starts: np.ndarray
    n_ends: np.ndarray
    n_cumulative: np.ndarray = field(init=False)  # N bases in runs before run i

    def __post_init__(self):
        self.n_cumulative = np.concatenate([[0], np.cumsum(self.n_ends - self.n_starts)])

    def n_count(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Number of N in each window [starts, ends) (vectorised over windows)."""
        return self._n_before(ends) - self._n_before(starts)

    def _n_before(self, pos: np.ndarray) -> np.ndarray:
        # N bases at positions < pos: whole runs ending at or before pos, plus the part of a run
        # that straddles pos.
        i = np.searchsorted(self.n_ends, pos, side="right")
        partial = np.zeros_like(pos)
        j = np.minimum(i, len(self.n_starts) - 1)
        if len(self.n_starts):
            inside = (i < len(self.n_starts)) & (self.n_starts[j] < pos)
            partial = np.where(inside, pos - self.n_starts[j], 0)
        return self.n_cumulative[i] + partial


class FastaSource:
    """One FASTA file: its index, its records, a scan of its letters, and sequence fetches.

    The pyfaidx handle is opened lazily in each process (DataLoader workers get their own).
    """

    def __init__(self, path: str | Path, index_dir: str | Path | None = None, iupac_policy: str = "lenient"):
        self.path = resolve_path(path)
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self.iupac_policy = iupac_policy
        self._check_file()
        self.index_path, self.gzi_path = self._index_paths()
        self._handle = None
        self._pid = None
        self._ensure_index()
        self.records = self._read_index()
        if not self.records or all(n == 0 for n in self.records.values()):
            raise DataError(f"{self.path}: the FASTA holds no sequence (no records, or only empty ones)")
        self.scans: dict[str, RecordScan] = {}

    # ---------------------------------------------------------------------------- the file
    def _check_file(self) -> None:
        if not self.path.exists():
            raise DataError(f"{self.path}: no such FASTA file")
        if not self.path.is_file():
            raise DataError(f"{self.path}: not a file")
        if self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: the FASTA file is empty")
        try:
            gz, bgzf = _is_gzip(self.path)
        except OSError as e:
            raise DataError(f"{self.path}: cannot be read ({e.strerror})") from None
        self.bgzf = bool(bgzf)
        if gz and not bgzf:
            raise DataError(
                f"{self.path}: plain gzip cannot be read at random positions. Recompress it with "
                f"bgzip (from htslib/samtools): gunzip {self.path.name} && bgzip {self.path.with_suffix('').name}"
            )

    def _fresh(self, index: Path, gzi: Path | None) -> bool:
        """The index files exist and are not older than the FASTA."""
        mtime = self.path.stat().st_mtime
        return all(p.is_file() and p.stat().st_mtime >= mtime for p in (index, gzi) if p is not None)

    def _index_paths(self) -> tuple[Path, Path | None]:
        beside = self.path.with_name(self.path.name + ".fai")
        gzi_beside = self.path.with_name(self.path.name + ".gzi") if self.bgzf else None
        if self._fresh(beside, gzi_beside):
            return beside, gzi_beside
        if _writable(self.path.parent):
            return beside, gzi_beside
        if self.index_dir is not None:
            try:
                self.index_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DataError(f"{self.index_dir}: cannot create the index folder ({e.strerror})") from None
            if not _writable(self.index_dir):
                raise DataError(f"{self.index_dir}: the index folder is not writable")
            # The resolved path keeps two FASTAs of the same name in different folders apart.
            tag = hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:10]
            idx = self.index_dir / f"{self.path.name}.{tag}.fai"
            gzi = self.index_dir / f"{self.path.name}.{tag}.gzi" if self.bgzf else None
            return idx, gzi
        raise DataError(
            f"{self.path}: has no index ({beside.name}) and its folder is not writable, so none can "
            "be built beside it. Pass a writable folder for indexes (--data.index_dir DIR), or "
            f"run 'samtools faidx {self.path}' where you can write."
        )

    def _ensure_index(self) -> None:
        import pyfaidx

        if self._fresh(self.index_path, self.gzi_path):
            return  # (an index older than the FASTA is rebuilt: it may describe another file)
        folder = self.index_path.parent
        with tempfile.TemporaryDirectory(dir=folder, prefix=".hnet_index_") as tmp:
            fai = Path(tmp) / "index.fai"
            gzi = Path(tmp) / "index.gzi"
            try:
                handle = pyfaidx.Faidx(
                    str(self.path), indexname=str(fai), gzi_indexname=str(gzi) if self.bgzf else None,
                    read_ahead=0, rebuild=True,
                )
                handle.close()
            except pyfaidx.FastaIndexingError as e:
                raise DataError(f"{self.path}: cannot be indexed as FASTA ({e}). Check the file format.") from None
            except pyfaidx.UnsupportedCompressionFormat as e:
                raise DataError(f"{self.path}: {e}") from None
            except (UnicodeDecodeError, ValueError) as e:
                raise DataError(f"{self.path}: not a readable FASTA file ({e})") from None
            if self.gzi_path is not None:
                os.replace(gzi, self.gzi_path)
            os.replace(fai, self.index_path)

    def _read_index(self) -> dict[str, int]:
        records = {}
        for line in self.index_path.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) >= 2:
                records[fields[0]] = int(fields[1])
        return records

    # ----------------------------------------------------------------------------- names
    def resolve(self, name: str) -> str | None:
        """The record name in this FASTA for ``name`` or one of its aliases, else None."""
        for candidate in chrom_aliases(name):
            if candidate in self.records:
                return candidate
        return None

    def describe_names(self, limit: int = 12) -> str:
        names = list(self.records)
        more = f", ... ({len(names)} in all)" if len(names) > limit else ""
        return ", ".join(names[:limit]) + more

    # ------------------------------------------------------------------------------ fetch
    def _fasta(self):
        if self._handle is None or self._pid != os.getpid():
            import pyfaidx

            self._handle = pyfaidx.Fasta(
                str(self.path), indexname=str(self.index_path),
                gzi_indexname=str(self.gzi_path) if self.gzi_path else None,
                read_ahead=0, rebuild=False, build_index=False, as_raw=True, sequence_always_upper=False,
            )
            self._pid = os.getpid()
        return self._handle

    def fetch(self, record: str, start: int, end: int) -> str:
        """Letters of ``record`` at 0-based half-open [start, end), as in the file (case kept)."""
        return self._fasta()[record][start:end]

    def __getstate__(self):  # DataLoader workers reopen their own handle
        state = dict(self.__dict__)
        state["_handle"] = None
        state["_pid"] = None
        return state

    # ------------------------------------------------------------------------------- scan
    def scan(self) -> dict[str, RecordScan]:
        """Check every letter once and find the N runs of every record (cached on disk)."""
        if self.scans:
            return self.scans
        cache = self._scan_cache_path()
        stat = self.path.stat()
        key = np.array([SCAN_VERSION, stat.st_size, stat.st_mtime_ns, self.iupac_policy == "strict"], dtype=np.int64)
        if cache is not None and cache.is_file():
            try:
                with np.load(cache) as z:
                    if np.array_equal(z["key"], key):
                        self.scans = self._scans_from_arrays(z)
                        return self.scans
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is rebuilt
        for name, length in self.records.items():
            self.scans[name] = self._scan_record(name, length)
        self._save_scan(cache, key)
        return self.scans

    def _scan_cache_path(self) -> Path | None:
        """Beside the index if that folder is writable, else in ``index_dir``, else nowhere."""
        name = self.index_path.name[: -len(".fai")] + ".hnet_scan.npz"
        if _writable(self.index_path.parent):
            return self.index_path.with_name(name)
        if self.index_dir is not None:
            return self.index_dir / name
        return None

    def _scan_record(self, name: str, length: int) -> RecordScan:
        lookup = np.zeros(256, dtype=np.int8)  # 0 = bad, 1 = base, 2 = N (or IUPAC under lenient)
        for ch in "ACGTacgt":
            lookup[ord(ch)] = 1
        for ch in "Nn":
            lookup[ord(ch)] = 2
        for ch in IUPAC_AMBIGUOUS + IUPAC_AMBIGUOUS.lower():
            lookup[ord(ch)] = 2 if self.iupac_policy != "strict" else 0
        starts: list[int] = []
        ends: list[int] = []
        for block_start in range(0, length, SCAN_BLOCK):
            text = self.fetch(name, block_start, min(length, block_start + SCAN_BLOCK))
            raw = np.frombuffer(text.encode("latin-1", errors="replace"), dtype=np.uint8)
            kinds = lookup[raw]
            bad = np.flatnonzero(kinds == 0)
            if bad.size:
                raise DataError(self._letter_error(name, block_start + int(bad[0]), text, bad))
            is_n = np.concatenate([[False], kinds == 2, [False]])
            edges = np.flatnonzero(is_n[1:] != is_n[:-1])
            run_starts = (edges[0::2] + block_start).tolist()
            run_ends = (edges[1::2] + block_start).tolist()
            if ends and run_starts and ends[-1] == run_starts[0]:
                ends[-1] = run_ends[0]  # a run that continues from the previous block
                run_starts, run_ends = run_starts[1:], run_ends[1:]
            starts += run_starts
            ends += run_ends
        return RecordScan(name, length, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64))

    def _letter_error(self, name: str, pos: int, block: str, bad: np.ndarray) -> str:
        """The message for a letter that is not DNA at 0-based ``pos`` of record ``name``."""
        char = block[int(bad[0])]
        where = f"{self.path}, record {name!r}, {self.locate(name, pos)}"
        if char.upper() in IUPAC_AMBIGUOUS:
            return (f"{where}: IUPAC ambiguity letter {char!r}, rejected under iupac_policy='strict'. "
                    "Use iupac_policy 'lenient' (they become N) or fix the FASTA.")
        letters = sorted({block[int(i)] for i in bad[:10_000]})
        shown = ", ".join(repr(c) for c in letters[:8]) + (" ..." if len(letters) > 8 else "")
        protein = any(c.upper() in PROTEIN_ONLY for c in letters) and all(c.isalpha() or c == "*" for c in letters)
        count = f"{bad.size:,} such position(s) in the first {len(block):,} bases of the record: {shown}"
        if protein:
            return (f"{where}: {char!r} is not a DNA letter: this looks like a protein (amino-acid) FASTA, not DNA "
                    f"({count}). hnet_dna models DNA only: check that this is the file you meant.")
        return (f"{where}: {char!r} is not a DNA letter (A, C, G, T, N or an IUPAC code; {count}). "
                "Fix or remove it from the FASTA.")

    def locate(self, name: str, pos: int) -> str:
        """``line L, column C`` of 0-based position ``pos`` of record ``name`` in the file (1-based),
        from the index's offsets; the lines before the record are counted in the (decompressed)
        file, so this is for error messages only."""
        import gzip

        for line in self.index_path.read_text().splitlines():
            fields = line.split("\t")
            if fields[0] == name and len(fields) >= 4:
                offset, line_bases = int(fields[2]), int(fields[3])
                break
        else:
            return f"position {pos + 1}"
        newlines, remaining = 0, offset
        with (gzip.open if self.bgzf else open)(self.path, "rb") as f:
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 22))
                if not chunk:
                    break
                newlines += chunk.count(b"\n")
                remaining -= len(chunk)
        lineno = newlines + 1 + pos // max(line_bases, 1)
        return f"line {lineno:,}, column {pos % max(line_bases, 1) + 1} (position {pos + 1:,})"

    def _save_scan(self, cache: Path | None, key: np.ndarray) -> None:
        if cache is None:
            return
        names = list(self.scans)
        counts = np.array([len(self.scans[n].n_starts) for n in names], dtype=np.int64)
        arrays = {
            "key": key,
            "names": np.array(names),
            "lengths": np.array([self.scans[n].length for n in names], dtype=np.int64),
            "counts": counts,
            "starts": np.concatenate([self.scans[n].n_starts for n in names]),
            "ends": np.concatenate([self.scans[n].n_ends for n in names]),
        }
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=cache.parent, prefix=".hnet_scan_", suffix=".npz", delete=False) as f:
                np.savez(f, **arrays)
            os.replace(f.name, cache)
        except OSError:
            pass  # a cache we cannot write only costs a rescan next time

    @staticmethod
    def _scans_from_arrays(z) -> dict[str, RecordScan]:
        out, offset = {}, 0
        for name, length, count in zip(z["names"], z["lengths"], z["counts"]):
            sl = slice(offset, offset + int(count))
            out[str(name)] = RecordScan(str(name), int(length), z["starts"][sl], z["ends"][sl])
            offset += int(count)
        return out


def resolve_path(path: str | Path) -> Path:
    """A path, or ``builtin:NAME`` for a FASTA shipped in ``hnet_dna/resources``."""
    text = str(path)
    if text.startswith("builtin:"):
        from importlib.resources import files

        return Path(str(files("hnet_dna") / "resources" / text[len("builtin:"):]))
    return Path(path)


def open_fasta(path: str | Path, index_dir: str | Path | None = None, iupac_policy: str = "lenient") -> FastaSource:
    """Open (and index if needed) one FASTA file; raises :class:`DataError` on bad input."""
    return FastaSource(path, index_dir=index_dir, iupac_policy=iupac_policy)
