"""Genomics data: FASTA access, windows and splits, Lightning data modules."""

from .annotation_datamodule import AnnotationDataModule
from .datamodule import GenomeDataModule
from .genome import DataError, open_fasta
from .labelled_datamodule import LabelledDataModule

__all__ = ["GenomeDataModule", "AnnotationDataModule", "LabelledDataModule", "DataError", "open_fasta"]
