"""A test-only algorithm that joins pipealgos the way a new one would: a module (this file),
a schema and one registry entry (:func:`register_toy`), nothing in ``io/``, ``serve/`` or
``train.py``.

It is a nearest-class-mean classifier whose capabilities differ from the built-ins' where
the interface is most likely to break: RecordIO only (no CSV, for training or requests),
CPU only, one host, a labelled ``test`` channel and a raw ``auxiliary`` channel (``vocab.txt``,
one token per feature, whose line count must equal ``feature_dim``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipealgos.algorithms.base import TrainingContext, report_test_channel
from pipealgos.io import DataError
from pipealgos.platform.hyperparameters import Param, Schema
from pipealgos.platform.registry import (JSON, JSONLINES, RECORDIO, TEXT, AlgorithmSpec, ChannelRule, Conformance,
                                         register, unregister)

NAME = "toy-centroid"

SCHEMA = Schema(algorithm=NAME, params=(
    Param("feature_dim", int, required=True, low=1),
    Param("mini_batch_size", int, default=100, low=1),
    Param("shrinkage", float, default="auto", low=0, auto=True),
))


@dataclass
class ToyModel:
    means: np.ndarray  # (2, d): the class means, shrunk towards their midpoint

    @property
    def feature_dim(self) -> int:
        return self.means.shape[1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"means": self.means.astype(np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> "ToyModel":
        return cls(arrays["means"])

    def predict(self, features) -> dict[str, np.ndarray]:
        x = np.asarray(features.toarray() if hasattr(features, "toarray") else features, dtype=np.float64)
        d2 = ((x[:, None, :] - self.means[None].astype(np.float64)) ** 2).sum(-1)
        score = 1 / (1 + np.exp(np.clip(d2[:, 1] - d2[:, 0], -50, 50)))
        return {"score": score.astype(np.float32), "predicted_label": (score >= 0.5).astype(np.float32)}


def train(params, ctx: TrainingContext) -> ToyModel:
    vocabulary = [line for path in ctx.channels.files("auxiliary") for line in path.read_text().splitlines()] \
        if "auxiliary" in ctx.channels.names() else None
    if vocabulary is not None and len(vocabulary) != params.feature_dim:
        raise DataError(f"vocab.txt has {len(vocabulary)} lines, feature_dim is {params.feature_dim}",
                        channel="auxiliary", fix="Write one token per feature")
    sums = np.zeros((2, params.feature_dim))
    counts = np.zeros(2)
    for batch in ctx.channels.minibatches("train", 0, params.mini_batch_size, params.feature_dim):
        x, y = batch.dense().astype(np.float64), batch.labels.astype(np.int64)
        np.add.at(sums, y, x)
        counts += np.bincount(y, minlength=2)
    means = sums / np.maximum(counts, 1)[:, None]
    shrinkage = ctx.resolve("shrinkage", 0.0 if params.shrinkage == "auto" else params.shrinkage)
    # A touch of seeded jitter makes the model depend on the seed, as randomised ones do.
    jitter = np.random.default_rng(ctx.seed).normal(scale=1e-6, size=means.shape)
    means = means + shrinkage * (means.mean(0) - means) + jitter
    model = ToyModel(means)

    def evaluate() -> None:
        right = total = 0
        for batch in ctx.channels.minibatches("test", 0, params.mini_batch_size, params.feature_dim):
            right += int((model.predict(batch.features)["predicted_label"] == batch.labels).sum())
            total += batch.size
        ctx.report.quality("test", "accuracy", right / max(total, 1), "score")

    report_test_channel(ctx, evaluate)
    return model


SPEC = AlgorithmSpec(
    name=NAME,
    schema=SCHEMA,
    train=train,
    model_type=ToyModel,
    response_key="predictions",
    outputs=("score", "predicted_label"),
    channels=(ChannelRule("train", required=True, content_types=(RECORDIO,), label_size=1),
              ChannelRule("test", content_types=(RECORDIO,), label_size=1, distribution="FullyReplicated"),
              ChannelRule("auxiliary", content_types=(TEXT,))),
    request_types=(JSON, JSONLINES, RECORDIO),
    devices=("cpu",),
    max_hosts=1,
    conformance=Conformance({"feature_dim": "6", "mini_batch_size": "50"}, planted="labels", floor=0.9),
)


def register_toy() -> None:
    unregister(NAME)
    register(SPEC)
