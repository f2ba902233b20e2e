"""Each algorithm's torch path on CUDA against its CPU result, timed (run on a GPU machine).

For every registered algorithm, trains the same job twice from the same in-memory minibatches
(one on the CPU, one on ``cuda``), then compares the two models' predictions on held-out
rows and prints the training times. Without CUDA it says so and exits 0 after the CPU runs,
so it can be checked anywhere. ``--rows N`` scales the data (default 200,000 x 50).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Iterator

import numpy as np
import torch

from pipealgos.algorithms.base import TrainingContext
from pipealgos.io import Minibatch
from pipealgos.platform.registry import ALGORITHMS


class ArrayChannels:
    """Channels served from arrays held in memory (the same minibatches on every run)."""

    def __init__(self, channels: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> None:
        self.data = channels

    def names(self) -> set[str]:
        return set(self.data)

    def minibatches(self, channel: str, epoch: int, batch_size: int, feature_dim: int | None = None) -> Iterator[Minibatch]:
        x, y = self.data[channel]
        for start in range(0, len(x), batch_size):
            yield Minibatch(x[start : start + batch_size], None if y is None else y[start : start + batch_size])


class QuietReport:
    def quality(self, channel, name, value, kind="loss", epoch=None):
        pass

    def progress(self, percent):
        pass

    def throughput(self, records_per_second, channel="train"):
        pass

    def info(self, message):
        pass


JOBS = {
    "pca": {"feature_dim": "50", "num_components": "5", "mini_batch_size": "5000"},
    "pca-randomized": {"feature_dim": "50", "num_components": "5", "mini_batch_size": "5000",
                       "algorithm_mode": "randomized", "extra_components": "30"},
    "kmeans": {"feature_dim": "50", "k": "10", "mini_batch_size": "5000"},
    "linear-learner": {"predictor_type": "binary_classifier", "feature_dim": "50", "mini_batch_size": "1000",
                       "epochs": "2", "num_models": "32"},
}


def make_data(rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5, size=(10, 50))
    x = (centres[rng.integers(0, 10, rows)] + rng.normal(size=(rows, 50))).astype(np.float32)
    w = rng.normal(size=50)
    y = ((x - x.mean(0)) @ w + rng.normal(scale=2, size=rows) > 0).astype(np.float32)
    return x, y


def train_once(algorithm: str, raw: dict, channels: ArrayChannels, device: torch.device):
    spec = ALGORITHMS[algorithm]
    params = spec.schema.build(raw)
    ctx = TrainingContext(channels=channels, report=QuietReport(), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    model = spec.train(params, ctx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return model, time.perf_counter() - started


def compare(cpu_model, gpu_model, rows: np.ndarray) -> dict[str, float]:
    """Largest difference per output, relative to the output's scale."""
    a, b = cpu_model.predict(rows), gpu_model.predict(rows)
    result = {}
    for key in a:
        x, y = np.asarray(a[key], np.float64), np.asarray(b[key], np.float64)
        if key in ("closest_cluster", "predicted_label"):
            result[f"{key} agreement"] = float((x == y).mean())
        else:
            result[f"{key} max rel diff"] = float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    x, y = make_data(args.rows + 2000)
    held_out = x[-2000:]
    channels = ArrayChannels({"train": (x[:-2000], y[:-2000])})
    cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name(0) if cuda else "none"
    print(f"torch {torch.__version__}, CUDA device: {device_name}, CPU: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads; {args.rows:,} x 50 rows")
    results = []
    for job, raw in JOBS.items():
        algorithm = job.split("-randomized")[0]
        cpu_model, cpu_s = train_once(algorithm, raw, channels, torch.device("cpu"))
        row = {"job": job, "cpu_s": round(cpu_s, 3)}
        if cuda:
            train_once(algorithm, raw, channels, torch.device("cuda"))  # warm-up: CUDA context, kernels
            gpu_model, gpu_s = train_once(algorithm, raw, channels, torch.device("cuda"))
            row.update(cuda_s=round(gpu_s, 3), speedup=round(cpu_s / gpu_s, 2), **compare(cpu_model, gpu_model, held_out))
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"device": device_name, "rows": args.rows, "results": results}, out, indent=2)
    if not cuda:
        print("no CUDA device here: CPU runs only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
