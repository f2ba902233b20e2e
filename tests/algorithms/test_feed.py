"""The device feed (pipealgos/algorithms/feed.py) and the loops it feeds.

On CPU the feed must cost nothing: its tensors are views of the decoded arrays. The CUDA
feed's host side (grouping minibatches into launches, staging them into one buffer) runs here
without pinning; its streams and events run only on a GPU (benchmarks/gpu_check.py).

The loop-structure test runs PCA, k-means and linear learner with their device code paths on
CPU tensors (``computes_on_host`` replaced) and counts every read of a tensor's value on the
host (``item``, ``cpu``, ``numpy``, ``tolist``, ``bool``/``int``/``float`` of a tensor). On a GPU
each is a synchronisation; the count must not grow with the number of minibatches.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pipealgos.algorithms import feed
from pipealgos.algorithms.base import TrainingContext
from pipealgos.io import Minibatch
from pipealgos.platform.registry import ALGORITHMS
from pipealgos.testing import MemoryChannels, RecordingReport


def _dense(rows: int, d: int = 4, seed: int = 0, labels: bool = True) -> Minibatch:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, d)).astype(np.float32)
    return Minibatch(x, (rng.random(rows) > 0.5).astype(np.float32) if labels else None)


def test_cpu_feed_hands_out_views_of_the_decoded_arrays():
    batches = [_dense(5, seed=i) for i in range(3)]
    out = list(feed.device_batches(iter(batches), torch.device("cpu"), rows_per_launch=100))
    assert [b.rows for b in out] == [5, 5, 5]  # no stacking on the CPU
    for batch, item in zip(batches, out):
        assert item.host is batch
        assert item.features.data_ptr() == batch.features.ctypes.data
        assert item.labels.data_ptr() == batch.labels.ctypes.data


def test_cpu_feed_keeps_sparse_rows_sparse_only_when_asked():
    csr = sp.random(6, 1000, density=0.01, format="csr", dtype=np.float32, random_state=0)
    sparse = next(feed.device_batches([Minibatch(csr)], torch.device("cpu"), keep_sparse=True))
    assert sparse.features.layout == torch.sparse_csr
    np.testing.assert_array_equal(sparse.features.to_dense().numpy(), csr.toarray())
    assert sparse.labels is None
    dense = next(feed.device_batches([Minibatch(csr)], torch.device("cpu")))
    np.testing.assert_array_equal(dense.features.numpy(), csr.toarray())


def test_minibatches_stack_into_launches_and_sparse_ones_go_alone():
    csr = Minibatch(sp.csr_matrix(np.eye(3, 4, dtype=np.float32)), np.zeros(3, np.float32))
    batches = [_dense(4), _dense(4), _dense(4), csr, _dense(4), _dense(2)]
    groups = list(feed.stacked(iter(batches), rows_per_launch=7))
    assert [[b.size for b in g] for g in groups] == [[4, 4], [4], [3], [4, 2]]
    assert [len(g) for g in feed.stacked(iter(batches), None)] == [1] * 6


def test_a_stack_is_staged_as_one_buffer_of_its_rows_and_labels():
    group = [_dense(4, seed=1), _dense(3, seed=2)]
    rows, tensors, shape = feed.stage(group, keep_sparse=False, pin=False)
    assert rows == 7 and shape is None
    np.testing.assert_array_equal(tensors[0].numpy(), np.concatenate([b.features for b in group]))
    np.testing.assert_array_equal(tensors[1].numpy(), np.concatenate([b.labels for b in group]))


def test_sparse_rows_are_staged_as_their_csr_arrays():
    csr = sp.random(5, 2**20, density=1e-5 * 8, format="csr", dtype=np.float32, random_state=1)
    rows, (crow, col, values), shape = feed.stage([Minibatch(csr)], keep_sparse=True, pin=False)
    assert rows == 5 and shape == csr.shape
    assert crow.dtype == col.dtype == torch.int64 and values.dtype == torch.float32
    rebuilt = feed.sparse_from_arrays(crow, col, values, shape)
    np.testing.assert_array_equal(rebuilt.to_dense().numpy(), csr.toarray())


def test_no_cuda_device_feed_elsewhere():
    with pytest.raises(ValueError, match="cpu or cuda"):
        next(feed.device_batches([_dense(2)], torch.device("meta")))


# --- the loops' structure: host reads per epoch, not per minibatch ---------------------------

HOST_READS = ("item", "cpu", "numpy", "tolist", "__bool__", "__int__", "__float__")


@pytest.fixture
def host_reads(monkeypatch):
    """Run the device code paths on CPU tensors, counting host reads of tensor values."""
    monkeypatch.setattr(feed, "computes_on_host", lambda device: False, raising=False)
    counter = {"reads": 0}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            counter["reads"] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return counter


JOBS = {
    "linear-learner": {"predictor_type": "binary_classifier", "feature_dim": "4", "epochs": "2", "num_models": "3",
                       "num_point_for_scaler": "40", "early_stopping_patience": "10"},
    "kmeans": {"feature_dim": "4", "k": "2", "epochs": "2", "extra_center_factor": "2",
               "local_lloyd_num_trials": "1"},
    "pca": {"feature_dim": "4", "num_components": "2"},
    "pca-randomized": {"feature_dim": "4", "num_components": "2", "algorithm_mode": "randomized"},
}


def _reads_while_training(job: str, minibatches: int, counter: dict) -> int:
    algorithm = job.removesuffix("-randomized")
    spec = ALGORITHMS[algorithm]
    rows = 400
    hyperparameters = dict(JOBS[job], mini_batch_size=str(rows // minibatches))
    channels = MemoryChannels({"train": [_dense(rows, seed=3)]})
    ctx = TrainingContext(channels, RecordingReport(), sparse_input=spec.sparse_input)
    params = spec.schema.build(hyperparameters)
    before = counter["reads"]
    spec.train(params, ctx)
    return counter["reads"] - before


@pytest.mark.parametrize("job", sorted(JOBS))
def test_training_reads_nothing_back_per_minibatch(job, host_reads):
    few = _reads_while_training(job, 4, host_reads)
    many = _reads_while_training(job, 40, host_reads)
    assert few > 0  # the counter sees the per-epoch reads (metric lines, the model)
    assert many == few, f"{job}: {few} host reads with 4 minibatches per epoch, {many} with 40"


# --- the device paths give the CPU paths' models ----------------------------------------------


def _train(job: str, hyperparameters: dict, blocks: list[Minibatch]):
    spec = ALGORITHMS[job]
    ctx = TrainingContext(MemoryChannels({"train": blocks}), RecordingReport(), sparse_input=spec.sparse_input)
    return spec.train(spec.schema.build(hyperparameters), ctx)


def _sparse_rows(rows: int, d: int, seed: int) -> Minibatch:
    return Minibatch(sp.random(rows, d, density=0.3, format="csr", dtype=np.float32, random_state=seed))


DEVICE_PATH_JOBS = [
    ("pca", {"feature_dim": "6", "num_components": "3", "mini_batch_size": "70"}, "dense"),
    ("pca", {"feature_dim": "6", "num_components": "3", "mini_batch_size": "70"}, "sparse"),
    ("pca", {"feature_dim": "6", "num_components": "3", "mini_batch_size": "70", "algorithm_mode": "randomized",
             "extra_components": "3"}, "dense"),
    ("pca", {"feature_dim": "6", "num_components": "3", "mini_batch_size": "70", "algorithm_mode": "randomized",
             "extra_components": "3"}, "sparse"),
    ("kmeans", {"feature_dim": "6", "k": "3", "mini_batch_size": "70", "epochs": "2", "extra_center_factor": "3",
                "local_lloyd_num_trials": "2"}, "dense"),
]


@pytest.mark.parametrize("job,hyperparameters,kind", DEVICE_PATH_JOBS)
def test_device_paths_train_the_cpu_paths_model(job, hyperparameters, kind, monkeypatch):
    blocks = [_dense(500, d=6, seed=4, labels=False) if kind == "dense" else _sparse_rows(500, 6, seed=4)]
    on_host = _train(job, hyperparameters, blocks).to_arrays()
    monkeypatch.setattr(feed, "computes_on_host", lambda device: False)
    on_device = _train(job, hyperparameters, blocks).to_arrays()
    assert on_host.keys() == on_device.keys()
    for name in on_host:
        np.testing.assert_allclose(on_device[name], on_host[name], rtol=2e-5, atol=2e-6, err_msg=name)


def test_pca_sums_do_not_depend_on_how_rows_are_stacked(monkeypatch):
    """What a CUDA feed does with rows_per_launch: the same sums from stacked launches."""
    from pipealgos.algorithms.pca import PCAAccumulator, finalize

    params = ALGORITHMS["pca"].schema.build({"feature_dim": "4", "num_components": "2", "mini_batch_size": "50"})
    batches = [_dense(50, seed=i, labels=False) for i in range(6)]
    models = []
    for rows_per_launch in (None, 120):
        acc = PCAAccumulator(params, torch.device("cpu"))
        for group in feed.stacked(iter(batches), rows_per_launch):
            rows, (features,), _ = feed.stage(group, keep_sparse=False, pin=False)
            acc.add(features)
        models.append(finalize(acc.result(), params))
    assert models[0].s.shape == (2,)
    np.testing.assert_allclose(models[1].s, models[0].s, rtol=1e-6)
    np.testing.assert_allclose(models[1].v, models[0].v, atol=2e-5)  # float32 sums, another shift
