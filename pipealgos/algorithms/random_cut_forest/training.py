"""Training: sample the train channel, gather the hosts' samples, build the forest, report.

Multi-host: every host samples its own shard into a reservoir of
``num_trees x num_samples_per_tree`` rows (seeded by the job seed and its rank); the hosts
exchange their reservoirs and row counts with two ``all_gather`` calls on fixed-shape
tensors (a reservoir is padded to its capacity; no pickled objects travel), and every host
merges them into one uniform sample of all the data and builds the same forest from it (the
merge and the build draw from a generator seeded by the job seed alone). algo-1 reports the
test metrics and writes the model.

Test metrics (``test`` channel, label 1 = anomaly, 0 = normal): a record is predicted
anomalous when its score exceeds the mean + 3 standard deviations of the test scores (the
3-sigma rule of the developer guide). ``accuracy`` logs ``test accuracy``;
``precision_recall_fscore`` logs ``test precision``, ``test recall`` and ``test f1`` for the
anomaly class (``test:f1`` is the tuning objective) and the same three prefixed with
``negative_`` for the normal class. The developer guide does not establish the real
container's exact log names; these follow its metric names.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from pipealgos.io import DataError

from ..base import TrainingContext, report_test_channel
from .forest import build_forest
from .model import RandomCutForestModel
from .sampling import Reservoir, merge_reservoirs, tree_samples

THREE_SIGMA = 3.0
MAX_FOREST_BYTES = 16 * 2**30  # the forest's boxes: beyond this, a job would exhaust a host's memory


def sample_capacity(params) -> int:
    """Rows one host keeps: every tree's sample, disjoint when the data allow it."""
    return params.num_trees * params.num_samples_per_tree


def check_forest_size(params) -> None:
    """Refuse settings whose trees cannot fit in memory: each tree holds up to
    2 x num_samples_per_tree - 1 nodes, each with a float32 min and max per feature."""
    forest_bytes = sample_capacity(params) * 2 * params.feature_dim * 2 * 4
    if forest_bytes > MAX_FOREST_BYTES:
        raise ValueError(f"num_trees={params.num_trees} x num_samples_per_tree={params.num_samples_per_tree} with "
                         f"feature_dim={params.feature_dim} makes a forest of up to {forest_bytes / 2**30:.0f} GiB "
                         f"(at most {MAX_FOREST_BYTES / 2**30:.0f} GiB): lower num_trees or num_samples_per_tree, "
                         "or reduce the features (e.g. with PCA)")


def train(params, ctx: TrainingContext) -> RandomCutForestModel:
    """One pass over ``train`` into a reservoir, merged across hosts, then the forest."""
    check_forest_size(params)
    reservoir = Reservoir(sample_capacity(params), params.feature_dim, np.random.default_rng([ctx.seed, ctx.rank, 1]))
    started = time.perf_counter()
    for batch in ctx.channels.minibatches("train", 0, params.mini_batch_size, params.feature_dim):
        reservoir.add(batch.features)
    elapsed = time.perf_counter() - started
    ctx.report.info(f"host {ctx.rank}: sampled {len(reservoir.sample)} of {reservoir.seen} records")
    if reservoir.seen:
        ctx.report.throughput(reservoir.seen / max(elapsed, 1e-9))
    rng = np.random.default_rng([ctx.seed, 2])
    samples, seen = _gather(reservoir) if ctx.distributed else ([reservoir.sample], [reservoir.seen])
    total = sum(seen)
    if total == 0:
        raise DataError("the train channel holds no records", channel="train",
                        fix="Provide at least one record (check the S3 prefix or the input directory)")
    _warn_when_short(params, total, ctx)
    sample = merge_reservoirs(samples, seen, sample_capacity(params), rng)
    forest = build_forest(tree_samples(sample, params.num_trees, params.num_samples_per_tree, rng), rng)
    model = RandomCutForestModel(forest)
    ctx.report.progress(100.0)
    report_test_channel(ctx, lambda: report_test_metrics(model, params, ctx))
    return model


