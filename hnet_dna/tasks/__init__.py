"""Lightning tasks: pretraining and fine-tuning modules and their callbacks."""

from .callbacks import (
           ClassPredictionWriter,
           HeldOutReport,
           PredictionWriter,
           TrainingCurves,
           TrainingWindowLog,
)
from .finetune import FinetuneModule
from .pretrain import PretrainModule, build_model

__all__ = ["PretrainModule", "FinetuneModule", "build_model", "HeldOutReport", "TrainingWindowLog", "PredictionWriter",
           "ClassPredictionWriter", "TrainingCurves"]
