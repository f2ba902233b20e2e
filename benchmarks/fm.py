"""Factorization machines at scale: 1,000,000 sparse rows, 1,000,000 features, ~20 non-zeros a
row, 64 factors (issue 14, part 3).

The rows (feature ids drawn with density ∝ 1/id, as click logs are: a few features in many
rows, most in few; binary labels from a planted linear model) are written as RecordIO-protobuf
shards by the SDK-compatible writer and trained by a real ``train`` process (File mode, the real
reader, mini_batch_size 1000, 2 epochs, binary_classifier); its ``#throughput_metric`` lines
give records/s per epoch, reading included, and the process's peak RSS is reported.

The baseline, in the same run: the plain PyTorch FM (``nn.EmbeddingBag``-style sparse
embedding lookups, autograd, ``SparseAdam`` for the tables and ``Adam`` for the bias) given the
same minibatches already in memory as tensors, for 2 epochs. On a shared machine timings swing,
so each side is compared at its faster epoch, and the baseline is run with torch's default
thread count and with one thread, keeping the faster (train runs with one thread).

Goal: train's records/s >= 1x the baseline's. ``--device cuda`` runs both on the GPU (train
picks CUDA when present). Records the figures in the "factorization-machines" section of
RESULTS.md and exits 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import _results
from pipealgos.io import write_sparse

DIM, NNZ, FACTORS, BATCH, EPOCHS, SHARDS = 1_000_000, 20, 64, 1000, 2, 8
THROUGHPUT = re.compile(r"#throughput_metric: host=\S+, train throughput=(\S+) records/second")
GOAL = 1.0


def make_rows(rows: int, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.floor(np.exp(rng.uniform(0, np.log(DIM), size=rows * NNZ))).astype(np.int64) - 1
    indptr = np.arange(0, rows * NNZ + 1, NNZ)
    x = sp.csr_matrix((np.ones(rows * NNZ, np.float32), ids, indptr), shape=(rows, DIM))
    x.sum_duplicates()
    x.data[:] = 1.0
    truth = rng.normal(size=DIM).astype(np.float32)
    y = (x @ truth + rng.normal(size=rows) > 0).astype(np.float32)
    return x, y


def write_shards(x: sp.csr_matrix, y: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(np.array_split(np.arange(x.shape[0]), SHARDS)):
        with open(folder / f"part-{i:02d}.pbr", "wb") as out:
            write_sparse(out, x[rows[0] : rows[-1] + 1], y[rows[0] : rows[-1] + 1])


def run_train(root: Path, device: str) -> tuple[list[float], int]:
    """(records/s per epoch, peak RSS in bytes) of one `train` process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from mlroot import make_ml_root

    hp = {"feature_dim": DIM, "num_factors": FACTORS, "predictor_type": "binary_classifier", "epochs": EPOCHS,
          "mini_batch_size": BATCH, "bias_lr": 0.05, "linear_lr": 0.05, "factors_lr": 0.02}
    make_ml_root(root, hp, {"train": {"TrainingInputMode": "File"}})
    env = {**os.environ, "PIPEALGOS_ALGORITHM": "factorization-machines"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    # A wrapper measures the peak RSS of train alone (this process holds the baseline's data).
    wrapper = ("import resource, subprocess, sys; "
               "r = subprocess.run(sys.argv[1:]); "
               "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True); "
               "sys.exit(r.returncode)")
    done = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "pipealgos.cli", "train",
                           "--ml-root", str(root)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"train failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    rates = [float(v) for v in THROUGHPUT.findall(done.stdout)]
    peak_kb = int(re.search(r"PEAK_RSS_KB (\d+)", done.stdout).group(1))
    return rates, peak_kb * 1024


class PlainFM(torch.nn.Module):
    """The FM as a PyTorch user writes it: sparse embedding tables, autograd."""

    def __init__(self, dim: int, factors: int) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))
        self.linear = torch.nn.Embedding(dim, 1, sparse=True)
        self.factors = torch.nn.Embedding(dim, factors, sparse=True)
        torch.nn.init.normal_(self.linear.weight, std=0.01)
        torch.nn.init.normal_(self.factors.weight, std=0.001)

    def forward(self, indices, offsets, values, rows, count):
        linear = F.embedding_bag(indices, self.linear.weight, offsets, mode="sum", per_sample_weights=values,
                                 sparse=True)[:, 0]
        sums = F.embedding_bag(indices, self.factors.weight, offsets, mode="sum", per_sample_weights=values,
                               sparse=True)
        gathered = self.factors(indices) * values[:, None]
        own = torch.zeros(count, device=values.device).index_add(0, rows, (gathered * gathered).sum(1))
        return self.bias + linear + 0.5 * ((sums * sums).sum(1) - own)


