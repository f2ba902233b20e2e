"""What an algorithm is given and what it gives back. No paths, no config files.

The platform builds a :class:`TrainingContext` (channels as minibatch iterators or raw files, a
metric reporter, the distributed topology, the torch device and the seed) and calls the
algorithm's ``train(params, context)``. ``params`` is the algorithm's hyperparameters as a
frozen dataclass derived from its schema (``platform/schemas``): one attribute per declared
hyperparameter, typed and validated, ``"auto"`` where the user left the choice to the
algorithm. The algorithm records what each ``auto`` became with :meth:`TrainingContext.resolve`
and returns a model object (:class:`Model`) that turns itself into named numpy arrays and back
and predicts on a feature matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pipealgos.io import Minibatch
from pipealgos.io.minibatch import Features

from .feed import DeviceBatch, device_batches
from .tensors import to_torch

Params = Any  # an algorithm's hyperparameters: the dataclass its schema derives (see module doc)


class Channels(Protocol):
    """The job's data channels: decoded minibatches, or the files of a raw (``text/plain``) channel."""

    def names(self) -> set[str]: ...

    def minibatches(self, channel: str, epoch: int, batch_size: int, feature_dim: int | None = None,
                    read_only: bool = False) -> Iterator[Minibatch]:
        """One pass (epoch ``epoch``, counted from 0) over ``channel``. ``read_only``: the caller
        never writes into the minibatches' arrays, so they may be shared between passes (a
        small File-mode channel's passes after the first then come from memory)."""
        ...

    def files(self, channel: str) -> list[Path]:
        """The files of a raw channel (File mode), sorted."""
        ...


class Reporter(Protocol):
    """Metric lines in SageMaker's format (see platform/metrics.py)."""

    def quality(self, channel: str, name: str, value: float, kind: str = "loss", epoch: int | None = None) -> None: ...

    def test_score(self, name: str, value: float) -> None: ...

    def progress(self, percent: float) -> None: ...

    def throughput(self, records_per_second: float, channel: str = "train") -> None: ...

    def info(self, message: str) -> None: ...


@dataclass
class TrainingContext:
    """Everything an algorithm may use while training.

    ``sparse_input``: the algorithm declared that it handles sparse minibatches, so
    :meth:`tensor` keeps CSR features sparse (a torch sparse CSR tensor) instead of densifying.
    ``resolved``: what each ``auto`` hyperparameter (or data-dependent default) became, filled
    by :meth:`resolve` and stored in the model's manifest."""

    channels: Channels
    report: Reporter
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    seed: int = 0
    tuning_job: bool = False  # one trial of a hyperparameter tuning job (_tuning_objective_metric set)
    sparse_input: bool = False
    resolved: dict[str, Any] = field(default_factory=dict)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def resolve(self, name: str, value: Any) -> Any:
        """Record that hyperparameter ``name`` took ``value`` (a JSON value); returns it."""
        self.resolved[name] = value
        return value

    def tensor(self, features: Features, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A minibatch's features on the training device: sparse input stays sparse when the
        algorithm declared it handles it, otherwise it is densified."""
        return to_torch(features, self.device, dtype, keep_sparse=self.sparse_input)

    def feed(self, minibatches: Iterable[Minibatch], rows_per_launch: int | None = None) -> Iterator[DeviceBatch]:
        """The minibatches on the training device through the device feed (``feed.py``: pinned,
        double-buffered copies on CUDA, views on CPU); sparse stays sparse as in :meth:`tensor`.
        ``rows_per_launch`` stacks minibatches on CUDA where the result does not depend on them."""
        return device_batches(minibatches, self.device, self.sparse_input, rows_per_launch)


class Model(Protocol):
    """A trained model: serialisable as named arrays, and able to predict.

    ``feature_dim`` is the input width the model takes; the server checks every request
    against it. ``from_arrays`` receives the stored hyperparameters with every ``auto``
    resolved (as the training job recorded them), so a model behaves the same whatever
    later defaults say."""

    @property
    def feature_dim(self) -> int: ...

    def to_arrays(self) -> dict[str, np.ndarray]: ...

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> "Model": ...

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
