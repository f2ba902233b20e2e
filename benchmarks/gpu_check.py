"""Every registered algorithm on the CPU and on CUDA in one run, with the device feed alone.

``python benchmarks/gpu_check.py`` (issue 19's measurement; ``--rows`` for smaller runs,
``--devices cpu`` where there is no GPU). Data: ``--rows`` rows (default 10,000,000) written
as RecordIO-protobuf shards and read back by the real File-mode reader, as a job reads them:
dense 50 features (a mixture of 10 Gaussians, a binary label) for PCA, k-means, linear
learner and random cut forest; sparse ``--sparse-features`` features (default 1,000,000;
~20 non-zero word counts per row, a binary label) for factorization machines, LDA and NTM.

For each data set the feed alone is timed first: decode only, then decode + the device feed
(``pipealgos/algorithms/feed.py``: views on the CPU; pinned staging, side-stream copies and
the sparse CSR path on CUDA), no compute: the bound a job on that device cannot beat. Then each
job trains on every device of ``--devices`` that its algorithm declares (CUDA after a warm-up
on a small shard: context, kernels, pinned pool); an algorithm that declares the CPU only is
timed there and says so. The CPU and CUDA models' predictions on held-out rows are compared
(labels and clusters: the fraction that agree; scores, projections, mixtures: the largest
difference relative to the output's scale). Every registered algorithm must have a job here,
or the script fails. Figures go to stdout, one JSON line per row, and with ``--json`` to a file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.algorithms.base import TrainingContext
from pipealgos.algorithms.feed import device_batches
from pipealgos.io import write_dense, write_sparse
from pipealgos.platform.channels import JobChannels
from pipealgos.platform.config import ChannelConfig, MLRoot
from pipealgos.platform.metrics import MetricsReporter
from pipealgos.platform.registry import ALGORITHMS

DENSE_FEATURES = 50
WORDS_PER_ROW = 20
HELD_OUT = 2000
WARM_UP_ROWS = 20_000
SHARDS = 16

# job: (algorithm, data set, hyperparameters). feature_dim of the sparse jobs is filled in.
JOBS = {
    "pca": ("pca", "dense", {"feature_dim": "50", "num_components": "5", "mini_batch_size": "5000"}),
    "pca-randomized": ("pca", "dense", {"feature_dim": "50", "num_components": "5", "mini_batch_size": "5000",
                                        "algorithm_mode": "randomized", "extra_components": "30"}),
    "kmeans": ("kmeans", "dense", {"feature_dim": "50", "k": "10", "mini_batch_size": "5000"}),
    "linear-learner": ("linear-learner", "dense", {"predictor_type": "binary_classifier", "feature_dim": "50",
                                                   "mini_batch_size": "1000", "epochs": "2", "num_models": "32"}),
    "randomcutforest": ("randomcutforest", "dense", {"feature_dim": "50"}),
    "factorization-machines": ("factorization-machines", "sparse", {"predictor_type": "binary_classifier",
                                                                    "num_factors": "16", "mini_batch_size": "1000"}),
    "lda": ("lda", "sparse", {"num_topics": "10", "mini_batch_size": "5000"}),
    "ntm": ("ntm", "sparse", {"num_topics": "10", "mini_batch_size": "1000", "epochs": "1"}),
}


def dense_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5, size=(10, DENSE_FEATURES))
    x = (centres[rng.integers(0, 10, rows)] + rng.normal(size=(rows, DENSE_FEATURES))).astype(np.float32)
    w = rng.normal(size=DENSE_FEATURES)
    y = ((x - x.mean(0)) @ w + rng.normal(scale=2, size=rows) > 0).astype(np.float32)
    return x, y


def sparse_data(rows: int, features: int, seed: int = 1) -> tuple[sp.csr_matrix, np.ndarray]:
    """Word counts: each row draws its words from one of 10 topics' vocabularies (a tenth of the
    features each, Zipf-like within it); the label says whether the topic is even."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 10, rows)
    band = max(1, features // 10)
    rank = np.minimum((rng.pareto(1.2, size=(rows, WORDS_PER_ROW)) * 10).astype(np.int64), band - 1)
    columns = np.minimum(topic[:, None] * band + rank, features - 1)
    indptr = np.arange(0, rows * WORDS_PER_ROW + 1, WORDS_PER_ROW)
    x = sp.csr_matrix((np.ones(rows * WORDS_PER_ROW, dtype=np.float32), columns.ravel(), indptr),
                      shape=(rows, features))
    x.sum_duplicates()  # repeated words become counts
    return x, (topic % 2 == 0).astype(np.float32)


def _write_shard(path: Path, features, labels: np.ndarray) -> None:
    with open(path, "wb") as out:
        (write_sparse if sp.issparse(features) else write_dense)(out, features, labels)


def write_channel(root: Path, features, labels: np.ndarray) -> Path:
    """``root`` as an ML root whose ``train`` channel holds the rows in SHARDS files."""
    folder = root / "input" / "data" / "train"
    folder.mkdir(parents=True)
    bounds = np.linspace(0, features.shape[0], SHARDS + 1).astype(int)
    with ProcessPoolExecutor(min(SHARDS, os.cpu_count() or 1)) as pool:
        for done in [pool.submit(_write_shard, folder / f"part-{i:02d}.pbr", features[a:b], labels[a:b])
                     for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]:
            done.result()
    return root


def channels(root: Path, algorithm: str) -> JobChannels:
    return JobChannels(MLRoot(root), {"train": ChannelConfig("train", "File")}, ALGORITHMS[algorithm])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def feed_alone(root: Path, algorithm: str, batch_size: int, device: torch.device | None) -> float:
    """Seconds to decode every minibatch (``device`` None) or decode and feed it to ``device``."""
    started = time.perf_counter()
    minibatches = channels(root, algorithm).minibatches("train", 0, batch_size)
    if device is not None:
        for batch in device_batches(minibatches, device, keep_sparse=ALGORITHMS[algorithm].sparse_input):
            batch.features  # a CPU item's view is made on first use
        synchronize(device)
    else:
        for _ in minibatches:
            pass
    return time.perf_counter() - started


def train_once(job: str, root: Path, feature_dim: int, device: torch.device):
    algorithm, _, raw = JOBS[job]
    spec = ALGORITHMS[algorithm]
    params = spec.schema.build(dict(raw, feature_dim=str(feature_dim)))
    ctx = TrainingContext(channels=channels(root, algorithm), report=MetricsReporter("algo-1", io.StringIO()),
                          device=device, sparse_input=spec.sparse_input)
    synchronize(device)
    started = time.perf_counter()
    model = spec.train(params, ctx)
    synchronize(device)
    return model, time.perf_counter() - started


def compare(cpu_model, cuda_model, rows) -> dict[str, float]:
    """Per output: the fraction of equal labels / clusters, or the largest difference relative
    to the output's scale."""
    a, b = cpu_model.predict(rows), cuda_model.predict(rows)
    result = {}
    for key in a:
        x, y = np.asarray(a[key], np.float64), np.asarray(b[key], np.float64)
        if key in ("closest_cluster", "predicted_label"):
            result[f"{key} agreement"] = float((x == y).mean())
        else:
            result[f"{key} max rel diff"] = float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12))
    return result