def baseline_minibatches(x: sp.csr_matrix, y: np.ndarray, device: torch.device, batch: int = BATCH) -> list[tuple]:
    batches = []
    for start in range(0, x.shape[0], batch):
        part = x[start : start + batch]
        n = part.shape[0]
        rows = np.repeat(np.arange(n), np.diff(part.indptr))
        batches.append(tuple(t.to(device) for t in (
            torch.from_numpy(part.indices.astype(np.int64)), torch.from_numpy(part.indptr[:-1].astype(np.int64)),
            torch.from_numpy(part.data), torch.from_numpy(rows), torch.from_numpy(y[start : start + batch]))) + (n,))
    return batches


def run_baseline(batches: list[tuple], device: torch.device) -> list[float]:
    """records/s per epoch of the plain FM (SparseAdam + Adam, lr 0.01) on in-memory minibatches."""
    torch.manual_seed(0)
    model = PlainFM(DIM, FACTORS).to(device)
    sparse_opt = torch.optim.SparseAdam([model.linear.weight, model.factors.weight], lr=0.01)
    dense_opt = torch.optim.Adam([model.bias], lr=0.01)
    rates = []
    for _ in range(EPOCHS):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started, rows = time.perf_counter(), 0
        for indices, offsets, values, row_ids, labels, n in batches:
            loss = F.binary_cross_entropy_with_logits(model(indices, offsets, values, row_ids, n), labels)
            sparse_opt.zero_grad()
            dense_opt.zero_grad()
            loss.backward()
            sparse_opt.step()
            dense_opt.step()
            rows += n
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(rows / (time.perf_counter() - started))
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.perf_counter()
    x, y = make_rows(args.rows)
    print(f"{x.shape[0]} rows, {x.nnz / x.shape[0]:.1f} non-zeros a row, made in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="fm-bench-") as scratch:
        root = Path(scratch) / "ml"
        write_shards(x, y, root / "input" / "data" / "train")
        size = sum(p.stat().st_size for p in (root / "input" / "data" / "train").iterdir())
        train_rates, peak = run_train(root, args.device)
    print(f"train: {[round(r) for r in train_rates]} records/s, peak RSS {peak / 2**20:.0f} MiB", flush=True)

    batches = baseline_minibatches(x, y, device)
    threads = torch.get_num_threads()
    baseline = {threads: run_baseline(batches, device)}
    if threads != 1 and device.type == "cpu":
        torch.set_num_threads(1)
        baseline[1] = run_baseline(batches, device)
        torch.set_num_threads(threads)
    best_threads = max(baseline, key=lambda t: max(baseline[t]))
    print(f"baseline: { {t: [round(r) for r in v] for t, v in baseline.items()} } records/s", flush=True)

    ratio = max(train_rates) / max(baseline[best_threads])
    params_mb = DIM * (1 + FACTORS) * 4 * 2 / 2**20  # table + AdaGrad state, float32
    table = "\n".join([
        f"Machine: {_results.machine(f'torch {torch.__version__}', f'device {args.device}')}.",
        f"Data: {x.shape[0]:,} rows x {DIM:,} features, {x.nnz / x.shape[0]:.1f} non-zeros a row, "
        f"{FACTORS} factors, mini_batch_size {BATCH}, {EPOCHS} epochs; RecordIO-protobuf {size / 2**20:.0f} MiB "
        f"in {SHARDS} shards.",
        "",
        "| | records/s per epoch | best |",
        "|---|---|---:|",
        f"| train (File mode, real reader, AdaGrad on touched rows) | {', '.join(f'{r:,.0f}' for r in train_rates)} "
        f"| {max(train_rates):,.0f} |",
        *(f"| plain PyTorch FM, in-memory minibatches, SparseAdam, {t} thread(s) | "
          f"{', '.join(f'{r:,.0f}' for r in rates)} | {max(rates):,.0f} |" for t, rates in baseline.items()),
        "",
        f"Ratio (best epochs): **{ratio:.2f}x** (goal >= {GOAL:g}x). Peak RSS of the train process: "
        f"{peak / 2**20:,.0f} MiB, of which parameters and AdaGrad state {params_mb:,.0f} MiB.",
    ])
    section = "factorization-machines" + ("" if args.device == "cpu" else f"-{args.device}")
    _results.record_section(section, table, f"## factorization-machines ({args.device})")
    print(table)
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
