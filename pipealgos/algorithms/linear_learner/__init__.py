"""Linear learner as SageMaker's ``linear-learner`` container trains it (algorithms.md §5):
binary, multiclass and regression; ``num_models`` linear models trained at once in one
tensor, each with nearby settings; normalisation folded into the weights; per-epoch
validation with early stopping; best-model selection; a calibrated binary threshold.

Modules: ``params`` (hyperparameters, ``auto`` values, the model grid), ``losses``,
``optimizer`` (one batched step for all models), ``scaling`` (normaliser), ``evaluation``
(metrics, calibration), ``training`` (the job), ``model`` (the stored model and ``predict``).
"""

from .model import LinearLearnerModel
from .training import train

NAME = "linear-learner"

__all__ = ["NAME", "LinearLearnerModel", "train"]
