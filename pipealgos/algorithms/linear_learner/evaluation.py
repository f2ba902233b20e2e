"""Quality of all models on a channel: loss, the selection metric, the calibrated binary
threshold, and the metric lines the real container prints.

An evaluator sums per-model statistics over minibatches (float64 tensors, so that hosts merge
them with one all-reduce) and derives everything from the sums:

* binary: counts of positive and negative rows per bin of the margin (4002 bins with edges
  every 0.01 on [-20, 20]). Candidate thresholds are the bin edges, so precision, recall and
  accuracy at any candidate are exact counts, and the calibrated threshold is found for all
  models from one pass. Only ROC AUC is approximate (rows within one 0.01 bin count as ties).
  Only the first ``num_calibration_samples`` rows enter the histogram; the loss uses all rows.
* multiclass: per-class true / predicted / correct counts, top-k hits, DCG and log loss.
* regression: sums of squared and absolute residuals (reported in the label's own units).

A row is predicted positive when its margin is **above** the threshold (margins are in logit
units for ``logistic``: a probability threshold t is logit(t)). Ties between thresholds of
equal quality go to the one closest to 0, the uncalibrated default. For
``recall_at_target_precision`` with no threshold reaching the target precision, the metric is 0
and the threshold is the one of highest precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .losses import OBJECTIVE_NAMES

EDGES = np.round(np.linspace(-20.0, 20.0, 4001), 6)
_ZERO_EDGE = int(np.argmin(np.abs(EDGES)))


@dataclass(frozen=True)
class MetricSettings:
    predictor_type: str
    loss: str
    criterion: str = "accuracy"
    f_beta: float = 1.0
    target_recall: float = 0.8
    target_precision: float = 0.8
    top_k: int = 3
    calibration_rows: int = 10_000_000
    label_scale: float = 1.0


class Evaluator:
    """Per-model statistics of one channel pass. ``add`` takes predictions (n, M, K) in training
    units, labels (n,) and the per-row loss (n, M), all on ``device``, where the sums stay: no
    value is read back to the host per minibatch (counts are added with ``index_add_`` rather
    than ``bincount``, which reads the largest index back on CUDA, and without boolean masks,
    whose result size is a device value)."""

    def __init__(self, models: int, outputs: int, s: MetricSettings, device: torch.device = torch.device("cpu")) -> None:
        self.s, self.models, self.outputs = s, models, outputs
        self._calibration_rows_seen = 0  # on the host: decides how much of a minibatch enters the histogram
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.sums: dict[str, torch.Tensor] = {"rows": z(1), "loss": z(models)}
        if s.predictor_type == "binary_classifier":
            self.sums |= {"pos": z(models, len(EDGES) + 1), "neg": z(models, len(EDGES) + 1)}
            self._edges = torch.as_tensor(EDGES, dtype=torch.float32, device=device)
        elif s.predictor_type == "multiclass_classifier":
            self.sums |= {"true": z(models, outputs), "predicted": z(models, outputs), "hit": z(models, outputs),
                          "top_k": z(models), "dcg": z(models)}
        else:
            self.sums |= {"squared": z(models), "absolute": z(models)}
        self._model_index = torch.arange(models, device=device)[None, :]

    def add(self, pred: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        sums, n = self.sums, pred.shape[0]
        sums["rows"] += n
        sums["loss"] += loss.sum(0, dtype=torch.float64)
        if self.s.predictor_type == "binary_classifier":
            keep = max(0, min(n, self.s.calibration_rows - self._calibration_rows_seen))
            self._calibration_rows_seen += n
            if keep:
                bins = torch.bucketize(pred[:keep, :, 0].contiguous(), self._edges)  # (keep, M)
                size = sums["pos"].numel()
                flat = bins + self._model_index * sums["pos"].shape[1]
                positive = (y[:keep, None] > 0.5).expand_as(flat)
                counts = _count(flat + positive * size, 2 * size)  # negatives first, then positives
                sums["neg"] += counts[:size].view_as(sums["neg"])
                sums["pos"] += counts[size:].view_as(sums["pos"])
        elif self.s.predictor_type == "multiclass_classifier":
            label = y.long()
            top = pred.argmax(-1)  # (n, M)
            offsets = self._model_index * self.outputs
            size = self.models * self.outputs

            def count(index: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
                return _count(index, size, weights).view(self.models, self.outputs)
            sums["true"] += count(label[:, None] + offsets)
            sums["predicted"] += count(top + offsets)
            sums["hit"] += count(top + offsets, top == label[:, None])
            true_score = pred.gather(-1, label[:, None, None].expand(-1, self.models, 1))
            rank = (pred > true_score).sum(-1)  # 0 = ranked first
            sums["top_k"] += (rank < self.s.top_k).sum(0)
            sums["dcg"] += (1.0 / torch.log2(rank.double() + 2)).sum(0)
        else:
            residual = (pred[..., 0] - y[:, None]).double()
            sums["squared"] += (residual * residual).sum(0)
            sums["absolute"] += residual.abs().sum(0)

    # --- derived quantities -------------------------------------------------------------
    @property
    def rows(self) -> int:
        return int(self.sums["rows"][0])

    def mean_loss(self) -> np.ndarray:
        return (self.sums["loss"] / max(self.rows, 1)).cpu().numpy()

    def selection(self) -> tuple[np.ndarray, np.ndarray]:
        """(metric, threshold) per model; higher metric is better. The threshold (margin units)
        is calibrated for the binary criterion and 0 otherwise."""
        loss = self.mean_loss()
        if self.s.predictor_type != "binary_classifier" or self.s.criterion == "loss_function":
            metric, threshold = -loss, np.zeros(self.models)
        else:
            metric, index = _calibrate(self.sums["pos"].cpu().numpy(), self.sums["neg"].cpu().numpy(), self.s)
            threshold = EDGES[index]
        # A model that diverged (non-finite loss) is never selected.
        return np.where(np.isfinite(loss), metric, -np.inf), threshold

    def metrics(self, model: int, threshold: float = 0.0) -> list[tuple[str, float, str]]:
        """(name, value, "loss"|"score") lines for one model, as the real container names them."""
        lines = [(f"{OBJECTIVE_NAMES[self.s.loss]}_objective", float(self.mean_loss()[model]), "loss")]
        n = max(self.rows, 1)
        sums = {k: (v if k == "rows" else v[model]).cpu().numpy() for k, v in self.sums.items()}
        if self.s.predictor_type == "binary_classifier":
            counts = _counts(sums["pos"][None], sums["neg"][None], self.s.f_beta)
            j = int(np.argmin(np.abs(EDGES - threshold)))
            c = {k: float(v[0, j]) for k, v in counts.items()}
            lines += [("binary_classification_accuracy", c["accuracy"], "score"),
                      (f"binary_f_{self.s.f_beta:.3f}", c["f_beta"], "score"),
                      ("precision", c["precision"], "score"), ("recall", c["recall"], "score"),
                      ("roc_auc_score", _roc_auc(sums["pos"], sums["neg"]), "score")]
        elif self.s.predictor_type == "multiclass_classifier":
            present = (sums["true"] + sums["predicted"]) > 0
            precision = np.divide(sums["hit"], sums["predicted"], out=np.zeros(self.outputs),
                                  where=sums["predicted"] > 0)
            recall = np.divide(sums["hit"], sums["true"], out=np.zeros(self.outputs), where=sums["true"] > 0)
            f_beta = _f_beta(precision, recall, self.s.f_beta)
            lines += [("multiclass_accuracy", float(sums["hit"].sum() / n), "score"),
                      (f"multiclass_top_k_accuracy_{self.s.top_k}", float(sums["top_k"] / n), "score"),
                      ("macro_precision", float(precision[present].mean()), "score"),
                      ("macro_recall", float(recall[present].mean()), "score"),
                      (f"macro_f_{self.s.f_beta:.3f}", float(f_beta[present].mean()), "score"),
                      ("multiclass_balanced_accuracy", float(recall[sums["true"] > 0].mean()), "score"),
                      ("multiclass_log_loss", float(self.mean_loss()[model]), "loss"),
                      ("dcg", float(sums["dcg"] / n), "score")]
        else:
            scale = self.s.label_scale
            mse = float(sums["squared"] / n) * scale * scale
            lines += [("mse", mse, "loss"), ("rmse", float(np.sqrt(mse)), "loss"),
                      ("absolute_loss", float(sums["absolute"] / n) * scale, "loss")]
        return lines


def _count(index: torch.Tensor, size: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """float64 (size,): how often each value 0 .. size-1 occurs in ``index`` (weighted by
    ``weights``), exact (sums of small whole numbers in float64) in any order of addition."""
    flat = index.reshape(-1)
    add = torch.ones(flat.shape, dtype=torch.float64, device=flat.device) if weights is None else \
        weights.reshape(-1).to(torch.float64)
    return torch.zeros(size, dtype=torch.float64, device=flat.device).index_add_(0, flat, add)


def _f_beta(precision, recall, beta: float):
    b2 = beta * beta
    denominator = b2 * np.asarray(precision) + recall
    return np.divide((1 + b2) * np.asarray(precision) * recall, denominator,
                     out=np.zeros_like(denominator, dtype=float), where=denominator > 0)


def _counts(pos: np.ndarray, neg: np.ndarray, beta: float) -> dict[str, np.ndarray]:
    """Per model (rows) and threshold edge j (columns): rows with margin > EDGES[j]."""
    tp = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1][:, 1:]
    fp = np.cumsum(neg[:, ::-1], axis=1)[:, ::-1][:, 1:]
    p, n = pos.sum(1, keepdims=True), neg.sum(1, keepdims=True)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, p, out=np.zeros_like(tp), where=p > 0)
    accuracy = np.divide(tp + (n - fp), p + n, out=np.zeros_like(tp), where=(p + n) > 0)
    return {"precision": precision, "recall": recall, "accuracy": accuracy, "f_beta": _f_beta(precision, recall, beta)}


def _calibrate(pos: np.ndarray, neg: np.ndarray, s: MetricSettings) -> tuple[np.ndarray, np.ndarray]:
    c = _counts(pos, neg, s.f_beta)
    if s.criterion == "accuracy":
        value = c["accuracy"]
    elif s.criterion == "f_beta":
        value = c["f_beta"]
    elif s.criterion == "precision_at_target_recall":
        value = np.where(c["recall"] >= s.target_recall, c["precision"], -1.0)
    else:  # recall_at_target_precision
        feasible = c["precision"] >= s.target_precision
        value = np.where(feasible, c["recall"], np.where(feasible.any(1, keepdims=True), -1.0, c["precision"] - 2))
    # Prefer, among equal values, the edge closest to 0: sort candidates by |edge| first.
    order = np.argsort(np.abs(EDGES), kind="stable")
    best = order[np.argmax(value[:, order], axis=1)]
    metric = value[np.arange(len(best)), best]
    if s.criterion == "recall_at_target_precision":
        metric = np.where(metric < 0, 0.0, metric)
    return np.clip(metric, 0.0, None), best


def _roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    p, n = pos.sum(), neg.sum()
    if p == 0 or n == 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (p * n))
