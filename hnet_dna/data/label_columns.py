"""Which task a table holds and its value columns (issue #33): multilabel 0/1 columns
(``label_*``), regression targets (``target_*``, or ``target`` / ``targets`` / ``y`` when asked),
and the checks of their cells. Used by :mod:`hnet_dna.data.labelled`'s readers."""

from __future__ import annotations

from pathlib import Path

from .genome import DataError

__all__ = ["TASKS", "TARGET_NAMES", "task_columns", "flag_cell", "number_cell"]

TARGET_NAMES = ("target", "targets", "y")
TASKS = ("multiclass", "multilabel", "regression")
TRUE_VALUES, FALSE_VALUES = ("1", "1.0", "true", "yes"), ("0", "0.0", "false", "no")


def task_columns(header: list[str], columns: dict, label_required: bool, path: Path, flag_prefix: str,
                 label_names: tuple[str, ...]):
    """(task, the value columns, their names) of a table: multilabel 0/1 columns or regression
    targets, found by name (``label_*``; ``target`` / ``targets`` / ``y`` / ``target_*``) or given."""
    task = columns.get("task")
    if task is not None and task not in TASKS:
        raise DataError(f"{flag_prefix}task must be one of {', '.join(TASKS)}, got {task!r}")
    lower = {c.strip().lower(): c for c in header}
    given_labels, given_targets = columns.get("label_columns"), columns.get("target_columns")
    for given, flag in ((given_labels, "label_columns"), (given_targets, "target_columns")):
        for c in given or []:
            if c not in header:
                raise DataError(f"{path}: no column {c!r} ({flag_prefix}{flag}); the columns are {', '.join(map(repr, header))}")
    prefixed_labels = [c for c in header if c.strip().lower().startswith("label_")]
    prefixed_targets = [c for c in header if c.strip().lower().startswith("target_")]
    if task is None:
        if given_labels or (prefixed_labels and not any(n in lower for n in label_names)):
            task = "multilabel"
        elif given_targets or (prefixed_targets and not any(n in lower for n in label_names)):
            task = "regression"
        else:
            task = "multiclass"
    if task == "multilabel":
        cols = list(given_labels or ([] if columns.get("label_column") else prefixed_labels))
        if cols and len(set(cols)) != len(cols):
            raise DataError(f"{path}: a label column is named twice in {flag_prefix}label_columns")
        return task, cols, tuple(_unprefixed(c, "label_") for c in cols) if cols else None
    if task == "regression":
        if not label_required:  # sequences to predict: targets not needed
            return task, [], None
        cols = list(given_targets or prefixed_targets)
        if not cols:
            found = next((lower[n] for n in TARGET_NAMES if n in lower), None)
            if found is None:
                raise DataError(f"{path}: no target column for a regression task (looked for {', '.join(TARGET_NAMES)} "
                                f"and target_*); the columns are {', '.join(map(repr, header))}. Name them with "
                                f"{flag_prefix}target_columns")
            cols = [found]
        names = tuple(_unprefixed(c, "target_") for c in cols)
        return task, cols, names
    if given_labels or given_targets:
        raise DataError(f"{path}: {flag_prefix}label_columns / target_columns are for multilabel and regression tasks; "
                        f"{flag_prefix}task is {task}")
    return task, [], None


def _unprefixed(column: str, prefix: str) -> str:
    """``label_exon`` -> ``exon`` (any case); other names as they are."""
    name = column.strip()
    return name[len(prefix):] if name.lower().startswith(prefix) and len(name) > len(prefix) else name


def flag_cell(value, where: str, column: str) -> float:
    """A multilabel cell as 0.0 or 1.0."""
    text = str(value if value is not None else "").strip().lower()
    if text in TRUE_VALUES or value is True:
        return 1.0
    if text in FALSE_VALUES or value is False:
        return 0.0
    raise DataError(f"{where}: the label column {column!r} holds {value!r}; a multilabel column holds 0 or 1 "
                    "(or true / false) for every sequence")


def number_cell(value, where: str, column: str) -> float:
    """A regression target cell as a finite float."""
    try:
        number = float(value if not isinstance(value, str) else value.strip())
    except (TypeError, ValueError):
        number = None
    if number is None or number != number or number in (float("inf"), float("-inf")):
        raise DataError(f"{where}: the target column {column!r} holds {value!r}, not a finite number; a regression "
                        "target is numeric in every row (drop or impute the row), or choose the columns with "
                        "--data.target_columns")
    return number
