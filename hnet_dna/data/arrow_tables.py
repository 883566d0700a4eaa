"""Parquet and Arrow tables, and the folders Hugging Face ``datasets`` writes, as rows of cells
for the labelled readers (:mod:`hnet_dna.data.labelled`, which checks the cells). pyarrow (the ``hf``
extra) is imported only when such a file is read.

Layouts read:

* a Parquet file (``.parquet``, ``.pq``); an Arrow IPC file or stream (``.arrow``, ``.feather``;
  ``datasets`` writes its shards as streams);
* a ``Dataset.save_to_disk`` folder (``state.json`` lists its ``*.arrow`` shards): one table;
* a ``DatasetDict.save_to_disk`` folder (``dataset_dict.json`` and one such folder per split);
* a folder of Parquet files named by split, as the Hub stores them (``train.parquet``,
  ``train-00000-of-00001.parquet``, ``data/test-....parquet``: the Nucleotide Transformer tasks and
  Genomic Benchmarks on the Hub).
"""

from __future__ import annotations

import json
from pathlib import Path

from .genome import DataError

__all__ = ["ARROW_SUFFIXES", "arrow_rows", "dataset_parts", "read_arrow_table", "require_pyarrow"]

ARROW_SUFFIXES = (".parquet", ".pq", ".arrow", ".feather")


def require_pyarrow(path: Path):
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise DataError(f"{path}: reading Parquet and Arrow needs pyarrow: pip install 'hnet_dna[hf]' "
                        "(or pip install pyarrow)") from None
    return pyarrow


def read_arrow_table(path: Path):
    """A Parquet file, an Arrow IPC file or stream (``datasets.save_to_disk`` writes streams), or a
    ``save_to_disk`` folder (its ``state.json`` lists the shards) as one pyarrow table."""
    pa = require_pyarrow(path)
    try:
        if path.is_dir():
            state = json.loads((path / "state.json").read_text())
            shards = [path / f["filename"] for f in state["_data_files"]]
            return pa.concat_tables([read_arrow_table(s) for s in shards])
        if path.name.lower().endswith((".parquet", ".pq")):
            return pa.parquet.read_table(path)
        try:
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_stream(source).read_all()
    except (pa.ArrowException, OSError, KeyError, ValueError, TypeError) as e:
        what = "Parquet file" if path.name.lower().endswith((".parquet", ".pq")) else "Arrow data"
        raise DataError(f"{path}: not readable {what} ({type(e).__name__}: {e})") from None


def arrow_rows(path: Path):
    """A Parquet / Arrow table's column names and its rows as ``(where, cells)``; a cell is text,
    or ``None`` where the table holds a null. A list or struct column cannot be a sequence, label,
    id or split and is left alone."""
    table = read_arrow_table(path)
    header = list(table.column_names)
    if table.num_rows == 0:
        raise DataError(f"{path}: the table has no rows (columns: {', '.join(map(repr, header))})")
    columns = [table.column(i).to_pylist() for i in range(len(header))]

    def cell(value):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        if isinstance(value, (bool, int, float)):
            return str(int(value)) if isinstance(value, bool) else str(value)
        return value  # lists, dicts: reported if used as a sequence or label

    def rows():
        for i in range(table.num_rows):
            yield f"{path}, row {i + 1}", [cell(c[i]) for c in columns]

    return header, rows()


def dataset_parts(root: Path) -> list[tuple[Path, str | None]] | None:
    """The tables of a data set folder with their split names (``None``: the table does not say),
    or ``None`` when ``root`` is none of the folder layouts above."""
    root = Path(root)
    if (root / "dataset_dict.json").is_file():
        require_pyarrow(root)  # a missing pyarrow is said before anything else
        try:
            splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{root / 'dataset_dict.json'}: not a datasets split list ({type(e).__name__}: {e})") from None
        return [(root / name, name) for name in splits]
    if (root / "state.json").is_file():
        require_pyarrow(root)
        return [(root, None)]
    parquet = sorted(root.glob("*.parquet")) or sorted(root.glob("data/*.parquet"))
    if parquet:
        require_pyarrow(root)
        return [(f, f.name.split("-")[0].split(".")[0]) for f in parquet]
    return None
