"""Labelled DNA sequences for classification: readers for the layouts users bring.

Every reader yields :class:`LabelledSequence` records ``(id, sequence, label, split)``:

* **CSV / TSV** (``.gz`` too; the delimiter is sniffed): a sequence column, a label column and,
  optionally, id and split columns. Common names are found by themselves (case-insensitive):
  sequence ``sequence`` / ``seq`` / ``seqs``, label ``label`` / ``labels`` / ``class`` / ``y``,
  split ``split`` / ``set``, id ``id`` / ``name``; anything else is named by flag. Split values
  ``train``; ``valid`` / ``val`` / ``validation`` / ``dev``; ``test`` (any case). Without an id
  column, the id is the 1-based line number in the file.
* **Parquet / Arrow** (``.parquet``, ``.arrow``, ``.feather``; needs pyarrow, in the ``hf`` extra):
  the same columns, found the same way; ids default to the 1-based row number. Also Hugging Face
  data sets on disk (:func:`read_arrow_folder`): ``datasets`` ``save_to_disk`` folders (a
  ``DatasetDict``'s split folders give the splits) and folders of Parquet files named by split, as
  the Hub stores the Nucleotide Transformer tasks and Genomic Benchmarks. Labels are the stored
  values (a ``ClassLabel``'s integers, not its names).
* **FASTA per class**: a mapping ``{label: path}``; ids are the first word of each header.
* **Genomic Benchmarks folders**: ``ROOT/train/<class>/*.txt`` and ``ROOT/test/<class>/*.txt``,
  one sequence per file; ids are the file names.

Beyond one class per sequence (``task``; by default chosen by the columns):

* **multilabel**: several 0/1 columns ``label_<name>`` (or named with ``label_columns``), or one
  label column of names separated by ``;`` (``label_separator``; an empty cell: no label);
* **regression**: numeric target columns ``target`` / ``targets`` / ``y`` or ``target_<name>``
  (or named with ``target_columns``), one or more per row.

Without a plain label column, a table with ``label_*`` columns is multilabel and one with
``target_*`` columns is regression; anything else is multiclass (as before these tasks existed).
``task`` overrides: a plain ``target`` or ``y`` column is a regression target with ``task:
regression`` only, since a class column may carry either name.

Labels are strings. Integral numbers are normalised (``1``, ``1.0`` and ``01`` are the class
``"1"``). Classes are sorted (numerically when every label is a number); for a binary task the
second class is the positive one (AUROC, F1). Letters go through the tokenizer's policies:
lowercase is upper-cased, IUPAC ambiguity letters become N (``iupac_policy="lenient"``) or are an
error (``"strict"``), anything else is an error naming the file and line.

Every problem raises :class:`~hnet_dna.data.genome.DataError` naming the file, the line (or
record) and what to do.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

from ..tokenizer import NucleotideTokenizer, SequenceError
from .arrow_tables import ARROW_SUFFIXES, arrow_rows, dataset_parts
from .genome import DataError
from .label_columns import TARGET_NAMES, flag_cell, number_cell, task_columns

__all__ = [
    "LabelledSequence",
    "read_table",
    "read_fasta_per_class",
    "read_fasta_records",
    "read_genomic_benchmarks",
    "read_labelled",
    "read_arrow_folder",
    "class_names",
    "normalise_label",
    "SPLIT_VALUES",
]

SEQUENCE_NAMES = ("sequence", "seq", "seqs")
LABEL_NAMES = ("label", "labels", "class", "y")
SPLIT_NAMES = ("split", "set")
ID_NAMES = ("id", "name")
SPLIT_VALUES = {"train": "train", "valid": "val", "val": "val", "validation": "val", "dev": "val", "test": "test"}


@dataclass(frozen=True)
class LabelledSequence:
    id: str
    sequence: str  # upper-case letters as read (IUPAC letters kept; the tokenizer maps them)
    label: str  # multiclass: the class; multilabel: the positive labels joined by ";" ("" for none)
    split: str | None  # "train", "val", "test", or None when the file does not say
    where: str  # file and line (or record), for messages
    task: str = "multiclass"  # or "multilabel", "regression" (see hnet_dna.tasks.objectives)
    values: tuple[float, ...] | None = None  # regression targets, or 0/1 per label column (multilabel)
    value_names: tuple[str, ...] | None = None  # the names of ``values``, the same for every row of a file


def normalise_label(value: str) -> str:
    """A label as a class name: stripped, and integral numbers written as integers."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if number.is_integer():
        return str(int(number))
    return text


def class_names(labels) -> list[str]:
    """Sorted class names: numerically when every label is a number, else as text."""
    names = sorted(set(labels))
    try:
        return sorted(names, key=float)
    except ValueError:
        return names


