"""Genomics data: FASTA access, windows and splits, Lightning data modules."""

from .datamodule import GenomeDataModule
from .genome import DataError, open_fasta

__all__ = ["GenomeDataModule", "DataError", "open_fasta"]
