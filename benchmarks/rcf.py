"""Random cut forest quality and speed against the RCF library (krcf), rrcf and IsolationForest.

1. NAB NYC taxi (``../shared/data/nab-nyc-taxi``: 10,320 half-hourly counts, NAB's 5 anomaly
   windows), shingled to 48 (a shingle is labelled anomalous when its last point lies in a
   window), 100 trees x 256 samples. Ours: ``random_cut_forest.train`` on all shingles, then
   every shingle scored in one ``predict`` call. krcf (Python bindings of AWS's Rust RCF):
   ``lambda`` 0 (a uniform sample of the whole series, as ours), every shingle inserted one by
   one, then every shingle scored one by one. Scoring speed is points per CPU-second on one
   thread each (the machine is shared; CPU time is what an idle core would take); ours with
   the compiled score kernel where it is built, and the numpy version beside it. ROC AUC per seed; Spearman rank correlation of
   ours against krcf, and of krcf against krcf with another seed (the ceiling: same method,
   other random trees). rrcf: the same forest built in batch from the same samples, CoDisp of
   a subset of shingles (insert, score, forget), for its speed only.
2. Tabular: scikit-learn's Wisconsin breast cancer set (installed with scikit-learn, read from
   its files): the 357 benign rows and the first 21 malignant ones as outliers (the ODDS
   ``wbc`` recipe), ours vs ``IsolationForest`` (100 trees, 256 samples), mean AUC over seeds.
3. Training time vs rows: 1M, 3M and 10M x 48 float32 rows (a 1M-row block streamed again and
   again through the sampler, minibatches of 1,000), against krcf ingesting 100,000 points.

Goals (issue 13): AUC >= krcf's - 0.02; Spearman vs krcf >= 0.9 (reported beside the
ceiling); tabular AUC >= IsolationForest's - 0.02; scoring >= 3x krcf's points/s (moonshot
10x) and >= 1000x rrcf's; 10M rows trained faster than krcf ingests 100,000 points. Results
go to the ``rcf`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import resource
import sys
import time
import types
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

import _results
from pipealgos.algorithms import random_cut_forest as rcf
from pipealgos.algorithms.base import TrainingContext
from pipealgos.algorithms.random_cut_forest import forest as forest_module
from pipealgos.algorithms.random_cut_forest.sampling import tree_samples
from pipealgos.io import Minibatch
from pipealgos.platform.metrics import MetricsReporter
from pipealgos.platform.schemas.randomcutforest import SCHEMA

NAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab-nyc-taxi"
SHINGLE, TREES, SAMPLES = 48, 100, 256
CEILING_SEED_OFFSET = 100  # krcf's second forest per seed, for the krcf-vs-krcf correlation


class ArrayChannels:
    """A ``train`` channel served from memory: ``block`` repeated until ``rows`` rows."""

    def __init__(self, block: np.ndarray, rows: int | None = None) -> None:
        self.block, self.rows = block, len(block) if rows is None else rows

    def names(self) -> set[str]:
        return {"train"}

    def minibatches(self, channel, epoch, batch_size, feature_dim=None):
        for start in range(0, self.rows, batch_size):
            offset = start % len(self.block)
            yield Minibatch(self.block[offset : offset + min(batch_size, self.rows - start)])


def nyc_taxi_shingles() -> tuple[np.ndarray, np.ndarray]:
    with open(NAB / "nyc_taxi.csv") as f:
        rows = list(csv.reader(f))[1:]
    times = np.array([np.datetime64(r[0]) for r in rows])
    values = np.array([float(r[1]) for r in rows], dtype=np.float32)
    shingles = np.lib.stride_tricks.sliding_window_view(values, SHINGLE).copy()
    ends = times[SHINGLE - 1 :]
    labels = np.zeros(len(shingles), dtype=bool)
    for start, stop in json.loads((NAB / "nyc_taxi_labels.json").read_text())["windows"]:
        labels |= (ends >= np.datetime64(start[:19])) & (ends <= np.datetime64(stop[:19]))
    return shingles, labels


def train_ours(x: np.ndarray, seed: int, rows: int | None = None, per_tree: int = SAMPLES) -> tuple[object, float]:
    params = types.SimpleNamespace(**SCHEMA.parse({"feature_dim": str(x.shape[1]), "num_trees": str(TREES),
                                                   "num_samples_per_tree": str(per_tree)}))
    ctx = TrainingContext(ArrayChannels(x, rows), MetricsReporter("algo-1", io.StringIO()), seed=seed)
    started = time.perf_counter()
    model = rcf.train(params, ctx)
    return model, time.perf_counter() - started


def scoring_cpu_seconds(model, x: np.ndarray) -> float:
    """CPU seconds of one ``predict`` of all of ``x`` (one thread: CPU time is the time it
    would take on an idle core, whatever else the shared machine runs)."""
    cpu = time.process_time()
    model.predict(x)
    return time.process_time() - cpu


def numpy_fallback_points_per_second(model, x: np.ndarray) -> float:
    """The same scoring with the numpy version (what runs where the C kernel is not built)."""
    compiled = forest_module.implementation
    forest_module.implementation = "numpy"
    try:
        return len(x) / scoring_cpu_seconds(model, x)
    finally:
        forest_module.implementation = compiled


def krcf_forest(seed: int, dimensions: int):
    import krcf

    return krcf.RandomCutForest({"dimensions": dimensions, "shingle_size": 1, "num_trees": TREES,
                                 "sample_size": SAMPLES, "output_after": 1, "random_seed": seed, "lambda": 0.0})


def run_krcf(x: np.ndarray, seed: int) -> tuple[np.ndarray, float, float]:
    """Scores, ingest seconds, scoring CPU seconds."""
    forest = krcf_forest(seed, x.shape[1])
    started = time.perf_counter()
    for point in x:
        forest.update(point)
    ingested = time.perf_counter()
    cpu = time.process_time()
    scores = np.array([forest.score(point) for point in x])
    return scores, ingested - started, time.process_time() - cpu


def load_rrcf():
    """rrcf's tree module. Its package ``__init__`` imports ``pkg_resources`` (setuptools) only
    to read its own version; the tree module needs nothing of it, so it is loaded alone."""
    spec = importlib.util.find_spec("rrcf")
    path = Path(spec.submodule_search_locations[0]) / "rrcf.py"
    module_spec = importlib.util.spec_from_file_location("rrcf_tree", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def rrcf_points_per_second(x: np.ndarray, points: int, seed: int) -> float:
    tree_module = load_rrcf()
    rng = np.random.default_rng(seed)
    trees = [tree_module.RCTree(sample.astype(np.float64)) for sample in tree_samples(x, TREES, SAMPLES, rng)]
    queries = x[rng.choice(len(x), points, replace=False)].astype(np.float64)
    cpu = time.process_time()
    for query in queries:
        for tree in trees:
            tree.insert_point(query, index="query")
            tree.codisp("query")
            tree.forget_point("query")
    return points / (time.process_time() - cpu)


def breast_cancer_outliers() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    benign = data.data[data.target == 1]
    malignant = data.data[data.target == 0][:21]
    x = np.concatenate([benign, malignant]).astype(np.float32)
    return x, np.r_[np.zeros(len(benign)), np.ones(len(malignant))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-rows", type=int, default=10_000_000)
    parser.add_argument("--rrcf-points", type=int, default=100)
    args = parser.parse_args()
    seeds = list(range(1, args.seeds + 1))
    lines = []

    x, labels = nyc_taxi_shingles()
    krcf_runs = [run_krcf(x, seed) for seed in seeds]
    krcf_scores = [scores for scores, _, _ in krcf_runs]
    krcf_score_s = np.median([s for _, _, s in krcf_runs])
    ours_runs = [train_ours(x, seed) for seed in seeds]
    ours_scores, ours_score_s = [], []
    for model, _ in ours_runs:
        ours_scores.append(model.predict(x)["score"])
        ours_score_s.append(scoring_cpu_seconds(model, x))
    fallback_pps = numpy_fallback_points_per_second(ours_runs[0][0], x)
    auc_ours = [roc_auc_score(labels, s) for s in ours_scores]
    auc_krcf = [roc_auc_score(labels, s) for s in krcf_scores]
    rho_ours = [spearmanr(o, k)[0] for o, k in zip(ours_scores, krcf_scores)]
    rho_ceiling = [spearmanr(scores, run_krcf(x, seed + CEILING_SEED_OFFSET)[0])[0]
                   for scores, seed in zip(krcf_scores, seeds)]
    ours_pps, krcf_pps = len(x) / np.median(ours_score_s), len(x) / krcf_score_s
    rrcf_pps = rrcf_points_per_second(x, args.rrcf_points, seeds[0])
    lines += [
        f"NAB NYC taxi, {len(x):,} shingles of {SHINGLE} ({labels.mean():.1%} inside NAB's windows), "
        f"{TREES} trees x {SAMPLES} samples, seeds {seeds}:",
        "",
        "| run | ROC AUC per seed | mean | scoring points per CPU-s | training / ingest s |",
        "|---|---|---:|---:|---:|",
        f"| pipealgos randomcutforest | {' / '.join(f'{a:.3f}' for a in auc_ours)} | {np.mean(auc_ours):.3f} | "
        f"{ours_pps:,.0f} | {np.median([t for _, t in ours_runs]):.2f} |",
        f"| krcf (Rust RCF), lambda 0 | {' / '.join(f'{a:.3f}' for a in auc_krcf)} | {np.mean(auc_krcf):.3f} | "
        f"{krcf_pps:,.0f} | {np.median([t for _, t, _ in krcf_runs]):.2f} |",
        f"| rrcf CoDisp ({args.rrcf_points} shingles) | – | – | {rrcf_pps:,.1f} | – |",
        f"| ours, numpy version (no C kernel) | same scores | | {fallback_pps:,.0f} | |",
        "",
        f"- AUC ours - krcf: **{np.mean(auc_ours) - np.mean(auc_krcf):+.3f}** (goal >= -0.02: "
        f"{'met' if np.mean(auc_ours) >= np.mean(auc_krcf) - 0.02 else 'MISSED'})",
        f"- Spearman ours vs krcf (same seed number): {' / '.join(f'{r:.3f}' for r in rho_ours)}, mean "
        f"**{np.mean(rho_ours):.3f}** (goal >= 0.9: {'met' if np.mean(rho_ours) >= 0.9 else 'MISSED'}); krcf vs "
        f"krcf with seed + {CEILING_SEED_OFFSET} (the ceiling): {' / '.join(f'{r:.3f}' for r in rho_ceiling)}, mean "
        f"{np.mean(rho_ceiling):.3f}",
        f"- scoring points per CPU-s ours ({forest_module.implementation} score) / krcf: "
        f"**{ours_pps / krcf_pps:.2f}** (goal >= 3: {'met' if ours_pps >= 3 * krcf_pps else 'MISSED'}; "
        f"moonshot 10: {'met' if ours_pps >= 10 * krcf_pps else 'not reached'}); ours / rrcf: **{ours_pps / rrcf_pps:,.0f}** "
        f"(goal >= 1000: {'met' if ours_pps >= 1000 * rrcf_pps else 'MISSED'}); the numpy version / krcf: "
        f"{fallback_pps / krcf_pps:.2f}",
    ]
    print(*lines, sep="\n", flush=True)

    tab_x, tab_labels = breast_cancer_outliers()
    tab_ours = [roc_auc_score(tab_labels, train_ours(tab_x, seed)[0].predict(tab_x)["score"]) for seed in seeds]
    tab_iforest = [roc_auc_score(tab_labels, -IsolationForest(n_estimators=TREES, max_samples=SAMPLES,
                                                              random_state=seed).fit(tab_x).score_samples(tab_x))
                   for seed in seeds]
    lines += [
        "",
        f"Tabular: scikit-learn's breast cancer set as ODDS `wbc` ({len(tab_x)} rows x {tab_x.shape[1]}, "
        f"{int(tab_labels.sum())} malignant outliers): AUC ours {np.mean(tab_ours):.3f} "
        f"({' / '.join(f'{a:.3f}' for a in tab_ours)}), IsolationForest {np.mean(tab_iforest):.3f} "
        f"({' / '.join(f'{a:.3f}' for a in tab_iforest)}): difference **{np.mean(tab_ours) - np.mean(tab_iforest):+.3f}** "
        f"(goal >= -0.02: {'met' if np.mean(tab_ours) >= np.mean(tab_iforest) - 0.02 else 'MISSED'})",
    ]
    print(*lines[-2:], sep="\n", flush=True)

    block = np.random.default_rng(0).normal(size=(1_000_000, SHINGLE)).astype(np.float32)
    forest = krcf_forest(1, SHINGLE)
    started = time.perf_counter()
    for point in block[:100_000]:
        forest.update(point)
    krcf_ingest = time.perf_counter() - started
    train_ours(block, 1, 100_000)  # warm-up (first allocations of the reservoir and the trees)
    scale = [(rows, train_ours(block, 1, rows)[1]) for rows in (1_000_000, 3_000_000, args.max_rows)]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += [
        "",
        "Training (one pass of sampling + building 100 trees of 256) vs rows x 48: " +
        ", ".join(f"{rows / 1e6:g}M rows {seconds:.2f} s ({rows / seconds / 1e6:.1f}M rows/s)" for rows, seconds in scale) +
        f"; krcf ingests 100,000 points in {krcf_ingest:.2f} s: {args.max_rows / 1e6:g}M rows ours / 100,000 krcf = "
        f"**{scale[-1][1] / krcf_ingest:.2f}** of the time (goal < 1: {'met' if scale[-1][1] < krcf_ingest else 'MISSED'}). "
        f"Peak resident memory of the whole benchmark process: {peak_mb:,.0f} MB (the 1M-row block is 192 MB).",
    ]
    print(lines[-1], flush=True)
    load = os.getloadavg()[0]
    section = "\n".join([
        "## random cut forest (`benchmarks/rcf.py`)",
        "",
        f"`python benchmarks/rcf.py` — {_results.machine()}; one scoring thread each side, scoring "
        f"speeds in points per CPU-second (training and ingest in wall seconds); load average {load:.1f} "
        f"when it finished.",
        "",
        *lines,
    ])
    _results.record_section("rcf", section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
