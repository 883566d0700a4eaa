"""LabelledDataModule: labelled DNA sequences as classification batches (``--data.*``).

Inputs (see :mod:`hnet_dna.data.labelled` for the readers):

* ``train``: a CSV/TSV path, a ``{label: FASTA}`` mapping, or a Genomic Benchmarks folder root. A
  table with a split column (or a Genomic Benchmarks folder) may carry the validation and test
  rows too; ``valid`` / ``test`` given as their own inputs are the other way.
* Without any validation rows, a stratified, seeded ``val_fraction`` of the training rows is held
  out for model selection (the test rows are never used for it).
* Without test rows, ``test_fraction`` holds out a stratified share for testing, or ``folds`` K
  makes fold ``fold`` of a stratified, seeded K-fold partition the test rows (cross-validation,
  as Caduceus evaluates Genomic Benchmarks: run every fold and report over folds).

Splits depend on ``seed`` only; what a model seed should vary (batch order, reverse-complement
draws) depends on ``sample_seed``, which follows the run's ``seed_everything`` by default.

Strand: ``strand_symmetric`` says whether a sequence and its reverse complement always share a
label (enhancers, most TF binding sets: yes; splice sites, promoters oriented on their TSS: no).
Reverse-complement augmentation (and, in :class:`~hnet_dna.tasks.FinetuneModule`, RC-conjoined
logits) is only allowed where it is true: on strand-specific labels it would teach the model a
false symmetry.

Tasks (``task``; by default what the columns say, see :mod:`hnet_dna.data.labelled`):
``multiclass`` (one class per sequence), ``multilabel`` (several independent 0/1 labels) and
``regression`` (one or more numeric targets). :attr:`LabelledDataModule.class_names` names the
model's outputs: the classes, the labels or the targets. Multilabel and regression splits are drawn
at random (seeded), not stratified.

Everything is read, checked and encoded when the data module is constructed, so a bad file stops
a run before anything is written. Batches are right-padded: ``input_ids`` (B, L), ``mask`` (B, L),
``labels`` (B,) class indices into :attr:`LabelledDataModule.class_names` (multiclass) or (B, K)
float 0/1 labels or targets in their own units, ``index`` (B,) the row in its split. Training sequences are reverse-complemented with probability ``reverse_complement``, a
draw keyed by (sample_seed, epoch, row) so that it does not depend on workers or devices. Under DDP,
validation and test give every sequence to exactly one process (no padding, no duplicates).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..tokenizer import NucleotideTokenizer
from .datamodule import WindowSampler
from .genome import DataError
from .labelled import LabelledSequence, class_names, encode_checked, read_labelled
from .splits import describe, stratified_fold, stratified_split, task_of

__all__ = ["LabelledDataModule", "LabelledDataset", "pad_batch"]

SPLITS = ("train", "val", "test")


class LabelledDataset(Dataset):
    """Encoded sequences of one split. Items are keyed by ``(epoch, index)`` (or an index)."""

    def __init__(self, records: list[LabelledSequence], ids: list[torch.Tensor], labels: list,
                 tokenizer: NucleotideTokenizer, reverse_complement: float = 0.0, seed: int = 0):
        self.records, self.ids, self.labels = records, ids, labels
        self.tokenizer, self.reverse_complement, self.seed = tokenizer, reverse_complement, seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key) -> dict:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        ids = self.ids[i]
        if self.reverse_complement and np.random.default_rng([self.seed, epoch, i]).random() < self.reverse_complement:
            ids = self.tokenizer.reverse_complement(ids)
        return {"input_ids": ids, "label": self.labels[i], "index": i}


def pad_batch(items: list[dict], pad_id: int) -> dict:
    """Right-pad a list of items into ``input_ids`` / ``mask`` (B, L), ``labels`` ((B,) class
    indices, or (B, K) floats) and ``index`` (B,)."""
    length = max(len(item["input_ids"]) for item in items)
    input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), length), dtype=torch.bool)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        input_ids[row, :n] = item["input_ids"]
        mask[row, :n] = True
    return {
        "input_ids": input_ids,
        "mask": mask,
        "labels": torch.tensor([item["label"] for item in items],
                               dtype=torch.float32 if isinstance(items[0]["label"], (list, tuple)) else torch.long),
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
    }


class _Collate:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items):
        return pad_batch(items, self.pad_id)


class LabelledDataModule(pl.LightningDataModule):
    """Labelled sequences for fine-tuning a classifier.

    Args:
        train: a CSV/TSV path, a ``{label: FASTA}`` mapping, or a Genomic Benchmarks folder root.
        valid, test: their own inputs (CSV/TSV or ``{label: FASTA}``), when ``train`` does not
            carry them in a split column.
        predict: sequences to classify with ``predict``: a CSV/TSV (labels optional) or a FASTA.
        sequence_column, label_column, id_column, split_column: column names, when the common
            ones (sequence/seq/seqs, label/labels/class/y, id/name, split/set) are not used.
        task: ``multiclass``, ``multilabel`` or ``regression``; None: what the columns say.
        label_columns: multilabel 0/1 columns (default: every ``label_*`` column); without
            them, the label column holds names separated by ``label_separator``.
        target_columns: regression targets (default: ``target``/``targets``/``y`` or every
            ``target_*`` column).
        val_fraction: the stratified share of training rows held out for validation when no
            validation rows are given.
        test_fraction: the stratified share of all rows held out for testing when no test rows
            are given (0: none); carved before the validation rows.
        folds, fold: cross-validation: with ``folds`` K >= 2 and no test rows given, the test rows
            are fold ``fold`` (0-based) of a stratified K-fold partition seeded by ``seed``
            (``test_fraction`` is then unused); without given validation rows, they come out of the
            other folds.
        seed: seeds the splits (the same for every model seed).
        sample_seed: seeds the order of training batches and the reverse-complement draws; None:
            the run's seed (``seed_everything``), or ``seed`` when the run has none.
        batch_size, num_workers: DataLoader settings.
        strand_symmetric: whether every sequence's reverse complement has the same label. Required
            for reverse-complement augmentation; RC-conjoined inference follows it.
        reverse_complement: probability of reverse-complementing a training sequence; None: 0.5
            when ``strand_symmetric``, else 0.
        iupac_policy: ``lenient`` (ambiguity letters become N) or ``strict`` (they are an error).
    """

    def __init__(
        self,
        train: str | dict,
        valid: str | dict | None = None,
        test: str | dict | None = None,
        predict: str | None = None,
        sequence_column: str | None = None,
        label_column: str | None = None,
        id_column: str | None = None,
        split_column: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        folds: int = 0,
        fold: int = 0,
        seed: int = 0,
        sample_seed: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        strand_symmetric: bool = False,
        reverse_complement: float | None = None,
        iupac_policy: str = "lenient",
        task: str | None = None,
        label_columns: list[str] | None = None,
        target_columns: list[str] | None = None,
        label_separator: str = ";",
    ):
        super().__init__()
        # not "task": the module's hyperparameter of that name says the task it was built for, and
        # Lightning refuses a key the two hold with different values (None here: from the columns)
        self.save_hyperparameters(ignore=["task"])
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
            raise DataError(f"--data.val_fraction and --data.test_fraction must be within [0, 1), got {val_fraction}, {test_fraction}")
        if folds == 1 or folds < 0 or (folds and not 0 <= fold < folds):
            raise DataError(f"--data.folds must be 0 (no cross-validation) or >= 2, and --data.fold within "
                            f"[0, folds); got folds {folds}, fold {fold}")
        if reverse_complement is None:
            reverse_complement = 0.5 if strand_symmetric else 0.0
        if not 0 <= reverse_complement <= 1:
            raise DataError(f"--data.reverse_complement is a probability, got {reverse_complement}")
        if reverse_complement > 0 and not strand_symmetric:
            raise DataError(
                f"--data.reverse_complement {reverse_complement}: reverse-complement augmentation keeps each label, "
                "which is only right when a sequence and its reverse complement always share one. Set "
                "--data.strand_symmetric true if they do (enhancers, most TF binding sets), or leave "
                "reverse_complement at 0 for strand-specific labels (splice sites, promoters oriented on their TSS)"
            )
        self.strand_symmetric, self.reverse_complement = bool(strand_symmetric), float(reverse_complement)
        if batch_size < 1 or num_workers < 0:
            raise DataError("--data.batch_size must be >= 1 and --data.num_workers >= 0")
        if iupac_policy not in ("lenient", "strict"):
            raise DataError(f"--data.iupac_policy must be 'lenient' or 'strict', got {iupac_policy!r}")
        self.tokenizer = NucleotideTokenizer(policy=iupac_policy)
        columns = dict(sequence_column=sequence_column, label_column=label_column, id_column=id_column,
                       split_column=split_column)
        if task is not None or label_columns or target_columns:
            columns |= dict(task=task, label_columns=label_columns, target_columns=target_columns,
                            label_separator=label_separator)
        rows = read_labelled(train, **columns)
        self.task = task_of(rows, task, train)
        self.records = self._split(rows, valid, test, columns)
        targets = self._targets()
        self.datasets = {}
        for split in SPLITS:
            recs = self.records[split]
            ids = [encode_checked(self.tokenizer, r) for r in recs]
            self.datasets[split] = LabelledDataset(
                recs, ids, targets[split], self.tokenizer,
                reverse_complement=reverse_complement if split == "train" else 0.0, seed=self.sample_seed,
            )
        self.predict_records = None
        if predict is not None:
            self.predict_records = read_unlabelled(predict, sequence_column=sequence_column, id_column=id_column)
            ids = [encode_checked(self.tokenizer, r) for r in self.predict_records]
            self.datasets["predict"] = LabelledDataset(self.predict_records, ids, [-1] * len(ids), self.tokenizer)

    def _targets(self) -> dict[str, list]:
        """Each split's labels as the model reads them; sets :attr:`class_names` (the outputs)."""
        train, task = self.records["train"], self.task
        for split in ("val", "test"):
            for r in self.records[split]:
                if r.task != task or (r.value_names is not None and r.value_names != train[0].value_names):
                    what = r.task if r.value_names is None else f"{r.task} with columns {', '.join(r.value_names)}"
                    raise DataError(f"{r.where}: a {what} row, where the training rows are {task}"
                                    + (f" with columns {', '.join(train[0].value_names)}" if train[0].value_names else ""))
        if task == "multiclass":
            self.class_names = class_names([r.label for r in train])
            if len(self.class_names) < 2:
                raise DataError(
                    f"{describe(self.hparams.train)}: the training labels hold one class ({self.class_names[0]!r}); a "
                    "classifier needs at least two. Check --data.label_column."
                )
            index = {name: i for i, name in enumerate(self.class_names)}
            for split in ("val", "test"):
                for r in self.records[split]:
                    if r.label not in index:
                        raise DataError(
                            f"{r.where}: label {r.label!r} never occurs in the training data "
                            f"(classes: {', '.join(self.class_names)})"
                        )
            return {split: [index[r.label] for r in self.records[split]] for split in SPLITS}
        if train[0].value_names is not None:  # label or target columns
            self.class_names = list(train[0].value_names)
            out = {split: [list(r.values) for r in self.records[split]] for split in SPLITS}
        else:  # multilabel from one column of ";"-separated names: the training split's names
            self.class_names = sorted({n for r in train for n in r.label.split(";") if n})
            index = {name: i for i, name in enumerate(self.class_names)}
            out = {}
            for split in SPLITS:
                out[split] = []
                for r in self.records[split]:
                    hot = [0.0] * len(index)
                    for name in filter(None, r.label.split(";")):
                        if name not in index:
                            raise DataError(f"{r.where}: label {name!r} never occurs in the training data "
                                            f"(labels: {', '.join(self.class_names)})")
                        hot[index[name]] = 1.0
                    out[split].append(hot)
        if not self.class_names:
            raise DataError(f"{describe(self.hparams.train)}: no labels in the training rows (multilabel)")
        if task == "multilabel":
            positives = np.asarray(out["train"]).sum(0)
            for name, n in zip(self.class_names, positives):
                if n == 0 or n == len(train):
                    raise DataError(f"{describe(self.hparams.train)}: label {name!r} is {'never' if n == 0 else 'always'} "
                                    "set in the training rows, so there is nothing to learn for it; drop the column "
                                    "(or --data.label_columns without it)")
        else:
            spread = np.asarray(out["train"]).std(0)
            for name, sd in zip(self.class_names, spread):
                if not sd > 0:
                    raise DataError(f"{describe(self.hparams.train)}: target {name!r} is constant in the training rows; "
                                    "a regression needs targets that vary")
        return out

    def target_stats(self) -> tuple[list[float], list[float]]:
        """Regression: each target's mean and standard deviation on the training split (the
        model learns the standardised targets; predictions come back in the target's units)."""
        values = np.asarray(self.datasets["train"].labels, dtype=np.float64)  # (N, K)
        return values.mean(0).tolist(), values.std(0).tolist()

    def pos_weight(self) -> list[float]:
        """Multilabel: each label's negatives / positives on the training split (BCE pos_weight)."""
        values = np.asarray(self.datasets["train"].labels, dtype=np.float64)  # (N, K)
        positives = values.sum(0)
        return ((len(values) - positives) / positives).tolist()

    # ------------------------------------------------------------------------------ splits
    def _split(self, rows: list[LabelledSequence], valid, test, columns) -> dict[str, list[LabelledSequence]]:
        out: dict[str, list[LabelledSequence]] = {s: [] for s in SPLITS}
        for r in rows:
            out[r.split or "train"].append(r)
        for split, given, flag in (("val", valid, "valid"), ("test", test, "test")):
            if given is None:
                continue
            if out[split]:
                raise DataError(
                    f"{describe(self.hparams.train)} already holds {split} rows (its split column) and "
                    f"--data.{flag} was given too: use one or the other"
                )
            out[split] = [r for r in read_labelled(given, **columns)]
        if not out["train"]:
            raise DataError(f"{describe(self.hparams.train)}: no training rows (split column: every row is val or test)")
        if self.hparams.folds:
            if out["test"]:
                raise DataError(
                    f"{describe(self.hparams.train)} comes with test rows: cross-validation (--data.folds / "
                    "--folds) is for sets without a given test split; drop it and use the given split"
                )
            out["train"], out["test"] = stratified_fold(out["train"], self.hparams.folds, self.hparams.fold, self.hparams.seed)
        elif not out["test"] and self.hparams.test_fraction > 0:
            out["train"], out["test"] = stratified_split(out["train"], self.hparams.test_fraction, self.hparams.seed)
        if not out["val"] and self.hparams.val_fraction > 0:
            out["train"], out["val"] = stratified_split(out["train"], self.hparams.val_fraction, self.hparams.seed)
        return out

    # ----------------------------------------------------------------------------- checks
    NEEDS = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"]}

    def check_ready(self, stage: str, world_size: int = 1) -> None:
        """Raise a :class:`DataError` when the data cannot serve ``stage`` on ``world_size`` processes."""
        if stage == "predict":
            if self.predict_records is None:
                raise DataError("predict: give the sequences to classify with --data.predict FILE (CSV/TSV or FASTA)")
            return
        for split in self.NEEDS.get(stage, []):
            n = len(self.datasets[split])
            if n == 0:
                how = {"val": "--data.valid, a split column, or --data.val_fraction > 0",
                       "test": "--data.test or a split column with test rows"}.get(split, "--data.train")
                raise DataError(f"{stage}: there are no {split} sequences; give {how}")
            if n < world_size:
                raise DataError(f"{n} {split} sequence(s) cannot be shared by {world_size} processes")

    @property
    def sample_seed(self) -> int:
        """The seed of batch order and augmentation draws (see ``sample_seed``)."""
        if self.hparams.sample_seed is not None:
            return int(self.hparams.sample_seed)
        return int(os.environ.get("PL_GLOBAL_SEED", self.hparams.seed))  # set by seed_everything

    def setup(self, stage: str) -> None:
        self.check_ready(stage, self.trainer.world_size if self.trainer is not None else 1)
        self.datasets["train"].seed = self.sample_seed  # the run's seed is known by now

    # ---------------------------------------------------------------------------- loaders
    def _loader(self, split: str, train: bool = False) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        dataset = self.datasets[split]
        sampler = WindowSampler(dataset, shuffle=train, seed=self.sample_seed, num_replicas=world, rank=rank)
        return DataLoader(dataset, batch_size=self.hparams.batch_size, sampler=sampler, drop_last=False,
                          num_workers=self.hparams.num_workers, collate_fn=_Collate(self.tokenizer.pad_id))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def summary(self) -> str:
        sizes = ", ".join(f"{s}: {len(self.datasets[s]):,}" for s in SPLITS)
        what = {"multiclass": "classes", "multilabel": "labels", "regression": "targets"}[self.task]
        return f"{sizes} sequences; {what} {', '.join(self.class_names)}"


def read_unlabelled(source, *, sequence_column=None, id_column=None) -> list[LabelledSequence]:
    """Sequences to classify: a FASTA (plain or gzip), a CSV/TSV/Parquet/Arrow table or a Hugging
    Face data set folder, whose label column is optional."""
    from .labelled import read_arrow_folder, read_fasta_records, read_table

    path = Path(source)
    if path.is_dir():
        return read_arrow_folder(path, sequence_column=sequence_column, id_column=id_column, label_required=False)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".fa", ".fasta", ".fna", ".fas")):
        return read_fasta_records(path)
    return read_table(path, sequence_column=sequence_column, id_column=id_column, label_required=False)
