"""The losses, as functions of the predictions of all models at once.

Each takes ``pred`` (n, M, K) — n rows, M models, K outputs (1, or num_classes for softmax) —
and the labels ``y`` (n,), and returns ``(loss, grad)``: the per-row, per-model loss (n, M) and
its derivative with respect to ``pred`` (n, M, K). Gradients are written out by hand: the
models are linear, so the weight gradient is one matrix product ``Xᵀ·grad`` and no autograd
graph is needed.

Regression losses see labels and predictions in normalised units (see ``training.Scaler``);
``loss_insensitivity`` and ``huber_delta`` are given in the label's own units and are divided
by the label scale before they get here. ``squared_loss`` is r² (so its objective is the mean
squared error), not ½r².
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

# The name in ``<channel> <name>_objective`` metric lines.
OBJECTIVE_NAMES = {
    "logistic": "binary_classification_cross_entropy",
    "hinge_loss": "binary_classification_hinge_loss",
    "softmax_loss": "multiclass_cross_entropy",
    "squared_loss": "mse",
    "absolute_loss": "absolute_loss",
    "eps_insensitive_squared_loss": "eps_insensitive_squared_loss",
    "eps_insensitive_absolute_loss": "eps_insensitive_absolute_loss",
    "quantile_loss": "quantile_loss",
    "huber_loss": "huber_loss",
}


@dataclass(frozen=True)
class LossSettings:
    margin: float = 1.0
    quantile: float = 0.5
    insensitivity: float = 0.01
    huber_delta: float = 1.0


def make_loss(name: str, s: LossSettings) -> LossFn:
    """The loss function called ``name`` with its parameters bound."""
    if name == "logistic":
        def logistic(pred, y):
            p, t = pred[..., 0], y[:, None].expand(-1, pred.shape[1])
            return (F.binary_cross_entropy_with_logits(p, t, reduction="none"),
                    torch.sigmoid(pred).sub_(t[..., None]))
        return logistic
    if name == "hinge_loss":
        def hinge(pred, y):
            sign = (2 * y - 1)[:, None]
            slack = s.margin - sign * pred[..., 0]
            return slack.clamp_min(0), (-sign * (slack > 0))[..., None]
        return hinge
    if name == "softmax_loss":
        def softmax(pred, y):
            log_p = torch.log_softmax(pred, dim=-1)
            index = y.long()[:, None, None].expand(-1, pred.shape[1], 1)
            grad = log_p.exp()
            grad.scatter_add_(-1, index, torch.full_like(index, -1, dtype=grad.dtype))
            return -log_p.gather(-1, index)[..., 0], grad
        return softmax
    residual_losses = {
        "squared_loss": lambda r: (r * r, 2 * r),
        "absolute_loss": lambda r: (r.abs(), r.sign()),
        "eps_insensitive_squared_loss": lambda r: _eps_squared(r, s.insensitivity),
        "eps_insensitive_absolute_loss": lambda r: _eps_absolute(r, s.insensitivity),
        "quantile_loss": lambda r: _quantile(r, s.quantile),
        "huber_loss": lambda r: _huber(r, s.huber_delta),
    }
    residual = residual_losses[name]

    def regression(pred, y):
        loss, grad = residual(pred[..., 0] - y[:, None])
        return loss, grad[..., None]
    return regression


def _eps_squared(r: torch.Tensor, eps: float):
    excess = (r.abs() - eps).clamp_min(0)
    return excess * excess, 2 * excess * r.sign()


def _eps_absolute(r: torch.Tensor, eps: float):
    excess = r.abs() - eps
    return excess.clamp_min(0), r.sign() * (excess > 0)


def _quantile(r: torch.Tensor, q: float):
    # r = prediction - label: under-prediction (r < 0) costs q per unit, over-prediction 1 - q.
    return torch.where(r < 0, -q * r, (1 - q) * r), torch.where(r < 0, -q, 1 - q).to(r.dtype)


def _huber(r: torch.Tensor, delta: float):
    absolute = r.abs()
    loss = torch.where(absolute <= delta, 0.5 * r * r, delta * (absolute - 0.5 * delta))
    return loss, r.clamp(-delta, delta)
