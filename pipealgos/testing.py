"""A conformance checker for pipealgos algorithms: ``check_algorithm(spec)``.

In the spirit of river's ``check_estimator``: every registered algorithm (and any algorithm a
user writes) is trained in memory, with no ML root, on data the checker generates with a
planted structure, and held to what its :class:`~pipealgos.platform.registry.AlgorithmSpec`
declares. The checks (each a function of the spec, listed in :data:`CHECKS`; the ones that do
not apply to a spec pass without training):

* ``quality``: trained on dense RecordIO-style minibatches, the model scores at least the
  declared floor on held-out planted data (see :data:`PLANTED`).
* ``sparse_input``: the same rows as CSR minibatches train a model of the same quality, and,
  when the algorithm keeps sparse input sparse, predictions within float32 tolerance of the
  dense model's (the same arithmetic in another layout).
* ``csv_input``: where the train channel reads CSV, the rows written as CSV text and decoded by
  the IO layer train exactly the dense model (CSV holds float32 exactly).
* ``seeds``: the same seed gives the same model; a randomised algorithm gives a different
  model for another seed (an algorithm that ignores its seed fails).
* ``no_mutation``: training leaves its input minibatches unchanged.
* ``minibatch_invariance``: where declared, a different ``mini_batch_size`` gives the same
  model up to float rounding.
* ``round_trip``: ``to_arrays`` → ``from_arrays`` with the resolved hyperparameters predicts the
  same; ``feature_dim`` is the data's width; outputs are among the declared ones, one row per
  input row; every ``auto`` hyperparameter was resolved (``ctx.resolve``).
* ``test_channel``: with a ``test`` channel the algorithm reports at least one ``test`` metric;
  without one it says so.

Raw (``text/plain``) channels get one file, ``vocab.txt``, with one token per feature.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from pipealgos.algorithms.base import TrainingContext
from pipealgos.io import Minibatch, rebatch
from pipealgos.io.csv import CsvDecoder
from pipealgos.io.stream import decode_buffer
from pipealgos.platform.registry import CSV, AlgorithmSpec

TRAIN_ROWS = 600
TEST_ROWS = 200
SEED = 0


class ConformanceError(AssertionError):
    """An algorithm does not do what its spec declares."""


# --- in-memory channels and reports -----------------------------------------------------------


class MemoryChannels:
    """:class:`~pipealgos.algorithms.base.Channels` over minibatches held in memory. Each pass
    yields views of the same stored blocks, so an algorithm that writes into its input is seen."""

    def __init__(self, blocks: dict[str, list[Minibatch]], files: dict[str, list[Path]] | None = None) -> None:
        self.blocks = blocks
        self.raw_files = files or {}

    def names(self) -> set[str]:
        return set(self.blocks) | set(self.raw_files)

    def minibatches(self, channel: str, epoch: int, batch_size: int, feature_dim: int | None = None,
                    read_only: bool = False) -> Iterator[Minibatch]:
        return rebatch(iter(self.blocks[channel]), batch_size)

    def files(self, channel: str) -> list[Path]:
        return list(self.raw_files[channel])


@dataclass
class RecordingReport:
    """A :class:`~pipealgos.algorithms.base.Reporter` that keeps what it is told."""

    quality_lines: list[tuple[str, str, float]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def quality(self, channel: str, name: str, value: float, kind: str = "loss", epoch: int | None = None) -> None:
        self.quality_lines.append((channel, name, value))

    def test_score(self, name: str, value: float) -> None:
        self.quality_lines.append(("test", name, value))

    def progress(self, percent: float) -> None:
        pass

    def throughput(self, records_per_second: float, channel: str = "train") -> None:
        pass

    def info(self, message: str) -> None:
        self.messages.append(message)


# --- planted data -----------------------------------------------------------------------------


@dataclass
class PlantedData:
    """Rows with a known structure; ``truth`` is what the score compares predictions to, and
    ``labels`` what a labelled channel carries."""

    features: np.ndarray  # float32 (n, d)
    truth: np.ndarray
    labels: np.ndarray | None

    def split(self, rows: int) -> tuple["PlantedData", "PlantedData"]:
        """The first ``rows`` rows and the rest."""
        def part(cut: slice) -> PlantedData:
            return PlantedData(self.features[cut], self.truth[cut], None if self.labels is None else self.labels[cut])
        return part(slice(0, rows)), part(slice(rows, None))


def _clusters(n: int, d: int, hp: dict, rng: np.random.Generator) -> PlantedData:
    k = int(hp.get("k", 3))
    centers = rng.normal(scale=10.0, size=(k, d))
    truth = rng.integers(0, k, n)
    return PlantedData((centers[truth] + rng.normal(size=(n, d))).astype(np.float32), truth, None)


def _subspace(n: int, d: int, hp: dict, rng: np.random.Generator) -> PlantedData:
    rank = int(hp.get("num_components", 2))
    basis = np.linalg.qr(rng.normal(size=(d, rank)))[0].T
    scores = rng.normal(scale=5.0, size=(n, rank))
    x = 3.0 + scores @ basis + rng.normal(scale=0.1, size=(n, d))
    return PlantedData(x.astype(np.float32), basis, None)


def _labels(n: int, d: int, hp: dict, rng: np.random.Generator) -> PlantedData:
    w = rng.normal(size=d)
    x = rng.normal(size=(n, d))
    margin = x @ w
    x += np.outer(np.sign(margin) * 0.5, w / np.linalg.norm(w))  # a gap around the boundary
    y = (margin > 0).astype(np.float32)
    return PlantedData(x.astype(np.float32), y, y)


def _anomalies(n: int, d: int, hp: dict, rng: np.random.Generator) -> PlantedData:
    x = rng.normal(size=(n, d))
    truth = np.zeros(n, dtype=np.float32)
    count = max(2, n // 50)
    x[:count] = rng.normal(size=(count, d)) * 0.5 + 8.0 * rng.choice([-1.0, 1.0], size=(count, d))
    truth[:count] = 1.0
    order = rng.permutation(n)
    return PlantedData(x[order].astype(np.float32), truth[order], truth[order])


def _topics(n: int, d: int, hp: dict, rng: np.random.Generator) -> PlantedData:
    k = int(hp.get("num_topics", 3))
    words = np.array_split(np.arange(d), k)  # each topic owns a block of the vocabulary
    truth = rng.integers(0, k, n)
    x = np.zeros((n, d), dtype=np.float32)
    for row, topic in enumerate(truth):
        counts = rng.multinomial(40, np.full(len(words[topic]), 1 / len(words[topic])))
        x[row, words[topic]] = counts
    return PlantedData(x, truth, None)


def _purity(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Share of rows whose predicted group's majority truth matches their own."""
    predicted = np.asarray(predicted).astype(np.int64)
    total = 0
    for group in np.unique(predicted):
        total += np.bincount(truth[predicted == group]).max()
    return total / len(truth)


