"""The training job: minibatch AdaGrad over the train channel for ``epochs`` passes.

Each minibatch goes from the reader's CSR arrays to its non-zeros on the device (dense
minibatches are taken by their non-zeros too), through the O(k·nnz) forward pass and its
hand-written gradient (``compute``) to an AdaGrad step on the touched rows (``optimizer``).
Nothing per minibatch is sized by ``feature_dim``: a 10,000,000-feature model trains in the
memory of its parameters and AdaGrad state (2 × 4 bytes × feature_dim × (1 + num_factors)) plus
a few minibatches.

Losses: ``regressor`` ½(ŷ − y)² (gradient ŷ − y, as MXNet's LinearRegressionOutput);
``binary_classifier`` log loss on σ(ŷ) (gradient σ(ŷ) − y). Without ``rescale_grad`` the
summed gradient is divided by the minibatch's rows (all hosts' rows in a multi-host job).

Multi-host: synchronous data parallelism on the touched rows. After each minibatch every host
all-gathers the others' (touched feature, summed gradient) rows, row counts, losses and bias
gradients, merges them in host order and applies the same step, so all hosts hold the same
parameters and the job trains as one host would with a minibatch of hosts × mini_batch_size.
What crosses the network per step is the touched rows, never the table. A host whose shard
ends first keeps joining with nothing until every host is done.

Metric lines: per epoch ``train rmse`` (regressor) or ``train binary_classification_cross_entropy``
(binary), measured on each minibatch before its update; on the ``test`` channel (leader only)
``rmse``, or ``binary_classification_accuracy``, ``binary_classification_cross_entropy`` and
``binary_f_beta`` (beta = 1) at threshold 0.5, each as a ``#quality_metric`` line and as
``#test_score (algo-1) : ('rmse', 0.91)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from pipealgos.io import DataError, Minibatch

from ..base import Params, TrainingContext, report_test_channel
from .compute import SparseRows, forward, row_gradient
from .model import FactorizationMachineModel
from .optimizer import DEFAULT_EPS, StepSettings, TouchedRowsAdaGrad

_FETCH = 8  # minibatches taken from the reader thread at once (fewer thread hand-offs)
_INIT_ROWS = 1 << 16


def train(params: Params, ctx: TrainingContext) -> FactorizationMachineModel:
    # A minibatch's tensors are small (its non-zeros x (1 + k)): intra-op threads cost more in
    # synchronisation than they save (index_add_ of 2,000 x 65 rows: 12 ms with 2 threads on a
    # loaded 2-core machine, 0.05 ms with one), so one thread; the reader decodes on its own.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _Job(params, ctx).run()
    finally:
        torch.set_num_threads(threads)


def loss_and_gradient(predictor_type: str, margin: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss as reported (squared error, or cross entropy) and ∂L/∂ŷ."""
    if predictor_type == "regressor":
        residual = margin - labels
        return residual * residual, residual
    return F.softplus(margin) - labels * margin, torch.sigmoid(margin) - labels


def _initial(array: np.ndarray, method: str, sigma: float, scale: float | None, value: float | None,
             rng: np.random.Generator) -> None:
    """Fill ``array`` in place: N(0, sigma), U(-scale, scale) or the constant ``value``. Drawn
    by numpy in blocks of rows (float32 draws; torch's normal_ was 10x slower on a 1M x 64 table)."""
    for start in range(0, array.shape[0], _INIT_ROWS):
        part = array[start : start + _INIT_ROWS]
        if method == "normal":
            part[...] = rng.standard_normal(part.shape, dtype=np.float32) * np.float32(sigma)
        elif method == "uniform":
            part[...] = (rng.random(part.shape, dtype=np.float32) * 2 - 1) * np.float32(scale)
        else:
            part[...] = value


