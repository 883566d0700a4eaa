"""How the labelled data module holds out rows: stratified by class (multiclass) or at random,
seeded, for validation, testing or K-fold cross-validation; and which task an input holds."""

from __future__ import annotations

from .genome import DataError
from .labelled import LabelledSequence

__all__ = ["task_of", "stratified_split", "stratified_fold", "describe"]


def task_of(rows: list[LabelledSequence], task: str | None, source) -> str:
    """The task the training input holds (one for every row), or the one asked for."""
    found = {r.task for r in rows}
    if len(found) > 1:
        raise DataError(f"{describe(source)}: its parts hold different tasks ({', '.join(sorted(found))}); give every "
                        "part the same columns")
    held = found.pop()
    if task is not None and task != held:
        raise DataError(f"{describe(source)}: --data.task {task}, but this input is read as {held} (FASTA per class and "
                        "Genomic Benchmarks folders hold one class per sequence); give a table with label_* or target "
                        "columns")
    return held


def stratified_split(rows, fraction: float, seed: int):
    """Hold out ``fraction`` of ``rows``: stratified by class (multiclass), at random otherwise."""
    from sklearn.model_selection import train_test_split

    labels = [r.label for r in rows]
    counts = {label: labels.count(label) for label in set(labels)}
    stratify = labels if rows[0].task == "multiclass" and min(counts.values()) >= 2 else None
    keep, held = train_test_split(list(range(len(rows))), test_size=fraction, random_state=seed, stratify=stratify)
    return [rows[i] for i in sorted(keep)], [rows[i] for i in sorted(held)]


def stratified_fold(rows, folds: int, fold: int, seed: int):
    """(the other folds, fold ``fold``) of a stratified, seeded K-fold partition of ``rows``."""
    from sklearn.model_selection import StratifiedKFold

    if rows[0].task != "multiclass":
        from sklearn.model_selection import KFold

        keep, held = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(rows))[fold]
        return [rows[i] for i in sorted(keep)], [rows[i] for i in sorted(held)]
    labels = [r.label for r in rows]
    smallest = min(labels.count(label) for label in set(labels))
    if smallest < folds:
        raise DataError(f"--data.folds {folds}: the rarest class has {smallest} rows; every fold needs one of each class")
    keep, held = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(rows, labels))[fold]
    return [rows[i] for i in sorted(keep)], [rows[i] for i in sorted(held)]


def describe(source) -> str:
    return str(source) if not isinstance(source, dict) else "{" + ", ".join(f"{k}: {v}" for k, v in source.items()) + "}"
