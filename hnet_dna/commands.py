"""What ``embed``, ``score`` and ``boundaries`` share: reading inputs, choosing a model and a
device, batching by length, tiling long sequences, progress, resumable and atomic outputs, and the
one-line error on bad input.

Inputs (:func:`read_sequences`), by file name (``.gz`` allowed):

* FASTA (``.fa``, ``.fasta``, ``.fna``, ``.fas``; plain, gzip or BGZF): one sequence per record,
  id = the first word of the header;
* CSV / TSV (``.csv``, ``.tsv``, ``.txt``): the fine-tuning readers (:mod:`hnet_dna.data.labelled`);
  a sequence column (found by name, else ``--sequence-column``), id = the id column (found by name,
  else ``--id-column``), else the 1-based row number;
* BED (``.bed``; 3 or more columns) with ``--fasta``: one sequence per interval, the reverse
  complement when column 6 (strand) is ``-``; id = ``chrom:start-end(strand)`` with 1-based,
  inclusive coordinates (``20:1001-1200(+)`` is the BED line ``20 1000 1200 . 0 +``).

Long sequences are cut into overlapping windows (:func:`tiles`): windows start every ``stride``
bases and are ``window`` long; each base is read from the earliest window that holds it, so every
base after the first window has at least ``window - stride`` bases of left context. With
``--exact-context`` a sequence is instead read once in blocks that continue from the model's
caches (:func:`read_exact`): every base with all the bases before it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError
from .data.genome import PROTEIN_ONLY, DataError, FastaSource, open_fasta
from .data.labelled import read_fasta_records, read_table
from .model.hnet import InputError
from .tokenizer import NucleotideTokenizer, SequenceError
from .weights import CheckpointError

__all__ = [
    "InputSequence",
    "Tile",
    "read_sequences",
    "encode_sequences",
    "length_batches",
    "tiles",
    "ExactBlock",
    "read_exact",
    "choose_device",
    "atomic_path",
    "ResumableParts",
    "Progress",
    "USER_ERRORS",
    "exit_on_user_error",
    "parse_region",
    "resolve_region",
    "check_windows",
    "window_help",
    "read_text_lines",
    "fingerprint",
    "write_bigwig",
]

USER_ERRORS = (DataError, ConfigError, SequenceError, CheckpointError, InputError)

_TOKENIZER = NucleotideTokenizer()
FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".fsa")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass(frozen=True)
class InputSequence:
    id: str
    sequence: str
    where: str  # "FILE, line 3" / "FILE, record 'x'": for error messages


# ------------------------------------------------------------------------------------ inputs
def _kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz").removesuffix(".bgz")
    for suffixes, kind in ((FASTA_SUFFIXES, "fasta"), (TABLE_SUFFIXES, "table"), ((".bed",), "bed")):
        if name.endswith(suffixes):
            return kind
    raise DataError(
        f"{path}: cannot tell the format from the name; use a FASTA ({', '.join(FASTA_SUFFIXES)}), "
        f"a CSV/TSV ({', '.join(TABLE_SUFFIXES)}) or a BED (.bed, with --fasta), optionally .gz"
    )


def read_sequences(
    path,
    *,
    fasta=None,
    sequence_column: str | None = None,
    id_column: str | None = None,
    index_dir=None,
) -> list[InputSequence]:
    """Every sequence of ``path`` in file order (see the module docstring for the formats)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such input file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    kind = _kind(path)
    if kind == "fasta":
        return [InputSequence(r.id, r.sequence, r.where) for r in read_fasta_records(path)]
    if kind == "table":
        rows = read_table(path, sequence_column=sequence_column, id_column=id_column, label_required=False,
                          flag_prefix="--", id_default="row")
        return [InputSequence(r.id, r.sequence, r.where) for r in rows]
    if fasta is None:
        raise DataError(f"{path}: a BED input needs --fasta GENOME to read the sequences from")
    return read_bed_sequences(path, open_fasta(fasta, index_dir=index_dir))


