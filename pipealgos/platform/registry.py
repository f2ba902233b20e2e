"""The algorithms pipealgos knows, and what each one declares it can do.

An algorithm joins by adding one :class:`AlgorithmSpec` to ``ALGORITHMS`` (or, in tests,
:func:`register`). `train`, `serve`, the runner and the conformance checker
(:mod:`pipealgos.testing`) read everything they need from the spec: which channels it takes
and in which content types, the CSV label columns of each, the S3 distribution a channel must
use, the devices it runs on, how many hosts, whether sparse input reaches it sparse, and the
request types its server answers. Nothing in ``io/``, ``serve/`` or ``train.py`` names an
algorithm.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .hyperparameters import Schema
from .sagemaker_format import SageMakerFormat
from .schemas import factorization_machines as factorization_machines_schema
from .schemas import kmeans as kmeans_schema
from .schemas import lda as lda_schema
from .schemas import linear_learner as linear_learner_schema
from .schemas import ntm as ntm_schema
from .schemas import pca as pca_schema
from .schemas import randomcutforest as randomcutforest_schema

RECORDIO = "application/x-recordio-protobuf"
CSV = "text/csv"
TEXT = "text/plain"
JSON = "application/json"
JSONLINES = "application/jsonlines"

RECORDIO_OR_CSV = (RECORDIO, CSV)
ALL_REQUEST_TYPES = (JSON, JSONLINES, CSV, RECORDIO)
SHARDED = "ShardedByS3Key"
REPLICATED = "FullyReplicated"


class lazy:  # noqa: N801 (used like a function in the table below)
    """``"module:attribute"``, imported on first use: calling it calls the attribute, and any
    other attribute is looked up on it (``spec.model_type.from_arrays``). The table below names
    the algorithms' code this way so that reading a spec (a schema, the channel rules) imports
    neither the algorithms nor torch: `pipealgos run` checks a job's hyperparameters in a
    fraction of a second, before any host starts."""

    def __init__(self, target: str) -> None:
        self.target = target

    def resolve(self) -> Any:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.resolve(), name)

    def __repr__(self) -> str:
        return f"lazy({self.target!r})"


def sagemaker_format_of(module: str) -> SageMakerFormat:
    """The :class:`SageMakerFormat` whose functions ``module`` defines (``to_sagemaker``,
    ``from_sagemaker``, ``is_sagemaker``)."""
    return SageMakerFormat(lazy(f"{module}:to_sagemaker"), lazy(f"{module}:from_sagemaker"),
                           lazy(f"{module}:is_sagemaker"))


@dataclass(frozen=True)
class ChannelRule:
    """What an algorithm accepts on one channel.

    ``content_types``: the MIME types it reads (aliases of RecordIO-protobuf count as it).
    A channel whose only type is ``text/plain`` is *raw*: it is not decoded, the algorithm
    gets its files (:meth:`Channels.files`). ``label_size``: the CSV label columns when the
    content type names none. ``distribution``: the ``S3DistributionType`` the channel must use
    when the job states one (None: either)."""

    name: str
    required: bool = False
    content_types: tuple[str, ...] = RECORDIO_OR_CSV
    label_size: int = 0
    distribution: str | None = None

    @property
    def raw(self) -> bool:
        return self.content_types == (TEXT,)


@dataclass(frozen=True)
class Conformance:
    """How :func:`pipealgos.testing.check_algorithm` exercises the algorithm.

    ``hyperparameters``: small settings for a fast job (strings, as SageMaker sends them).
    ``planted``: the structure the checker plants in its data and scores the model on
    (see :data:`pipealgos.testing.PLANTED`), and ``floor`` the least score accepted.
    ``randomised``: the seed changes the model (two seeds must give two models).
    ``minibatch_invariant``: the model does not depend on ``mini_batch_size`` (up to float
    rounding)."""

    hyperparameters: dict[str, str]
    planted: str
    floor: float
    randomised: bool = True
    minibatch_invariant: bool = False


@dataclass(frozen=True)
class AlgorithmSpec:
    """One algorithm. ``train(params, ctx)`` gets ``schema.to_params(values)`` and a
    :class:`~pipealgos.algorithms.base.TrainingContext`, and returns a model object
    (:class:`~pipealgos.algorithms.base.Model`); ``model_type.from_arrays`` rebuilds it for
    serving. ``response_key`` is the top-level JSON key of inference responses and ``outputs``
    the per-record output fields in response order (``model.predict`` returns each as an array:
    shape (n,) is a scalar per record, (n, k) a list per record)."""

    name: str
    schema: Schema
    train: Callable
    model_type: Any
    response_key: str
    outputs: tuple[str, ...]
    channels: tuple[ChannelRule, ...]
    conformance: Conformance
    request_types: tuple[str, ...] = ALL_REQUEST_TYPES
    devices: tuple[str, ...] = ("cpu", "cuda")
    max_hosts: int | None = None
    sparse_input: bool = False
    aliases: tuple[str, ...] = ()
    # The layout of SageMaker's own model_algo-1 for this algorithm, when known (import, export, serve).
    sagemaker_format: SageMakerFormat | None = None

    def channel(self, name: str) -> ChannelRule | None:
        return next((rule for rule in self.channels if rule.name == name), None)

    @property
    def channel_names(self) -> list[str]:
        return [rule.name for rule in self.channels]

    @property
    def training_types(self) -> set[str]:
        """Content types the ``train`` channel reads."""
        return set(self.channel("train").content_types)


ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec(
            name="pca",
            schema=pca_schema.SCHEMA,
            train=lazy("pipealgos.algorithms.pca:train"),
            model_type=lazy("pipealgos.algorithms.pca:PCAModel"),
            response_key="projections",
            outputs=("projection",),
            channels=(ChannelRule("train", required=True), ChannelRule("test")),
            sparse_input=True,
            conformance=Conformance({"feature_dim": "6", "num_components": "2", "mini_batch_size": "50"},
                                    planted="subspace", floor=0.95, randomised=False, minibatch_invariant=True),
            sagemaker_format=sagemaker_format_of("pipealgos.algorithms.pca"),
        ),
        AlgorithmSpec(
            name="kmeans",
            schema=kmeans_schema.SCHEMA,
            train=lazy("pipealgos.algorithms.kmeans:train"),
            model_type=lazy("pipealgos.algorithms.kmeans:KMeansModel"),
            response_key="predictions",
            outputs=("closest_cluster", "distance_to_cluster"),
            channels=(ChannelRule("train", required=True), ChannelRule("test")),
            conformance=Conformance({"feature_dim": "6", "k": "3", "mini_batch_size": "50", "epochs": "2",
                                     "extra_center_factor": "4", "local_lloyd_num_trials": "2",
                                     "eval_metrics": '["msd", "ssd"]', "force_dense": "True"},
                                    planted="clusters", floor=0.9),
            sagemaker_format=sagemaker_format_of("pipealgos.algorithms.kmeans"),
        ),
        AlgorithmSpec(
            name="linear-learner",
            schema=linear_learner_schema.SCHEMA,
            train=lazy("pipealgos.algorithms.linear_learner:train"),
            model_type=lazy("pipealgos.algorithms.linear_learner:LinearLearnerModel"),
            response_key="predictions",
            # Regressors predict "score" only.
            outputs=("score", "predicted_label"),
            channels=(ChannelRule("train", required=True, label_size=1),
                      ChannelRule("validation", label_size=1, distribution=REPLICATED),
                      ChannelRule("test", label_size=1)),
            aliases=("linear_learner", "linear-learner"),
            conformance=Conformance({"predictor_type": "binary_classifier", "feature_dim": "6",
                                     "mini_batch_size": "50", "epochs": "3", "num_models": "4",
                                     "num_point_for_scaler": "100"},
                                    planted="labels", floor=0.9),
            sagemaker_format=sagemaker_format_of("pipealgos.algorithms.linear_learner.sagemaker"),
        ),
        AlgorithmSpec(
            name="factorization-machines",
            schema=factorization_machines_schema.SCHEMA,
            train=lazy("pipealgos.algorithms.factorization_machines:train"),
            model_type=lazy("pipealgos.algorithms.factorization_machines:FactorizationMachineModel"),
            response_key="predictions",
            # Regressors predict "score" only. RecordIO-protobuf Float32 only, as SageMaker: no CSV.
            outputs=("score", "predicted_label"),
            channels=(ChannelRule("train", required=True, content_types=(RECORDIO,), label_size=1),
                      ChannelRule("test", content_types=(RECORDIO,), label_size=1)),
            request_types=(JSON, JSONLINES, RECORDIO),
            sparse_input=True,
            aliases=("factorization_machines", "fm"),
            conformance=Conformance({"predictor_type": "binary_classifier", "feature_dim": "6", "num_factors": "4",
                                     "mini_batch_size": "50", "epochs": "10", "bias_lr": "0.1", "linear_lr": "0.1",
                                     "factors_lr": "0.05"},
                                    planted="labels", floor=0.9),
            sagemaker_format=sagemaker_format_of("pipealgos.algorithms.factorization_machines.sagemaker"),
        ),
        AlgorithmSpec(
            name="lda",
            schema=lda_schema.SCHEMA,
            train=lazy("pipealgos.algorithms.lda:train"),
            model_type=lazy("pipealgos.algorithms.lda:LDAModel"),
            response_key="predictions",
            outputs=("topic_mixture",),
            channels=(ChannelRule("train", required=True), ChannelRule("test")),
            sparse_input=True,
            conformance=Conformance({"feature_dim": "30", "num_topics": "3", "mini_batch_size": "50", "alpha0": "0.1",
                                     "max_restarts": "3", "max_iterations": "200"},
                                    planted="topics", floor=0.9, minibatch_invariant=True),
            sagemaker_format=sagemaker_format_of("pipealgos.algorithms.lda.sagemaker"),
        ),
        AlgorithmSpec(
            name="ntm",
            schema=ntm_schema.SCHEMA,
            train=lazy("pipealgos.algorithms.ntm:train"),
            model_type=lazy("pipealgos.algorithms.ntm:NTMModel"),
            response_key="predictions",
            outputs=("topic_weights",),
            channels=(ChannelRule("train", required=True), ChannelRule("validation"), ChannelRule("test"),
                      ChannelRule("auxiliary", content_types=(TEXT,))),
            sparse_input=True,
            # tanh: with as many topics as planted blocks, the relu graph can leave a block to
            # z = 0 and the decoder bias; at these settings sigmoid recovers all three blocks for
            # 1 of training seeds 0-9, tanh for 17 of seeds 0-19 (the check uses seed 0).
            conformance=Conformance({"feature_dim": "30", "num_topics": "3", "mini_batch_size": "50", "epochs": "10",
                                     "optimizer": "adam", "learning_rate": "0.01",
                                     "encoder_layers_activation": "tanh"},
                                    planted="topics", floor=0.9),
            sagemaker_format=sagemaker_format_of("pipealgos.algorithms.ntm.sagemaker"),
        ),
        AlgorithmSpec(
            name="randomcutforest",
            schema=randomcutforest_schema.SCHEMA,
            train=lazy("pipealgos.algorithms.random_cut_forest:train"),
            model_type=lazy("pipealgos.algorithms.random_cut_forest:RandomCutForestModel"),
            response_key="scores",
            outputs=("score",),
            channels=(ChannelRule("train", required=True, distribution=SHARDED),
                      ChannelRule("test", label_size=1, distribution=REPLICATED)),
            devices=("cpu",),  # SageMaker's RCF is CPU only; scoring is bound by tree walks, not FLOPs
            sparse_input=True,
            aliases=("random_cut_forest", "rcf"),
            conformance=Conformance({"feature_dim": "6", "num_trees": "50", "num_samples_per_tree": "64",
                                     "mini_batch_size": "50"}, planted="anomalies", floor=0.9),
        ),
    )
}


class UnknownAlgorithm(ValueError):
    pass


def register(spec: AlgorithmSpec) -> None:
    """Add an algorithm (tests register algorithms of their own this way)."""
    if spec.name in ALGORITHMS:
        raise ValueError(f"an algorithm named {spec.name!r} is already registered")
    if spec.channel("train") is None:
        raise ValueError(f"{spec.name}: every algorithm declares a 'train' channel")
    ALGORITHMS[spec.name] = spec


def unregister(name: str) -> None:
    ALGORITHMS.pop(name, None)


def get_algorithm(name: str) -> AlgorithmSpec:
    """Look up by name, alias or image name (``.../pca:1`` -> pca)."""
    key = name.strip().lower().rsplit("/", 1)[-1].split(":", 1)[0]
    for spec in ALGORITHMS.values():
        if key == spec.name or key in spec.aliases:
            return spec
    raise UnknownAlgorithm(f"unknown algorithm '{name}': choose one of {', '.join(sorted(ALGORITHMS))}")
