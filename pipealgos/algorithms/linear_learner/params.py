"""Linear learner parameters: what each ``auto`` hyperparameter resolves to, and the settings
of each of the ``num_models`` models trained side by side. (The typed hyperparameters
themselves are declared once, in ``platform/schemas/linear_learner.py``.)

``auto`` resolves to the values the spec records for the real container (num_models 32,
optimizer adam, lr_scheduler_step 100, factor 0.99, minimum_lr 1e-5, bias_lr_mult 10,
bias_wd_mult 0, momentum 0, wd 0, l1 0, beta_1 0.9, beta_2 0.999). The spec records no
learning rate; ours is 0.01 for adam and rmsprop and 0.1 for sgd (features are normalised, so
one value fits most data). ``num_calibration_samples`` auto = 10,000,000 (the container's).

The model grid (:func:`model_grid`): model 0 uses exactly the resolved settings. Model i >= 1
moves each dimension by a deterministic low-discrepancy (Weyl) sequence ``u_i = frac(i * c)``,
with a different irrational ``c`` per dimension so that models differ in several at once:

* learning rate: base x 10^(2u-1) (one decade either way) when ``auto``, base x 10^(u-1/2)
  when given;
* wd and l1: when ``auto``, 0 for u < 1/2, else log-uniform in [1e-7, 1e-2]; a given value v > 0
  becomes v x 10^(2u-1); a given 0 stays 0 (it disables the term);
* optimizer: when ``auto``, adam for the first half of the models, sgd for the next quarter
  and rmsprop for the rest (contiguous ranges, so each optimizer updates a view); a given one
  is kept;
* positive_example_weight_mult ``auto``: odd models use ``balanced``, even ones 1.0.

The learning-rate schedule is shared by all models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..base import Params

AUTO = "auto"
OPTIMIZERS = ("sgd", "adam", "rmsprop")
DEFAULT_LOSS = {"binary_classifier": "logistic", "multiclass_classifier": "softmax_loss", "regressor": "squared_loss"}
AUTO_LEARNING_RATE = {"adam": 0.01, "rmsprop": 0.01, "sgd": 0.1}
AUTO_NUM_MODELS = 32
AUTO_CALIBRATION_SAMPLES = 10_000_000
_WEYL = {"lr": (math.sqrt(5) - 1) / 2, "wd": math.sqrt(2) - 1, "l1": math.sqrt(3) - 1, "wd_on": math.sqrt(7) - 2,
         "l1_on": math.sqrt(11) - 3}


def _auto(value: Any, default: Any) -> Any:
    return default if value == AUTO else value


@dataclass(frozen=True)
class Resolved:
    """Every ``auto`` replaced by a concrete value; the job-wide settings."""

    predictor_type: str
    loss: str
    num_outputs: int
    feature_dim: int | None
    optimizer: str
    learning_rate: float
    num_models: int
    momentum: float
    beta_1: float
    beta_2: float
    bias_lr_mult: float
    bias_wd_mult: float
    lr_scheduler_step: int
    lr_scheduler_factor: float
    lr_scheduler_minimum_lr: float
    normalize_data: bool
    normalize_label: bool
    unbias_data: bool
    unbias_label: bool
    num_calibration_samples: int
    criterion: str

    def logged(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def resolve_loss(predictor_type: str, loss: str) -> str:
    return DEFAULT_LOSS[predictor_type] if loss == AUTO else loss


def resolve(p: Params) -> Resolved:
    regressor = p.predictor_type == "regressor"
    optimizer = _auto(p.optimizer, "adam")
    criterion = {"f1": "f_beta", "cross_entropy_loss": "loss_function"}.get(
        p.binary_classifier_model_selection_criteria, p.binary_classifier_model_selection_criteria)
    return Resolved(
        predictor_type=p.predictor_type,
        loss=resolve_loss(p.predictor_type, p.loss),
        num_outputs=p.num_classes if p.predictor_type == "multiclass_classifier" else 1,
        feature_dim=None if p.feature_dim == AUTO else int(p.feature_dim),
        optimizer=optimizer,
        learning_rate=_auto(p.learning_rate, AUTO_LEARNING_RATE[optimizer]),
        num_models=_auto(p.num_models, AUTO_NUM_MODELS),
        momentum=_auto(p.momentum, 0.0),
        beta_1=_auto(p.beta_1, 0.9),
        beta_2=_auto(p.beta_2, 0.999),
        bias_lr_mult=_auto(p.bias_lr_mult, 10.0),
        bias_wd_mult=_auto(p.bias_wd_mult, 0.0),
        lr_scheduler_step=_auto(p.lr_scheduler_step, 100),
        lr_scheduler_factor=_auto(p.lr_scheduler_factor, 0.99),
        lr_scheduler_minimum_lr=_auto(p.lr_scheduler_minimum_lr, 1e-5),
        normalize_data=_auto(p.normalize_data, True),
        normalize_label=_auto(p.normalize_label, regressor) and regressor,
        unbias_data=_auto(p.unbias_data, p.use_bias),
        unbias_label=_auto(p.unbias_label, p.use_bias and regressor) and regressor,
        num_calibration_samples=_auto(p.num_calibration_samples, AUTO_CALIBRATION_SAMPLES),
        criterion=criterion,
    )


@dataclass(frozen=True)
class ModelGrid:
    """Per-model settings, each an array of length num_models (model 0 = the given settings)."""

    optimizer: tuple[str, ...]
    learning_rate: np.ndarray
    wd: np.ndarray
    l1: np.ndarray
    balanced: np.ndarray  # bool: use the balanced positive-example weight instead of the given multiplier

    def describe(self, i: int, r: Resolved) -> dict[str, Any]:
        """The varied dimensions of model ``i``, as the real "Best model found" log line shows them."""
        return {"optimizer": self.optimizer[i], "learning_rate": float(self.learning_rate[i]),
                "l1": float(self.l1[i]), "wd": float(self.wd[i]), "lr_scheduler_step": r.lr_scheduler_step,
                "lr_scheduler_factor": r.lr_scheduler_factor,
                "lr_scheduler_minimum_lr": r.lr_scheduler_minimum_lr,
                "positive_example_weight_mult": "balanced" if self.balanced[i] else "given"}


def _auto_optimizer(i: int, models: int) -> str:
    if i == 0 or 2 * i < models:
        return "adam"
    return "sgd" if 4 * i < 3 * models else "rmsprop"


def _weyl(i: int, key: str) -> float:
    return (i * _WEYL[key]) % 1.0


def _regulariser(value: Any, i: int, key: str) -> float:
    if i == 0:
        return 0.0 if value == AUTO else float(value)
    u = _weyl(i, key)
    if value == AUTO:
        return 0.0 if _weyl(i, key + "_on") < 0.5 else 10 ** (-7 + 5 * u)
    return float(value) * 10 ** (2 * u - 1)


def model_grid(p: Params, r: Resolved) -> ModelGrid:
    optimizers, rates, wds, l1s, balanced = [], [], [], [], []
    for i in range(r.num_models):
        opt = r.optimizer if p.optimizer != AUTO else _auto_optimizer(i, r.num_models)
        base = AUTO_LEARNING_RATE[opt] if p.learning_rate == AUTO else float(p.learning_rate)
        if i == 0:
            rate = base
        else:
            u = _weyl(i, "lr")
            rate = base * 10 ** ((2 * u - 1) if p.learning_rate == AUTO else (u - 0.5))
        optimizers.append(opt)
        rates.append(rate)
        wds.append(_regulariser(p.wd, i, "wd"))
        l1s.append(_regulariser(p.l1, i, "l1"))
        weight = p.positive_example_weight_mult
        balanced.append(weight == "balanced" or (weight == AUTO and i % 2 == 1))
    return ModelGrid(tuple(optimizers), np.array(rates), np.array(wds), np.array(l1s), np.array(balanced))
