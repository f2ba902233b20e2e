"""The algorithms pipealgos knows: name, schema, train function, model class and response shape.

An algorithm joins by adding one :class:`AlgorithmSpec` to ``ALGORITHMS``; `train`, `serve`,
the runner and the conformance suite all read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipealgos.algorithms import kmeans, pca
from pipealgos.algorithms import linear_learner

from .hyperparameters import Schema
from .schemas import kmeans as kmeans_schema
from .schemas import linear_learner as linear_learner_schema
from .schemas import pca as pca_schema


@dataclass(frozen=True)
class AlgorithmSpec:
    """``params_type.from_dict`` turns schema output into the algorithm's parameters;
    ``response_key`` is the top-level JSON key of inference responses and ``outputs`` the
    per-record output fields in response order (``model.predict`` returns each as an array:
    shape (n,) is a scalar per record, (n, k) a list per record)."""

    name: str
    schema: Schema
    params_type: Any
    train: Callable
    model_type: Any
    response_key: str
    outputs: tuple[str, ...]
    channels: tuple[str, ...] = ("train", "test")
    required_channels: tuple[str, ...] = ("train",)
    supervised: bool = False
    aliases: tuple[str, ...] = ()
    conformance_hyperparameters: dict[str, str] = field(default_factory=dict)

    @property
    def default_label_size(self) -> int:
        """CSV ``label_size`` when the content type gives none."""
        return 1 if self.supervised else 0


ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec(
            name=pca.NAME,
            schema=pca_schema.SCHEMA,
            params_type=pca.PCAParams,
            train=pca.train,
            model_type=pca.PCAModel,
            response_key="projections",
            outputs=("projection",),
            conformance_hyperparameters={"feature_dim": "6", "num_components": "3", "mini_batch_size": "50"},
        ),
        AlgorithmSpec(
            name=kmeans.NAME,
            schema=kmeans_schema.SCHEMA,
            params_type=kmeans.KMeansParams,
            train=kmeans.train,
            model_type=kmeans.KMeansModel,
            response_key="predictions",
            outputs=("closest_cluster", "distance_to_cluster"),
            conformance_hyperparameters={"feature_dim": "6", "k": "3", "mini_batch_size": "50", "epochs": "2",
                                         "extra_center_factor": "4", "local_lloyd_num_trials": "2",
                                         "eval_metrics": '["msd", "ssd"]', "force_dense": "True"},
        ),
        AlgorithmSpec(
            name=linear_learner.NAME,
            schema=linear_learner_schema.SCHEMA,
            params_type=linear_learner.LinearLearnerParams,
            train=linear_learner.train,
            model_type=linear_learner.LinearLearnerModel,
            response_key="predictions",
            # Regressors predict "score" only.
            outputs=("score", "predicted_label"),
            channels=("train", "validation", "test"),
            supervised=True,
            aliases=("linear_learner", "linear-learner"),
            conformance_hyperparameters={"predictor_type": "binary_classifier", "feature_dim": "6",
                                         "mini_batch_size": "50", "epochs": "3", "num_models": "4",
                                         "num_point_for_scaler": "100"},
        ),
    )
}


class UnknownAlgorithm(ValueError):
    pass


def get_algorithm(name: str) -> AlgorithmSpec:
    """Look up by name, alias or image name (``.../pca:1`` -> pca)."""
    key = name.strip().lower().rsplit("/", 1)[-1].split(":", 1)[0]
    for spec in ALGORITHMS.values():
        if key == spec.name or key in spec.aliases:
            return spec
    raise UnknownAlgorithm(f"unknown algorithm '{name}': choose one of {', '.join(sorted(ALGORITHMS))}")