def _score_clusters(outputs: dict, data: PlantedData) -> float:
    return _purity(outputs["closest_cluster"], data.truth)


def _score_subspace(outputs: dict, data: PlantedData) -> float:
    """Variance of the centred rows that the projections capture (1 = all of it)."""
    centred = data.features - data.features.mean(0)
    return float((np.asarray(outputs["projection"], np.float64) ** 2).sum() / (centred.astype(np.float64) ** 2).sum())


def _score_labels(outputs: dict, data: PlantedData) -> float:
    predicted = outputs["predicted_label"] if "predicted_label" in outputs else np.asarray(outputs["score"]) > 0.5
    return float((np.asarray(predicted).ravel() == data.truth).mean())


def _score_anomalies(outputs: dict, data: PlantedData) -> float:
    """Share of planted anomalies scored above the 99th percentile of normal rows."""
    score = np.asarray(outputs["score"]).ravel()
    cut = np.percentile(score[data.truth == 0], 99)
    return float((score[data.truth == 1] > cut).mean())


def _score_topics(outputs: dict, data: PlantedData) -> float:
    weights = np.asarray(next(iter(outputs.values())))
    return _purity(weights.argmax(axis=1), data.truth)


# planted kind -> (generator(n, d, hyperparameters, rng), score(outputs, data) in [0, 1])
PLANTED: dict[str, tuple[Callable, Callable]] = {
    "clusters": (_clusters, _score_clusters),
    "subspace": (_subspace, _score_subspace),
    "labels": (_labels, _score_labels),
    "anomalies": (_anomalies, _score_anomalies),
    "topics": (_topics, _score_topics),
}


# --- training in memory -----------------------------------------------------------------------


@dataclass
class Trained:
    model: Any
    ctx: TrainingContext
    report: RecordingReport
    values: dict[str, Any]


