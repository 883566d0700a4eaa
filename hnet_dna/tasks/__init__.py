"""Lightning tasks: pretraining (and, later, fine-tuning) modules and their callbacks."""

from .callbacks import HeldOutReport, PredictionWriter, TrainingCurves, TrainingWindowLog
from .pretrain import PretrainModule, build_model

__all__ = ["PretrainModule", "build_model", "HeldOutReport", "TrainingWindowLog", "PredictionWriter", "TrainingCurves"]