def _open_text(path: Path):
    with path.open("rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    raw = gzip.open(path, "rb") if gz else path.open("rb")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _check_path(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    return path


def _pick(columns: list[str], given: str | None, names: tuple[str, ...], what: str, path: Path, flag: str,
          required: bool = True) -> str | None:
    if given is not None:
        if given not in columns:
            raise DataError(f"{path}: no column {given!r} ({flag}); the columns are {', '.join(map(repr, columns))}")
        return given
    lower = {c.strip().lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    if required:
        hint = ""
        if what == "label" and any(c.strip().lower() in TARGET_NAMES for c in columns):
            hint = " For a regression on numeric targets, give --data.task regression."
        raise DataError(
            f"{path}: no {what} column (looked for {', '.join(names)}); the columns are "
            f"{', '.join(map(repr, columns))}. Name it with {flag} COLUMN.{hint}"
        )
    return None


def read_table(
    path,
    *,
    sequence_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    split_column: str | None = None,
    label_required: bool = True,
    flag_prefix: str = "--data.",
    id_default: str = "line",
    task: str | None = None,
    label_columns: list[str] | None = None,
    target_columns: list[str] | None = None,
    label_separator: str = ";",
) -> list[LabelledSequence]:
    """Read a table of labelled sequences: CSV or TSV (plain or gzip), or Parquet / Arrow by
    suffix (see the module docstring). ``label_required=False`` reads sequences to classify (label
    ``""`` where there is none). ``flag_prefix`` names the command-line flags in messages; without
    an id column the id is the 1-based ``line`` number in a text file, or the 1-based data ``row``
    number (always ``row`` in Parquet / Arrow, which have no lines)."""
    path = _check_path(path)
    if path.name.lower().endswith(ARROW_SUFFIXES):
        header, rows = arrow_rows(path)
        id_default = "row"
    else:
        header, rows = _text_rows(path)
    columns = dict(sequence_column=sequence_column, label_column=label_column, id_column=id_column,
                   split_column=split_column, task=task, label_columns=label_columns,
                   target_columns=target_columns, label_separator=label_separator)
    return _records(path, header, rows, columns, label_required, flag_prefix, id_default)


def _text_rows(path: Path):
    """A CSV/TSV's header and its data rows as ``(where, cells)``, blank lines skipped."""
    try:
        with _open_text(path) as f:
            text = f.read()
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable text table ({type(e).__name__}: {e})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"{path}: the file is empty (expected a header line, then one sequence per line)")
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters="\t,;").delimiter
    except csv.Error:
        delimiter = "\t" if "\t" in lines[0] else ","
    reader = csv.reader(lines, delimiter=delimiter)
    header = [c.strip() for c in next(reader)]

    def rows():
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            where = f"{path}, line {lineno}"
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} fields where the header has {len(header)} ({', '.join(header)})")
            yield where, row

    return header, rows()


def _records(path: Path, header: list[str], rows, columns: dict, label_required: bool, flag_prefix: str,
             id_default: str, split_default: str | None = None, rows_before: int = 0) -> list[LabelledSequence]:
    """Table rows as records: the columns found by name or flag, each cell checked. Without an id
    column, ``row`` ids count on from ``rows_before`` (the rows of a data set's earlier parts)."""
    seq_col = _pick(header, columns.get("sequence_column"), SEQUENCE_NAMES, "sequence", path, f"{flag_prefix}sequence_column")
    task, value_cols, value_names = task_columns(header, columns, label_required, path, flag_prefix, LABEL_NAMES)
    label_col = None
    if task == "multiclass" or (task == "multilabel" and not value_cols):
        label_col = _pick(header, columns.get("label_column"), LABEL_NAMES, "label", path, f"{flag_prefix}label_column",
                          required=label_required)
    separator = columns.get("label_separator") or ";"
    id_col = _pick(header, columns.get("id_column"), ID_NAMES, "id", path, f"{flag_prefix}id_column", required=False)
    split_col = _pick(header, columns.get("split_column"), SPLIT_NAMES, "split", path, f"{flag_prefix}split_column",
                      required=False)
    index = {c: i for i, c in enumerate(header)}

    def text(row, column, where, what):
        value = row[index[column]]
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: the {what} column {column!r} holds {type(value).__name__} values, not text")
        return (value or "").strip()

    out = []
    for where, row in rows:
        seq = text(row, seq_col, where, "sequence")
        if not seq:
            raise DataError(f"{where}: the sequence is empty")
        label, values = "", None
        if task == "multiclass":
            label = normalise_label(text(row, label_col, where, "label")) if label_col is not None else ""
            if not label and label_required:
                raise DataError(f"{where}: the label is empty")
        elif value_cols and task == "multilabel":
            values = tuple(flag_cell(row[index[c]], where, c) for c in value_cols)
            label = ";".join(n for n, v in zip(value_names, values) if v)
        elif value_cols:
            values = tuple(number_cell(row[index[c]], where, c) for c in value_cols)
        elif label_col is not None:  # multilabel: one column of names
            names = {part.strip() for part in text(row, label_col, where, "label").split(separator)} - {""}
            label = ";".join(sorted(names))
        split = split_default
        if split_col is not None:
            value = text(row, split_col, where, "split")
            if value.lower() not in SPLIT_VALUES:
                raise DataError(f"{where}: unknown split {value!r}; use train, valid (val, validation, dev) or test")
            split = SPLIT_VALUES[value.lower()]
        if id_col is not None:
            ident = text(row, id_col, where, "id")
        else:
            ident = where.rsplit(" ", 1)[1] if id_default == "line" else str(rows_before + len(out) + 1)
        out.append(LabelledSequence(ident, seq, label, split, where, task, values, value_names))
    if not out:
        raise DataError(f"{path}: no sequences after the header")
    return out