class _Job:
    def __init__(self, p: Params, ctx: TrainingContext) -> None:
        self.p, self.ctx = p, ctx
        rng = np.random.default_rng(ctx.seed)
        width = 1 + p.num_factors
        bias = np.empty(1, dtype=np.float32)
        # Per feature: [w, v_1..v_k] then their AdaGrad accumulators (see TouchedRowsAdaGrad).
        state = np.zeros((p.feature_dim, 2 * width), dtype=np.float32)
        _initial(bias, p.bias_init_method, p.bias_init_sigma, p.bias_init_scale, p.bias_init_value, rng)
        _initial(state[:, 0], p.linear_init_method, p.linear_init_sigma, p.linear_init_scale, p.linear_init_value, rng)
        _initial(state[:, 1:width], p.factors_init_method, p.factors_init_sigma, p.factors_init_scale,
                 p.factors_init_value, rng)
        self.bias, self.state = torch.from_numpy(bias).to(ctx.device), torch.from_numpy(state).to(ctx.device)
        self.width = width
        self.table = self.state[:, :width]  # the parameters, a view
        eps = ctx.resolve("eps", DEFAULT_EPS if p.eps is None else p.eps)
        self.optimizer = TouchedRowsAdaGrad(self.bias, width, StepSettings(
            p.bias_lr, p.bias_wd, p.linear_lr, p.linear_wd, p.factors_lr, p.factors_wd, p.clip_gradient, eps))

    # --- data ----------------------------------------------------------------------------
    def _batches(self, channel: str, epoch: int) -> Iterator[Minibatch]:
        """Minibatches of ``mini_batch_size`` rows with their labels checked."""
        size, seen = self.p.mini_batch_size, 0
        for block in self.ctx.channels.minibatches(channel, epoch, size * _FETCH, self.p.feature_dim):
            self._check_labels(block, channel, seen)
            seen += block.size
            for start in range(0, block.size, size):
                yield block.slice(start, start + size)

    def _check_labels(self, block: Minibatch, channel: str, first_record: int) -> None:
        y = block.labels
        if y is None:
            raise DataError("records carry no label, but factorization-machines is supervised", channel=channel,
                            record=first_record,
                            fix="Write each record's label in label['values'] (the SDK's write_spmatrix_to_sparse_"
                                "tensor(file, matrix, labels))")
        if self.p.predictor_type == "binary_classifier":
            bad = (y != 0) & (y != 1)
            fix = "binary_classifier labels must be 0 or 1 (use predictor_type=regressor for other values)"
        else:
            bad = ~np.isfinite(y)
            fix = "regressor labels must be finite numbers"
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"label {float(y[row])!r} is invalid", channel=channel, record=first_record + row, fix=fix)

    def _tensors(self, batch: Minibatch) -> tuple[SparseRows, torch.Tensor]:
        rows = SparseRows.from_features(batch.features, self.ctx.device)
        return rows, torch.from_numpy(batch.labels).to(self.ctx.device)

    # --- one step ----------------------------------------------------------------------
    def _local_step(self, batch: Minibatch | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """This host's touched features (u,), their state rows (u, 2 (1 + k)) as gathered, their
        summed gradient (u, 1 + k), and [rows, summed loss, bias gradient] (float64) of one
        minibatch (all empty for None)."""
        device = self.ctx.device
        if batch is None:
            return (torch.empty(0, dtype=torch.int64, device=device), torch.empty(0, 2 * self.width, device=device),
                    torch.empty(0, self.width, device=device), torch.zeros(3, dtype=torch.float64, device=device))
        rows, labels = self._tensors(batch)
        touched, local = rows.localised()
        state_rows = self.state.index_select(0, touched)
        fwd = forward(self.bias, state_rows[:, : self.width], local)
        loss, margin_grad = loss_and_gradient(self.p.predictor_type, fwd.margin, labels)
        grad = row_gradient(local, fwd, margin_grad, touched.numel())
        totals = torch.stack([torch.tensor(float(rows.count), device=device), loss.sum(), margin_grad.sum()])
        return touched, state_rows, grad, totals.double()

    def _merge_hosts(self, touched: torch.Tensor, grad: torch.Tensor,
                     totals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every host's touched rows summed, and the totals summed, identically on all hosts."""
        import torch.distributed as dist

        world, device = self.ctx.world_size, self.ctx.device
        head = torch.cat([torch.tensor([float(touched.numel())], dtype=torch.float64, device=device), totals])
        heads = [torch.empty_like(head) for _ in range(world)]
        dist.all_gather(heads, head)
        heads_cpu = torch.stack(heads).cpu()
        sizes = heads_cpu[:, 0].long().tolist()
        totals = heads_cpu[:, 1:].sum(0).to(device)
        width = max(sizes)
        # Feature ids travel as float64 (exact below 2**53) beside their gradients: one collective.
        block = torch.zeros(width, 1 + grad.shape[1], dtype=torch.float64, device=device)
        block[: touched.numel(), 0] = touched.double()
        block[: touched.numel(), 1:] = grad.double()
        blocks = [torch.empty_like(block) for _ in range(world)]
        dist.all_gather(blocks, block)
        every = torch.cat([b[:size] for b, size in zip(blocks, sizes)])
        merged, position = torch.unique(every[:, 0].long(), return_inverse=True)
        summed = torch.zeros(merged.numel(), grad.shape[1], dtype=grad.dtype, device=device)
        summed.index_add_(0, position, every[:, 1:].to(grad.dtype))
        return merged, summed, totals

    # --- the job -----------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass; returns (summed loss, rows) over all hosts."""
        batches = self._batches("train", epoch)
        loss_total = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        rows_total = 0
        while True:
            batch = next(batches, None)
            if batch is None and not self.ctx.distributed:
                break
            touched, state_rows, grad, totals = self._local_step(batch)
            if self.ctx.distributed:
                touched, grad, totals = self._merge_hosts(touched, grad, totals)
                state_rows = self.state.index_select(0, touched)
                rows = int(totals[0].item())
            else:
                rows = batch.size
            if rows == 0:
                break
            rescale = self.p.rescale_grad if self.p.rescale_grad is not None else 1.0 / rows
            self.optimizer.step(self.bias, totals[2:3].to(self.bias.dtype), state_rows, grad, rescale)
            self.state.index_copy_(0, touched, state_rows)
            loss_total += totals[1]
            rows_total += rows
        return float(loss_total.item()), rows_total

    def _epoch_metric(self, loss: float, rows: int) -> tuple[str, float]:
        mean = loss / max(rows, 1)
        if self.p.predictor_type == "regressor":
            return "rmse", math.sqrt(mean)
        return "binary_classification_cross_entropy", mean

    def run(self) -> FactorizationMachineModel:
        ctx, p = self.ctx, self.p
        for epoch in range(p.epochs):
            started = time.perf_counter()
            loss, rows = self._train_epoch(epoch)
            if epoch == 0 and rows == 0:
                raise DataError("the train channel holds no records", channel="train",
                                fix="Provide at least one labelled record")
            name, value = self._epoch_metric(loss, rows)
            ctx.report.quality("train", name, value, "loss", epoch=epoch)
            ctx.report.throughput(rows / max(time.perf_counter() - started, 1e-9))
            ctx.report.progress(100.0 * (epoch + 1) / p.epochs)
        # Views of the final table (no copy of a possibly huge table; training is over).
        table = self.table.cpu().numpy()
        model = FactorizationMachineModel(p.predictor_type, self.bias.cpu().numpy().copy(), table[:, 0], table[:, 1:])
        report_test_channel(ctx, self._evaluate_test)
        return model

    def _evaluate_test(self) -> None:
        sums = TestSums(self.p.predictor_type)
        for batch in self._batches("test", 0):
            rows, labels = self._tensors(batch)
            sums.add(forward(self.bias, self.table, rows).margin, labels)
        for name, value, kind in sums.metrics():
            self.ctx.report.quality("test", name, value, kind)
            self.ctx.report.test_score(name, value)  # the real container's summary line


class TestSums:
    """Sums over the test channel from which its metrics follow (float64)."""

    def __init__(self, predictor_type: str) -> None:
        self.predictor_type = predictor_type
        self.rows = 0
        self.loss = 0.0
        self.true_positive = self.false_positive = self.false_negative = self.correct = 0

    def add(self, margin: torch.Tensor, labels: torch.Tensor) -> None:
        loss, _ = loss_and_gradient(self.predictor_type, margin.double(), labels.double())
        self.rows += labels.numel()
        self.loss += float(loss.sum())
        if self.predictor_type == "binary_classifier":
            predicted = torch.sigmoid(margin.double()) >= 0.5
            positive = labels > 0.5
            self.true_positive += int((predicted & positive).sum())
            self.false_positive += int((predicted & ~positive).sum())
            self.false_negative += int((~predicted & positive).sum())
            self.correct += int((predicted == positive).sum())

    def metrics(self) -> list[tuple[str, float, str]]:
        n = max(self.rows, 1)
        if self.predictor_type == "regressor":
            return [("rmse", math.sqrt(self.loss / n), "loss")]
        precision_denominator = self.true_positive + self.false_positive
        recall_denominator = self.true_positive + self.false_negative
        precision = self.true_positive / precision_denominator if precision_denominator else 0.0
        recall = self.true_positive / recall_denominator if recall_denominator else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return [("binary_classification_accuracy", self.correct / n, "score"),
                ("binary_classification_cross_entropy", self.loss / n, "loss"),
                ("binary_f_beta", f1, "score")]