def read_bed_sequences(path: Path, genome: FastaSource) -> list[InputSequence]:
    """Intervals of a BED (3+ columns; strand in column 6) as sequences of ``genome``."""
    out = []
    for lineno, line in read_text_lines(path):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        where = f"{path}, line {lineno}"
        fields = line.rstrip("\n").split("\t") if "\t" in line else line.split()
        if len(fields) < 3:
            raise DataError(f"{where}: a BED line needs chrom, start and end; got {len(fields)} field(s)")
        chrom, start, end = fields[0], fields[1], fields[2]
        try:
            start, end = int(start), int(end)
        except ValueError:
            raise DataError(f"{where}: start and end must be integers, got {fields[1]!r} and {fields[2]!r}") from None
        strand = fields[5] if len(fields) >= 6 else "+"
        if strand not in ("+", "-", "."):
            raise DataError(f"{where}: strand (column 6) must be +, - or ., got {strand!r}")
        record = genome.resolve(chrom)
        if record is None:
            raise DataError(
                f"{where}: chromosome {chrom!r} is not in {genome.path} (its records: {genome.describe_names()})"
            )
        if not 0 <= start < end:
            raise DataError(f"{where}: need 0 <= start < end, got {start}-{end}")
        if end > genome.records[record]:
            raise DataError(
                f"{where}: {chrom}:{start}-{end} runs past the end of {record} ({genome.records[record]:,} bp in {genome.path})"
            )
        seq = genome.fetch(record, start, end)
        if strand == "-":
            seq = _TOKENIZER.reverse_complement(seq)
        out.append(InputSequence(f"{chrom}:{start + 1}-{end}({'-' if strand == '-' else '+'})", seq, where))
    if not out:
        raise DataError(f"{path}: no intervals in the BED file")
    return out


def read_text_lines(path: Path):
    """(1-based line number, line) of a text file, plain or gzip (by its magic bytes); a file that
    is not readable text is a :class:`DataError` naming it."""
    import gzip

    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rt") if gz else open(path)) as f:
            lines = f.readlines()
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable text file ({type(e).__name__}: {e})") from None
    return list(enumerate(lines, start=1))


def parse_region(text: str) -> tuple[str, int, int]:
    """``chr:start-end`` (1-based, inclusive, commas allowed) -> (chrom, start0, end0) half-open."""
    try:
        chrom, span = text.rsplit(":", 1)
        start, end = (int(x.replace(",", "")) for x in span.split("-"))
    except ValueError:
        raise DataError(f"--region {text!r}: expected CHROM:START-END (1-based, inclusive), e.g. 20:1,000,001-1,010,000") from None
    if start < 1 or end < start:
        raise DataError(f"--region {text!r}: need 1 <= START <= END")
    return chrom, start - 1, end


def resolve_region(genome: FastaSource, text: str, flag: str = "--region") -> tuple[str, str, int, int]:
    """``CHROM:START-END`` of ``genome`` -> (chrom as written, record name, start0, end0); a chromosome
    the FASTA lacks (after aliases) or an end past the chromosome is a :class:`DataError`."""
    chrom, start, end = parse_region(text)
    record = genome.resolve(chrom)
    if record is None:
        raise DataError(f"{flag} {text}: no chromosome {chrom!r} in {genome.path} ({genome.describe_names()})")
    if end > genome.records[record]:
        raise DataError(f"{flag} {text}: past the end of {record} ({genome.records[record]:,} bp in {genome.path})")
    return chrom, record, start, end


def check_windows(window: int | None, stride: int | None, batch_size: int) -> None:
    """The window options every command takes: ``window`` >= 2 (or None: whole sequences),
    ``stride`` below it, ``batch_size`` >= 1."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if window is None:
        if stride is not None:
            raise ConfigError("--stride needs --window")
        return
    if window < 2:
        raise ConfigError(f"--window must be >= 2, got {window}")
    if stride is not None and not 0 < stride < window:
        raise ConfigError(f"--stride must be in 1..{window - 1} (below --window), got {stride}")


# Peak inference memory per base of window, shipped model, CPU fp32 (benchmarks/long_inputs.py,
# 2026-12-02: 22 MB for one 1,024-base window, 13 for 4,096, 10 for 16,384 and 8 x 4,096).
MB_PER_1000_BASES = 10


def window_help(default: int, batch_default: int, what: str = "read longer sequences in windows of this many bases") -> str:
    """``--window``'s help: what a window costs in memory, so that users can fit a bound."""
    return (f"{what} (default {default:,}). Memory grows with --window x --batch-size: the shipped model "
            f"needs about {MB_PER_1000_BASES} MB per 1,000 bases of each window in a batch (so the defaults "
            f"need about {MB_PER_1000_BASES * default * batch_default / 1000:,.0f} MB over the loaded model; "
            "a model of width d about d/64 times as much); lower either to fit. Past the first window each "
            "base is read with window - stride to window - 1 bases of left context")