def _warn_when_short(params, total: int, ctx: TrainingContext) -> None:
    if total < params.num_samples_per_tree:
        ctx.report.info(f"WARNING: num_samples_per_tree={params.num_samples_per_tree} is larger than the {total} "
                        f"records of the train channel: each tree is built on all {total} records "
                        f"(lower num_samples_per_tree or provide more data).")
    elif total < sample_capacity(params):
        ctx.report.info(f"The train channel holds {total} records, fewer than num_trees x num_samples_per_tree = "
                        f"{sample_capacity(params)}: trees draw their samples from the same records.")


def _gather(reservoir: Reservoir) -> tuple[list[np.ndarray], list[int]]:
    """Every host's reservoir and row count (two all_gathers of fixed-shape tensors)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    seen = torch.tensor([reservoir.seen], dtype=torch.int64)
    all_seen = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(all_seen, seen)
    rows = torch.from_numpy(np.ascontiguousarray(reservoir.rows))
    if len(reservoir.sample) < reservoir.capacity:  # unused slots: zeros, not whatever memory held
        rows[len(reservoir.sample):] = 0
    all_rows = [torch.empty_like(rows) for _ in range(world)]
    dist.all_gather(all_rows, rows)
    counts = [int(t.item()) for t in all_seen]
    return [r.numpy()[: min(n, reservoir.capacity)] for r, n in zip(all_rows, counts)], counts


def report_test_metrics(model: RandomCutForestModel, params, ctx: TrainingContext) -> None:
    """Score the ``test`` channel and log the metrics of ``eval_metrics`` (module docstring)."""
    scores, labels = _score_test_channel(model, params, ctx)
    if not params.eval_metrics or not len(scores):
        return
    predicted = scores > scores.mean(dtype=np.float64) + THREE_SIGMA * scores.std(dtype=np.float64)
    for name, value in classification_metrics(predicted, labels == 1, params.eval_metrics).items():
        ctx.report.quality("test", name, value, kind="score")


def _score_test_channel(model: RandomCutForestModel, params, ctx: TrainingContext) -> tuple[np.ndarray, np.ndarray]:
    scores, labels, records = [], [], 0
    for batch in ctx.channels.minibatches("test", 0, params.mini_batch_size, params.feature_dim):
        if batch.labels is None and params.eval_metrics:
            raise DataError("the test records carry no label, and eval_metrics needs one (1 = anomaly, 0 = normal)",
                            channel="test", record=records,
                            fix="Add the label (CSV: first column with ContentType 'text/csv;label_size=1'), "
                                "or set eval_metrics to []")
        if batch.labels is not None:
            bad = np.flatnonzero((batch.labels != 0) & (batch.labels != 1))
            if len(bad):
                raise DataError(f"label {float(batch.labels[bad[0]]):g} is neither 0 (normal) nor 1 (anomaly)",
                                channel="test", record=records + int(bad[0]), fix="Label anomalies 1 and the rest 0")
            labels.append(batch.labels)
        scores.append(model.predict(batch.features)["score"])
        records += batch.size
    if not scores:
        return np.empty(0, np.float32), np.empty(0, np.float32)
    return np.concatenate(scores), np.concatenate(labels) if labels else np.empty(0, np.float32)


def classification_metrics(predicted: np.ndarray, actual: np.ndarray, groups) -> dict[str, float]:
    """Accuracy and both classes' precision, recall and F1 (0 where undefined)."""
    metrics = {}
    if "accuracy" in groups:
        metrics["accuracy"] = float(np.mean(predicted == actual))
    if "precision_recall_fscore" in groups:
        for prefix, p, a in (("", predicted, actual), ("negative_", ~predicted, ~actual)):
            true_positive = float(np.sum(p & a))
            precision = true_positive / p.sum() if p.sum() else 0.0
            recall = true_positive / a.sum() if a.sum() else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            metrics.update({f"{prefix}precision": precision, f"{prefix}recall": recall, f"{prefix}f1": f1})
    return metrics
