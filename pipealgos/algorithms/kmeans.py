"""k-means as SageMaker's ``kmeans`` container computes it: web-scale mini-batch k-means
(Sculley 2010) over K = k × extra_center_factor centers, then a weighted local Lloyd
reduction from K to k.

1. **Initialise** K centers from the first minibatch (rows are buffered across minibatches
   until there are K; if the whole channel has fewer rows, K shrinks to that count):
   ``random`` = K distinct rows, ``kmeans++`` = D² sampling (greedy, as scikit-learn's:
   the best of 2 + ln K candidates per step).
2. **Stream**: each minibatch is assigned to the nearest centers in one batched torch
   distance computation (‖x‖² − 2x·c + ‖c‖², CPU or CUDA; on CUDA the minibatches come
   through the device feed and nothing is read back per minibatch; they are not stacked,
   since each one moves the centers). Center j keeps its *mass*:
   count n_j, vector sum s_j and sum of squared norms q_j of the points assigned to it,
   and sits at s_j / n_j. For n_new new points with mean m this is exactly the spec's
   c ← (1 − p)c + p·m with p = n_new / (n_prev + n_new). With ``half_life_time_size`` H > 0
   the mass decays by 2^(−b/H) per minibatch of b points, so a point's weight halves after H
   further points (decay is applied per minibatch, not within one). ``epochs`` passes.
3. **Reduce**: local Lloyd on the K centers weighted by their counts, initialised with
   ``local_lloyd_init_method``, at most ``local_lloyd_max_iter`` iterations, stopping when
   the loss changes by less than ``local_lloyd_tol`` relatively; ``local_lloyd_num_trials``
   runs, the lowest weighted loss kept.

``auto`` values: ``extra_center_factor`` → 10 and ``local_lloyd_num_trials`` → 10 for every
k. These are the values a real container logged (for k = 8); no other observation exists,
so no dependence on k is invented.

``train msd`` is computed from the masses, without another pass over the data:
Σ_j (q_j − n_j‖c_j‖²) (each streaming center's own spread, exact because c_j is the mean of
its points) plus the reduction's weighted loss Σ_j n_j‖c_j − μ_a(j)‖², divided by Σ_j n_j.
It is the mean squared distance of the training points to the final centroid of the
streaming center each was assigned to — an upper bound of the distance to the nearest final
centroid. ``train ssd`` is that msd times the records of one pass (over all hosts).
``test msd``/``ssd`` are exact (nearest centroid, one pass over ``test``).

Multi-host: every host streams its own share from the same initial centers (chosen by the
host whose first minibatches hold the most rows, broadcast to all); every
:data:`SYNC_EVERY` minibatches (and at the end of each epoch) the hosts add up the mass each
gained since the last merge (one all-reduce): the mass one stream would hold had it made the
same assignments (exactly so without decay; with decay each host's share decays by its own
point count, and the shared part by the total). The merged masses are then identical on every host, and so is the reduction
(its random stream is derived from the seed alone): every host runs it rather than waiting
in a collective, bounded by PIPEALGOS_COLLECTIVE_TIMEOUT, while algo-1 alone does; algo-1
logs it, reports the metrics and writes the model.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.io import DataError
from pipealgos.io.minibatch import Features
from pipealgos.io.mxnet_module import MODEL_FILE, ndarray_model, ndarray_model_or_none, require_finite
from pipealgos.io.ndarray import write_ndarrays

from . import feed
from .base import Params, TrainingContext, report_test_channel
from .collectives import all_reduce
from .nearest_center import NearestCenter

NAME = "kmeans"
AUTO_EXTRA_CENTER_FACTOR = 10
AUTO_LOCAL_LLOYD_NUM_TRIALS = 10
SYNC_EVERY = 10  # minibatches each host streams between two multi-host merges
TEST_ROWS_PER_LAUNCH = 65_536  # test rows scored per launch on a device (see _report_test)


def center_factor(params: Params) -> int:
    """``extra_center_factor``, its ``auto`` resolved."""
    factor = params.extra_center_factor
    return AUTO_EXTRA_CENTER_FACTOR if factor == "auto" else int(factor)


def num_trials(params: Params) -> int:
    """``local_lloyd_num_trials``, its ``auto`` resolved."""
    trials = params.local_lloyd_num_trials
    return AUTO_LOCAL_LLOYD_NUM_TRIALS if trials == "auto" else int(trials)


# ---------------------------------------------------------------------------------------------
# Distances and seeding (shared by the streaming step and the reduction)


def squared_distances(x: torch.Tensor, centers: torch.Tensor, center_norms: torch.Tensor | None = None) -> torch.Tensor:
    """(n, m) squared Euclidean distances, ‖x‖² − 2x·c + ‖c‖², clamped at 0."""
    if center_norms is None:
        center_norms = (centers * centers).sum(1)
    d2 = torch.addmm(center_norms, x, centers.T, alpha=-2.0)
    d2 += (x * x).sum(1, keepdim=True)
    return d2.clamp_(min=0.0)


def nearest(d2: torch.Tensor) -> torch.Tensor:
    """Row-wise argmin. On CPU numpy's is used: torch's CPU argmin is not vectorised and is
    several times slower than the distance product itself for 5000 × 1000."""
    if d2.device.type == "cpu":
        return torch.from_numpy(d2.numpy().argmin(axis=1))
    return d2.argmin(dim=1)


def segment_sum(index: torch.Tensor, values: torch.Tensor, segments: int) -> torch.Tensor:
    """Σ of ``values`` rows (or elements) per ``index`` value: shape (segments, ...).

    CPU: ``index_add_``. CUDA: a one-hot matrix product instead, because ``index_add_`` there
    adds with atomics in an arbitrary order, and the model must not vary between runs."""
    if values.device.type == "cpu":
        return torch.zeros((segments, *values.shape[1:]), dtype=values.dtype).index_add_(0, index, values)
    one_hot = torch.nn.functional.one_hot(index, segments).to(values.dtype)
    return (one_hot.T @ values.reshape(len(index), -1)).reshape(segments, *values.shape[1:])


def _minibatch_mass(assign: torch.Tensor, x: torch.Tensor, K: int) -> tuple[torch.Tensor, ...]:
    """Per center: the count, vector sum and sum of squared norms (float64) of its rows of ``x``.

    On a device: from one (n, K) one-hot matrix built by ``scatter_`` (``bincount`` and
    ``one_hot`` read the largest index back to the host on CUDA; products, unlike
    ``index_add_``, add in a fixed order, so the model does not vary between runs). On CPU with
    numpy and scipy, single-threaded: these are small passes over the minibatch, and torch's
    parallel elementwise kernels stall badly when another thread (the readahead decoder, a
    Pipe-mode feeder) holds one of the cores they wait on."""
    if not feed.computes_on_host(x.device):
        one_hot = torch.zeros(len(assign), K, dtype=x.dtype, device=x.device).scatter_(1, assign[:, None], 1.0)
        return (one_hot.sum(0, dtype=torch.float64), (one_hot.T @ x).double(),
                one_hot.T.double() @ (x * x).sum(1).double())
    rows, index = x.numpy(), assign.numpy()
    one_hot = sp.csr_matrix((np.ones(len(index), dtype=np.float32), index, np.arange(len(index) + 1)),
                            shape=(len(index), K))
    count = np.bincount(index, minlength=K).astype(np.float64)
    sums = np.asarray(one_hot.T @ rows, dtype=np.float64)
    sq = np.bincount(index, weights=np.einsum("ij,ij->i", rows, rows), minlength=K)
    return torch.from_numpy(count), torch.from_numpy(sums), torch.from_numpy(sq)


def _draw(weights: np.ndarray, rng: np.random.Generator, exclude: np.ndarray, size: int) -> np.ndarray:
    """``size`` indices drawn (with replacement) with probability ∝ ``weights``; uniformly among
    the not-yet-chosen when every weight is 0 (all remaining mass sits on chosen points)."""
    cumulative = np.cumsum(weights)
    total = float(cumulative[-1])
    if total > 0:
        return np.minimum(np.searchsorted(cumulative, rng.random(size) * total, side="right"), len(weights) - 1)
    free = np.flatnonzero(~exclude)
    return free[rng.integers(len(free), size=size)]


def kmeans_plusplus(points: np.ndarray, count: int, rng: np.random.Generator,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """``count`` row indices of ``points`` (float64, host memory) by weighted D² sampling:
    the first ∝ weight, each next one ∝ weight × squared distance to the nearest chosen row.

    Greedy, as scikit-learn's k-means++ (Arthur & Vassilvitskii's suggestion): each step draws
    2 + ln(count) candidates and keeps the one that lowers the weighted potential most.
    numpy, not torch: the loop is sequential over ``count`` small steps (a few thousand rows
    at most: a minibatch or the K streaming centers), where per-call overhead dominates."""
    n = points.shape[0]
    w = np.ones(n) if weights is None else weights
    trials = 2 + int(np.log(count))
    norms = np.einsum("ij,ij->i", points, points)
    chosen = np.zeros(n, dtype=bool)
    picks = np.empty(count, dtype=np.int64)
    pick = int(_draw(w, rng, chosen, 1)[0])
    closest = np.maximum(norms - 2 * points @ points[pick] + norms[pick], 0.0)
    for i in range(count):
        picks[i] = pick
        chosen[pick] = True
        closest[pick] = 0.0
        if i == count - 1:
            break
        p = w * closest
        p[chosen] = 0.0
        candidates = _draw(p, rng, chosen, trials)
        d2 = np.maximum(norms[candidates, None] - 2 * points[candidates] @ points.T + norms, 0.0)
        np.minimum(d2, closest, out=d2)
        best = int(np.argmin(d2 @ w))
        pick, closest = int(candidates[best]), d2[best]
    return picks


def random_rows(n: int, count: int, rng: np.random.Generator, weights: np.ndarray | None = None) -> np.ndarray:
    """``count`` distinct row indices, with probability ∝ weight when given (rows of weight 0
    only once every weighted row is taken)."""
    if weights is None:
        return rng.choice(n, size=count, replace=False)
    positive = np.flatnonzero(weights > 0)
    if len(positive) >= count:
        return rng.choice(n, size=count, replace=False, p=weights / weights.sum())
    rest = rng.choice(np.flatnonzero(weights <= 0), size=count - len(positive), replace=False)
    return np.concatenate([positive, rest])


def seed_centers(points: torch.Tensor, count: int, method: str, rng: np.random.Generator,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """``count`` rows of ``points`` chosen by ``random`` or ``kmeans++``."""
    w = None if weights is None else weights.double().cpu().numpy()
    if method == "kmeans++":
        picks = kmeans_plusplus(points.double().cpu().numpy(), count, rng, w)
    else:
        picks = random_rows(points.shape[0], count, rng, w)
    return points[torch.from_numpy(np.asarray(picks)).to(points.device)].clone()


# ---------------------------------------------------------------------------------------------
# Step 2: the streaming centers


class StreamingCenters:
    """K centers with their masses (count n, vector sum s, sum of squared norms q; float64)."""

    def __init__(self, initial: torch.Tensor, half_life: int) -> None:
        self.initial = initial.double()
        K, d = initial.shape
        device = initial.device
        self.count = torch.zeros(K, dtype=torch.float64, device=device)
        self.sums = torch.zeros(K, d, dtype=torch.float64, device=device)
        self.sq = torch.zeros(K, dtype=torch.float64, device=device)
        self.half_life = half_life
        self.points = 0  # points added since the last merge
        self._snapshot = self._mass()
        self._refresh()

    def _mass(self) -> tuple[torch.Tensor, ...]:
        return self.count.clone(), self.sums.clone(), self.sq.clone()

    def _decay(self, points: int) -> float:
        return 0.5 ** (points / self.half_life) if self.half_life > 0 else 1.0

    def centers(self) -> torch.Tensor:
        """float64 (K, d): the mean of each center's points, its initial row while it has none."""
        has = self.count > 0
        means = self.sums / self.count.clamp(min=1e-300)[:, None]
        return torch.where(has[:, None], means, self.initial)

    def _refresh(self) -> None:
        self._nearest = NearestCenter(self.centers().float())

    def add(self, x: torch.Tensor) -> None:
        """Assign a minibatch (float32 (b, d) on the centers' device) and update the masses."""
        assign = self._nearest(x).to(x.device)
        K = self.count.shape[0]
        decay = self._decay(x.shape[0])
        if decay != 1.0:
            for tensor in (self.count, self.sums, self.sq):
                tensor.mul_(decay)
        count, sums, sq = _minibatch_mass(assign, x, K)
        self.count += count
        self.sums += sums
        self.sq += sq
        self.points += x.shape[0]
        self._refresh()

    def merge(self, active: bool) -> bool:
        """Add up, over all hosts, the mass each gained since the last merge (an all-reduce);
        returns whether any host still has data this epoch."""
        count0, sums0, sq0 = self._snapshot
        own = self._decay(self.points)
        progress = torch.tensor([float(self.points), float(active)], dtype=torch.float64, device=self.count.device)
        count, sums, sq, progress = all_reduce(
            [self.count - own * count0, self.sums - own * sums0, self.sq - own * sq0, progress], self.count.device)
        total_points, any_active = progress[0].item(), progress[1].item() > 0
        everyone = self._decay(int(total_points))
        self.count = everyone * count0 + count
        self.sums = everyone * sums0 + sums
        self.sq = everyone * sq0 + sq
        self.points = 0
        self._snapshot = self._mass()
        self._refresh()
        return any_active

    def spread(self) -> float:
        """Σ_j Σ_{x→j} ‖x − c_j‖² = Σ_j q_j − n_j‖c_j‖² (weighted by the decayed masses)."""
        c = self.centers()
        within = self.sq - self.count * (c * c).sum(1)
        return float(within.clamp(min=0.0).sum())