def encode_sequences(records: list[InputSequence], tokenizer: NucleotideTokenizer) -> list[torch.Tensor]:
    """Ids of every record, checked before any output is made: a letter that is not DNA names the
    file and the line or record."""
    out = []
    for record in records:
        try:
            out.append(tokenizer.encode(record.sequence))
        except SequenceError as e:
            message = record.where + str(e).removeprefix("sequence")
            if any(c in PROTEIN_ONLY for c in set(record.sequence.upper())):
                message += ". This looks like a protein (amino-acid) sequence, not DNA: hnet_dna models DNA only"
            raise DataError(message) from None
    return out


# ---------------------------------------------------------------------------- batching
def length_batches(lengths, max_bases: int, max_batch: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks early):
    at most ``max_batch`` rows and about ``max_bases`` padded positions per batch."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current = [], []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= max_batch or longest * (len(current) + 1) > max_bases):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True)
class Tile:
    start: int  # the window [start, end) of the sequence the model reads
    end: int
    own_start: int  # the bases [own_start, own_end) taken from this window
    own_end: int


def tiles(length: int, window: int | None, stride: int | None) -> list[Tile]:
    """Windows over a sequence of ``length`` bases (one window when ``window`` is None or the
    sequence fits); see the module docstring."""
    if window is None or length <= window:
        return [Tile(0, length, 0, length)]
    stride = stride or window // 2
    if not 0 < stride <= window:
        raise ConfigError(f"--stride must be in 1..--window ({window}), got {stride}")
    out, start = [], 0
    while True:
        end = min(start + window, length)
        own_start = 0 if start == 0 else out[-1].own_end
        out.append(Tile(start, end, own_start, end))
        if end == length:
            return out
        start += stride


@dataclass
class ExactBlock:
    """One block of :func:`read_exact`: the model's outputs for bases ``start`` .. ``start + K - 1``
    of the sequence, made with all the bases before them."""

    start: int
    hidden: torch.Tensor  # (K, D_0) the backbone's output (what the LM head reads), on the model's device
    inputs: list  # per chunking level: (K_s,) long, CPU: the sequence position of each of the level's inputs
    probs: list  # per level: (K_s,) fp32, CPU: the boundary probability at those inputs
    states: list  # per level: (M_s, D_s) the chunk states of the chunks the block starts

    def chunk_starts(self, level: int) -> torch.Tensor:
        """Sequence positions where the level's chunks in this block start."""
        return self.inputs[level][self.probs[level] > 0.5]


def read_exact(model, ids: torch.Tensor, block: int, device) -> Iterator[ExactBlock]:
    """Read one id sequence (L,) from its start in blocks of ``block`` bases, each continuing from
    the model's caches (:meth:`~hnet_dna.model.HNetForCausalLM.extend_features`); yields one
    :class:`ExactBlock` per block. Call it under ``torch.inference_mode()``."""
    cache = model.allocate_cache(1)
    for start in range(0, len(ids), block):
        piece = ids[start:start + block]
        hidden, probs, states = model.extend_features(piece[None].to(device), cache)
        inputs, level_probs = [], []
        base_of = torch.arange(start, start + len(piece))  # level 0's inputs: the bases
        for p in probs:
            p = p[0].float().cpu()
            inputs.append(base_of)
            level_probs.append(p)
            base_of = base_of[p > 0.5]  # the next level's inputs: this level's chunk starts
        yield ExactBlock(start, hidden[0], inputs, level_probs, [z[0] for z in states])


