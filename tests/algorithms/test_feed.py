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
