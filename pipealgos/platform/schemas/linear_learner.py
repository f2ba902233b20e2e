"""Linear learner hyperparameters (algorithms.md section 5).

Where the developer guide and the SDK disagree on a bound, the SDK's (the looser) wins for
``margin`` (>= 0: a zero margin is the perceptron loss) and the guide's for ``huber_delta``
(> 0: a zero delta makes the Huber loss identically zero). ``num_classes`` keeps the
container's default of 1 and must be >= 3 only for ``multiclass_classifier``.
"""

from pipealgos.algorithms.linear_learner.predictors import LOSSES, PREDICTOR_TYPES

from ..hyperparameters import Param, Schema

ALL_LOSSES = tuple(sorted({loss for losses in LOSSES.values() for loss in losses}))
CRITERIA = ("accuracy", "f_beta", "precision_at_target_recall", "recall_at_target_precision", "loss_function",
            "f1", "cross_entropy_loss")


def _loss_fits_predictor(values: dict) -> str | None:
    predictor, loss = values["predictor_type"], values["loss"]
    if loss not in LOSSES[predictor]:
        return (f"Hyperparameter 'loss' ({loss!r}) does not apply to predictor_type {predictor!r}: "
                f"use one of {', '.join(LOSSES[predictor])}.")
    return None


def _multiclass_has_classes(values: dict) -> str | None:
    if values["predictor_type"] == "multiclass_classifier" and values["num_classes"] < 3:
        return (f"Hyperparameter 'num_classes' ({values['num_classes']}) must be at least 3 for "
                "predictor_type 'multiclass_classifier': set num_classes (use binary_classifier for 2 classes).")
    return None


SCHEMA = Schema(
    algorithm="linear-learner",
    params=(
        Param("predictor_type", str, required=True, choices=PREDICTOR_TYPES),
        Param("num_classes", int, default=1, low=1, high=1_000_000),
        Param("feature_dim", int, default="auto", low=1, auto=True),
        Param("mini_batch_size", int, default=1000, low=1),
        Param("epochs", int, default=15, low=1),
        Param("loss", str, default="auto", choices=ALL_LOSSES),
        Param("optimizer", str, default="auto", choices=("auto", "sgd", "adam", "rmsprop")),
        Param("learning_rate", float, default="auto", low=0, low_open=True, auto=True),
        Param("wd", float, default="auto", low=0, auto=True),
        Param("l1", float, default="auto", low=0, auto=True),
        Param("momentum", float, default="auto", low=0, high=1, high_open=True, auto=True),
        Param("beta_1", float, default="auto", low=0, high=1, high_open=True, auto=True),
        Param("beta_2", float, default="auto", low=0, high=1, high_open=True, auto=True),
        Param("bias_lr_mult", float, default="auto", low=0, low_open=True, auto=True),
        Param("bias_wd_mult", float, default="auto", low=0, auto=True),
        Param("use_bias", bool, default=True),
        Param("init_method", str, default="uniform", choices=("uniform", "normal")),
        Param("init_scale", float, default=0.07, low=0, low_open=True),
        Param("init_sigma", float, default=0.01, low=0, low_open=True),
        Param("init_bias", float, default=0.0),
        Param("use_lr_scheduler", bool, default=True),
        Param("lr_scheduler_step", int, default="auto", low=1, auto=True),
        Param("lr_scheduler_factor", float, default="auto", low=0, high=1, low_open=True, high_open=True, auto=True),
        Param("lr_scheduler_minimum_lr", float, default="auto", low=0, low_open=True, auto=True),
        Param("normalize_data", bool, default=True, auto=True),
        Param("normalize_label", bool, default="auto", auto=True),
        Param("unbias_data", bool, default="auto", auto=True),
        Param("unbias_label", bool, default="auto", auto=True),
        Param("num_point_for_scaler", int, default=10000, low=1),
        Param("num_models", int, default="auto", low=1, auto=True),
        Param("num_calibration_samples", int, default="auto", low=1, auto=True),
        Param("binary_classifier_model_selection_criteria", str, default="accuracy", choices=CRITERIA),
        Param("target_recall", float, default=0.8, low=0, high=1, low_open=True, high_open=True),
        Param("target_precision", float, default=0.8, low=0, high=1, low_open=True, high_open=True),
        Param("positive_example_weight_mult", float, default=1.0, low=0, low_open=True, auto=True,
              extra_words=("balanced",)),
        Param("balance_multiclass_weights", bool, default=False),
        Param("accuracy_top_k", int, default=3, low=1, high=1_000_000),
        Param("f_beta", float, default=1.0, low=0, low_open=True),
        Param("margin", float, default=1.0, low=0),
        Param("quantile", float, default=0.5, low=0, high=1, low_open=True, high_open=True),
        Param("loss_insensitivity", float, default=0.01, low=0, low_open=True),
        Param("huber_delta", float, default=1.0, low=0, low_open=True),
        Param("early_stopping_patience", int, default=3, low=1),
        Param("early_stopping_tolerance", float, default=0.001, low=0, low_open=True),
    ),
    # Internal keys of the real container's default-input.json.
    ignored=frozenset({"force_dense"}),
    checks=(_loss_fits_predictor, _multiclass_has_classes),
)
