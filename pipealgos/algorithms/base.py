"""What an algorithm is given and what it gives back. No paths, no config files.

The platform builds a :class:`TrainingContext` (channels as minibatch iterators, a metric
reporter, the distributed topology and the torch device) and calls the algorithm's
``train(params, context)``; the algorithm returns a model object that can turn itself into
named numpy arrays (:meth:`Model.to_arrays`) and back, and predict on a feature matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from pipealgos.io import Minibatch
from pipealgos.io.minibatch import Features


class Channels(Protocol):
    """The job's data channels, as minibatches."""

    def names(self) -> set[str]: ...

    def minibatches(self, channel: str, epoch: int, batch_size: int, feature_dim: int | None = None) -> Iterator[Minibatch]:
        """One pass (epoch ``epoch``, counted from 0) over ``channel``."""
        ...


class Reporter(Protocol):
    """Metric lines in SageMaker's format (see platform/metrics.py)."""

    def quality(self, channel: str, name: str, value: float, kind: str = "loss", epoch: int | None = None) -> None: ...

    def progress(self, percent: float) -> None: ...

    def throughput(self, records_per_second: float, channel: str = "train") -> None: ...

    def info(self, message: str) -> None: ...


@dataclass
class TrainingContext:
    """Everything an algorithm may use while training."""

    channels: Channels
    report: Reporter
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    seed: int = 0
    tuning_job: bool = False  # one trial of a hyperparameter tuning job (_tuning_objective_metric set)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class Model(Protocol):
    """A trained model: serialisable as named arrays, and able to predict."""

    def to_arrays(self) -> dict[str, np.ndarray]: ...

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> "Model": ...

    def predict(self, features: Features) -> dict[str, np.ndarray]:
        """Outputs by response key, each with one row per input row."""
        ...


def report_test_channel(ctx: TrainingContext, evaluate: Callable[[], None]) -> None:
    """Run ``evaluate`` (which reports the test metrics) on the leader when the job has a
    ``test`` channel; without one, log the line the built-ins log."""
    if "test" not in ctx.channels.names():
        ctx.report.info("Test data is not provided.")
    elif ctx.is_leader:
        evaluate()


def pick_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def to_torch(features: Features, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A minibatch's features as a dense torch tensor on ``device``."""
    if isinstance(features, np.ndarray):
        array = features
    else:
        array = features.toarray()
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)
