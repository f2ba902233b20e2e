"""PCA against numpy's exact SVD, through real training jobs (File and Pipe mode)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from mlroot import FifoFeeder, make_ml_root, read_model, recordio_bytes, write_channel_files

from pipealgos.algorithms.pca import PCAAccumulator, PCAModel, PCAStats, finalize
from pipealgos.platform.schemas.pca import SCHEMA as PCA_SCHEMA
from pipealgos.platform.config import MLRoot
from pipealgos.platform.train import run_training

RTOL = 1e-5


def _data(n=2000, d=12, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10, 0.1, d)
    return (rng.normal(size=(n, d)) * scales @ np.linalg.qr(rng.normal(size=(d, d)))[0] + 3.0).astype(np.float32)


def _reference(x: np.ndarray, k: int, centre: bool = True):
    x = x.astype(np.float64)
    if centre:
        x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    v = vt[:k].T
    pivots = np.abs(v).argmax(axis=0)
    v = v * np.sign(v[pivots, np.arange(k)])
    return s[:k][::-1], v[:, ::-1]


def _train(tmp_path, x, hyperparameters, mode="File", parts=1, sparse=False, channel_extra=None):
    root = make_ml_root(tmp_path, hyperparameters, {"train": {"TrainingInputMode": mode, **(channel_extra or {})}})
    chunks = np.array_split(np.arange(len(x)), parts)
    blobs = [recordio_bytes(sp.csr_matrix(x[c]) if sparse else x[c]) for c in chunks]
    if mode == "File":
        write_channel_files(root, "train", blobs)
        feeder = None
    else:
        feeder = FifoFeeder(root, "train", [b"".join(blobs)])
    status = run_training(MLRoot(root), "pca")
    if feeder:
        feeder.join()
    return status, root


def _hp(d, k, **extra):
    return {"feature_dim": d, "num_components": k, "mini_batch_size": 128, **extra}


def test_regular_matches_numpy_svd(tmp_path):
    x = _data()
    status, root = _train(tmp_path, x, _hp(12, 4))
    assert status == 0
    model = read_model(root)
    s, v = _reference(x, 4)
    np.testing.assert_allclose(model["s"], s, rtol=RTOL)
    np.testing.assert_allclose(model["v"], v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model["mean"][0], x.astype(np.float64).mean(axis=0), rtol=RTOL)
    assert np.all(np.diff(model["s"]) >= 0), "singular values must be ascending like the real artifact"


def test_without_subtract_mean(tmp_path):
    x = _data()
    status, root = _train(tmp_path, x, _hp(12, 3, subtract_mean="False"))
    assert status == 0
    model = read_model(root)
    s, v = _reference(x, 3, centre=False)
    np.testing.assert_allclose(model["s"], s, rtol=RTOL)
    np.testing.assert_allclose(model["v"], v, rtol=1e-4, atol=1e-5)
    assert "mean" not in model


@pytest.mark.parametrize("batch", [1, 7, 128, 5000])
def test_independent_of_mini_batch_size(batch):
    x = _data(n=600)
    params = PCA_SCHEMA.build(dict(feature_dim=12, num_components=3, mini_batch_size=batch))
    acc = PCAAccumulator(params, device=__import__("torch").device("cpu"))
    for start in range(0, len(x), batch):
        acc.add(x[start : start + batch])
    model = finalize(acc.result(), params)
    s, v = _reference(x, 3)
    np.testing.assert_allclose(model.s, s, rtol=RTOL)
    np.testing.assert_allclose(model.v, v, rtol=1e-4, atol=1e-5)


def test_merge_is_the_stats_of_the_union():
    x = _data(n=500)
    params = PCA_SCHEMA.build(dict(feature_dim=12, num_components=3, mini_batch_size=50))
    cpu = __import__("torch").device("cpu")
    parts = []
    for chunk in np.array_split(x, 3):
        acc = PCAAccumulator(params, cpu)
        acc.add(chunk)
        parts.append(acc.result())
    merged = parts[0].merge(parts[1]).merge(parts[2])
    whole = PCAAccumulator(params, cpu)
    whole.add(x)
    expected = whole.result()
    assert merged.n == expected.n == 500
    # Each minibatch's Gram is a float32 product (of shifted rows), so splitting the rows
    # differently changes only float32 rounding: ~1e-7 of the largest entry.
    np.testing.assert_allclose(merged.gram, expected.gram, rtol=0, atol=1e-6 * np.abs(expected.gram).max())
    np.testing.assert_allclose(merged.total, expected.total, rtol=0, atol=1e-6 * np.abs(expected.total).max())
    exact = x.astype(np.float64)
    np.testing.assert_allclose(merged.gram, exact.T @ exact, rtol=0, atol=1e-6 * np.abs(expected.gram).max())


def test_file_and_pipe_mode_give_identical_models(tmp_path):
    x = _data(n=3000)
    _, file_root = _train(tmp_path / "file", x, _hp(12, 4), parts=3)
    status, pipe_root = _train(tmp_path / "pipe", x, _hp(12, 4), mode="Pipe", parts=3)
    assert status == 0
    a, b = read_model(file_root), read_model(pipe_root)
    for key in ("s", "v", "mean"):
        np.testing.assert_array_equal(a[key], b[key])


def test_dense_and_sparse_encodings_give_the_same_model(tmp_path):
    rng = np.random.default_rng(3)
    x = _data(n=1500) * (rng.random((1500, 12)) < 0.3)
    _, dense_root = _train(tmp_path / "dense", x, _hp(12, 3))
    _, sparse_root = _train(tmp_path / "sparse", x, _hp(12, 3), sparse=True)
    a, b = read_model(dense_root), read_model(sparse_root)
    np.testing.assert_allclose(a["s"], b["s"], rtol=1e-6)
    np.testing.assert_allclose(a["v"], b["v"], rtol=1e-5, atol=1e-6)


def test_csv_channel(tmp_path):
    x = _data(n=400)
    root = make_ml_root(tmp_path, _hp(12, 2), {"train": {"TrainingInputMode": "File", "ContentType": "text/csv"}})
    folder = root / "input" / "data" / "train"
    folder.mkdir(parents=True)
    np.savetxt(folder / "data.csv", x, delimiter=",", fmt="%.9g")
    assert run_training(MLRoot(root), "pca") == 0
    s, _ = _reference(x, 2)
    np.testing.assert_allclose(read_model(root)["s"], s, rtol=RTOL)


def test_randomized_mode_on_a_decaying_spectrum(tmp_path):
    """Randomized PCA (one ±1 sketch per minibatch) recovers the top components of data whose
    spectrum decays fast: subspace angles below 0.1 rad, and singular values within 15 % with
    ℓ = 103 (a ±1 sketch of ℓ rows estimates them with a relative spread of about 1/sqrt(2ℓ))."""
    rng = np.random.default_rng(7)
    n, d, k = 4000, 40, 3
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    scales = np.concatenate([[50.0, 30.0, 20.0], np.full(d - 3, 0.5)])
    x = ((rng.normal(size=(n, d)) * scales) @ basis.T).astype(np.float32)
    status, root = _train(tmp_path, x, _hp(d, k, algorithm_mode="randomized", extra_components=100))
    assert status == 0
    model = read_model(root)
    s, v = _reference(x, k)
    np.testing.assert_allclose(model["s"], s, rtol=0.15)
    cosines = np.linalg.svd(model["v"].T.astype(np.float64) @ v, compute_uv=False)
    assert np.arccos(np.clip(cosines.min(), -1, 1)) < 0.1


def test_model_predict_projects_centred_rows():
    x = _data(n=300)
    params = PCA_SCHEMA.build(dict(feature_dim=12, num_components=3, mini_batch_size=100))
    acc = PCAAccumulator(params, __import__("torch").device("cpu"))
    acc.add(x)
    model = finalize(acc.result(), params)
    projected = model.predict(x[:5])["projection"]
    expected = (x[:5].astype(np.float64) - model.mean) @ model.v
    np.testing.assert_allclose(projected, expected, rtol=1e-4, atol=1e-4)
    roundtrip = PCAModel.from_arrays(model.to_arrays())
    np.testing.assert_allclose(roundtrip.predict(x[:5])["projection"], projected, rtol=1e-6)


def test_stats_merge_is_pure():
    params = PCA_SCHEMA.build(dict(feature_dim=2, num_components=1, mini_batch_size=1))
    a, b = PCAStats.empty(params), PCAStats.empty(params)
    a.n, a.total = 1, np.array([1.0, 2.0])
    merged = a.merge(b)
    merged.total[0] = 99
    assert a.total[0] == 1.0


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_float32_products_of_shifted_rows_stay_exact_far_from_the_origin(offset):
    """Minibatch Grams are float32 products of rows shifted by the first minibatch's mean:
    a mean far larger than the spread must not cost precision (float32 products of raw rows
    would lose it to cancellation in Σxᵀx − n·μμᵀ)."""
    x = (_data(n=4000).astype(np.float64) - 3.0 + offset).astype(np.float32)
    params = PCA_SCHEMA.build(dict(feature_dim=12, num_components=4, mini_batch_size=500))
    acc = PCAAccumulator(params, device=__import__("torch").device("cpu"))
    for start in range(0, len(x), 500):
        acc.add(x[start : start + 500])
    model = finalize(acc.result(), params)
    s, v = _reference(x, 4)
    np.testing.assert_allclose(model.s, s, rtol=RTOL)
    np.testing.assert_allclose(model.v, v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.mean[0], x.astype(np.float64).mean(axis=0), rtol=RTOL)
