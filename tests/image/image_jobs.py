"""Small training jobs for the image tests, each with a numpy check of the model it should give."""

from __future__ import annotations

import numpy as np

RNG_SEED = 7


def pca_job() -> tuple[dict, np.ndarray]:
    """Six features with clearly separated variances, so the top-3 subspace is well defined."""
    rng = np.random.default_rng(RNG_SEED)
    scales = np.array([9.0, 5.0, 3.0, 1.0, 0.5, 0.2])
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    x = (rng.normal(size=(600, 6)) * scales) @ rotation.T + 4.0
    return {"feature_dim": 6, "num_components": 3, "mini_batch_size": 50}, x.astype(np.float32)


BLOB_CENTRES = np.array([[10.0, 0, 0, 0], [-10.0, 0, 0, 0], [0, 0, 10.0, 10.0]])


def kmeans_job() -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(RNG_SEED)
    x = np.concatenate([centre + rng.normal(scale=0.3, size=(200, 4)) for centre in BLOB_CENTRES])
    return {"feature_dim": 4, "k": 3, "mini_batch_size": 100}, rng.permutation(x).astype(np.float32)


JOBS = {"pca": pca_job, "kmeans": kmeans_job}


def check_pca_model(arrays: dict, x: np.ndarray) -> None:
    """The components span numpy's top-3 eigenvectors of the covariance; `s` holds the top-3
    singular values of the centred data."""
    _, vectors = np.linalg.eigh(np.cov(x.astype(np.float64), rowvar=False))
    expected = vectors[:, ::-1][:, :3]
    # Column order and signs are the model's convention; the spanned subspace is the answer.
    cosines = np.linalg.svd(arrays["v"].astype(np.float64).T @ expected, compute_uv=False)
    np.testing.assert_allclose(cosines, 1.0, atol=1e-3)
    np.testing.assert_allclose(arrays["mean"].ravel(), x.mean(axis=0), rtol=1e-4, atol=1e-4)
    singular = np.linalg.svd(x.astype(np.float64) - x.mean(axis=0), compute_uv=False)[:3]
    np.testing.assert_allclose(np.sort(arrays["s"]), np.sort(singular), rtol=1e-3)


def check_kmeans_model(arrays: dict, x: np.ndarray) -> None:
    """One centroid within 0.2 of each blob centre (blob sd 0.3, 200 points each)."""
    centroids = arrays["centroids"]
    assert centroids.shape == (3, 4)
    distances = np.linalg.norm(centroids[:, None, :] - BLOB_CENTRES[None, :, :], axis=2)
    assert sorted(distances.argmin(axis=0).tolist()) == [0, 1, 2], distances
    assert distances.min(axis=0).max() < 0.2, distances


CHECKS = {"pca": check_pca_model, "kmeans": check_kmeans_model}