# ----------------------------------------------------------------------------- model & device
def choose_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: not a device (cpu, cuda, cuda:1, auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def fingerprint(*parts) -> str:
    """A hash of files (by content) and values, to tell whether a rerun asks for the same work."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(str(part.resolve()).encode())
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        elif isinstance(part, torch.nn.Module):
            for name, tensor in sorted(part.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


# ------------------------------------------------------------------------------ outputs
@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path`` (same suffix); it becomes ``path`` only if the block
    finishes, so a reader never sees half a file and a failed run leaves the old file as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{''.join(path.suffixes[-2:])}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_output(path: Path, suffixes: tuple[str, ...], flag: str = "--output") -> Path:
    """Checks on an output path before any work: its suffix and its folder."""
    path = Path(path)
    if not path.name.lower().endswith(suffixes):
        raise DataError(f"{flag} {path}: the name must end with {' or '.join(suffixes)}")
    if not path.parent.is_dir():
        raise DataError(f"{flag} {path}: no such folder {path.parent}")
    if path.is_dir():
        raise DataError(f"{flag} {path}: is a folder")
    return path


def write_bigwig(path: Path, chrom: str, chrom_length: int, positions: np.ndarray, values: np.ndarray) -> None:
    """One chromosome's per-base ``values`` at 0-based ``positions`` as a bigWig, written atomically."""
    import pyBigWig

    with atomic_path(path) as tmp:
        bw = pyBigWig.open(str(tmp), "w")
        bw.addHeader([(chrom, chrom_length)])
        contiguous = len(positions) > 0 and positions[-1] - positions[0] == len(positions) - 1
        step = 1 << 20  # entries per call: a chromosome's worth never sits in one Python list
        for k in range(0, len(positions), step):
            pos, val = positions[k:k + step], values[k:k + step].astype(np.float64)
            if contiguous:  # level 0: one value per base, as a fixed-step block
                bw.addEntries(chrom, int(pos[0]), values=val, span=1, step=1)
            else:
                bw.addEntries([chrom] * len(pos), pos, ends=pos + 1, values=val)
        bw.close()


class ResumableParts:
    """Results kept in ``OUT.parts/`` as they come (one ``.npz`` per part, written atomically), so
    a killed run continues where it stopped when rerun with the same arguments. A rerun with other
    arguments (another fingerprint) starts over. The folder goes once the output is written."""

    def __init__(self, output: Path, key: str):
        self.folder = self.folder_for(output)
        self.key = key
        manifest = self.folder / "manifest.json"
        if self.folder.exists():
            try:
                same = json.loads(manifest.read_text()).get("fingerprint") == key
            except (OSError, ValueError):
                same = False
            if not same:
                shutil.rmtree(self.folder)
        self.folder.mkdir(exist_ok=True)
        if not manifest.exists():
            manifest.write_text(json.dumps({"fingerprint": key}) + "\n")
        self.done = {int(p.stem.split("-")[1]) for p in self.folder.glob("part-*.npz")}
        self._kill_after = int(os.environ.get("HNET_DNA_KILL_AFTER_PARTS", "0"))  # tests: a SIGKILL
        self._written = 0

    def __contains__(self, part: int) -> bool:
        return part in self.done

    def save(self, part: int, arrays: dict[str, np.ndarray]) -> None:
        target = self.folder / f"part-{part:06d}.npz"
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        self.done.add(part)
        self._written += 1
        if self._kill_after and self._written >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def load(self, part: int) -> dict[str, np.ndarray]:
        with np.load(self.folder / f"part-{part:06d}.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    @staticmethod
    def folder_for(output: Path) -> Path:
        return output.with_name(output.name + ".parts")

    @classmethod
    def discard(cls, output: Path) -> None:
        """Remove the parts of ``output`` (once it is written)."""
        shutil.rmtree(cls.folder_for(output), ignore_errors=True)


class Progress:
    """A tqdm bar over sequences (or windows) that also shows bases per second (on stderr; off with ``enabled=False``)."""

    def __init__(self, total: int, total_bases: int, desc: str, enabled: bool = True, unit: str = "seq"):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, smoothing=0.1)
        self.bases = 0
        self.total_bases = total_bases
        self.t0 = time.perf_counter()

    def update(self, sequences: int, bases: int) -> None:
        self.bases += bases
        rate = self.bases / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} bases/s", refresh=False)
        self.bar.update(sequences)

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def closing_process_group() -> Iterator[None]:
    """Around a Lightning run: destroy the process group the run created, once it has finished,
    while the interpreter is still whole.

    Lightning destroys it at exit for NCCL only. A gloo group (DDP on CPU) left to the interpreter's
    shutdown can have its worker threads free tensors after Python is gone, and the process then
    aborts (SIGABRT, "terminate called without an active exception") after a finished fit: seen
    once in CI here, and the failure pytorch/pytorch#179291 describes. A group that existed before
    (the caller's) is left alone; so is one after a failed run, whose error must reach the user as
    it is (destroying a group whose peer died could raise over it, or wait on the dead peer)."""
    import torch.distributed as dist

    had_group = dist.is_available() and dist.is_initialized()
    yield
    if not had_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_on_user_error(run, prog: str = "hnet_dna") -> None:
    """Call ``run()``; an error in the user's inputs becomes one line on stderr and exit status 2."""
    try:
        run()
    except Exception as exc:
        err = _user_error(exc)
        if err is None:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)


def _user_error(exc: BaseException) -> BaseException | None:
    """Our input error, possibly wrapped by jsonargparse or Lightning."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, USER_ERRORS):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
