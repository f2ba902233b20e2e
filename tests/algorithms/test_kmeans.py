"""k-means through real training jobs, against exact answers and scikit-learn.

Tolerances: planted centers within 0.1 (noise σ = 1, ≥ 2,000 points per cluster, so a
center's estimation error is ~σ·√d/√n ≈ 0.06); train msd within 2 % of scikit-learn
``KMeans(n_init=10)``; 3 hosts' test msd within 2 % of one host's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from mlroot import FifoFeeder, make_ml_root, read_model, recordio_bytes, write_channel_files

from pipealgos.algorithms.kmeans import KMeansModel
from pipealgos.platform.config import MLRoot
from pipealgos.platform.hyperparameters import HyperparameterError
from pipealgos.platform.schemas.kmeans import SCHEMA
from pipealgos.platform.runner.hosts import free_port
from pipealgos.platform.train import run_training

METRIC = re.compile(r"#quality_metric: host=(\S+), (train|test) (msd|ssd) <loss>=(\S+)")


def _mixture(n: int, d: int, k: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(k, d))
    labels = rng.integers(0, k, n)
    return (centers[labels].astype(np.float32) + rng.standard_normal((n, d), dtype=np.float32)), centers


def _msd(x: np.ndarray, centroids: np.ndarray) -> float:
    """Mean squared distance to the nearest centroid (float64, chunked)."""
    c = centroids.astype(np.float64)
    total = 0.0
    for start in range(0, len(x), 100_000):
        chunk = x[start : start + 100_000].astype(np.float64)
        d2 = (chunk**2).sum(1)[:, None] - 2 * chunk @ c.T + (c**2).sum(1)
        total += float(np.clip(d2, 0, None).min(1).sum())
    return total / len(x)


def _job(root: Path, x, hyperparameters: dict, mode="File", parts=1, test=None, epochs=1):
    """Run a k-means job; returns (exit status, ML root)."""
    channels = {"train": {"TrainingInputMode": mode}}
    if test is not None:
        channels["test"] = {"TrainingInputMode": mode, "S3DistributionType": "FullyReplicated"}
    make_ml_root(root, hyperparameters, channels)
    blobs = [recordio_bytes(x[c]) for c in np.array_split(np.arange(x.shape[0]), parts)]
    feeders = []
    if mode == "File":
        write_channel_files(root, "train", blobs)
        if test is not None:
            write_channel_files(root, "test", [recordio_bytes(test)])
    else:
        feeders.append(FifoFeeder(root, "train", [b"".join(blobs)] * epochs))
        if test is not None:
            feeders.append(FifoFeeder(root, "test", [recordio_bytes(test)]))
    status = run_training(MLRoot(root), "kmeans")
    for feeder in feeders:
        feeder.join()
    return status, root


def _metrics(text: str) -> dict[tuple[str, str], float]:
    return {(m.group(2), m.group(3)): float(m.group(4)) for m in METRIC.finditer(text)}


# --- quality against exact answers and scikit-learn -------------------------------------------


def test_planted_centers_are_recovered(tmp_path):
    x, centers = _mixture(20_000, 8, 10, spread=10.0)
    assert min(np.linalg.norm(a - b) for i, a in enumerate(centers) for b in centers[i + 1 :]) > 10
    status, root = _job(tmp_path, x, {"feature_dim": 8, "k": 10, "mini_batch_size": 1000})
    assert status == 0
    centroids = read_model(root)["centroids"]
    distance = np.linalg.norm(centers[:, None, :] - centroids[None], axis=2)
    assert sorted(distance.argmin(1)) == list(range(10)), "each true center has its own centroid"
    assert distance.min(1).max() < 0.1


def test_digits_train_msd_within_2_percent_of_sklearn(tmp_path):
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(load_digits().data).astype(np.float32)
    reference = KMeans(10, n_init=10, random_state=0).fit(x).inertia_ / len(x)
    # 1,797 rows in one minibatch: K = 1,000 streaming centers summarise them finely enough
    # for the reduction (with the default factor 10 the result is 2-4 % above sklearn's).
    status, root = _job(tmp_path, x, {"feature_dim": 64, "k": 10, "extra_center_factor": 100})
    assert status == 0
    ours = _msd(x, read_model(root)["centroids"])
    assert ours <= 1.02 * reference, (ours, reference)


@pytest.mark.slow
def test_million_by_fifty_within_2_percent_of_sklearn(tmp_path):
    from sklearn.cluster import KMeans

    x, _ = _mixture(1_000_000, 50, 8, spread=1.0, seed=1)
    status, root = _job(tmp_path, x, {"feature_dim": 50, "k": 8}, parts=4)
    assert status == 0
    ours = _msd(x, read_model(root)["centroids"])
    reference = KMeans(8, n_init=10, random_state=0).fit(x).inertia_ / len(x)
    assert ours <= 1.02 * reference, (ours, reference)


# --- the streaming rule, decay, metrics ---------------------------------------------------------


@pytest.mark.parametrize("half_life", [0, 300, 2000])
def test_single_center_is_the_decayed_mean(tmp_path, capsys, half_life):
    """k = K = 1: the center is the mean of all points, each minibatch's mass halved per
    ``half_life`` later points; train msd is their (weighted) variance."""
    x = np.concatenate([np.zeros(1000), np.full(1000, 10.0)]).astype(np.float32)[:, None]
    hp = {"feature_dim": 1, "k": 1, "extra_center_factor": 1, "mini_batch_size": 100,
          "local_lloyd_num_trials": 1, "half_life_time_size": half_life}
    status, root = _job(tmp_path, x, hp)
    assert status == 0
    batch_means = x[:, 0].reshape(20, 100).mean(1).astype(np.float64)
    later_points = 100 * np.arange(19, -1, -1)
    weights = 0.5 ** (later_points / half_life) if half_life else np.ones(20)
    mean = (weights * batch_means).sum() / weights.sum()
    np.testing.assert_allclose(read_model(root)["centroids"], [[mean]], rtol=1e-6)
    variance = (weights * (batch_means - mean) ** 2).sum() / weights.sum()  # each batch is constant
    assert _metrics(capsys.readouterr().out)[("train", "msd")] == pytest.approx(variance, rel=1e-4)


def test_test_metrics_and_train_msd(tmp_path, capsys):
    x, _ = _mixture(6000, 5, 6, spread=3.0)
    test = x[:1500] + 0.5
    hp = {"feature_dim": 5, "k": 6, "mini_batch_size": 500, "eval_metrics": '["msd", "ssd"]'}
    status, root = _job(tmp_path, x, hp, test=test)
    assert status == 0
    out = capsys.readouterr().out
    metrics = _metrics(out)
    centroids = read_model(root)["centroids"]
    expected = _msd(test, centroids)
    assert metrics[("test", "msd")] == pytest.approx(expected, rel=1e-5)
    assert metrics[("test", "ssd")] == pytest.approx(expected * len(test), rel=1e-5)
    true_train = _msd(x, centroids)
    # The streamed estimate bounds the nearest-centroid msd from above, and stays close.
    assert true_train * (1 - 1e-5) <= metrics[("train", "msd")] <= 1.05 * true_train
    assert metrics[("train", "ssd")] == pytest.approx(metrics[("train", "msd")] * len(x), rel=1e-5)
    assert "'extra_center_factor' was set to 'auto', evaluated to 10" in out
    assert "'local_lloyd_num_trials' was set to 'auto', evaluated to 10" in out
    assert "shrinking 60 centers into 6" in out
    assert len(re.findall(r"local kmeans attempt #\d+", out)) == 10


def test_no_test_channel_is_reported(tmp_path, capsys):
    x, _ = _mixture(500, 3, 2, spread=5.0)
    status, _ = _job(tmp_path, x, {"feature_dim": 3, "k": 2, "mini_batch_size": 100})
    assert status == 0
    assert "Test data is not provided." in capsys.readouterr().out


# --- data paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["random", "kmeans++"])
def test_file_and_pipe_give_the_same_model_over_epochs(tmp_path, init):
    x, _ = _mixture(3000, 4, 5, spread=4.0)
    hp = {"feature_dim": 4, "k": 5, "mini_batch_size": 256, "epochs": 3, "init_method": init,
          "half_life_time_size": 1000}
    status_file, file_root = _job(tmp_path / "file", x, hp, parts=3)
    status_pipe, pipe_root = _job(tmp_path / "pipe", x, hp, mode="Pipe", epochs=3)
    assert status_file == status_pipe == 0
    np.testing.assert_array_equal(read_model(file_root)["centroids"], read_model(pipe_root)["centroids"])


def test_sparse_input_is_densified(tmp_path):
    x, _ = _mixture(1000, 6, 3, spread=4.0)
    x[x < 0.5] = 0
    hp = {"feature_dim": 6, "k": 3, "mini_batch_size": 128, "force_dense": "True"}
    make_ml_root(tmp_path / "sparse", hp, {"train": {"TrainingInputMode": "File"}})
    write_channel_files(tmp_path / "sparse", "train", [recordio_bytes(sp.csr_matrix(x))])
    assert run_training(MLRoot(tmp_path / "sparse"), "kmeans") == 0
    _, dense_root = _job(tmp_path / "dense", x, hp)
    np.testing.assert_array_equal(read_model(tmp_path / "sparse")["centroids"], read_model(dense_root)["centroids"])


def test_fewer_records_than_k_times_factor_streams_fewer_centers(tmp_path, capsys):
    x, _ = _mixture(25, 3, 4, spread=6.0)
    status, root = _job(tmp_path, x, {"feature_dim": 3, "k": 4, "mini_batch_size": 10})
    assert status == 0
    assert read_model(root)["centroids"].shape == (4, 3)
    out = capsys.readouterr().out
    assert "only 25 records to initialise 40 centers from" in out
    assert "shrinking 25 centers into 4" in out


def test_fewer_records_than_k_fails_naming_k(tmp_path):
    x, _ = _mixture(3, 2, 1, spread=1.0)
    status, root = _job(tmp_path, x, {"feature_dim": 2, "k": 5})
    assert status != 0
    failure = (root / "output" / "failure").read_text()
    assert "k=5" in failure and "channel 'train'" in failure
    assert not (root / "model" / "manifest.json").exists()


# --- hyperparameters ------------------------------------------------------------------------


def test_sdk_hyperparameters_are_accepted():
    """What SageMaker Python SDK v2 ``KMeans`` sends (force_dense always, lists as JSON)."""
    values = SCHEMA.parse({"feature_dim": "50", "k": "10", "mini_batch_size": "500", "force_dense": "True",
                           "epochs": "3", "init_method": "kmeans++", "local_lloyd_max_iter": "100",
                           "local_lloyd_tol": "0.01", "local_lloyd_num_trials": "auto",
                           "local_lloyd_init_method": "random", "half_life_time_size": "0",
                           "extra_center_factor": "auto", "eval_metrics": '["msd", "ssd"]',
                           "_tuning_objective_metric": "test:msd"})
    assert values["eval_metrics"] == ["msd", "ssd"] and values["extra_center_factor"] == "auto"
    assert SCHEMA.parse({"feature_dim": "2", "k": "2", "eval_metrics": "msd,ssd"})["eval_metrics"] == ["msd", "ssd"]
    defaults = SCHEMA.parse({"feature_dim": "2", "k": "2"})
    assert (defaults["mini_batch_size"], defaults["epochs"], defaults["local_lloyd_max_iter"]) == (5000, 1, 300)
    assert (defaults["init_method"], defaults["local_lloyd_init_method"]) == ("random", "kmeans++")


@pytest.mark.parametrize("name,value", [
    ("k", "0"), ("feature_dim", "-1"), ("mini_batch_size", "0"), ("epochs", "0"), ("init_method", "kmeans||"),
    ("extra_center_factor", "0"), ("extra_center_factor", "many"), ("local_lloyd_init_method", "forgy"),
    ("local_lloyd_max_iter", "0"), ("local_lloyd_num_trials", "0"), ("local_lloyd_tol", "1.5"),
    ("local_lloyd_tol", "-0.1"), ("half_life_time_size", "-1"), ("eval_metrics", '["msd", "mse"]'),
    ("k", "2.5"),
])
def test_out_of_range_values_are_refused_by_name(name, value):
    raw = {"feature_dim": "2", "k": "2", name: value}
    with pytest.raises(HyperparameterError, match=f"'{name}'"):
        SCHEMA.parse(raw)


# --- inference ------------------------------------------------------------------------------


def test_predict_matches_brute_force_and_sparse_equals_dense():
    rng = np.random.default_rng(3)
    centroids = rng.normal(size=(7, 9)).astype(np.float32)
    x = rng.normal(size=(300, 9)).astype(np.float32)
    x[x < 0] = 0
    out = KMeansModel(centroids).predict(x)
    distance = np.linalg.norm(x[:, None, :].astype(np.float64) - centroids[None], axis=2)
    assert out["closest_cluster"].dtype == np.float32
    np.testing.assert_array_equal(out["closest_cluster"], distance.argmin(1).astype(np.float32))
    np.testing.assert_allclose(out["distance_to_cluster"], distance.min(1), rtol=1e-5, atol=1e-6)
    sparse_out = KMeansModel(centroids).predict(sp.csr_matrix(x))
    for key in out:
        np.testing.assert_array_equal(sparse_out[key], out[key])


# --- several hosts --------------------------------------------------------------------------


def _launch(roots: list[Path]) -> list[subprocess.CompletedProcess]:
    train = Path(sys.executable).parent / "train"
    env = {**os.environ, "PIPEALGOS_ALGORITHM": "kmeans", "PIPEALGOS_MASTER_ADDR": "127.0.0.1",
           "PIPEALGOS_MASTER_PORT": str(free_port()), "PIPEALGOS_COLLECTIVE_TIMEOUT": "120",
           # Four processes share the CI machine's cores: one thread each, as on one-core hosts.
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([str(train), "--ml-root", str(root)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for root in roots]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out))
    return results


def test_three_hosts_match_one_host(tmp_path):
    x, _ = _mixture(30_000, 10, 8, spread=3.0, seed=4)
    test, _ = _mixture(3_000, 10, 8, spread=3.0, seed=4)
    hp = {"feature_dim": 10, "k": 8, "mini_batch_size": 500, "epochs": 2}
    channels = {"train": {"TrainingInputMode": "File", "S3DistributionType": "ShardedByS3Key"},
                "test": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}}
    hosts = ["algo-1", "algo-2", "algo-3"]
    roots = []
    for host, share in zip(hosts, np.array_split(x, 3)):
        root = make_ml_root(tmp_path / host, hp, channels, hosts=hosts, current=host)
        write_channel_files(root, "train", [recordio_bytes(share)])
        write_channel_files(root, "test", [recordio_bytes(test)])
        roots.append(root)
    single = make_ml_root(tmp_path / "single", hp, channels)
    write_channel_files(single, "train", [recordio_bytes(x)])
    write_channel_files(single, "test", [recordio_bytes(test)])

    *multi, one = _launch(roots + [single])
    for result in multi + [one]:
        assert result.returncode == 0, result.stdout[-3000:]
    assert (roots[0] / "model" / "manifest.json").exists()
    assert not any((root / "model" / "manifest.json").exists() for root in roots[1:]), "only algo-1 writes the model"
    three = _metrics(multi[0].stdout)[("test", "msd")]
    single_msd = _metrics(one.stdout)[("test", "msd")]
    assert three == pytest.approx(single_msd, rel=0.02)
    assert three == pytest.approx(_msd(test, read_model(roots[0])["centroids"]), rel=1e-5)
    assert not any("#quality_metric" in result.stdout for result in multi[1:]), "algo-1 alone reports metrics"
