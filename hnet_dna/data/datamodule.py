"""GenomeDataModule: windows of reference genomes as training batches for causal-LM pretraining.

Everything the user passes is checked when the data module is constructed (FASTA files and
their indexes, every letter, the BED, regions, splits, window sizes, leakage), so a bad input
stops the run before the trainer creates any folder or file.

Determinism and resuming: the order of windows in an epoch is a function of (seed, epoch), and the
augmentation of a window a function of (seed, epoch, window index), whatever the number of
workers. The training loader reports how many batches of the epoch were consumed; Lightning
stores that in its checkpoints and a resumed run continues with the next batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ..tokenizer import NucleotideTokenizer
from .genome import DataError, FastaSource, open_fasta
from .masking import bert_mask
from .windows import WindowTable, build_windows

__all__ = ["GenomeDataModule", "GenomeWindows", "WindowSampler", "ResumableDataLoader", "check_resume_world_size"]


class GenomeWindows(Dataset):
    """Windows of one split. Items are keyed by ``(epoch, index)`` so that augmentation draws
    depend on the epoch and the window only (not on the worker or the order of requests).

    Each item holds ``input_ids`` (L,), ``labels`` (= input_ids; the model shifts them and ignores
    N), ``loss_weights`` (L,) (``soft_mask_weight`` on lowercase bases, else 1) and ``coords``
    (source, record, start, reverse-complemented) for provenance. With ``mlm_fraction`` > 0 (masked-LM
    pretraining), ``input_ids`` are BERT-masked (:mod:`hnet_dna.data.masking`) and ``labels`` hold the
    hidden bases' ids (-100 elsewhere); the masks are keyed by (seed, epoch, window) with BERT's
    80/10/10, or, where ``training_masks`` is False (held-out splits), by (seed, window) alone with
    every chosen base behind ``<mask>``: the same hidden bases every time, none of them visible.
    """

    MASKING_STREAM = 1  # the masks' random stream, apart from the augmentation's

    def __init__(
        self,
        sources: list[FastaSource],
        table: WindowTable,
        tokenizer: NucleotideTokenizer,
        *,
        reverse_complement: float = 0.0,
        random_shift: int = 0,
        soft_mask_weight: float = 1.0,
        seed: int = 0,
        mlm_fraction: float = 0.0,
        training_masks: bool = True,
    ):
        self.sources, self.table, self.tokenizer = sources, table, tokenizer
        self.reverse_complement, self.random_shift = reverse_complement, random_shift
        self.soft_mask_weight, self.seed = soft_mask_weight, seed
        self.mlm_fraction, self.training_masks = mlm_fraction, training_masks

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key) -> dict:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        t = self.table
        source, record = t.source[i], t.records[t.record[i]][1]
        start, length = int(t.start[i]), t.window
        rng = np.random.default_rng([self.seed, epoch, i])
        rc = False
        if self.random_shift or self.reverse_complement:
            shift = int(rng.integers(-self.random_shift, self.random_shift + 1)) if self.random_shift else 0
            record_len = self.sources[source].records[record]
            start = min(max(start + shift, 0), record_len - length)
            rc = bool(rng.random() < self.reverse_complement)
        seq = self.sources[source].fetch(record, start, start + length)
        ids, soft = self.tokenizer.encode(seq, return_soft_mask=True, record=record)
        if rc:
            ids, soft = self.tokenizer.reverse_complement(ids), soft.flip(0)
        weights = torch.where(soft, self.soft_mask_weight, 1.0).float()
        coords = torch.tensor([source, t.record[i], start, int(rc)], dtype=torch.long)
        labels = ids
        if self.mlm_fraction > 0:  # its own stream: the causal draws above do not move
            key = [self.seed, epoch if self.training_masks else 0, i, self.MASKING_STREAM]
            ids, labels = bert_mask(ids, np.random.default_rng(key), self.tokenizer, self.mlm_fraction,
                                    corrupt=self.training_masks)
        return {"input_ids": ids, "labels": labels, "loss_weights": weights, "coords": coords}


class WindowSampler(DistributedSampler):
    """Window order for one rank: a permutation of the split per epoch (or, with per-FASTA
    weights, a weighted draw), cut into one share per rank; it can start mid-epoch.

    Training (``shuffle=True``) gives every rank the same number of windows (the last
    ``len % ranks`` of an epoch's order are left for the next epoch's permutation). Evaluation
    (``shuffle=False``) gives rank r windows r, r + ranks, ...: every window exactly once over
    all ranks, none repeated or dropped, so held-out metrics do not depend on the device count
    (the shares may differ by one window; nothing in evaluation synchronises per batch).

    A ``DistributedSampler`` subclass so that Lightning uses it as it is under DDP. Yields
    ``(epoch, index)`` keys for :class:`GenomeWindows`.
    """

    def __init__(
        self,
        dataset: GenomeWindows,
        *,
        shuffle: bool,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        weights: np.ndarray | None = None,
        epoch_size: int | None = None,
    ):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.weights = weights
        self.epoch_size = epoch_size or len(dataset)
        if shuffle or weights is not None:
            self.num_samples = self.epoch_size // num_replicas  # same count on every rank
        else:
            self.num_samples = len(range(rank, self.epoch_size, num_replicas))  # all of them, once
        self._resume: tuple[int, int] | None = None

    def resume(self, epoch: int, skip: int) -> None:
        """Make the next pass over ``epoch`` start after ``skip`` of this rank's samples."""
        self._resume = (epoch, skip)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:  # numpy: torch.multinomial stops at 2**24 categories
            rng = np.random.default_rng([self.seed, self.epoch])
            order = torch.from_numpy(rng.choice(len(self.weights), self.epoch_size, p=self.weights))
        elif self.shuffle:
            order = torch.randperm(len(self.dataset), generator=g)
        else:
            order = torch.arange(len(self.dataset))
        mine = order[self.rank :: self.num_replicas][: self.num_samples]
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
        self._resume = None
        return iter([(self.epoch, int(i)) for i in mine[skip:]])