# ---------------------------------------------------------------------------------------------
# Step 3: the local Lloyd reduction


@dataclass
class Reduction:
    centroids: torch.Tensor  # float64 (k, d)
    loss: float  # Σ_j n_j ‖c_j − nearest centroid‖²


def lloyd(points: torch.Tensor, weights: torch.Tensor, k: int, params: Params,
          rng: np.random.Generator, log=None) -> Reduction:
    """Weighted Lloyd from K points to k centroids, best of ``num_trials(params)`` runs."""
    best: Reduction | None = None
    total_weight = float(weights.sum()) or 1.0
    for trial in range(num_trials(params)):
        centroids = seed_centers(points, k, params.local_lloyd_init_method, rng, weights)
        previous = None
        for _ in range(params.local_lloyd_max_iter):
            d2 = squared_distances(points, centroids)
            assign = nearest(d2).to(points.device)
            loss = float((weights * d2.gather(1, assign[:, None]).squeeze(1)).sum())
            if previous is not None and abs(previous - loss) <= params.local_lloyd_tol * previous:
                break
            previous = loss
            mass = segment_sum(assign, weights, k)
            sums = segment_sum(assign, points * weights[:, None], k)
            centroids = torch.where((mass > 0)[:, None], sums / mass.clamp(min=1e-300)[:, None], centroids)
        loss = float((weights * squared_distances(points, centroids).min(1).values).sum())
        if log is not None:
            log(f"local kmeans attempt #{trial}. Current mean square distance {loss / total_weight:.6f}")
        if best is None or loss < best.loss:
            best = Reduction(centroids, loss)
    assert best is not None
    return best


