"""Genomics data: FASTA access, windows and splits, Lightning data modules."""

from .datamodule import GenomeDataModule
from .genome import DataError, open_fasta
from .labelled_datamodule import LabelledDataModule

__all__ = ["GenomeDataModule", "LabelledDataModule", "DataError", "open_fasta"]