def _check_every_algorithm_has_a_job() -> None:
    missing = set(ALGORITHMS) - {algorithm for algorithm, _, _ in JOBS.values()}
    if missing:
        raise SystemExit(f"gpu_check.py has no job for {sorted(missing)}: add one to JOBS")


def _emit(row: dict, results: list) -> None:
    results.append(row)
    print(json.dumps(row), flush=True)


def run_feeds(data: dict, devices: list[torch.device], results: list) -> dict:
    """The feed-alone rows; returns {(data set, device type): seconds}."""
    seconds = {}
    for name, (root, _, _, _) in data.items():
        algorithm = next(a for a, kind, _ in JOBS.values() if kind == name)
        rows = data[name][3]
        decode = feed_alone(root, algorithm, 5000, None)
        _emit({"feed": name, "device": "decode only", "s": round(decode, 3), "rows_per_s": round(rows / decode)},
              results)
        for device in devices:
            if device.type == "cuda":
                feed_alone(data[name][1], algorithm, 5000, device)  # warm-up: context, pinned pool
            took = feed_alone(root, algorithm, 5000, device)
            seconds[name, device.type] = took
            _emit({"feed": name, "device": device.type, "s": round(took, 3), "rows_per_s": round(rows / took)},
                  results)
    return seconds


def run_job(job: str, data: dict, devices: list[torch.device], feeds: dict) -> dict:
    algorithm, kind, _ = JOBS[job]
    root, warm_root, held_out, _ = data[kind]
    feature_dim = held_out.shape[1]
    declared = ALGORITHMS[algorithm].devices
    row, models = {"job": job}, {}
    for device in devices:
        if device.type not in declared:
            row[f"{device.type}_s"] = f"{algorithm} declares {'/'.join(declared)} only"
            continue
        if device.type == "cuda":
            train_once(job, warm_root, feature_dim, device)
        models[device.type], took = train_once(job, root, feature_dim, device)
        row[f"{device.type}_s"] = round(took, 3)
        row[f"{device.type}_over_feed"] = round(took / feeds[kind, device.type], 2)
    if len(models) == 2:
        row["cpu_over_cuda"] = round(row["cpu_s"] / row["cuda_s"], 2)
        row |= compare(models["cpu"], models["cuda"], held_out)
    return row


def prepare(rows: int, sparse_features: int, folder: Path, kinds: set[str]) -> dict:
    """{data set: (ML root, warm-up ML root, held-out rows, training rows)}."""
    makers = {"dense": lambda: dense_data(rows + HELD_OUT), "sparse": lambda: sparse_data(rows + HELD_OUT, sparse_features)}
    data = {}
    for kind in sorted(kinds):
        x, y = makers[kind]()
        train_x, train_y = x[:rows], y[:rows]
        root = write_channel(folder / kind, train_x, train_y)
        warm = write_channel(folder / f"{kind}-warm-up", train_x[:WARM_UP_ROWS], train_y[:WARM_UP_ROWS])
        data[kind] = (root, warm, x[rows:], rows)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="training rows per data set (10,000,000)")
    parser.add_argument("--sparse-features", type=int, default=1_000_000, help="width of the sparse data (1,000,000)")
    parser.add_argument("--devices", default="cpu,cuda", help="comma list of cpu, cuda (default both)")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma list of jobs (default all: {', '.join(JOBS)})")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    _check_every_algorithm_has_a_job()
    jobs = args.jobs.split(",")
    unknown = set(jobs) - set(JOBS)
    if unknown:
        parser.error(f"unknown job(s) {sorted(unknown)}: choose from {', '.join(JOBS)}")
    devices = [torch.device(name) for name in args.devices.split(",")]
    if any(d.type == "cuda" for d in devices) and not torch.cuda.is_available():
        print("no CUDA device here: CPU runs only")
        devices = [d for d in devices if d.type != "cuda"]
    device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, CUDA device: {device_name}, CPU: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads; {args.rows:,} rows", flush=True)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        data = prepare(args.rows, args.sparse_features, Path(tmp), {JOBS[job][1] for job in jobs})
        feeds = run_feeds(data, devices, results)
        for job in jobs:
            _emit(run_job(job, data, devices, feeds), results)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name, "rows": args.rows, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