# ---------------------------------------------------------------------------------------------
# The model


@dataclass
class KMeansModel:
    """``centroids`` float32 (k, feature_dim) — the real artifact's single array."""

    centroids: np.ndarray

    @property
    def feature_dim(self) -> int:
        return self.centroids.shape[1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids.astype(np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any] | None = None) -> "KMeansModel":
        return cls(arrays["centroids"])

    def predict(self, features: Features) -> dict[str, np.ndarray]:
        """``closest_cluster`` (the index, as float32 like the real container) and
        ``distance_to_cluster`` (Euclidean), one value per input row."""
        x = torch.from_numpy(np.asarray(features.toarray() if sp.issparse(features) else features, dtype=np.float64))
        d2 = squared_distances(x, torch.from_numpy(self.centroids.astype(np.float64)))
        closest = nearest(d2)
        distance = d2.gather(1, closest[:, None]).squeeze(1).sqrt()
        return {"closest_cluster": closest.numpy().astype(np.float32),
                "distance_to_cluster": distance.numpy().astype(np.float32)}


# ---------------------------------------------------------------------------------------------
# Training


def _batches(ctx: TrainingContext, epoch: int, params: Params) -> Iterator[torch.Tensor]:
    """The user's minibatches on the device, unstacked: each one moves the centers."""
    minibatches = ctx.channels.minibatches("train", epoch, params.mini_batch_size, params.feature_dim)
    return (batch.features for batch in ctx.feed(minibatches))


