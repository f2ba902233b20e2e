"""Helpers for the linear-learner tests: run a real `train` job (in-process, through the real
readers) on in-memory arrays and read back its model and metric lines."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
from mlroot import FifoFeeder, make_ml_root, recordio_bytes, write_channel_files

__all__ = ["Job", "recordio_bytes", "run_job", "split"]

from pipealgos.algorithms.linear_learner import LinearLearnerModel
from pipealgos.platform.config import MLRoot
from pipealgos.platform.model_store import load_model
from pipealgos.platform.train import run_training

METRIC = re.compile(r"#quality_metric: host=\S+, (?:epoch=(\S+), )?(\S+) (\S+) <(loss|score)>=(\S+)")


def split(x: np.ndarray, y: np.ndarray, seed: int = 0, fractions=(0.6, 0.2)) -> dict[str, tuple]:
    """Fixed-seed train / validation / test split."""
    order = np.random.default_rng(seed).permutation(len(x))
    a = int(fractions[0] * len(x))
    b = a + int(fractions[1] * len(x))
    parts = {"train": order[:a], "validation": order[a:b], "test": order[b:]}
    return {k: (x[i].astype(np.float32), y[i].astype(np.float32)) for k, i in parts.items()}


class Job:
    def __init__(self, root: Path, status: int, log: str) -> None:
        self.root, self.status, self.log = root, status, log

    @property
    def failure(self) -> str:
        path = self.root / "output" / "failure"
        return path.read_text() if path.exists() else ""

    def model(self) -> LinearLearnerModel:
        stored = load_model(self.root / "model")
        return LinearLearnerModel.from_arrays(stored.arrays, stored.hyperparameters)

    def metrics(self) -> list[tuple[str | None, str, str, str, float]]:
        """(epoch, channel, name, kind, value) for every #quality_metric line."""
        return [(e, ch, name, kind, float(v)) for e, ch, name, kind, v in METRIC.findall(self.log)]

    def final(self, channel: str) -> dict[str, float]:
        return {name: v for e, ch, name, _, v in self.metrics() if ch == channel and not e}


def run_job(root: Path, hyperparameters: dict, data: dict[str, tuple], mode: str = "File", parts: int = 1,
            content_type: str | None = None, hosts=("algo-1",), current="algo-1") -> Job:
    """Train linear-learner on ``data`` (channel -> (features, labels)) in File or Pipe mode.
    In Pipe mode every channel gets one FIFO per epoch (``epochs`` from the hyperparameters)."""
    entry = {"TrainingInputMode": mode}
    if content_type:
        entry["ContentType"] = content_type
    make_ml_root(root, hyperparameters, {name: dict(entry) for name in data}, hosts=hosts, current=current)
    feeders = []
    for name, (x, y) in data.items():
        chunks = np.array_split(np.arange(x.shape[0]), parts)
        if content_type and content_type.startswith("text/csv"):
            blobs = [_csv(x[c], y[c]) for c in chunks]
        else:
            blobs = [recordio_bytes(x[c], None if y is None else y[c]) for c in chunks]
        if mode == "File":
            write_channel_files(root, name, blobs)
        else:
            passes = 1 if name == "test" else int(hyperparameters.get("epochs", 15))
            feeders.append(FifoFeeder(root, name, [b"".join(blobs)] * passes))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_training(MLRoot(root), "linear-learner")
    for feeder in feeders:
        feeder.join(timeout=0.2)  # FIFOs of epochs skipped by early stopping stay unread
    return Job(root, status, out.getvalue())


def _csv(x: np.ndarray, y: np.ndarray) -> bytes:
    table = np.column_stack([y, x])
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in table).encode()