class Job:
    """The checker's view of one algorithm: its planted train and test data and a way to train."""

    def __init__(self, spec: AlgorithmSpec) -> None:
        self.spec = spec
        hp = spec.conformance.hyperparameters
        self.feature_dim = int(hp["feature_dim"])
        generate, self.scorer = PLANTED[spec.conformance.planted]
        # One draw split in two: train and test rows share the planted structure.
        both = generate(TRAIN_ROWS + TEST_ROWS, self.feature_dim, hp, np.random.default_rng(SEED))
        self.train_data, self.test_data = both.split(TRAIN_ROWS)
        self.raw_files = {}
        raw_rules = [rule for rule in spec.channels if rule.raw]
        if raw_rules:
            self._scratch = tempfile.TemporaryDirectory(prefix="pipealgos-check-")  # removed with the job
        for rule in raw_rules:
            path = Path(self._scratch.name) / rule.name / "vocab.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"token{i}\n" for i in range(self.feature_dim)))
            self.raw_files[rule.name] = [path]

    def blocks(self, data: PlantedData, channel: str, layout: str = "dense") -> list[Minibatch]:
        """The rows as minibatches of 100, dense, sparse (CSR) or decoded from CSV text."""
        labels = data.labels if self.spec.channel(channel).label_size else None
        if layout == "csv":
            return self._csv_blocks(data.features, labels)
        blocks = []
        for start in range(0, len(data.features), 100):
            x = data.features[start : start + 100].copy()
            y = None if labels is None else labels[start : start + 100].copy()
            blocks.append(Minibatch(sp.csr_matrix(x) if layout == "sparse" else x, y))
        return blocks

    def _csv_blocks(self, x: np.ndarray, y: np.ndarray | None) -> list[Minibatch]:
        columns = x if y is None else np.column_stack([y, x])
        text = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in columns.astype(np.float32))
        decoder = CsvDecoder("conformance CSV", 0 if y is None else 1, self.feature_dim)
        return list(decode_buffer(text.encode(), decoder))

    def train(self, layout: str = "dense", seed: int = 0, test: bool = True, hyperparameters: dict | None = None,
              channels: MemoryChannels | None = None) -> Trained:
        spec = self.spec
        raw = {**spec.conformance.hyperparameters, **(hyperparameters or {})}
        values = spec.schema.parse(raw)
        if channels is None:
            channels = self.channels(layout, test)
        report = RecordingReport()
        ctx = TrainingContext(channels, report, seed=seed, sparse_input=spec.sparse_input)
        model = spec.train(spec.schema.to_params(values), ctx)
        return Trained(model, ctx, report, values)

    def channels(self, layout: str = "dense", test: bool = True) -> MemoryChannels:
        blocks = {"train": self.blocks(self.train_data, "train", layout)}
        if test and self.spec.channel("test") is not None:
            blocks["test"] = self.blocks(self.test_data, "test", "dense" if layout == "csv" else layout)
        return MemoryChannels(blocks, self.raw_files)

    def score(self, model) -> float:
        return float(self.scorer(model.predict(self.test_data.features), self.test_data))


def _fail(spec: AlgorithmSpec, check: str, message: str) -> None:
    raise ConformanceError(f"{spec.name}: {check}: {message}")


def _predictions(model, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in model.predict(rows).items()}


def _same_predictions(a, b, rows: np.ndarray, rtol: float, atol: float) -> str | None:
    """None when both models predict the same on ``rows`` (within tolerance), else what differs."""
    pa, pb = _predictions(a, rows), _predictions(b, rows)
    if pa.keys() != pb.keys():
        return f"outputs {sorted(pa)} vs {sorted(pb)}"
    for key in pa:
        if pa[key].shape != pb[key].shape or not np.allclose(pa[key], pb[key], rtol=rtol, atol=atol):
            return f"output '{key}' differs (largest difference {np.abs(pa[key] - pb[key]).max():.3g})"
    return None


def _same_arrays(a, b) -> bool:
    x, y = a.to_arrays(), b.to_arrays()
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


# --- the checks -------------------------------------------------------------------------------


def check_quality(spec: AlgorithmSpec) -> None:
    job = Job(spec)
    score = job.score(job.train().model)
    if not score >= spec.conformance.floor:
        _fail(spec, "quality", f"scored {score:.3f} on planted {spec.conformance.planted}, below its floor "
                               f"{spec.conformance.floor}")


def check_sparse_input(spec: AlgorithmSpec) -> None:
    job = Job(spec)
    dense, sparse = job.train("dense").model, job.train("sparse").model
    score = job.score(sparse)
    if not score >= spec.conformance.floor:
        _fail(spec, "sparse_input", f"trained on sparse minibatches it scored {score:.3f}, below its floor "
                                    f"{spec.conformance.floor}")
    if spec.sparse_input:
        difference = _same_predictions(dense, sparse, job.test_data.features, rtol=1e-3, atol=1e-3)
        if difference:
            _fail(spec, "sparse_input", f"the sparse-trained model differs from the dense-trained one: {difference}")


def check_csv_input(spec: AlgorithmSpec) -> None:
    if CSV not in spec.channel("train").content_types:
        return
    job = Job(spec)
    if not _same_arrays(job.train("dense").model, job.train("csv").model):
        _fail(spec, "csv_input", "the same rows read from CSV trained a different model than as dense minibatches")


