"""One optimizer step for all models at once, each with its own optimizer and settings.

The parameters of every model live in one tensor ``theta`` of shape (d + 1, M, K): row j < d
holds feature j's weights, row d the bias, for M models and K outputs. (That layout makes the
forward pass one matrix product ``X @ theta[:d].view(d, M*K)`` — about five times faster on CPU
than a batched (M, d, K) product; :meth:`LinearStack.stacked` gives the (M, d, K) view.)

Per step, for each model m with learning rate lr_m (times ``bias_lr_mult`` on the bias row,
times the schedule) and gradient g = ∇loss + wd_m·θ (``bias_wd_mult``·wd_m on the bias):

* sgd: v ← momentum·v + g; θ ← θ − lr·v
* adam: m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; θ ← θ − lr·m̂/(√v̂ + 1e-8)
  (m̂, v̂ bias-corrected)
* rmsprop: v ← 0.95·v + 0.05·g²; θ ← θ − lr·g/(√v + 1e-8) (MXNet's default decay)

then the proximal step of the l1 penalty: θ ← sign(θ)·max(|θ| − lr·l1_m, 0) on the weights
(never the bias). The schedule multiplies every rate by ``lr_scheduler_factor`` once per
``lr_scheduler_step`` updates, but never below ``lr_scheduler_minimum_lr`` (nor below a rate
that starts under it). Each optimizer updates its own contiguous range of models in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import itertools
import math

import numpy as np
import torch

EPS = 1e-8
RMSPROP_DECAY = 0.95


@dataclass(frozen=True)
class StepSettings:
    momentum: float
    beta_1: float
    beta_2: float
    bias_lr_mult: float
    bias_wd_mult: float
    use_bias: bool
    use_scheduler: bool
    scheduler_step: int
    scheduler_factor: float
    scheduler_minimum_lr: float


class BatchedOptimizer:
    def __init__(self, theta: torch.Tensor, optimizers: tuple[str, ...], learning_rate: np.ndarray,
                 wd: np.ndarray, l1: np.ndarray, s: StepSettings) -> None:
        rows, models, _ = theta.shape
        self.s = s
        self.t = 0
        dtype, device = theta.dtype, theta.device

        def per_model(values) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype, device=device).view(1, models, 1)

        self.base_lr = per_model(learning_rate)
        self.floor_lr = torch.minimum(self.base_lr, torch.full_like(self.base_lr, s.scheduler_minimum_lr))
        row_lr = torch.ones(rows, 1, 1, dtype=dtype, device=device)
        row_lr[-1] = s.bias_lr_mult if s.use_bias else 0.0
        self.row_lr = row_lr
        row_wd = torch.ones(rows, 1, 1, dtype=dtype, device=device)
        row_wd[-1] = s.bias_wd_mult
        self.wd = per_model(wd) * row_wd
        self.l1 = per_model(l1)
        self.use_l1 = bool((self.l1 > 0).any())
        self.use_wd = bool((self.wd > 0).any())
        self.groups = _contiguous_groups(optimizers)
        self.state = {name: [torch.zeros_like(theta[:, part]) for _ in range(2 if name == "adam" else 1)]
                      for name, part in self.groups.items()}
        self._rates_at: tuple[int, tuple] | None = None

    def rates(self) -> torch.Tensor:
        """The current learning rate of each model, (1, M, 1)."""
        return self._schedule()[0]

    def _schedule(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """(rates (1, M, 1), per-row rates (d + 1, M, 1), the latter per optimizer range, the l1
        shrink of the weight rows), recomputed only when the schedule moves: a step is many tiny
        tensor operations, so every one saved counts."""
        period = self.t // self.s.scheduler_step if self.s.use_scheduler else 0
        if self._rates_at is None or self._rates_at[0] != period:
            rates = torch.maximum(self.base_lr * self.s.scheduler_factor**period, self.floor_lr)
            row_rates = rates * self.row_lr
            shrink = row_rates[:-1] * self.l1 if self.use_l1 else None
            parts = {name: row_rates[:, part] for name, part in self.groups.items()}
            self._rates_at = (period, (rates, row_rates, parts, shrink))
        return self._rates_at[1]

    def step(self, theta: torch.Tensor, grad: torch.Tensor) -> None:
        """Update ``theta`` in place from the data gradient ``grad`` (same shape)."""
        self.t += 1
        _, _, rates, shrink = self._schedule()
        g = torch.addcmul(grad, self.wd, theta) if self.use_wd else grad
        for name, part in self.groups.items():
            theta[:, part] -= self._direction(name, g[:, part]).mul_(rates[name])
        if shrink is not None:
            # Soft threshold: sign(w)·max(|w| − s, 0) = w − clamp(w, −s, s).
            weights = theta[:-1]
            weights -= torch.clamp(weights, -shrink, shrink)

    def _direction(self, name: str, g: torch.Tensor) -> torch.Tensor:
        """The step direction (a fresh tensor, or a buffer the caller may not keep)."""
        s, state = self.s, self.state[name]
        if name == "sgd":
            if s.momentum == 0:
                return g.clone()
            velocity = state[0]
            velocity.mul_(s.momentum).add_(g)
            return velocity.clone()
        if name == "adam":
            m, v = state
            m.lerp_(g, 1 - s.beta_1)
            v.mul_(s.beta_2).addcmul_(g, g, value=1 - s.beta_2)
            # m̂/(√v̂ + eps) with the bias corrections as scalars (as torch.optim.Adam computes it).
            first, second = 1 - s.beta_1**self.t, math.sqrt(1 - s.beta_2**self.t)
            return m / v.sqrt().mul_(first / second).add_(EPS * first)
        v = state[0]
        v.mul_(RMSPROP_DECAY).addcmul_(g, g, value=1 - RMSPROP_DECAY)
        return g / v.sqrt().add_(EPS)


def _contiguous_groups(optimizers: tuple[str, ...]) -> dict[str, slice]:
    """Model ranges per optimizer; the model grid lays each optimizer's models side by side so
    that every update works on a view, with no masks and no wasted arithmetic."""
    groups: dict[str, slice] = {}
    for name, run in itertools.groupby(enumerate(optimizers), key=lambda item: item[1]):
        indices = [i for i, _ in run]
        if name in groups:
            raise ValueError(f"models using {name} are not contiguous: {optimizers}")
        groups[name] = slice(indices[0], indices[-1] + 1)
    return groups