def _initial_centers(ctx: TrainingContext, params: Params, batches: Iterator[torch.Tensor],
                     rng: np.random.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The K initial centers (identical on every host) and the minibatches read to choose them."""
    wanted = params.k * center_factor(params)
    buffered: list[torch.Tensor] = []
    rows = 0
    for x in batches:
        buffered.append(x)
        rows += x.shape[0]
        if rows >= wanted:
            break
    rows_by_host = torch.zeros(ctx.world_size, dtype=torch.float64, device=ctx.device)
    rows_by_host[ctx.rank] = rows
    if ctx.distributed:
        rows_by_host, = all_reduce([rows_by_host], ctx.device)
    chooser = int(rows_by_host.argmax())
    available = int(rows_by_host[chooser])
    if available < params.k:
        raise DataError(f"the train channel holds {int(rows_by_host.sum())} records, fewer than k={params.k}",
                        channel="train", fix="Provide at least k records or lower the hyperparameter 'k'")
    count = min(wanted, available)
    if count < wanted:
        ctx.report.info(f"only {count} records to initialise {wanted} centers from: streaming {count} centers")
    if ctx.rank == chooser:
        pool = torch.cat(buffered)
        centers = seed_centers(pool, count, params.init_method, rng).float()
    else:
        centers = torch.zeros(count, params.feature_dim, dtype=torch.float32, device=ctx.device)
    if ctx.distributed:
        import torch.distributed as dist

        dist.broadcast(centers, src=chooser)
    return centers, buffered


def _stream(state: StreamingCenters, batches: Iterable[torch.Tensor], distributed: bool) -> int:
    """One epoch of this host's share; returns its number of records."""
    seen = 0
    batches = iter(batches)
    while True:
        taken = 0
        for x in itertools.islice(batches, SYNC_EVERY if distributed else None):
            state.add(x)
            seen += x.shape[0]
            taken += 1
        if not distributed or not state.merge(active=taken == SYNC_EVERY):
            return seen


def _resolve_auto(params: Params, ctx: TrainingContext) -> None:
    """Log what each ``auto`` became (the real container's lines) and record it for the manifest."""
    if params.extra_center_factor == "auto":
        ctx.report.info(f"'extra_center_factor' was set to 'auto', evaluated to {center_factor(params)}.")
    if params.local_lloyd_num_trials == "auto":
        ctx.report.info(f"'local_lloyd_num_trials' was set to 'auto', evaluated to {num_trials(params)}.")
    ctx.resolve("extra_center_factor", center_factor(params))
    ctx.resolve("local_lloyd_num_trials", num_trials(params))


def train(params: Params, ctx: TrainingContext) -> KMeansModel:
    """Stream ``epochs`` passes over ``train``, merge hosts, reduce to k, report metrics."""
    _resolve_auto(params, ctx)
    init_rng, lloyd_rng = np.random.default_rng(ctx.seed).spawn(2)
    first = _batches(ctx, 0, params)
    initial, buffered = _initial_centers(ctx, params, first, init_rng)
    state = StreamingCenters(initial, params.half_life_time_size)
    records = 0
    for epoch in range(params.epochs):
        started = time.perf_counter()
        batches = itertools.chain(buffered, first) if epoch == 0 else _batches(ctx, epoch, params)
        records = _stream(state, batches, ctx.distributed)
        ctx.report.throughput(records / max(time.perf_counter() - started, 1e-9))
        ctx.report.progress(100.0 * (epoch + 1) / params.epochs)
    centroids = _reduce(state, params, ctx, lloyd_rng, records)
    model = KMeansModel(centroids.cpu().numpy().astype(np.float32))
    report_test_channel(ctx, lambda: _report_test(model, params, ctx))
    return model


def _reduce(state: StreamingCenters, params: Params, ctx: TrainingContext, rng: np.random.Generator,
            records: int) -> torch.Tensor:
    """The Lloyd reduction and the ``train`` metrics (the leader's lines)."""
    if ctx.distributed:
        records = int(all_reduce([np.array([float(records)])], ctx.device)[0][0])
    log = ctx.report.info if ctx.is_leader else None
    centers = state.centers()
    if log:
        log(f"shrinking {centers.shape[0]} centers into {params.k}")
    best = lloyd(centers, state.count, params.k, params, rng, log=log)
    if ctx.is_leader:
        mass = float(state.count.sum())
        msd = (state.spread() + best.loss) / mass if mass > 0 else 0.0
        for metric in params.eval_metrics:
            ctx.report.quality("train", metric, msd if metric == "msd" else msd * records)
    return best.centroids


def _report_test(model: KMeansModel, params: Params, ctx: TrainingContext) -> None:
    """``test msd`` / ``test ssd``: squared distance of each test record to its nearest centroid."""
    centroids = torch.from_numpy(model.centroids.astype(np.float64)).to(ctx.device)
    norms = (centroids * centroids).sum(1)
    total, count = torch.zeros((), dtype=torch.float64, device=ctx.device), 0
    minibatches = ctx.channels.minibatches("test", 0, params.mini_batch_size, params.feature_dim)
    # Assignment to fixed centroids does not depend on the minibatches: stacked on a device.
    for batch in ctx.feed(minibatches, rows_per_launch=TEST_ROWS_PER_LAUNCH):
        total += squared_distances(batch.features.double(), centroids, norms).min(1).values.sum()
        count += batch.rows
    ssd = float(total)
    if not count:
        ctx.report.info("the test channel holds no records: no test metrics")
        return
    values = {"msd": ssd / count, "ssd": ssd}
    for metric in params.eval_metrics:
        ctx.report.quality("test", metric, values[metric])


# ---------------------------------------------------------------------------------------------
# SageMaker's format: model_algo-1 is an NDArray file, an unnamed list of one float32 array, the
# centroids (algorithms.md §2). The real tarball also holds a state_<uuid> file, whose contents
# are not established: it is ignored when read and not written.


def to_sagemaker(arrays: dict[str, np.ndarray], hyperparameters: dict[str, Any]) -> dict[str, bytes]:
    return {MODEL_FILE: write_ndarrays([arrays["centroids"].astype(np.float32)])}


def is_sagemaker(files: dict[str, bytes]) -> bool:
    saved = ndarray_model_or_none(files)
    return isinstance(saved, list) and len(saved) == 1 and saved[0].ndim == 2


def from_sagemaker(files: dict[str, bytes]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    saved = ndarray_model(files)
    if not is_sagemaker(files):
        found = f"named arrays {sorted(saved)}" if isinstance(saved, dict) else \
            f"a list of arrays of shapes {[a.shape for a in saved]}"
        raise DataError(f"holds {found}, not k-means' list of one (k, feature_dim) array", source=MODEL_FILE,
                        fix="name the model's algorithm if it is not k-means")
    centroids = require_finite(saved[0], "centroids", MODEL_FILE)
    return {"centroids": centroids}, {"feature_dim": centroids.shape[1], "k": centroids.shape[0]}