def check_seeds(spec: AlgorithmSpec) -> None:
    job = Job(spec)
    first, again = job.train(seed=0).model, job.train(seed=0).model
    if not _same_arrays(first, again):
        _fail(spec, "seeds", "the same seed trained two different models")
    if spec.conformance.randomised and _same_arrays(first, job.train(seed=1).model):
        _fail(spec, "seeds", "seeds 0 and 1 trained the same model, yet the algorithm declares itself randomised "
                             "(does it use ctx.seed?)")


def check_no_mutation(spec: AlgorithmSpec) -> None:
    job = Job(spec)
    channels = job.channels("dense")
    before = copy.deepcopy(channels.blocks)
    job.train(channels=channels)
    for name, blocks in before.items():
        for index, (old, new) in enumerate(zip(blocks, channels.blocks[name])):
            same_labels = (old.labels is None) == (new.labels is None) and (
                old.labels is None or np.array_equal(old.labels, new.labels))
            if not (np.array_equal(old.features, new.features) and same_labels):
                _fail(spec, "no_mutation", f"training changed minibatch {index} of channel '{name}'")


def check_minibatch_invariance(spec: AlgorithmSpec) -> None:
    if not spec.conformance.minibatch_invariant:
        return
    job = Job(spec)
    size = int(spec.conformance.hyperparameters.get("mini_batch_size", 100))
    a = job.train().model
    b = job.train(hyperparameters={"mini_batch_size": str(max(1, size // 3 + 1))}).model
    difference = _same_predictions(a, b, job.test_data.features, rtol=1e-4, atol=1e-4)
    if difference:
        _fail(spec, "minibatch_invariance", f"mini_batch_size {size} and {size // 3 + 1} give different models: "
                                            f"{difference}")


def check_round_trip(spec: AlgorithmSpec) -> None:
    job = Job(spec)
    trained = job.train()
    model, values = trained.model, trained.values
    if model.feature_dim != job.feature_dim:
        _fail(spec, "round_trip", f"model.feature_dim is {model.feature_dim}, the data has {job.feature_dim} features")
    unresolved = sorted(k for k, v in values.items() if v == "auto" and k not in trained.ctx.resolved)
    if unresolved:
        _fail(spec, "round_trip", f"'auto' hyperparameter(s) {unresolved} were not recorded with ctx.resolve")
    arrays = model.to_arrays()
    if not arrays or not all(isinstance(a, np.ndarray) for a in arrays.values()):
        _fail(spec, "round_trip", "to_arrays must return a non-empty dict of numpy arrays")
    stored = {k: np.array(v) for k, v in arrays.items()}
    loaded = spec.model_type.from_arrays(stored, {**values, **trained.ctx.resolved})
    rows = job.test_data.features[:25]
    outputs = model.predict(rows)
    if not outputs or set(outputs) - set(spec.outputs):
        _fail(spec, "round_trip", f"predict returned {sorted(outputs)}; declared outputs are {list(spec.outputs)}")
    for key, value in outputs.items():
        if np.asarray(value).shape[0] != len(rows) or np.asarray(value).ndim not in (1, 2):
            _fail(spec, "round_trip", f"output '{key}' has shape {np.asarray(value).shape} for {len(rows)} rows")
    difference = _same_predictions(model, loaded, rows, rtol=1e-4, atol=1e-4)
    if difference:
        _fail(spec, "round_trip", f"the model rebuilt from its arrays predicts differently: {difference}")


def check_test_channel(spec: AlgorithmSpec) -> None:
    if spec.channel("test") is None:
        return
    job = Job(spec)
    with_test = job.train(test=True).report
    if not any(channel == "test" for channel, _, _ in with_test.quality_lines):
        _fail(spec, "test_channel", "trained with a test channel, it reported no test metric")
    without = job.train(test=False).report
    if not any("Test data is not provided" in message for message in without.messages):
        _fail(spec, "test_channel", "trained without a test channel, it did not log 'Test data is not provided.'")


CHECKS: tuple[Callable[[AlgorithmSpec], None], ...] = (
    check_quality, check_sparse_input, check_csv_input, check_seeds, check_no_mutation, check_minibatch_invariance,
    check_round_trip, check_test_channel,
)


def check_algorithm(spec: AlgorithmSpec) -> None:
    """Run every check; raises :class:`ConformanceError` listing each one that failed."""
    failures = []
    for check in CHECKS:
        try:
            check(spec)
        except ConformanceError as exc:
            failures.append(str(exc))
    if failures:
        raise ConformanceError(f"{len(failures)} conformance check(s) failed:\n" + "\n".join(failures))
