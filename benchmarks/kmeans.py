"""k-means training speed and quality against scikit-learn's streaming k-means, in one run.

Data: 1,000,000 x 50 float32 rows from a mixture of 50 Gaussian clusters, written as
RecordIO-protobuf in 4 files. Ours: ``kmeans.train`` reading those files through the real
channel reader (File mode, ``mini_batch_size`` 5,000, 1 epoch, default hyperparameters:
``extra_center_factor`` auto = 10, 10 local Lloyd trials); the time covers reading, decoding,
streaming and the reduction. Baseline: scikit-learn ``MiniBatchKMeans(batch_size=5000)`` driven
by a ``partial_fit`` loop over the same 5,000-row minibatches of the in-memory array (its
fastest streaming form; no reading or decoding counted). Ours runs on CUDA when there is a GPU,
as a training job would. Both models' msd (mean squared
distance of every row to its nearest centroid) is computed the same way, outside the timing.

Goals (issue 5): k = 10, >= 3x sklearn's points/s at an msd no worse; k = 100, >= sklearn's
points/s at an msd no worse. Results go to the ``kmeans-cpu`` or ``kmeans-cuda`` section of
``benchmarks/RESULTS.md`` (the device ours ran on), so that a GPU run does not replace the CPU
figures. Both sides are warmed up on a small run first (CUDA context, thread pools).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import _results
from pipealgos.algorithms import kmeans
from pipealgos.algorithms.base import TrainingContext, pick_device
from pipealgos.io import write_dense
from pipealgos.platform.channels import JobChannels
from pipealgos.platform.config import ChannelConfig, MLRoot
from pipealgos.platform.metrics import MetricsReporter

ROWS, FEATURES, BATCH, FILES = 1_000_000, 50, 5000, 4
GOALS = {10: 3.0, 100: 1.0}  # minimum points/s ratio ours / sklearn


def make_data(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(50, FEATURES)).astype(np.float32)
    return centers[rng.integers(0, 50, ROWS)] + rng.standard_normal((ROWS, FEATURES), dtype=np.float32)


def msd(x: np.ndarray, centroids: np.ndarray) -> float:
    xt, c = torch.from_numpy(x), torch.from_numpy(np.asarray(centroids, dtype=np.float32))
    total = 0.0
    for start in range(0, len(x), 100_000):
        total += float(kmeans.squared_distances(xt[start : start + 100_000], c).min(1).values.double().sum())
    return total / len(x)


def write_channel(x: np.ndarray, root: Path) -> None:
    folder = root / "input" / "data" / "train"
    folder.mkdir(parents=True)
    for i, part in enumerate(np.array_split(x, FILES)):
        with open(folder / f"part-{i}.pbr", "wb") as out:
            write_dense(out, part)


def run_ours(root: Path, k: int) -> tuple[float, np.ndarray]:
    ml = MLRoot(root)
    channels = JobChannels(ml, {"train": ChannelConfig("train", "File")}, default_label_size=0)
    ctx = TrainingContext(channels, MetricsReporter("algo-1", io.StringIO()), device=pick_device())
    params = kmeans.KMeansParams(feature_dim=FEATURES, k=k, mini_batch_size=BATCH)
    started = time.perf_counter()
    model = kmeans.train(params, ctx)
    return time.perf_counter() - started, model.centroids


def run_sklearn(x: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(n_clusters=k, batch_size=BATCH, random_state=0)
    started = time.perf_counter()
    for start in range(0, len(x), BATCH):
        model.partial_fit(x[start : start + BATCH])
    return time.perf_counter() - started, model.cluster_centers_


def warm_up(x: np.ndarray) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-kmeans-warm-") as tmp:
        write_channel(x[:20_000], Path(tmp))
        run_ours(Path(tmp), 10)
    run_sklearn(x[:20_000], 10)


def main() -> int:
    x = make_data()
    device = pick_device()
    warm_up(x)
    rows = []
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="bench-kmeans-") as tmp:
        root = Path(tmp)
        write_channel(x, root)
        for k in (10, 100):
            ours_s, ours_c = run_ours(root, k)
            sk_s, sk_c = run_sklearn(x, k)
            ours_msd, sk_msd = msd(x, ours_c), msd(x, sk_c)
            ratio = sk_s / ours_s
            rows.append(f"| {k} | pipealgos kmeans (K = {k * kmeans.AUTO_EXTRA_CENTER_FACTOR} streaming centers) "
                        f"| {ROWS / ours_s:,.0f} | {ours_s:.2f} | {ours_msd:.4f} |")
            rows.append(f"| {k} | sklearn MiniBatchKMeans partial_fit | {ROWS / sk_s:,.0f} | {sk_s:.2f} | {sk_msd:.4f} |")
            speed_ok, msd_ok = ratio >= GOALS[k], ours_msd <= sk_msd
            verdicts.append(
                f"- k = {k}: points/s ours / sklearn = **{ratio:.2f}** (goal >= {GOALS[k]:g}: "
                f"{'met' if speed_ok else 'MISSED'}); msd ours / sklearn = **{ours_msd / sk_msd:.4f}** "
                f"(goal <= 1: {'met' if msd_ok else 'MISSED'})")
            print(rows[-2], rows[-1], verdicts[-1], sep="\n", flush=True)
    load = os.getloadavg()[0]
    section = "\n".join([
        f"## k-means on {device.type} (`benchmarks/kmeans.py`)",
        "",
        f"`python benchmarks/kmeans.py` — {ROWS:,} x {FEATURES} float32 (mixture of 50 Gaussians), "
        f"mini_batch_size {BATCH:,}, 1 epoch, default hyperparameters; ours reads {FILES} RecordIO-protobuf "
        f"files through the real File-mode reader on {device}, sklearn gets the in-memory array; "
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch/OpenMP thread(s), "
        f"torch {torch.__version__}, load average {load:.1f} when it finished.",
        "",
        "| k | run | points/s | seconds | msd |",
        "|---:|---|---:|---:|---:|",
        *rows,
        "",
        *verdicts,
    ])
    _results.record_section(f"kmeans-{device.type}", section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