def read_fasta_records(path, label: str = "") -> list[LabelledSequence]:
    """Every record of a FASTA (plain or gzip, read with Biopython), all with ``label``."""
    from Bio import SeqIO

    path = _check_path(path)
    try:
        with _open_text(path) as f:
            records = list(SeqIO.parse(f, "fasta"))
    except (UnicodeDecodeError, OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: not a readable FASTA file ({type(e).__name__}: {e})") from None
    if not records:
        raise DataError(f"{path}: no FASTA records" + (f" (class {label!r})" if label else ""))
    out = []
    for record in records:
        where = f"{path}, record {record.id!r}"
        if len(record.seq) == 0:
            raise DataError(f"{where}: the sequence is empty")
        out.append(LabelledSequence(record.id, str(record.seq), label, None, where))
    return out


def read_fasta_per_class(files: dict) -> list[LabelledSequence]:
    """``{label: FASTA path}`` -> records (ids: the first word of each header)."""
    if not isinstance(files, dict) or not files:
        raise DataError(f"a FASTA-per-class input must map each label to a FASTA file, got {files!r}")
    return [r for label, path in files.items() for r in read_fasta_records(path, normalise_label(label))]


def read_genomic_benchmarks(root) -> list[LabelledSequence]:
    """``ROOT/{train,test}/<class>/*.txt`` (one sequence per file) -> records with their split."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected ROOT/train/<class>/*.txt and ROOT/test/<class>/*.txt)")
    out = []
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            if split == "train":
                raise DataError(f"{root}: no train/ folder (Genomic Benchmarks layout: ROOT/train/<class>/*.txt)")
            continue
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            for file in sorted(class_dir.glob("*.txt")):
                seq = file.read_text().strip()
                if not seq:
                    raise DataError(f"{file}: the sequence is empty")
                out.append(LabelledSequence(file.stem, seq, normalise_label(class_dir.name), split, str(file)))
    if not out:
        raise DataError(f"{root}: no sequences under train/<class>/*.txt")
    return out


def read_arrow_folder(root, **columns) -> list[LabelledSequence]:
    """A Hugging Face data set on disk (the layouts :func:`~hnet_dna.data.arrow_tables.dataset_parts`
    reads), as its records (columns found as in a CSV); a split folder or a Parquet file named by
    split gives its records' split."""
    root = Path(root)
    flag_prefix = columns.pop("flag_prefix", "--data.")
    label_required = columns.pop("label_required", True)
    parts = dataset_parts(root)
    if parts is None:
        raise DataError(f"{root}: not a data set folder hnet_dna reads")
    out = []
    for path, split_name in parts:
        split = None
        if split_name is not None:
            split = SPLIT_VALUES.get(split_name.lower())
            if split is None:
                raise DataError(f"{path}: split {split_name!r} is not train, validation (valid, val, dev) or test; "
                                "rename it, or give its files with --data.train / --data.valid / --data.test")
        header, rows = arrow_rows(path)
        out += _records(path, header, rows, columns, label_required, flag_prefix, "row", split_default=split,
                        rows_before=len(out))  # ids unique over the parts
    return out


def read_labelled(source, **columns) -> list[LabelledSequence]:
    """One input as the data module takes it: a CSV/TSV/Parquet/Arrow path, a ``{label: FASTA}``
    mapping, a Hugging Face data set folder (:func:`read_arrow_folder`) or a Genomic Benchmarks
    folder root."""
    if isinstance(source, dict):
        return read_fasta_per_class(source)
    path = Path(source)
    if path.is_dir():
        if dataset_parts(path) is not None:
            return read_arrow_folder(path, **columns)
        if (path / "train").is_dir() and not any((path / "train").glob("*.arrow")):
            return read_genomic_benchmarks(path)
        raise DataError(
            f"{path}: a folder hnet_dna does not recognise; it reads a datasets save_to_disk folder "
            "(dataset_dict.json or state.json), a folder of Parquet files named by split "
            "(train*.parquet, test*.parquet), or a Genomic Benchmarks folder (train/<class>/*.txt)"
        )
    return read_table(path, **columns)


def encode_checked(tokenizer: NucleotideTokenizer, record: LabelledSequence):
    """Ids of a record's sequence; a letter that is not DNA names the file and line."""
    try:
        return tokenizer.encode(record.sequence)
    except SequenceError as e:  # "sequence, position 7: ..." -> "FILE, line 3, position 7: ..."
        message = str(e)
        raise DataError(record.where + message.removeprefix("sequence")) from None
