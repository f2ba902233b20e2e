"""The training job: many linear models in one tensor, trained epoch by epoch.

1. Epoch 0 starts by buffering the first ``num_point_for_scaler`` training rows. They give the
   normaliser (see ``scaling``), the balanced class weights, and — without a validation
   channel — the training sample on which models are compared. The buffered minibatches are
   then trained on like any others, so every pass reads the channel exactly once (a Pipe-mode
   job needs one FIFO per epoch, and File and Pipe mode see identical minibatches).
2. Each minibatch updates all models with one forward product, hand-written loss gradients and
   one batched optimizer step (``optimizer``). Minibatches reach the device through the feed
   (``feed.py``) and nothing is read back per minibatch: losses and evaluation sums stay on the
   device until the epoch's metric lines (a GPU never waits for the host).
3. After each epoch every model is evaluated on ``validation`` (pass ``epoch`` of that channel)
   or on the training sample. Each model keeps a snapshot of its best epoch by the selection
   metric (the calibrated binary criterion, else minus the loss) and that epoch's threshold.
   Training stops early when the job-level early-stopping metric (the best model's selection
   metric on validation; without validation, minus its loss on the training sample) has not
   improved by ``early_stopping_tolerance`` (relative) for ``early_stopping_patience`` epochs.
4. The model with the best snapshot wins (ties: the lower index, so model 0, the one with the
   given settings); its normalisation is folded into the weights.

Multi-host: synchronous data parallelism. After each minibatch the hosts all-reduce the
summed gradients, losses and row counts and divide by the total count, so every host applies
the same update — the job behaves like one host with a minibatch of hosts × mini_batch_size.
A host that runs out of rows first keeps joining the all-reduce with zeros until every host
is done (shards need not be equal). Per-minibatch synchronisation was chosen over averaging
models once per epoch because it keeps the 1-host optimisation path (adam state, l1 proximal
steps, the learning-rate schedule) exact. The price is one small all-reduce per minibatch:
benchmarks/linear_learner.py measured 3-5 ms for a 32-model gradient among 3 processes over
loopback on a loaded 2-core machine, more than the minibatch's own compute, so multi-host jobs
should use large minibatches (the cost is per minibatch, not per row). Scaler sums and
evaluation sums are all-reduced too, so all hosts select the same model and stop at the same
epoch.

Reported metrics (``#quality_metric``): per epoch ``train <loss>_objective`` (the mean
training loss of the currently best model) and, with a validation channel,
``validation <loss>_objective``; at the end the full metric set of the chosen model for
``train`` (on the training sample), ``validation`` (its best epoch) and ``test`` (leader only).
The objective is the mean data loss, without the wd / l1 terms.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Iterator

import numpy as np
import torch

from pipealgos.io import DataError, Minibatch, concat

from ..base import Params, TrainingContext, report_test_channel
from ..collectives import EarlyStopping, all_reduce
from ..feed import DeviceBatch
from .evaluation import Evaluator, MetricSettings
from .losses import OBJECTIVE_NAMES, LossSettings, make_loss
from .model import LinearLearnerModel
from .optimizer import BatchedOptimizer, StepSettings
from .params import AUTO, ModelGrid, Resolved, model_grid, resolve
from .scaling import Scaler, sample_sums


_FETCH = 8


def train(params: Params, ctx: TrainingContext) -> LinearLearnerModel:
    if ctx.tuning_job and params.num_models != 1:
        # As the real container: a tuning job explores the settings itself.
        ctx.report.info("hyperparameter tuning job: num_models forced to 1")
        params = dataclasses.replace(params, num_models=1)
    resolved = resolve(params)
    grid = model_grid(params, resolved)
    ctx.report.info(f"linear-learner settings after resolving 'auto': {resolved.logged()}")
    # The per-minibatch tensors are small (rows x models x outputs): intra-op threads cost more
    # in synchronisation than they save (10x slower on a loaded 2-core machine), so one thread;
    # the reader's readahead thread decodes in parallel.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _Job(params, resolved, grid, ctx).run()
    finally:
        torch.set_num_threads(threads)


class _Job:
    def __init__(self, p: Params, r: Resolved, grid: ModelGrid, ctx: TrainingContext) -> None:
        self.p, self.r, self.grid, self.ctx = p, r, grid, ctx
        self.models, self.outputs = r.num_models, r.num_outputs
        self.has_validation = "validation" in ctx.channels.names()

    # --- data ------------------------------------------------------------------------
    def _batches(self, channel: str, epoch: int) -> Iterator[Minibatch]:
        """Minibatches of ``mini_batch_size`` rows. They are fetched from the reader thread
        ``_FETCH`` at a time and cut here: the same minibatches, with fewer thread hand-offs
        (each costs a GIL round trip, a large share of a small minibatch's time)."""
        size = self.p.mini_batch_size
        for block in self.ctx.channels.minibatches(channel, epoch, size * _FETCH, self.feature_dim):
            self._check_labels(block, channel)
            for start in range(0, block.size, size):
                yield block.slice(start, start + size)

    def _check_labels(self, batch: Minibatch, channel: str) -> None:
        y = batch.labels
        if y is None:
            raise DataError("records carry no label, but linear-learner is supervised", channel=channel,
                            fix="Write labels with the features (protobuf label['values'], or CSV's first column)")
        kind = self.r.predictor_type
        if kind == "binary_classifier":
            bad = (y != 0) & (y != 1)
            fix = "Binary classifier labels must be 0 or 1"
        elif kind == "multiclass_classifier":
            bad = (y != np.floor(y)) | (y < 0) | (y >= self.outputs)
            fix = f"Multiclass labels must be integers 0 .. num_classes-1 = {self.outputs - 1}"
        else:
            bad = ~np.isfinite(y)
            fix = "Regression labels must be finite numbers"
        if bad.any():
            raise DataError(f"label {y[np.argmax(bad)]!r} is invalid (one of {int(bad.sum())} in a minibatch)",
                            channel=channel, fix=fix)

    def _first_pass(self) -> tuple[Iterator[Minibatch], Minibatch | None]:
        """Epoch 0's minibatches, and the sample: its first ``num_point_for_scaler`` rows."""
        stream = self._batches("train", 0)
        head, rows = [], 0
        for batch in stream:
            head.append(batch)
            rows += batch.size
            if rows >= self.p.num_point_for_scaler:
                break
        sample = concat(head).slice(0, self.p.num_point_for_scaler) if head else None
        return itertools.chain(head, stream), sample

    # --- setup -------------------------------------------------------------------------
    def _setup(self, sample: Minibatch | None) -> None:
        ctx, r, p = self.ctx, self.r, self.p
        d = r.feature_dim or (sample.feature_dim if sample is not None else 0)
        if ctx.distributed:
            d = int(all_reduce([torch.tensor([float(d)])], ctx.device, op="max")[0].item())
        if d == 0:
            raise DataError("the train channel holds no records", channel="train",
                            fix="Provide at least one labelled record")
        self._check_memory(d)
        self.feature_dim = d
        sums = sample_sums(sample, d)
        counts = self._class_counts(sample)
        if ctx.distributed:
            sums, counts = all_reduce([sums, counts], ctx.device)
        if sums[0] == 0:
            raise DataError("the train channel holds no records", channel="train",
                            fix="Provide at least one labelled record")
        self.scaler = Scaler.from_sums(sums, d, r.unbias_data, r.normalize_data, r.unbias_label, r.normalize_label,
                                       ctx.device)
        self._class_weights(counts)
        scale = self.scaler.label_scale
        self.loss_fn = make_loss(r.loss, LossSettings(p.margin, p.quantile, p.loss_insensitivity / scale,
                                                      p.huber_delta / scale))
        generator = torch.Generator().manual_seed(ctx.seed)
        shape = (d + 1, self.models, self.outputs)
        if p.init_method == "uniform":
            theta = (torch.rand(shape, generator=generator) * 2 - 1) * p.init_scale
        else:
            theta = torch.randn(shape, generator=generator) * p.init_sigma
        theta[-1] = p.init_bias if p.use_bias else 0.0
        self.theta = theta.to(ctx.device)
        self.optimizer = BatchedOptimizer(self.theta, self.grid.optimizer, self.grid.learning_rate, self.grid.wd,
                                          self.grid.l1, StepSettings(
            r.momentum, r.beta_1, r.beta_2, r.bias_lr_mult, r.bias_wd_mult, p.use_bias, p.use_lr_scheduler,
            r.lr_scheduler_step, r.lr_scheduler_factor, r.lr_scheduler_minimum_lr))
        self.sample = sample

    def _check_memory(self, d: int) -> None:
        """Refuse a width whose dense minibatches and model state cannot fit in free memory
        (a sparse record may declare up to 2**31 - 1 features: with ``feature_dim=auto`` that
        would otherwise end in an allocation failure deep inside torch)."""
        state = 6 * self.models * self.outputs  # weights, best snapshot, gradient, optimizer moments
        need = 4 * d * (self.p.mini_batch_size * _FETCH + state)
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        if need > free:
            origin = "declared by the data (feature_dim=auto)" if self.r.feature_dim is None else "set by feature_dim"
            raise DataError(f"a width of {d} features, {origin}, needs about {need / 2**30:.1f} GiB for dense "
                            f"minibatches and {self.models} model(s), but {free / 2**30:.1f} GiB are free",
                            channel="train", fix="Set feature_dim to the data's real width, or lower "
                            "mini_batch_size or num_models")

    def _class_counts(self, sample: Minibatch | None) -> np.ndarray:
        if self.r.predictor_type == "regressor":
            return np.zeros(1)
        classes = 2 if self.r.predictor_type == "binary_classifier" else self.outputs
        if sample is None:
            return np.zeros(classes)
        return np.bincount(sample.labels.astype(np.int64), minlength=classes).astype(np.float64)

    def _class_weights(self, counts: np.ndarray) -> None:
        """Per-model positive weight (binary), per-class weight (multiclass), or none."""
        self.positive_weight = self.class_weight = None
        if self.r.predictor_type == "binary_classifier":
            negatives, positives = counts
            balanced = negatives / positives if positives > 0 else 1.0
            given = self.p.positive_example_weight_mult
            given = 1.0 if given in (AUTO, "balanced") else float(given)
            weights = np.where(self.grid.balanced, balanced, given)
            self.ctx.report.info(f"positive example weights per model: {np.round(weights, 4).tolist()}")
            if np.any(weights != 1.0):
                self.positive_weight = torch.as_tensor(weights, dtype=torch.float32, device=self.ctx.device)
        elif self.r.predictor_type == "multiclass_classifier" and self.p.balance_multiclass_weights:
            total = counts.sum()
            weights = np.where(counts > 0, total / (len(counts) * np.maximum(counts, 1)), 1.0)
            self.class_weight = torch.as_tensor(weights, dtype=torch.float32, device=self.ctx.device)

    # --- the computation -----------------------------------------------------------------
    def _inputs(self, batch: DeviceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.scaler.features(batch.features)
        y = batch.labels
        return x, (self.scaler.labels(y) if self.r.predictor_type == "regressor" else y)

    def _forward(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d, models, outputs = theta.shape[0] - 1, theta.shape[1], theta.shape[2]
        flat = x @ theta[:d].reshape(d, models * outputs) + theta[d].reshape(1, models * outputs)
        return flat.view(x.shape[0], models, outputs)

    def _row_weights(self, y: torch.Tensor) -> torch.Tensor | None:
        if self.positive_weight is not None:
            return 1 + y[:, None] * (self.positive_weight[None, :] - 1)
        if self.class_weight is not None:
            return self.class_weight[y.long()][:, None]
        return None

    def _gradient(self, batch: DeviceBatch | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed gradient (d + 1, M, K) and summed loss (M,) of one minibatch (zeros for none)."""
        if batch is None:
            return torch.zeros_like(self.theta), torch.zeros(self.models, device=self.theta.device)
        x, y = self._inputs(batch)
        pred = self._forward(self.theta, x)
        loss, grad = self.loss_fn(pred, y)
        weights = self._row_weights(y)
        if weights is not None:
            loss, grad = loss * weights, grad * weights[..., None]
        n, d = x.shape
        flat = grad.reshape(n, -1)
        full = torch.cat([(x.T @ flat).view(d, self.models, self.outputs),
                          flat.sum(0).view(1, self.models, self.outputs)])
        return full, loss.sum(0)

    def _train_epoch(self, batches: Iterator[Minibatch]) -> tuple[np.ndarray, int]:
        """One pass; returns the mean training loss per model and the rows seen (all hosts).

        One host: nothing is read back from the device before the epoch ends (rows are counted
        on the host, the loss summed on the device), so a GPU never waits for the host. Several
        hosts: the per-minibatch all-reduce (module docstring) synchronises anyway; its row
        count, read on the host, says when every host is done."""
        loss_total, rows = torch.zeros(self.models, dtype=torch.float64, device=self.theta.device), 0
        feed = self.ctx.feed(batches)
        while True:
            batch = next(feed, None)
            grad, loss = self._gradient(batch)
            n = 0 if batch is None else batch.rows
            if self.ctx.distributed:
                grad, loss, count = all_reduce([grad, loss, np.array([float(n)])], self.ctx.device)
                n = int(count[0])
            if n == 0:
                break
            self.optimizer.step(self.theta, grad / n)
            loss_total += loss.double()
            rows += n
        return (loss_total / max(rows, 1)).cpu().numpy(), rows

    def _evaluate(self, theta: torch.Tensor, batches, threshold_rows: int | None = None) -> Evaluator:
        r, p = self.r, self.p
        settings = MetricSettings(r.predictor_type, r.loss, r.criterion, p.f_beta, p.target_recall,
                                  p.target_precision, p.accuracy_top_k, threshold_rows or r.num_calibration_samples,
                                  self.scaler.label_scale)
        evaluator = Evaluator(theta.shape[1], self.outputs, settings, theta.device)
        for batch in self.ctx.feed(batches):
            x, y = self._inputs(batch)
            pred = self._forward(theta, x)
            evaluator.add(pred, y, self.loss_fn(pred, y)[0])
        return evaluator

    def _evaluate_epoch(self, epoch: int) -> Evaluator:
        batches = self._batches("validation", epoch) if self.has_validation else [self.sample] if self.sample else []
        evaluator = self._evaluate(self.theta, batches)
        if self.ctx.distributed:
            keys = list(evaluator.sums)
            evaluator.sums = dict(zip(keys, all_reduce([evaluator.sums[k] for k in keys], self.ctx.device)))
        return evaluator

    # --- the job -----------------------------------------------------------------------
    def run(self) -> LinearLearnerModel:
        ctx, p, r = self.ctx, self.p, self.r
        self.feature_dim = r.feature_dim
        objective = f"{OBJECTIVE_NAMES[r.loss]}_objective"
        best_metric = np.full(self.models, -np.inf)
        best_threshold = np.zeros(self.models)
        best_epoch = np.zeros(self.models, dtype=int)
        best_theta = None
        evaluators: dict[int, Evaluator] = {}
        stopping = EarlyStopping(ctx.report, p.early_stopping_patience, p.early_stopping_tolerance)
        for epoch in range(p.epochs):
            started = time.perf_counter()
            if epoch == 0:
                batches, sample = self._first_pass()
                self._setup(sample)
                best_theta = self.theta.clone()
            else:
                batches = self._batches("train", epoch)
            train_loss, rows = self._train_epoch(batches)
            elapsed = time.perf_counter() - started
            evaluator = self._evaluate_epoch(epoch)
            metric, thresholds = evaluator.selection()
            improved = metric > best_metric
            best_metric = np.where(improved, metric, best_metric)
            best_threshold = np.where(improved, thresholds, best_threshold)
            best_epoch = np.where(improved, epoch, best_epoch)
            mask = torch.as_tensor(improved, device=self.theta.device)[None, :, None]
            best_theta = torch.where(mask, self.theta, best_theta)
            evaluators[epoch] = evaluator
            evaluators = {e: v for e, v in evaluators.items() if e in set(best_epoch.tolist())}

            leader = int(np.argmax(best_metric))
            ctx.report.quality("train", objective, float(train_loss[leader]), "loss", epoch=epoch)
            if self.has_validation:
                ctx.report.quality("validation", objective, float(evaluator.mean_loss()[leader]), "loss", epoch=epoch)
            ctx.report.throughput(rows / max(elapsed, 1e-9))
            ctx.report.progress(100.0 * (epoch + 1) / p.epochs)

            stop_metric = float(metric.max()) if self.has_validation else float(-evaluator.mean_loss().min())
            if stopping.update(epoch, stop_metric):
                break

        chosen = int(np.argmax(best_metric))
        ctx.report.info(f"Best model found for hyperparameters: {self.grid.describe(chosen, r)} "
                        f"(model {chosen} of {self.models}, epoch {best_epoch[chosen]})")
        self._record_resolved(chosen)
        chosen_theta = best_theta[:, chosen : chosen + 1]
        threshold = float(best_threshold[chosen])
        weight, bias = self.scaler.fold(chosen_theta[:, 0])
        model = LinearLearnerModel(r.predictor_type, r.loss, weight, bias, threshold)
        self._final_metrics(chosen_theta, threshold, evaluators[int(best_epoch[chosen])], chosen)
        return model

    def _record_resolved(self, chosen: int) -> None:
        """What every ``auto`` became, for the chosen model (the grid varies some per model)."""
        ctx, r, grid = self.ctx, self.r, self.grid
        for name, value in r.logged().items():
            if name in ("num_outputs", "criterion"):
                continue
            ctx.resolve(name, value)
        ctx.resolve("feature_dim", self.feature_dim)
        ctx.resolve("optimizer", grid.optimizer[chosen])
        ctx.resolve("learning_rate", float(grid.learning_rate[chosen]))
        ctx.resolve("wd", float(grid.wd[chosen]))
        ctx.resolve("l1", float(grid.l1[chosen]))
        if self.p.positive_example_weight_mult == AUTO:
            ctx.resolve("positive_example_weight_mult", "balanced" if grid.balanced[chosen] else 1.0)

    def _final_metrics(self, theta: torch.Tensor, threshold: float, validation: Evaluator, chosen: int) -> None:
        report = self.ctx.report
        if self.sample is not None:
            for name, value, kind in self._evaluate(theta, [self.sample]).metrics(0, threshold):
                report.quality("train", name, value, kind)
        if self.has_validation:
            for name, value, kind in validation.metrics(chosen, threshold):
                report.quality("validation", name, value, kind)

        def evaluate_test() -> None:
            for name, value, kind in self._evaluate(theta, self._batches("test", 0)).metrics(0, threshold):
                report.quality("test", name, value, kind)

        report_test_channel(self.ctx, evaluate_test)