def check_resume_world_size(state: dict, world_size: int, checkpoint: str = "the checkpoint") -> None:
    """A run resumes mid-epoch only on as many processes as wrote the checkpoint: each rank's
    place in the epoch's window order depends on the number of ranks."""
    saved = state.get("world_size", 1)
    if saved != world_size:
        raise DataError(
            f"{checkpoint} was written by a run on {saved} process(es) (devices x nodes) and this run has "
            f"{world_size}: a mid-epoch resume must use the same number, or the windows each rank reads would "
            f"not continue where they stopped. Resume with --trainer.devices / --trainer.num_nodes giving "
            f"{saved} processes, or start a new run from its weights (--model.model on the exported "
            "save_pretrained folder)."
        )


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`WindowSampler` whose state (epoch, batches consumed) goes into
    Lightning checkpoints. ``progress`` tells how many batches of the epoch the training loop has
    taken (Lightning prefetches, so counting what the iterator yielded would be one too many)."""

    def __init__(self, *args, progress: Callable[[], tuple[int, int]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict:
        epoch, consumed = self.progress() if self.progress else (self.sampler.epoch, 0)
        return {"epoch": epoch, "consumed_batches": consumed, "batch_size": self.batch_size,
                "world_size": self.sampler.num_replicas}

    def load_state_dict(self, state: dict) -> None:
        check_resume_world_size(state, self.sampler.num_replicas)
        epoch, consumed = state["epoch"], state["consumed_batches"]
        if consumed >= len(self):  # saved at the end of an epoch: go on with the next one
            epoch, consumed = epoch + 1, 0
        # Set the epoch now: Lightning starts the iterator (and workers fetch) before its own
        # set_epoch call on a resumed run.
        self.sampler.set_epoch(epoch)
        self.sampler.resume(epoch, consumed * state["batch_size"])


class GenomeDataModule(pl.LightningDataModule):
    """Windows of one or more reference genomes for causal-LM (or, with ``mlm_fraction``, masked-LM)
    pretraining.

    Args:
        fasta: one FASTA path or a list (uncompressed or BGZF).
        fasta_weights: sampling weight per FASTA (training only); None = every training window once
            per epoch.
        bed: a ``chrom start end split`` BED (0-based) giving the intervals of each split. Without
            it, every record is training sequence except ``val_regions`` / ``test_regions``.
        val_regions, test_regions: held-out regions, ``chrom`` or ``chrom:start-end`` (1-based,
            inclusive, as samtools writes them).
        window: bases per window. stride: bases between window starts (default: ``window``).
        max_n_fraction: windows with more N than this fraction are skipped (default 0.1). N is
            never a target of the loss either way.
        reverse_complement: probability of reverse-complementing a training window.
        random_shift: training windows move by up to this many bases either way.
        soft_mask_weight: loss weight of lowercase (soft-masked repeat) bases; 1 = like the rest.
        iupac_policy: ``lenient`` (ambiguity letters become N) or ``strict`` (they are an error).
        batch_size, num_workers: DataLoader settings (each worker opens its own FASTA handles).
        seed: seeds window order and augmentation.
        index_dir: where to write FASTA indexes when the FASTA's folder is read-only.
        allow_leakage: accept held-out windows overlapping training spans.
        epoch_windows: windows per training epoch when ``fasta_weights`` is given (default: all).
        mlm_fraction: masked-LM pretraining (a bidirectional model, ``HNetForMaskedLM``): the fraction
            of real A/C/G/T bases hidden per window, BERT's 80/10/10 (0.15 is BERT's); 0 (default) =
            causal-LM windows. Training windows draw new masks every epoch, held-out ones keep theirs
            and hide every chosen base behind ``<mask>``.
    """

    def __init__(
        self,
        fasta: str | list[str],
        bed: str | None = None,
        fasta_weights: list[float] | None = None,
        val_regions: list[str] | None = None,
        test_regions: list[str] | None = None,
        window: int = 1024,
        stride: int | None = None,
        max_n_fraction: float = 0.1,
        reverse_complement: float = 0.5,
        random_shift: int = 0,
        soft_mask_weight: float = 1.0,
        iupac_policy: str = "lenient",
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        index_dir: str | None = None,
        allow_leakage: bool = False,
        epoch_windows: int | None = None,
        mlm_fraction: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        if not 0 <= mlm_fraction < 1:
            raise DataError(f"--data.mlm_fraction is the fraction of bases hidden per window, in [0, 1); got {mlm_fraction}")
        paths = [fasta] if isinstance(fasta, (str, Path)) else list(fasta)
        if not paths:
            raise DataError("--data.fasta: give at least one FASTA file")
        if fasta_weights is not None and (len(fasta_weights) != len(paths) or any(w < 0 for w in fasta_weights) or sum(fasta_weights) <= 0):
            raise DataError(f"--data.fasta_weights: need {len(paths)} non-negative weights (one per FASTA) with a positive sum, got {fasta_weights}")
        if not 0 <= reverse_complement <= 1:
            raise DataError(f"--data.reverse_complement is a probability, got {reverse_complement}")
        if random_shift < 0 or soft_mask_weight < 0 or batch_size < 1 or num_workers < 0:
            raise DataError("random_shift, soft_mask_weight and num_workers must be >= 0 and batch_size >= 1")
        if iupac_policy not in ("lenient", "strict"):
            raise DataError(f"--data.iupac_policy must be 'lenient' or 'strict', got {iupac_policy!r}")
        self.tokenizer = NucleotideTokenizer(policy=iupac_policy)
        self.sources = [open_fasta(p, index_dir=index_dir, iupac_policy=iupac_policy) for p in paths]
        self.tables = build_windows(
            self.sources, window, stride or window, bed=bed,
            val_regions=list(val_regions or []), test_regions=list(test_regions or []),
            max_n_fraction=max_n_fraction, random_shift=random_shift, allow_leakage=allow_leakage,
        )
        self.datasets = {
            split: GenomeWindows(
                self.sources, table, self.tokenizer,
                reverse_complement=reverse_complement if split == "train" else 0.0,
                random_shift=random_shift if split == "train" else 0,
                soft_mask_weight=soft_mask_weight, seed=seed,
                mlm_fraction=mlm_fraction, training_masks=split == "train",
            )
            for split, table in self.tables.items()
        }

    # ---------------------------------------------------------------------------- checks
    NEEDS = {"fit": ["train"], "validate": ["val"], "test": ["test"], "predict": ["test", "val"]}

    def check_ready(self, stage: str, world_size: int = 1) -> None:
        """Raise a :class:`DataError` when the data cannot serve ``stage`` (``fit``, ``validate``,
        ``test``, ``predict``) on ``world_size`` processes. Nothing else needs to exist: scoring a
        genome held out entirely needs no training window."""
        needs = self.NEEDS.get(stage, [])
        batch = self.hparams.batch_size
        if stage == "fit":
            train = self.tables["train"]
            if train.problem:
                raise DataError(train.problem)
            if len(train) // world_size < batch:
                raise DataError(
                    f"{len(train):,} training windows over {world_size} process(es) is less than one batch of {batch} "
                    "each: lower --data.batch_size or --data.stride, or give more sequence"
                )
        elif needs and not any(len(self.datasets[split]) for split in needs):
            first = needs[0]
            raise DataError(
                f"{stage}: the data has no {' or '.join(needs)} windows; give --data.{first}_regions "
                f"or a BED with a {'valid' if first == 'val' else first} split"
            )
        for split in ["val"] if stage == "fit" else needs:
            n = len(self.datasets[split])
            if 0 < n < world_size:
                raise DataError(
                    f"{n} {split} window(s) cannot be shared by {world_size} processes (each needs at least one): "
                    f"hold out more sequence, lower --data.stride, or evaluate on fewer devices"
                )

    def setup(self, stage: str) -> None:
        world = self.trainer.world_size if self.trainer is not None else 1
        self.check_ready(stage, world)

    # ---------------------------------------------------------------------------- loaders
    def _window_weights(self) -> np.ndarray | None:
        w = self.hparams.fasta_weights
        if w is None:
            return None
        table = self.tables["train"]
        counts = np.bincount(table.source, minlength=len(self.sources))
        empty = [str(self.sources[i].path) for i, wi in enumerate(w) if wi > 0 and counts[i] == 0]
        if empty:
            raise DataError(f"--data.fasta_weights: {', '.join(empty)} has a weight but no training window")
        per_window = np.array(w, dtype=np.float64)[table.source] / np.maximum(counts[table.source], 1)
        return per_window / per_window.sum()

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _progress(self) -> tuple[int, int]:
        trainer = self.trainer
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise DataError(f"there are no {split} windows: give --data.{split}_regions or a BED with a {split} split")
        world, rank = self._rank()
        sampler = WindowSampler(
            dataset, shuffle=train, seed=self.hparams.seed, num_replicas=world, rank=rank,
            weights=self._window_weights() if train else None,
            epoch_size=(self.hparams.epoch_windows if train and self.hparams.fasta_weights else None),
        )
        return ResumableDataLoader(
            dataset, batch_size=self.hparams.batch_size, sampler=sampler, drop_last=train,
            num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0,
            progress=self._progress if train else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", train=False) if len(self.datasets["val"]) else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        split = "test" if len(self.datasets["test"]) else "val"
        return self._loader(split, train=False)

    # ------------------------------------------------------------------------------ extras
    def split_sequences(self, split: str, max_windows: int | None = None):
        """The windows of a split as ids (no augmentation), one at a time, e.g. to fit Markov
        baselines; ``max_windows`` takes that many, evenly spaced over the split."""
        ds = self.datasets[split]
        plain = GenomeWindows(self.sources, ds.table, self.tokenizer)
        n = len(plain)
        picks = range(n) if max_windows is None or max_windows >= n else np.linspace(0, n - 1, max_windows).astype(int)
        for i in picks:
            yield plain[int(i)]["input_ids"]

    def masked_windows(self, split: str, max_windows: int | None = None):
        """A held-out split's windows as a masked LM reads them: (masked ids, labels) pairs, the
        split's fixed masks (every chosen base behind ``<mask>``), ``max_windows`` evenly spaced."""
        ds = self.datasets[split]
        n = len(ds)
        picks = range(n) if max_windows is None or max_windows >= n else np.linspace(0, n - 1, max_windows).astype(int)
        for i in picks:
            item = ds[(0, int(i))]
            yield item["input_ids"], item["labels"]

    def summary(self) -> str:
        t = self.tables
        return ", ".join(f"{s}: {len(t[s]):,} windows" for s in ("train", "val", "test")) + f" of {t['train'].window:,} bases"
