"""Linear learner as SageMaker's ``linear-learner`` container trains it (algorithms.md §5):
binary, multiclass and regression; ``num_models`` linear models trained at once in one
tensor, each with nearby settings; normalisation folded into the weights; per-epoch
validation with early stopping; best-model selection; a calibrated binary threshold.

Modules: ``params`` (hyperparameters, ``auto`` values, the model grid), ``losses``,
``optimizer`` (one batched step for all models), ``scaling`` (normaliser), ``evaluation``
(metrics, calibration), ``training`` (the job), ``model`` (the stored model and ``predict``).
"""

NAME = "linear-learner"

__all__ = ["NAME", "LinearLearnerModel", "train"]


def __getattr__(name: str):
    """``train`` and ``LinearLearnerModel`` load torch: imported on first use, so that the
    schema can read :mod:`.predictors` without it."""
    if name == "train":
        from .training import train
        return train
    if name == "LinearLearnerModel":
        from .model import LinearLearnerModel
        return LinearLearnerModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
