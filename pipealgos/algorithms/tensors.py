"""Minibatch features as torch tensors, dense or sparse, on the training device.

The IO layer hands out float32 numpy arrays (dense) or scipy CSR matrices (sparse). Dense
arrays cross to torch without a copy on CPU. Sparse matrices cross as their three CSR arrays
(never densified, so memory follows the non-zeros, not ``feature_dim``): either as a torch
sparse CSR tensor (:func:`to_torch` with ``keep_sparse``; ``tensor @ dense`` works on CPU and
CUDA) or as the (indices, offsets, per-sample weights) triple of
:func:`torch.nn.functional.embedding_bag` (:func:`embedding_bag_inputs`), whose ``mode="sum"``
computes ``x @ W`` for a CSR ``x`` and an embedding table ``W``.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.io.minibatch import Features


def pick_device(devices: tuple[str, ...] = ("cpu", "cuda")) -> torch.device:
    """CUDA when the algorithm runs there and a GPU is present, else CPU."""
    if "cuda" in devices and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def to_torch(features: Features, device: torch.device, dtype: torch.dtype = torch.float32,
             keep_sparse: bool = False) -> torch.Tensor:
    """A minibatch's features on ``device``: dense as a strided tensor; CSR as a sparse CSR
    tensor when ``keep_sparse``, densified otherwise."""
    if sp.issparse(features):
        if keep_sparse:
            return sparse_csr_tensor(features, device, dtype)
        features = features.toarray()
    return torch.from_numpy(np.ascontiguousarray(features)).to(device=device, dtype=dtype)


def sparse_csr_tensor(features: sp.csr_matrix, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (int64 indices), without densifying."""
    crow = torch.from_numpy(features.indptr.astype(np.int64, copy=False))
    col = torch.from_numpy(features.indices.astype(np.int64, copy=False))
    values = torch.from_numpy(features.data).to(dtype)
    with warnings.catch_warnings():  # torch calls its CSR layout "beta" on every construction
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        tensor = torch.sparse_csr_tensor(crow, col, values, size=features.shape, check_invariants=False)
    return tensor.to(device)


def embedding_bag_inputs(features: Features, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indices, offsets, per_sample_weights) for ``embedding_bag(..., mode="sum")``: row i of
    ``features`` is the bag ``indices[offsets[i]:offsets[i+1]]`` weighted by its values. Dense
    features are taken by their non-zeros."""
    csr = features if sp.issparse(features) else sp.csr_matrix(features)
    indices = torch.from_numpy(csr.indices.astype(np.int64, copy=False)).to(device)
    offsets = torch.from_numpy(csr.indptr[:-1].astype(np.int64, copy=False)).to(device)
    weights = torch.from_numpy(np.asarray(csr.data, dtype=np.float32)).to(device)
    return indices, offsets, weights
