"""AnnotationDataModule: genome windows labelled at every base, for segmentation (issue #33).

The windows are the pretraining windows (:class:`~hnet_dna.data.GenomeDataModule`: the same BED
or region splits, N filter, reverse-complement and shift augmentation, and leakage check); each
window's labels are read from one interval file per element (:mod:`hnet_dna.data.annotation`)::

    input_ids (L,)      the window's bases
    mask      (L,)      True on every position (windows have no padding)
    labels    (L, E)    1 where the base is inside element e (float, for BCE)
    scored    (L,)      True where the base is A/C/G/T: N bases and padding are never scored
    coords    (4,)      source, record, start, reverse-complemented

A reverse-complemented window's labels are its forward labels reversed (the elements are
annotated on both strands alike). ``train_windows`` / ``held_out_windows`` keep that many windows
of a split, evenly spaced along it (the same windows every epoch and every run), when a whole
chromosome is more than a budget can train or evaluate on. Evenly spaced windows can miss a rare
element altogether (200 windows of 2 kb every 32 kb of chr20 50-56.5 Mb hold no CpG island and no
TSS): ``held_out_cover`` then spends half of ``held_out_windows`` on windows holding each element
(an equal share per element, evenly spaced among the windows that hold it) and the rest evenly
along the split, so every element present in a split is validated and tested; rare elements are
then more frequent in the held-out windows than in the genome (:meth:`AnnotationDataModule.element_fractions`
says by how much), alike for every system compared.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from .annotation import ElementIntervals, element_labels, read_annotation
from .datamodule import GenomeDataModule, GenomeWindows
from .genome import DataError
from .windows import WindowTable

__all__ = ["AnnotationDataModule", "AnnotatedWindows"]


class AnnotatedWindows(GenomeWindows):
    """:class:`GenomeWindows` with per-base element labels (see the module docstring)."""

    def __init__(self, *args, elements: list[ElementIntervals], **kwargs):
        super().__init__(*args, **kwargs)
        self.elements = elements

    def __getitem__(self, key) -> dict:
        item = super().__getitem__(key)
        source, record_index, start, rc = (int(v) for v in item["coords"])
        record = self.table.records[record_index][1]
        labels = torch.from_numpy(element_labels(self.elements, source, record, start, start + self.table.window))
        ids = item["input_ids"]
        if rc:
            labels = labels.flip(0)
        return {"input_ids": ids, "mask": torch.ones_like(ids, dtype=torch.bool), "labels": labels.float(),
                "scored": ids < self.tokenizer.n_id, "coords": item["coords"]}


def _evenly_among(indices: np.ndarray, count: int) -> set[int]:
    """``count`` of ``indices`` (all if fewer), evenly spaced, the first and last included."""
    if not len(indices) or count <= 0:
        return set()
    return set(indices[np.unique(np.linspace(0, len(indices) - 1, min(count, len(indices))).round().astype(int))].tolist())


def _evenly(table: WindowTable, keep: int | None) -> WindowTable:
    if keep is None or keep >= len(table):
        return table
    return _subset(table, np.array(sorted(_evenly_among(np.arange(len(table)), keep)), dtype=np.int64))


def _window_elements(table: WindowTable, elements: list[ElementIntervals]) -> np.ndarray:
    """(windows, E) bool: whether each window of ``table`` holds a base of each element."""
    out = np.zeros((len(table), len(elements)), dtype=bool)
    for i in range(len(table)):
        record, start = table.records[table.record[i]][1], int(table.start[i])
        out[i] = element_labels(elements, int(table.source[i]), record, start, start + table.window).any(0)
    return out


def _covering(table: WindowTable, keep: int | None, elements: list[ElementIntervals]) -> WindowTable:
    """``keep`` windows of ``table``: half shared equally among the elements (evenly spaced among
    the windows holding each), the rest evenly spaced along the split (see the module docstring)."""
    if keep is None or keep >= len(table):
        return table
    holds = _window_elements(table, elements)  # (windows, E)
    share = keep // (2 * len(elements))
    picks: set[int] = set()
    for e in range(len(elements)):
        picks |= _evenly_among(np.flatnonzero(holds[:, e]), share)
    rest = np.setdiff1d(np.arange(len(table)), sorted(picks))  # the remainder evenly along the split
    picks |= _evenly_among(rest, keep - len(picks))
    return _subset(table, np.array(sorted(picks), dtype=np.int64))


def _subset(table: WindowTable, picks: np.ndarray) -> WindowTable:
    return WindowTable(table.source[picks], table.record[picks], table.start[picks], table.records, table.window,
                       None if table.region is None else table.region[picks], table.regions, table.problem)


class AnnotationDataModule(GenomeDataModule):
    """Genome windows with per-base labels of the ``annotation`` elements.

    Args:
        fasta, bed, val_regions, test_regions, window, stride, max_n_fraction, reverse_complement,
            random_shift, iupac_policy, batch_size, num_workers, index_dir, allow_leakage: as
            :class:`~hnet_dna.data.GenomeDataModule` (splits by position, leakage checked).
        annotation: element name -> BED or SAF file (``--data.annotation exon=exons.bed``...);
            the names, in order, are the outputs of the head.
        seed: window order and augmentation; ``sample_seed`` (what the fine-tuning protocol varies
            per run) replaces it when given.
        train_windows, held_out_windows: keep this many training / validation and test windows,
            evenly spaced along each split (default: all).
        held_out_cover: choose the ``held_out_windows`` so that every element present in a split
            is in them (see the module docstring; default False: evenly spaced only).
        skip_absent_chromosomes: leave out annotation on chromosomes no FASTA holds (default: an error).
    """

    task = "segmentation"
    strand_symmetric = True  # elements cover both strands: a reverse-complemented window keeps its labels

    def __init__(self, fasta: str | list[str], annotation: dict[str, str], bed: str | None = None,
                 val_regions: list[str] | None = None, test_regions: list[str] | None = None, window: int = 2048,
                 stride: int | None = None, max_n_fraction: float = 0.1, reverse_complement: float = 0.5,
                 random_shift: int = 0, iupac_policy: str = "lenient", batch_size: int = 8, num_workers: int = 0,
                 seed: int = 0, sample_seed: int | None = None, index_dir: str | None = None,
                 allow_leakage: bool = False, train_windows: int | None = None, held_out_windows: int | None = None,
                 skip_absent_chromosomes: bool = False, held_out_cover: bool = False):
        if not isinstance(annotation, dict) or not annotation:
            raise DataError("--data.annotation: give one interval file per element, e.g. "
                            "--data.annotation '{exon: exons.bed, cpg: cpg_islands.bed}'")
        for count, flag in ((train_windows, "train_windows"), (held_out_windows, "held_out_windows")):
            if count is not None and count < 1:
                raise DataError(f"--data.{flag} must be at least 1, got {count}")
        super().__init__(fasta, bed=bed, val_regions=val_regions, test_regions=test_regions, window=window,
                         stride=stride, max_n_fraction=max_n_fraction, reverse_complement=reverse_complement,
                         random_shift=random_shift, iupac_policy=iupac_policy, batch_size=batch_size,
                         num_workers=num_workers, seed=seed if sample_seed is None else sample_seed,
                         index_dir=index_dir, allow_leakage=allow_leakage)
        # this class's arguments beside the windows' (a second save_hyperparameters would drop those);
        # the windows' own defaults where the frames Lightning read held only this class's
        defaults = inspect.signature(GenomeDataModule.__init__).parameters.values()
        self.hparams.update({p.name: p.default for p in defaults if p.default is not p.empty and p.name not in self.hparams})
        self.hparams.update(annotation=dict(annotation), train_windows=train_windows, held_out_windows=held_out_windows,
                            sample_seed=sample_seed, skip_absent_chromosomes=skip_absent_chromosomes,
                            held_out_cover=held_out_cover,
                            seed=seed if sample_seed is None else sample_seed)
        self.elements = [read_annotation(str(name), path, self.sources, skip_absent_chromosomes)
                         for name, path in annotation.items()]
        self.class_names = [e.name for e in self.elements]
        self.tables = {"train": _evenly(self.tables["train"], train_windows),
                       **{s: (_covering(self.tables[s], held_out_windows, self.elements) if held_out_cover
                              else _evenly(self.tables[s], held_out_windows)) for s in ("val", "test")}}
        self.datasets = {split: self.unaugmented(split) for split in self.tables}
        self.datasets["train"] = AnnotatedWindows(self.sources, self.tables["train"], self.tokenizer, elements=self.elements,
                                                  reverse_complement=reverse_complement, random_shift=random_shift,
                                                  seed=self.hparams.seed)

    def unaugmented(self, split: str) -> AnnotatedWindows:
        """The split's windows as they lie on the forward strand (no reverse complement, no shift):
        what held-out splits always are, and what a probe reads of the training split."""
        return AnnotatedWindows(self.sources, self.tables[split], self.tokenizer, elements=self.elements,
                                reverse_complement=0.0, random_shift=0, seed=self.hparams.seed)

    def element_fractions(self, split: str = "train") -> list[float]:
        """The fraction of the split's bases inside each element (from the intervals; N included)."""
        table = self.tables[split]
        totals = np.zeros(len(self.elements))
        for i in range(len(table)):
            record = table.records[table.record[i]][1]
            start = int(table.start[i])
            totals += element_labels(self.elements, int(table.source[i]), record, start, start + table.window).sum(0)
        return (totals / max(1, len(table) * table.window)).tolist()

    def pos_weight(self) -> list[float]:
        """Each element's bases outside / inside it over the training windows (BCE pos_weight:
        ``--model.pos_weight balanced``)."""
        fractions = np.asarray(self.element_fractions("train"))
        absent = [n for n, f in zip(self.class_names, fractions) if f == 0]
        if absent:
            raise DataError(f"pos_weight balanced: no training base lies inside {', '.join(map(repr, absent))}; "
                            "give more --data.train_windows or drop the element")
        return ((1 - fractions) / fractions).tolist()

    def summary(self) -> str:
        return super().summary() + "; elements: " + ", ".join(self.class_names)
