"""Lightning tasks: pretraining and fine-tuning modules and their callbacks."""

from .callbacks import (
           ClassPredictionWriter,
           HeldOutReport,
           PredictionWriter,
           TrainingCurves,
           TrainingWindowLog,
)
from .classifier import CNNBaselineModule
from .finetune import FinetuneModule
from .pretrain import PretrainModule, build_model
from .segmentation import SegmentationModule

__all__ = ["PretrainModule", "FinetuneModule", "CNNBaselineModule", "SegmentationModule", "build_model", "HeldOutReport", "TrainingWindowLog", "PredictionWriter",
           "ClassPredictionWriter", "TrainingCurves"]
